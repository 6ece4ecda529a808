/**
 * Catch-up of a joining disk, run by a shard's primary (SHARD_SYNC).
 *
 * One session per (target, group) on this primary; each SHARD_SYNC adds shards to it and copies
 * them. While a shard is being copied, the rule that makes this safe against writes racing the copy:
 * the primary never forwards a write of an object the session has not yet *verified* (compared with
 * the target, and copied whole if different); the first write of such an object is followed by a copy
 * of the whole object, made under the object's lock. So the target's copy of an object is either
 * untouched since it went away (and its version tells whether it is current) or exactly the primary's.
 * A failure while copying drops those shards from the session (the target just misses them; the
 * leader retries). Once a shard's copy is complete it is *synced*: the leader may promote the target
 * at any moment, so from then on the primary treats the target as a replica of that shard — every
 * write goes to it and a write it does not confirm fails — until the map no longer lists it joining.
 *
 * Versions identify content because every primary writes versions of its own term (ShardGroup.terms):
 * an old primary's unacknowledged write never has the version of a write of its successor.
 */
import { StorpoolError } from '@storpool/errors';
import type { ConnectionPool } from '@storpool/net';
import {
  BLOCK_BYTES,
  BLOCK_DATA,
  BLOCK_HOLE,
  BLOCKS_PER_OBJECT,
  Op,
  RequestFlag,
  decodeObjectList,
  decodeShardSyncRequest,
  encodeCrcs,
  shardOf,
  type OpCode,
  type RequestHeader,
  type ShardRouter,
  type ShardSyncRequest,
  type ShardSyncResult,
} from '@storpool/protocol';
import type { Logger } from 'pino';
import type { ObjectStore } from './shard-service.js';
import type { ObjectKey } from './store/index.js';

/** Blocks per pushed REPLICA_WRITE (1 MiB). */
const PUSH_BLOCKS_MAX = 256;
const LIST_PAGE = 4096;

export interface SyncHost {
  readonly diskId: number;
  readonly store: ObjectStore;
  readonly peers: ConnectionPool;
  readonly log: Logger;
  readonly replicaTimeoutMs: number;
  router(): ShardRouter;
  /** The map at `epoch` or later if it shows up within a moment (see ShardMapView.atLeast), else the newest. */
  routerAt(epoch: number): Promise<ShardRouter>;
  /** The object's whole-range lock (the same table the primary's writes use). */
  lockObject(key: ObjectKey): Promise<() => void>;
}

export interface SyncCounters {
  sessionsStarted: number;
  sessionsCompleted: number;
  sessionsFailed: number;
  /** Catch-up copies to joining disks. */
  objectsPushed: number;
  bytesPushed: number;
  /** Copies to in-sync disks that disagreed with this (new) primary: peering after a failover. */
  objectsPeered: number;
  bytesPeered: number;
  /** Catch-up data bytes sent, per target disk. */
  bytesPushedTo: Record<number, number>;
}

/** One SHARD_SYNC's copy of some shards. */
export class SyncRun {
  readonly session: SyncSession;
  readonly shards: ReadonlySet<number>;
  /** Objects of these shards compared (and copied if needed) by this run: their writes are forwarded. */
  readonly verified = new Set<string>();
  failure: StorpoolError | undefined;
  readonly result: ShardSyncResult = { objectsCompared: 0, objectsPushed: 0, objectsReleased: 0, bytesPushed: 0 };
  /** The target holds these shards in sync already (peering), rather than joining them. */
  readonly peering: boolean;

  constructor(session: SyncSession, shards: readonly number[], peering: boolean) {
    this.session = session;
    this.shards = new Set(shards);
    this.peering = peering;
  }

  get live(): boolean {
    return this.failure === undefined;
  }

  fail(err: unknown): void {
    if (this.failure !== undefined) return;
    const e = err instanceof StorpoolError ? err : new StorpoolError('INTERNAL_ERR', String(err));
    this.failure = new StorpoolError('REPL_ERR_SYNC_FAILED', `catch-up of disk ${this.session.target} (group ${this.session.group}) stopped: ${e.code}: ${e.message}`, { cause: e });
  }
}

export class SyncSession {
  readonly target: number;
  readonly group: number;
  /** shard -> the run copying it, or 'synced'. */
  readonly shards = new Map<number, SyncRun | 'synced'>();
  readonly placementOf = new Map<number, number>();

  constructor(target: number, group: number) {
    this.target = target;
    this.group = group;
  }
}

/** How a write of one shard reaches a joining disk. */
export type JoinerRoute = { kind: 'replica'; session: SyncSession } | { kind: 'copying'; run: SyncRun };

