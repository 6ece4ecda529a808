/**
 * Live numbers from the storage servers (capacity, use) through the client library, with a short
 * deadline per disk: a disk that does not answer in time is reported down.
 */
import { StorpoolClient } from '@storpool/client';
import type { MetaStore } from '@storpool/meta';
import { BLOCK_BYTES } from '@storpool/protocol';
import type { Logger } from 'pino';
import { DISK_STATS_TIMEOUT_MS } from './limits.js';
import { MetaShardMapSource } from './map-source.js';
import type { DiskLive } from './views.js';

/** The client id the management service uses on the wire (it attaches nothing). */
const MGMT_CLIENT_ID = 0;

export interface DiskStatus {
  live: DiskLive;
  raw: Record<string, unknown>;
}

export class LiveView {
  readonly #meta: MetaStore;
  readonly #log: Logger;
  #client: Promise<StorpoolClient> | undefined;
  #closed = false;

  constructor(meta: MetaStore, log: Logger) {
    this.#meta = meta;
    this.#log = log;
  }

  /** The client, connected on first use (the map must exist by then); undefined if there is none. */
  async client(): Promise<StorpoolClient | undefined> {
    if (this.#closed) return undefined;
    this.#client ??= StorpoolClient.connect({ mapSource: new MetaShardMapSource(this.#meta), clientId: MGMT_CLIENT_ID, log: this.#log, requestTimeoutMs: DISK_STATS_TIMEOUT_MS, retryDeadlineMs: 10_000 });
    try {
      const client = await this.#client;
      await client.refreshMap();
      return client;
    } catch (err) {
      this.#client = undefined;
      this.#log.debug({ err }, 'no client for live statistics');
      return undefined;
    }
  }

  /** Stats of every given disk that answers within the deadline. */
  async diskStats(diskIds: readonly number[]): Promise<Map<number, DiskStatus>> {
    const out = new Map<number, DiskStatus>();
    const client = await this.client();
    if (client === undefined) return out;
    await Promise.all(diskIds.map(async (id) => {
      if (client.router.disk(id) === undefined) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), DISK_STATS_TIMEOUT_MS); });
      const stats = client.diskStats(id).catch((err: unknown) => {
        this.#log.debug({ err, diskId: id }, 'disk stats failed');
        return undefined;
      });
      const raw = await Promise.race([stats, timeout]);
      clearTimeout(timer);
      const store = raw?.['store'] as { blocksTotal?: unknown; blocksUsed?: unknown; blocksFree?: unknown } | undefined;
      if (raw === undefined || typeof store?.blocksTotal !== 'number' || typeof store.blocksUsed !== 'number' || typeof store.blocksFree !== 'number') return;
      out.set(id, { live: { blocksTotal: store.blocksTotal, blocksUsed: store.blocksUsed, blocksFree: store.blocksFree, blockBytes: BLOCK_BYTES }, raw });
    }));
    return out;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#client;
    this.#client = undefined;
    if (pending !== undefined) (await pending.catch(() => undefined))?.close();
  }
}
