/**
 * Release of surplus copies (SHARD_RELEASE): after rebalancing, a soft-eject or a rebuild, a disk
 * still holds objects of shards the map has moved elsewhere. The management service asks it to
 * forget them; the disk decides for itself, on its own map, shard by shard and again object by
 * object, and keeps anything it holds or joins, and anything of a shard not in sync on at least
 * `replication` disks.
 *
 * Two races make this safe or not:
 * - A replica write routed here at an older epoch is enqueued in the store in the same microtask
 *   chain as its epoch check, so it is always ordered before a forget decided on a newer map.
 * - A catch-up that makes this disk join a shard again lists this disk's objects (OBJECT_LIST) and
 *   trusts their versions: a forget still in flight would remove an object after it was listed as
 *   current. OBJECT_LIST therefore first brings this disk to the lister's epoch (where this disk
 *   joins, so no new forget starts) and waits for the forgets in flight (settled()).
 */
import { StorpoolError } from '@storpool/errors';
import { BLOCK_BYTES, decodeShardReleaseRequest, shardOf, type RequestHeader, type ShardReleaseResult } from '@storpool/protocol';
import type { SyncHost } from './shard-sync.js';
import type { ObjectKey } from './store/index.js';

const LIST_PAGE = 4096;
/** Forgets in flight at once: they share group-commit cycles. */
const FORGET_BATCH = 256;

/** What a release needs of its server: the part of a catch-up's host that reads the map and the store. */
export type ReleaseHost = Pick<SyncHost, 'diskId' | 'store' | 'log' | 'router' | 'routerAt'>;

export interface ReleaseCounters {
  releaseRequests: number;
  objectsReleased: number;
  bytesReleased: number;
}

export class ShardRelease {
  readonly counters: ReleaseCounters = { releaseRequests: 0, objectsReleased: 0, bytesReleased: 0 };
  readonly #host: ReleaseHost;
  readonly #inflight = new Set<Promise<unknown>>();

  constructor(host: ReleaseHost) {
    this.#host = host;
  }

  /** Resolves when every forget started so far is durable (or failed). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#inflight]);
  }

  async run(h: RequestHeader, payload: Buffer): Promise<ShardReleaseResult> {
    const req = decodeShardReleaseRequest(payload);
    this.counters.releaseRequests++;
    let router = this.#host.router();
    if (h.epoch > router.epoch) router = await this.#host.routerAt(h.epoch);
    if (h.epoch > router.epoch) throw new StorpoolError('MAP_ERR_STALE_EPOCH', `disk ${this.#host.diskId} is at map epoch ${router.epoch}, not yet at ${h.epoch}: retry`);
    const group = router.group(req.group);
    if (group === undefined) throw new StorpoolError('MAP_ERR_INVALID', `shard group ${req.group} is not in map epoch ${router.epoch}`);
    for (const shard of req.shards) {
      if (!this.#surplus(req.group, shard)) throw new StorpoolError('MAP_ERR_NOT_SURPLUS', `disk ${this.#host.diskId} keeps group ${req.group} shard ${shard}: it holds or joins it, or the shard is not in sync on ${group.replication} other disks (epoch ${router.epoch})`);
    }
    const shardCount = group.shards.length;
    const shards = new Set(req.shards);
    const placementOf = new Map(req.dataIds);
    const result: ShardReleaseResult = { objectsReleased: 0, bytesReleased: 0 };
    const started = Date.now();
    let after: ObjectKey | undefined;
    for (;;) {
      const page = this.#host.store.listObjects(after === undefined ? { limit: LIST_PAGE } : { after, limit: LIST_PAGE });
      const doomed: { key: ObjectKey; bytes: number }[] = [];
      for (const e of page) {
        const placementId = placementOf.get(e.key.volumeId);
        if (placementId === undefined) continue; // not of this group, or unknown to the request: keep
        const shard = shardOf(placementId, e.key.objectIndex, shardCount);
        if (shards.has(shard)) doomed.push({ key: e.key, bytes: e.allocatedBlocks * BLOCK_BYTES });
      }
      for (let i = 0; i < doomed.length; i += FORGET_BATCH) {
        // Checked again right before each batch: the map may have brought this disk back meanwhile.
        for (const shard of shards) if (!this.#surplus(req.group, shard)) shards.delete(shard);
        const batch = doomed.slice(i, i + FORGET_BATCH).filter((d) => shards.has(shardOf(placementOf.get(d.key.volumeId)!, d.key.objectIndex, shardCount)));
        const forgets = Promise.all(batch.map((d) => this.#host.store.forget(d.key)));
        this.#inflight.add(forgets);
        try {
          await forgets;
        } finally {
          this.#inflight.delete(forgets);
        }
        for (const d of batch) {
          result.objectsReleased++;
          result.bytesReleased += d.bytes;
        }
      }
      if (page.length < LIST_PAGE || shards.size === 0) break;
      after = page[page.length - 1]!.key;
    }
    this.counters.objectsReleased += result.objectsReleased;
    this.counters.bytesReleased += result.bytesReleased;
    if (result.objectsReleased > 0) this.#host.log.info({ group: req.group, shards: req.shards.length, ...result, ms: Date.now() - started }, 'surplus copies released');
    return result;
  }

  /** This disk neither holds nor joins the shard, and enough other disks hold it in sync. */
  #surplus(groupId: number, shard: number): boolean {
    const router = this.#host.router();
    const group = router.group(groupId);
    if (group === undefined) return false;
    const p = router.shard(groupId, shard);
    const me = this.#host.diskId;
    return !p.replicas.includes(me) && !p.joining.includes(me) && p.replicas.length >= group.replication;
  }
}