const objectId = (key: ObjectKey): string => `${key.volumeId}/${key.objectIndex}`;

export class ShardSync {
  readonly counters: SyncCounters = { sessionsStarted: 0, sessionsCompleted: 0, sessionsFailed: 0, objectsPushed: 0, bytesPushed: 0, objectsPeered: 0, bytesPeered: 0, bytesPushedTo: {} };
  readonly #host: SyncHost;
  /** key `${target}/${group}` */
  readonly #sessions = new Map<string, SyncSession>();
  /**
   * target -> objects a forwarded write to it failed for: it may hold part of that write under the
   * write's version, so its version cannot be trusted; the next copy run copies them whole.
   */
  readonly #dirty = new Map<number, Set<string>>();

  constructor(host: SyncHost) {
    this.#host = host;
  }

  /** How writes of this shard reach `target` (joining it), if at all. */
  route(target: number, group: number, shard: number): JoinerRoute | undefined {
    const s = this.#sessions.get(`${target}/${group}`);
    const state = s?.shards.get(shard);
    if (s === undefined || state === undefined) return undefined;
    if (state === 'synced') return { kind: 'replica', session: s };
    return state.live ? { kind: 'copying', run: state } : undefined;
  }

  /** A forwarded write of `key` to the run's target failed (see #dirty); the run stops. */
  forwardFailed(run: SyncRun, key: ObjectKey, err: unknown): void {
    const target = run.session.target;
    let set = this.#dirty.get(target);
    if (set === undefined) this.#dirty.set(target, (set = new Set()));
    set.add(objectId(key));
    run.fail(err);
  }

  /** Call with the object's range locked: a copy of it (whole lock) cannot then change the answer. */
  isVerified(run: SyncRun, key: ObjectKey): boolean {
    return run.verified.has(objectId(key));
  }

