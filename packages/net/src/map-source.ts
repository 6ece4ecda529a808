import { readFile } from 'node:fs/promises';
import { StorpoolError } from '@storpool/errors';
import { ShardRouter, parseShardMap, type ShardMap } from '@storpool/protocol';

/**
 * Where a process gets the shard map. The management service's metadata store implements this;
 * until then, and for tests, a JSON file does.
 */
export interface ShardMapSource {
  /** The newest map this source can see. */
  load(): Promise<ShardMap>;
}

export class FileShardMapSource implements ShardMapSource {
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  async load(): Promise<ShardMap> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      throw new StorpoolError('MAP_ERR_INVALID', `cannot read shard map ${this.path}: ${(err as Error).message}`);
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new StorpoolError('MAP_ERR_INVALID', `shard map ${this.path} is not JSON: ${(err as Error).message}`);
    }
    return parseShardMap(value);
  }
}

/**
 * Holds the current router and refreshes it from the source, one load at a time. Never goes back
 * to an older epoch.
 */
export class ShardMapView {
  #router: ShardRouter;
  #loading: Promise<ShardRouter> | undefined;
  /** The load queued behind a running one, shared by every caller that came while it ran. */
  #queued: Promise<ShardRouter> | undefined;
  readonly #source: ShardMapSource;

  private constructor(source: ShardMapSource, router: ShardRouter) {
    this.#source = source;
    this.#router = router;
  }

  static async open(source: ShardMapSource): Promise<ShardMapView> {
    return new ShardMapView(source, new ShardRouter(await source.load()));
  }

  get router(): ShardRouter {
    return this.#router;
  }

  /**
   * Refreshes until the map is at `epoch` or later, or `timeoutMs` passed; resolves with the newest
   * router either way. For a request planned on a map this process has not seen yet: the map's
   * publication (a file written by the management service) may lag the request by a moment.
   */
  async atLeast(epoch: number, timeoutMs: number, pollMs = 50): Promise<ShardRouter> {
    const deadline = Date.now() + timeoutMs;
    let router = this.#router;
    while (router.epoch < epoch) {
      router = await this.refresh();
      if (router.epoch >= epoch || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    return router;
  }

  /**
   * The newest map as of a load that began after this call: a load already running may have read
   * the source before whatever made the caller refresh (a stale-epoch answer, a map just
   * published), so the caller gets the next one, which every caller meanwhile shares.
   */
  refresh(): Promise<ShardRouter> {
    if (this.#loading !== undefined) {
      this.#queued ??= this.#loading.catch(() => undefined).then(() => {
        this.#queued = undefined;
        return this.refresh();
      });
      return this.#queued;
    }
    this.#loading = this.#source
      .load()
      .then((map) => {
        if (map.epoch > this.#router.epoch) this.#router = new ShardRouter(map);
        return this.#router;
      })
      .finally(() => {
        this.#loading = undefined;
      });
    return this.#loading;
  }
}