  /** SHARD_SYNC: runs a session to its end; the session stays to keep the target current. */
  async run(h: RequestHeader, payload: Buffer): Promise<ShardSyncResult> {
    const req = decodeShardSyncRequest(payload);
    let router = this.#host.router();
    if (h.epoch > router.epoch) router = await this.#host.routerAt(h.epoch);
    if (h.epoch < router.epoch) throw new StorpoolError('MAP_ERR_STALE_EPOCH', `request epoch ${h.epoch} < server epoch ${router.epoch}`);
    // The request was planned on a map this server has not loaded yet: the caller retries.
    if (h.epoch > router.epoch) throw new StorpoolError('REPL_ERR_SYNC_FAILED', `disk ${this.#host.diskId} is at map epoch ${router.epoch}, not yet at ${h.epoch}`);
    for (const shard of req.shards) {
      const p = router.shard(req.group, shard);
      if (p.replicas[0] !== this.#host.diskId) throw new StorpoolError('MAP_ERR_NOT_PRIMARY', `disk ${this.#host.diskId} is not the primary of group ${req.group} shard ${shard} (epoch ${router.epoch})`);
      if (!p.joining.includes(req.target) && !p.replicas.includes(req.target)) {
        throw new StorpoolError('MAP_ERR_NOT_REPLICA', `disk ${req.target} neither joins nor holds group ${req.group} shard ${shard} (epoch ${router.epoch})`);
      }
    }
    const key = `${req.target}/${req.group}`;
    let session = this.#sessions.get(key);
    if (session === undefined) this.#sessions.set(key, (session = new SyncSession(req.target, req.group)));
    for (const [dataId, placementId] of req.dataIds) session.placementOf.set(dataId, placementId);
    // Shards already synced stay so (the target may be promoted any moment); the others (re)start here.
    const peering = req.shards.every((shard) => router.shard(req.group, shard).replicas.includes(req.target));
    const run = new SyncRun(session, req.shards.filter((shard) => session.shards.get(shard) !== 'synced'), peering);
    for (const shard of run.shards) {
      const previous = session.shards.get(shard);
      if (previous instanceof SyncRun) previous.fail(new StorpoolError('REPL_ERR_SYNC_FAILED', 'replaced by a newer copy of the shard'));
      session.shards.set(shard, run);
    }
    this.counters.sessionsStarted++;
    const started = Date.now();
    this.#host.log.info({ target: req.target, group: req.group, shards: run.shards.size }, 'catch-up started');
    try {
      await this.#copyAll(run, router.group(req.group)!.shards.length, req.maxBytesPerSec ?? 0);
    } catch (err) {
      run.fail(err);
    }
    for (const shard of run.shards) {
      if (session.shards.get(shard) !== run) continue;
      if (run.failure === undefined) session.shards.set(shard, 'synced');
      else session.shards.delete(shard);
    }
    if (session.shards.size === 0) this.#sessions.delete(key);
    if (run.failure !== undefined) {
      this.counters.sessionsFailed++;
      this.#host.log.warn({ target: req.target, group: req.group, err: run.failure.message }, 'catch-up failed');
      throw run.failure;
    }
    this.counters.sessionsCompleted++;
    this.#host.log.info({ target: req.target, group: req.group, ...run.result, ms: Date.now() - started }, 'catch-up complete');
    return run.result;
  }

  /**
   * Drops what no longer applies: shards the target no longer joins here (promoted, or gone) — but
   * a copy to an in-sync target (peering after a failover) runs on while this disk leads the shard.
   */
  prune(): void {
    const router = this.#host.router();
    for (const [key, s] of this.#sessions) {
      const group = router.group(s.group);
      for (const [shard, state] of s.shards) {
        const leading = group !== undefined && group.shards[shard]?.[0] === this.#host.diskId;
        const joining = leading && group.joining?.[shard]?.includes(s.target) === true;
        const peering = leading && state instanceof SyncRun && group.shards[shard]!.includes(s.target);
        if (joining || peering) continue;
        if (state instanceof SyncRun) state.fail(new StorpoolError('REPL_ERR_SYNC_FAILED', 'the target no longer joins the shard here'));
        s.shards.delete(shard);
      }
      if (s.shards.size === 0) this.#sessions.delete(key);
    }
  }

  /**
   * Copies the whole object to the target under the object's lock (the caller must not hold a
   * lock on it), unless it was verified meanwhile. Failure ends the session, not the caller's write.
   */
  async pushLocked(run: SyncRun, key: ObjectKey, placementId: number, shard: number): Promise<void> {
    const release = await this.#host.lockObject(key);
    try {
      // Verified meanwhile: that copy was made after the caller's write (it held the object's range lock).
      if (!run.live || run.verified.has(objectId(key))) return;
      await this.#push(run, key, placementId, shard);
    } catch (err) {
      run.fail(err);
    } finally {
      release();
    }
  }

  async #copyAll(run: SyncRun, shardCount: number, maxBytesPerSec: number): Promise<void> {
    const s = run.session;
    const inSession = (volumeId: number, objectIndex: number): number | undefined => {
      const placementId = s.placementOf.get(volumeId);
      if (placementId === undefined) return undefined;
      const shard = shardOf(placementId, objectIndex, shardCount);
      return run.shards.has(shard) ? shard : undefined;
    };
    // The target's versions, read once the session forwards (or pushes) every new write.
    const remote = new Map<string, { key: ObjectKey; version: number }>();
    const conn = await this.#host.peers.get(s.target);
    let cursor = { volumeId: 0, objectIndex: 0 };
    for (;;) {
      const epoch = this.#host.router().epoch;
      const reply = await conn.request({ op: Op.OBJECT_LIST, flags: 0, epoch, group: 0, parentCount: 0, volumeId: cursor.volumeId, objectIndex: cursor.objectIndex, offset: 0, length: LIST_PAGE, version: 0, placementId: 0, shard: 0 }, [], this.#host.replicaTimeoutMs);
      const page = decodeObjectList(reply.payload);
      for (const e of page) if (inSession(e.volumeId, e.objectIndex) !== undefined) remote.set(`${e.volumeId}/${e.objectIndex}`, { key: { volumeId: e.volumeId, objectIndex: e.objectIndex }, version: e.version });
      if (page.length < LIST_PAGE) break;
      const last = page[page.length - 1]!;
      cursor = { volumeId: last.volumeId, objectIndex: last.objectIndex };
    }
    const started = Date.now();
    const throttle = async (): Promise<void> => {
      if (maxBytesPerSec <= 0) return;
      const due = started + (run.result.bytesPushed / maxBytesPerSec) * 1000;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    };
    let after: ObjectKey | undefined;
    for (;;) {
      if (!run.live) return;
      const page = this.#host.store.listObjects(after === undefined ? { limit: LIST_PAGE } : { after, limit: LIST_PAGE });
      for (const e of page) {
        const shard = inSession(e.key.volumeId, e.key.objectIndex);
        if (shard === undefined) continue;
        const id = objectId(e.key);
        const release = await this.#host.lockObject(e.key);
        try {
          if (!run.live) return;
          run.result.objectsCompared++;
          if (!run.verified.has(id)) {
            const theirs = remote.get(id)?.version ?? 0;
            if (theirs !== this.#host.store.objectVersion(e.key) || this.#dirty.get(s.target)?.has(id) === true) await this.#push(run, e.key, s.placementOf.get(e.key.volumeId)!, shard);
            else run.verified.add(id);
          }
          remote.delete(id);
        } finally {
          release();
        }
        await throttle();
      }
      if (page.length < LIST_PAGE) break;
      after = page[page.length - 1]!.key;
    }
    // What the target holds and this primary does not (released while the target was away).
    for (const { key } of remote.values()) {
      const release = await this.#host.lockObject(key);
      try {
        if (!run.live) return;
        if (run.verified.has(objectId(key)) || this.#host.store.objectVersion(key) !== 0) continue;
        const placementId = s.placementOf.get(key.volumeId)!;
        // Forgotten there too: trimmed whole, then version 0 (REPLACE) drops the entry; a plain trim
        // would keep a version this primary never wrote.
        await this.#send(s, key, placementId, shardOf(placementId, key.objectIndex, shardCount), Op.REPLICA_TRIM, RequestFlag.SYNC | RequestFlag.REPLACE, 0, BLOCKS_PER_OBJECT, 0, []);
        run.verified.add(objectId(key));
        run.result.objectsReleased++;
      } finally {
        release();
      }
    }
  }

  /** The object as this disk has it, whole, to the target. Caller holds the object's lock. */
  async #push(run: SyncRun, key: ObjectKey, placementId: number, shard: number): Promise<void> {
    const s = run.session;
    const store = this.#host.store;
    const version = store.objectVersion(key);
    const map = store.allocation(key, 0, BLOCKS_PER_OBJECT);
    let bytes = 0;
    // Every block is sent (data, zero marker or hole), each piece overwriting the target's blocks;
    // the last piece carries the version and REPLACE (the target then takes exactly this version,
    // even below its own: an unacknowledged write of an old term). A copy cut short leaves every
    // block either ours or the target's own, in-sync content, acknowledged writes included, and
    // the target's old version, which still differs from ours: the next compare copies it again.
    for (let first = 0; first < BLOCKS_PER_OBJECT;) {
      const state = map[first]!;
      let end = first + 1;
      while (end < BLOCKS_PER_OBJECT && map[end] === state && (state !== BLOCK_DATA || end - first < PUSH_BLOCKS_MAX)) end++;
      const replace = end === BLOCKS_PER_OBJECT ? RequestFlag.REPLACE : 0;
      if (state === BLOCK_DATA) {
        const r = await store.read(key, first, end - first);
        if (r.bad.length > 0) throw new StorpoolError('STORE_ERR_CHECKSUM', `disk ${this.#host.diskId}: object ${objectId(key)} blocks ${r.bad.map((b) => b + first).join(',')} fail their CRC32C: cannot copy them (the scrubber repairs them from another copy)`);
        // The stored CRCs travel with the data: the target checks them before writing.
        await this.#send(s, key, placementId, shard, Op.REPLICA_WRITE, RequestFlag.SYNC | replace, first, end - first, end === BLOCKS_PER_OBJECT ? version : 0, [r.data, encodeCrcs(r.crcs)]);
        bytes += r.data.length;
      } else {
        const flags = RequestFlag.SYNC | replace | (state === BLOCK_HOLE ? 0 : RequestFlag.ZERO_MARKERS);
        await this.#send(s, key, placementId, shard, Op.REPLICA_TRIM, flags, first, end - first, end === BLOCKS_PER_OBJECT ? version : 0, []);
      }
      first = end;
    }
    run.verified.add(objectId(key));
    this.#dirty.get(s.target)?.delete(objectId(key));
    run.result.objectsPushed++;
    run.result.bytesPushed += bytes;
    if (run.peering) {
      this.counters.objectsPeered++;
      this.counters.bytesPeered += bytes;
    } else {
      this.counters.objectsPushed++;
      this.counters.bytesPushed += bytes;
      this.counters.bytesPushedTo[s.target] = (this.counters.bytesPushedTo[s.target] ?? 0) + bytes;
    }
  }

  async #send(s: SyncSession, key: ObjectKey, placementId: number, shard: number, op: OpCode, flags: number, firstBlock: number, blockCount: number, version: number, payload: Uint8Array[]): Promise<void> {
    const conn = await this.#host.peers.get(s.target);
    await conn.request(
      { op, flags, epoch: this.#host.router().epoch, group: s.group, parentCount: 0, volumeId: key.volumeId, objectIndex: key.objectIndex, offset: firstBlock * BLOCK_BYTES, length: blockCount * BLOCK_BYTES, version, placementId, shard },
      payload,
      this.#host.replicaTimeoutMs,
    );
  }
}
