/**
 * What a storage server does with each request, apart from sockets: the primary's ordering,
 * read-modify-write and fan-out to replicas, the replica's apply, and read repair.
 *
 * DURABILITY (client write): the primary acknowledges a WRITE/TRIM/WRITE_ZEROES only after its own
 * store and every replica in the shard's replica set have made it durable (each store resolves after
 * data fdatasync + index commit). A crash before the acknowledgement may leave some replicas with
 * the new data and some without; the client retries until acknowledged, which converges them.
 */
import assert from 'node:assert/strict';
import { StorpoolError } from '@storpool/errors';
import type { ConnectionPool, ShardMapView } from '@storpool/net';
import {
  BLOCK_BYTES,
  BLOCK_HOLE,
  BLOCKS_PER_OBJECT,
  Op,
  PARENT_ID_BYTES,
  RequestFlag,
  chunkCrcs,
  decodeParents,
  crc32c,
  encodeCompareAndWriteResult,
  encodeCrcs,
  encodeObjectList,
  encodeScrubStatus,
  firstBadChunk,
  opName,
  splitCompareAndWritePayload,
  splitDataPayload,
  type OpCode,
  type RequestFields,
  type RequestHeader,
  type ScrubCommandCode,
  type ScrubStatus,
  type ShardPlacement,
  type ShardRouter,
  VERSION_TERM_SCALE,
} from '@storpool/protocol';
import type { Logger } from 'pino';
import { CawAttempts, firstDifference } from './compare-and-write.js';
import { RangeLockTable } from './range-locks.js';
import { ShardRelease } from './shard-release.js';
import { ShardSync, type SyncRun } from './shard-sync.js';
import type { ObjectKey, ReadResult, StoreStats } from './store/index.js';

/** The part of DiskStore the replication layer uses. */
export interface ObjectStore {
  read(key: ObjectKey, firstBlock: number, blockCount: number): Promise<ReadResult>;
  write(key: ObjectKey, firstBlock: number, data: Buffer, crcs: Uint32Array, version: number): Promise<void>;
  trim(key: ObjectKey, firstBlock: number, blockCount: number, version: number): Promise<void>;
  /** Removes the object with its version (see DiskStore.forget). */
  forget(key: ObjectKey): Promise<void>;
  /** Sets the object's version exactly, lower included (see DiskStore.setVersion). */
  setVersion(key: ObjectKey, version: number): Promise<void>;
  zero(key: ObjectKey, firstBlock: number, blockCount: number, version: number): Promise<void>;
  repair(key: ObjectKey, block: number, data: Buffer, crc: number): Promise<unknown>;
  allocation(key: ObjectKey, firstBlock: number, blockCount: number): Uint8Array;
  objectVersion(key: ObjectKey): number;
  listObjects(options: { after?: ObjectKey; limit: number }): { key: ObjectKey; version: number; allocatedBlocks: number }[];
  stats(): StoreStats;
}

export interface OpResult {
  payload: Uint8Array[];
  version: number;
}

export interface ShardServiceOptions {
  diskId: number;
  store: ObjectStore;
  view: ShardMapView;
  /** Connections to the other disks (this disk as a PEER). */
  peers: ConnectionPool;
  log: Logger;
  /** Timeout of one replica request. */
  replicaTimeoutMs: number;
  /** More counters for STATS (the listener's). */
  statsExtra?: () => Record<string, unknown>;
  /** The disk's scrubber (SCRUB op); without it SCRUB is refused. */
  scrub?: (command: ScrubCommandCode) => ScrubStatus;
}

/** Where a block's good copy may be: the shard's replicas (read repair) or, without it, anywhere (scrub). */
export interface RepairRoute {
  group: number;
  placementId: number;
  shard: number;
}

/** A bad local block to repair: its index in the object and the CRC32C this disk's index holds for it. */
export interface BadBlock {
  block: number;
  crc: number;
}

export interface ServiceCounters {
  requests: number;
  staleEpochRefused: number;
  readRepairs: number;
  readRepairFailures: number;
  replicaWrites: number;
  replicaFailures: number;
  compareAndWrites: number;
  compareAndWriteMiscompares: number;
  /** Retries of an attempt this primary had written, answered "written" (see CawAttempts). */
  compareAndWriteRetriesWritten: number;
}

const OBJECT_LIST_LIMIT_MAX = 65536;
/**
 * How long a recovery request planned on a newer map (SHARD_SYNC, SHARD_RELEASE, a catch-up's
 * OBJECT_LIST) waits for this server to see that map: its publication may lag the leader's decision
 * by a moment, and failing costs the leader a whole round.
 */
const MAP_CATCH_UP_MS = 2_000;

export class ShardService {
  readonly counters: ServiceCounters = { requests: 0, staleEpochRefused: 0, readRepairs: 0, readRepairFailures: 0, replicaWrites: 0, replicaFailures: 0, compareAndWrites: 0, compareAndWriteMiscompares: 0, compareAndWriteRetriesWritten: 0 };
  readonly #o: ShardServiceOptions;
  readonly #locks = new RangeLockTable();
  /** Next version per object at this primary; seeded from the store on first use. */
  readonly #versions = new Map<string, number>();
  readonly #cawAttempts = new CawAttempts();
  readonly #sync: ShardSync;
  readonly #release: ShardRelease;
  #prunedAtEpoch = 0;

  constructor(options: ShardServiceOptions) {
    this.#o = options;
    const host = {
      diskId: options.diskId,
      store: options.store,
      peers: options.peers,
      log: options.log,
      replicaTimeoutMs: options.replicaTimeoutMs,
      router: () => options.view.router,
      routerAt: (epoch: number) => options.view.atLeast(epoch, MAP_CATCH_UP_MS),
      lockObject: (key: ObjectKey) => this.#locks.acquire(`${key.volumeId}/${key.objectIndex}`, 0, BLOCKS_PER_OBJECT),
    };
    this.#sync = new ShardSync(host);
    this.#release = new ShardRelease(host);
  }

  get epoch(): number {
    return this.#o.view.router.epoch;
  }

  /** Serves one request; the hot ops (reads, writes, replica writes) without an extra async layer. */
  handle(h: RequestHeader, payload: Buffer): Promise<OpResult> {
    this.counters.requests++;
    if (this.#prunedAtEpoch !== this.epoch) {
      this.#prunedAtEpoch = this.epoch;
      this.#sync.prune();
    }
    try {
      switch (h.op) {
        case Op.READ:
        case Op.WRITE:
        case Op.TRIM:
        case Op.WRITE_ZEROES:
        case Op.BLOCK_STATUS:
        case Op.COMPARE_AND_WRITE:
          return this.#primaryOp(h, payload);
        case Op.REPLICA_WRITE:
        case Op.REPLICA_TRIM:
        case Op.REPLICA_READ:
        case Op.COPY_READ:
          return this.#replicaOp(h, payload);
        default:
          return this.#control(h, payload);
      }
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async #control(h: RequestHeader, payload: Buffer): Promise<OpResult> {
    switch (h.op) {
      case Op.PING:
      case Op.FLUSH:
        // Every write is durable before it is acknowledged, so FLUSH has nothing left to do.
        return { payload: [], version: 0 };
      case Op.STATS:
        return { payload: [Buffer.from(JSON.stringify({ diskId: this.#o.diskId, epoch: this.epoch, store: this.#o.store.stats(), service: this.counters, sync: this.#sync.counters, release: this.#release.counters, ...this.#o.statsExtra?.() }))], version: 0 };
      case Op.SHARD_SYNC:
        return { payload: [Buffer.from(JSON.stringify(await this.#sync.run(h, payload)))], version: 0 };
      case Op.SHARD_RELEASE:
        return { payload: [Buffer.from(JSON.stringify(await this.#release.run(h, payload)))], version: 0 };
      case Op.OBJECT_LIST:
        // At the lister's epoch, with no forget of a surplus copy still in flight (see shard-release.ts).
        if (h.epoch > this.epoch) await this.#o.view.atLeast(h.epoch, MAP_CATCH_UP_MS);
        await this.#release.settled();
        return this.#objectList(h);
      case Op.PURGE:
        return this.#purge(h);
      case Op.SCRUB:
        if (this.#o.scrub === undefined) throw new StorpoolError('WIRE_ERR_UNSUPPORTED_OP', `disk ${this.#o.diskId} has no scrubber`);
        return { payload: [encodeScrubStatus(this.#o.scrub(h.offset as ScrubCommandCode))], version: 0 };
      case Op.HELLO:
        throw new StorpoolError('WIRE_ERR_FRAME_INVALID', 'HELLO after the handshake');
      default:
        throw new StorpoolError('WIRE_ERR_UNSUPPORTED_OP', `${opName(h.op)} is not served here`);
    }
  }

  /**
   * Checks the request's epoch and this disk's role; returns the shard's placement (at once when
   * this server's map is not behind the request's, the common case).
   */
  #route(h: RequestHeader, role: 'primary' | 'replica'): ShardPlacement | Promise<ShardPlacement> {
    const router = this.#o.view.router;
    // The map the request was planned on may reach this server's map file a moment later; one
    // refresh is not enough (it may join a load that began before the file changed).
    if (h.epoch > router.epoch) return this.#o.view.atLeast(h.epoch, MAP_CATCH_UP_MS).then((r) => this.#routeOn(h, role, r));
    return this.#routeOn(h, role, router);
  }

  #routeOn(h: RequestHeader, role: 'primary' | 'replica', router: ShardRouter): ShardPlacement {
    // Still behind: deciding this disk's role (and a write's replicas) on an older map than the
    // client's could leave out a copy the newer map has. The client retries.
    if (h.epoch > router.epoch) throw new StorpoolError('MAP_ERR_STALE_EPOCH', `disk ${this.#o.diskId} is at map epoch ${router.epoch}, behind the request's ${h.epoch}; retry once its map catches up`);
    if (h.epoch < router.epoch) {
      this.counters.staleEpochRefused++;
      throw new StorpoolError('MAP_ERR_STALE_EPOCH', `request epoch ${h.epoch} < server epoch ${router.epoch}`);
    }
    const { shard } = locate(router, h);
    if (shard !== h.shard) throw new StorpoolError('MAP_ERR_INVALID', `object ${h.placementId}/${h.objectIndex} is in shard ${shard}, request says ${h.shard}`);
    const placement = router.shard(h.group, shard);
    if (role === 'primary' && placement.replicas[0] !== this.#o.diskId) {
      throw new StorpoolError('MAP_ERR_NOT_PRIMARY', `disk ${this.#o.diskId} is not the primary of group ${h.group} shard ${shard} (epoch ${router.epoch})`);
    }
    // A joining disk takes the primary's writes (and catch-up copies) but serves no reads.
    const member = placement.replicas.includes(this.#o.diskId) || (h.op !== Op.REPLICA_READ && placement.joining.includes(this.#o.diskId));
    if (role === 'replica' && !member) {
      throw new StorpoolError('MAP_ERR_NOT_REPLICA', `disk ${this.#o.diskId} holds no replica of group ${h.group} shard ${shard} (epoch ${router.epoch})`);
    }
    return placement;
  }

  #primaryOp(h: RequestHeader, payload: Buffer): Promise<OpResult> {
    const placement = this.#route(h, 'primary');
    if (placement instanceof Promise) return placement.then((p) => this.#primaryOn(h, payload, p));
    return this.#primaryOn(h, payload, placement);
  }

  /** Throws (no rejected promise) on a request refused outright: handle() turns that into one. */
  #primaryOn(h: RequestHeader, payload: Buffer, placement: ShardPlacement): Promise<OpResult> {
    const replicas = placement.replicas;
    const key = { volumeId: h.volumeId, objectIndex: h.objectIndex };
    if (h.length === 0) return Promise.resolve({ payload: [], version: this.#o.store.objectVersion(key) });
    const firstBlock = Math.floor(h.offset / BLOCK_BYTES);
    const endBlock = Math.ceil((h.offset + h.length) / BLOCK_BYTES);
    const parents = decodeParents(payload, h.parentCount);
    switch (h.op) {
      case Op.READ:
        return this.#read(h, key, firstBlock, endBlock, replicas, parents);
      case Op.BLOCK_STATUS:
        return Promise.resolve({ payload: [Buffer.from(this.#allocation(key, firstBlock, endBlock - firstBlock, parents))], version: this.#o.store.objectVersion(key) });
      case Op.WRITE: {
        const { data, crcs } = splitDataPayload(payload, h.length, h.parentCount * PARENT_ID_BYTES);
        if (firstBadChunk(data, crcs) !== -1) throw new StorpoolError('WIRE_ERR_CHECKSUM', `write to ${h.volumeId}/${h.objectIndex}@${h.offset}: data does not match its CRC32C (corrupted in transit)`);
        return this.#mutate(h, key, firstBlock, endBlock, placement, parents, data, crcs);
      }
      case Op.TRIM:
      case Op.WRITE_ZEROES:
        return this.#mutate(h, key, firstBlock, endBlock, placement, parents, undefined, undefined);
      case Op.COMPARE_AND_WRITE:
        return this.#compareAndWrite(h, key, firstBlock, endBlock, placement, parents, payload);
      default:
        throw new StorpoolError('WIRE_ERR_UNSUPPORTED_OP', `${opName(h.op)} is not a primary op`);
    }
  }

  #read(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, replicas: readonly number[], parents: readonly number[]): Promise<OpResult> {
    // Without parents (most volumes): one store read and one reaction, unless a block is bad.
    if (parents.length === 0) {
      return this.#o.store.read(key, firstBlock, endBlock - firstBlock).then((result) =>
        result.bad.length === 0 ? this.#readReply(h, firstBlock, result) : this.#repaired(h, key, firstBlock, result, replicas).then((r) => this.#readReply(h, firstBlock, r)),
      );
    }
    return this.#readChain(h, key, firstBlock, endBlock, replicas, parents).then((result) => this.#readReply(h, firstBlock, result));
  }

  #readReply(h: RequestHeader, firstBlock: number, result: ReadResult): OpResult {
    const skip = h.offset - firstBlock * BLOCK_BYTES;
    if (skip === 0 && h.length % BLOCK_BYTES === 0) {
      // Aligned: the CRCs kept on disk travel to the client unchanged (end to end).
      return { payload: [result.data, encodeCrcs(result.crcs)], version: result.version };
    }
    const data = result.data.subarray(skip, skip + h.length);
    return { payload: [data, encodeCrcs(chunkCrcs(data))], version: result.version };
  }

  /**
   * The blocks as the volume sees them: its own, and for blocks it never wrote (holes) the
   * nearest ancestor's. A whole lineage shares a placementId, so every ancestor's copy of this
   * object is in this same shard, on this disk: copy-on-write reads never leave the server.
   */
  async #readChain(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, replicas: readonly number[], parents: readonly number[]): Promise<ReadResult> {
    const count = endBlock - firstBlock;
    const result = await this.#readVerified(h, key, firstBlock, count, replicas);
    for (const parent of parents) {
      const holes: number[] = [];
      for (let i = 0; i < count; i++) if (result.allocated[i] === BLOCK_HOLE) holes.push(i);
      if (holes.length === 0) break;
      const from = holes[0]!;
      const upper = await this.#readVerified(h, { volumeId: parent, objectIndex: key.objectIndex }, firstBlock + from, holes[holes.length - 1]! - from + 1, replicas);
      for (const i of holes) {
        const state = upper.allocated[i - from]!;
        if (state === BLOCK_HOLE) continue;
        upper.data.copy(result.data, i * BLOCK_BYTES, (i - from) * BLOCK_BYTES, (i - from + 1) * BLOCK_BYTES);
        result.crcs[i] = upper.crcs[i - from]!;
        result.allocated[i] = state;
      }
    }
    return result;
  }

  /** A store read whose bad blocks were replaced by good copies from replicas (or an error). */
  async #readVerified(h: RequestHeader, key: ObjectKey, firstBlock: number, count: number, replicas: readonly number[]): Promise<ReadResult> {
    const result = await this.#o.store.read(key, firstBlock, count);
    return result.bad.length > 0 ? this.#repaired(h, key, firstBlock, result, replicas) : result;
  }

  /** The read with its bad blocks replaced by good copies from replicas (or an error). */
  async #repaired(h: RequestHeader, key: ObjectKey, firstBlock: number, result: ReadResult, replicas: readonly number[]): Promise<ReadResult> {
    if ((h.flags & RequestFlag.NO_REPAIR) !== 0) throw this.#corrupt(key, firstBlock, result.bad);
    await this.#repairBlocks(h, key, firstBlock, result, replicas);
    return result;
  }

  /** Per block: DATA or ZERO from the nearest of the volume and its parents that has it, else HOLE. */
  #allocation(key: ObjectKey, firstBlock: number, count: number, parents: readonly number[]): Uint8Array {
    const map = this.#o.store.allocation(key, firstBlock, count);
    for (const parent of parents) {
      if (!map.includes(BLOCK_HOLE)) break;
      const upper = this.#o.store.allocation({ volumeId: parent, objectIndex: key.objectIndex }, firstBlock, count);
      for (let i = 0; i < count; i++) if (map[i] === BLOCK_HOLE) map[i] = upper[i]!;
    }
    return map;
  }

  /** Replaces bad local blocks with a good copy from another replica, in place in `result`. */
  async #repairBlocks(h: RequestHeader, key: ObjectKey, firstBlock: number, result: ReadResult, replicas: readonly number[]): Promise<void> {
    const others = replicas.filter((id) => id !== this.#o.diskId);
    const bad = result.bad.map((rel) => ({ block: firstBlock + rel, crc: result.crcs[rel]! }));
    const copies = await this.repairFromPeers(key, bad, others, { group: h.group, placementId: h.placementId, shard: h.shard });
    for (const rel of result.bad) {
      const copy = copies.get(firstBlock + rel);
      if (copy === undefined) {
        this.counters.readRepairFailures++;
        throw this.#corrupt(key, firstBlock, [rel]);
      }
      copy.data.copy(result.data, rel * BLOCK_BYTES);
      result.crcs[rel] = copy.crc;
      this.counters.readRepairs++;
    }
  }

  /**
   * Fetches a good copy of each bad block of an object from the `peers` (in order) and writes it
   * over the local one (DiskStore.repair: applied only while the block still holds the CRC that
   * failed, so a block rewritten meanwhile is left alone). With `route`, the peers are asked as
   * replicas of that shard (REPLICA_READ, epoch-checked) and their own consistent copy is taken,
   * as for a primary's read. Without it (the scrubber: the store does not know an object's
   * lineage), each peer is asked for its copy wherever it keeps it (COPY_READ), and a copy is
   * taken only when its bytes match `crc`, the CRC this disk holds: the same content that was
   * written here, never another version. Returns the copies found, by block; a block missing from
   * the result had no good copy on any peer.
   */
  async repairFromPeers(key: ObjectKey, blocks: readonly BadBlock[], peers: readonly number[], route?: RepairRoute): Promise<Map<number, { data: Buffer; crc: number }>> {
    const out = new Map<number, { data: Buffer; crc: number }>();
    for (const { block, crc } of blocks) {
      assert(block >= 0 && block < BLOCKS_PER_OBJECT);
      for (const peer of peers) {
        if (peer === this.#o.diskId) continue;
        try {
          const conn = await this.#o.peers.get(peer);
          const reply = await conn.request(
            { op: route === undefined ? Op.COPY_READ : Op.REPLICA_READ, flags: RequestFlag.NO_REPAIR, epoch: this.epoch, group: route?.group ?? 0, parentCount: 0, volumeId: key.volumeId, objectIndex: key.objectIndex, offset: block * BLOCK_BYTES, length: BLOCK_BYTES, version: 0, placementId: route?.placementId ?? 0, shard: route?.shard ?? 0 },
            [],
            this.#o.replicaTimeoutMs,
          );
          const { data, crcs } = splitDataPayload(reply.payload, BLOCK_BYTES);
          const wanted = route === undefined ? crc >>> 0 : crcs[0]!;
          if (crc32c(data) !== wanted) continue;
          const copy = Buffer.from(data);
          await this.#o.store.repair(key, block, copy, wanted);
          out.set(block, { data: copy, crc: wanted });
          this.#o.log.warn({ volumeId: key.volumeId, objectIndex: key.objectIndex, block, from: peer }, 'corrupt block repaired from replica');
          break;
        } catch (err) {
          this.#o.log.warn({ volumeId: key.volumeId, objectIndex: key.objectIndex, block, peer, err: (err as Error).message }, 'replica could not supply a good copy');
        }
      }
    }
    return out;
  }

  #corrupt(key: ObjectKey, firstBlock: number, bad: readonly number[]): StorpoolError {
    return new StorpoolError('STORE_ERR_CHECKSUM', `disk ${this.#o.diskId}: object ${key.volumeId}/${key.objectIndex} blocks ${bad.map((b) => b + firstBlock).join(',')} fail their CRC32C and no replica has a good copy`);
  }

  /**
   * WRITE (data given) or TRIM/WRITE_ZEROES (data undefined). Whole blocks in the range are
   * written (or released); partial edge blocks are read, merged and written whole.
   */
  #mutate(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, placement: ShardPlacement, parents: readonly number[], data: Buffer | undefined, crcs: Uint32Array | undefined): Promise<OpResult> {
    requireMinReplicas(h, placement);
    const lockKey = `${key.volumeId}/${key.objectIndex}`;
    const release = this.#locks.tryAcquire(lockKey, firstBlock, endBlock - firstBlock);
    if (release === null) return this.#locks.acquire(lockKey, firstBlock, endBlock - firstBlock).then((r) => this.#mutateLocked(h, key, firstBlock, endBlock, placement, parents, data, crcs, r));
    return this.#mutateLocked(h, key, firstBlock, endBlock, placement, parents, data, crcs, release);
  }

  async #mutateLocked(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, placement: ShardPlacement, parents: readonly number[], data: Buffer | undefined, crcs: Uint32Array | undefined, release: () => void): Promise<OpResult> {
    const replicas = placement.replicas;
    let result: OpResult;
    const toCopy: SyncRun[] = [];
    try {
      // Decided under the range lock: a catch-up copy of the object (whole lock) cannot slip in between.
      const fan = this.#fanout(placement, h, key, toCopy);
      const version = this.#nextVersion(key, placement.term);
      const start = h.offset;
      const end = h.offset + h.length;
      const headPartial = start % BLOCK_BYTES !== 0;
      const tailPartial = end % BLOCK_BYTES !== 0;
      const writes: Promise<void>[] = [];
      if (data !== undefined) {
        assert(crcs !== undefined);
        let blocks: Buffer;
        let blockCrcs: Uint32Array;
        if (!headPartial && !tailPartial) {
          blocks = data;
          blockCrcs = crcs; // client's CRCs go to disk as they are: end to end
        } else {
          blocks = await this.#merged(h, key, firstBlock, endBlock, start, data, replicas, parents);
          blockCrcs = chunkCrcs(blocks);
        }
        writes.push(...this.#fanOutWrite(h, key, fan, firstBlock, blocks, blockCrcs, version));
      } else {
        // Edges are zero-filled blocks (written); whole blocks in between are released (thin).
        const wholeFirst = Math.ceil(start / BLOCK_BYTES);
        const wholeEnd = Math.floor(end / BLOCK_BYTES);
        if (headPartial || (tailPartial && firstBlock === endBlock - 1)) {
          const edge = await this.#merged(h, key, firstBlock, firstBlock + 1, start, Buffer.alloc(Math.min(end, (firstBlock + 1) * BLOCK_BYTES) - start), replicas, parents);
          writes.push(...this.#fanOutWrite(h, key, fan, firstBlock, edge, chunkCrcs(edge), version));
        }
        if (tailPartial && endBlock - 1 > firstBlock) {
          const tailStart = (endBlock - 1) * BLOCK_BYTES;
          const edge = await this.#merged(h, key, endBlock - 1, endBlock, tailStart, Buffer.alloc(end - tailStart), replicas, parents);
          writes.push(...this.#fanOutWrite(h, key, fan, endBlock - 1, edge, chunkCrcs(edge), version));
        }
        // With parents, a hole would show the parent's data again: leave zero markers instead.
        if (wholeEnd > wholeFirst) writes.push(...this.#fanOutTrim(h, key, fan, wholeFirst, wholeEnd - wholeFirst, version, parents.length > 0));
      }
      await settleAll(writes);
      result = { payload: [], version };
    } finally {
      release();
    }
    for (const s of toCopy) await this.#sync.pushLocked(s, key, h.placementId, h.shard);
    return result;
  }

  /**
   * COMPARE_AND_WRITE: under the same range lock as WRITE (so ordered with every write, trim and
   * other compare-and-write of an overlapping range at this primary, the only place they all pass),
   * read the range as the volume sees it, compare, and only on equality write it as WRITE does: one
   * new version, the same fan-out to replicas and joining disks. Replicas get an ordinary
   * REPLICA_WRITE; a miscompare changes nothing anywhere.
   *
   * DURABILITY: as WRITE's: "written" is answered only after the local store and every replica
   * made the write durable. A failure after the local write leaves the same state as a failed
   * WRITE (some copies new, the client retries); the retry with the same token is answered
   * "written" while this primary remembers the attempt (CawAttempts), never "miscompare".
   */
  async #compareAndWrite(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, placement: ShardPlacement, parents: readonly number[], payload: Buffer): Promise<OpResult> {
    const { compare, compareCrcs, data, crcs } = splitCompareAndWritePayload(payload, h.length, h.parentCount);
    if (firstBadChunk(compare, compareCrcs) !== -1 || firstBadChunk(data, crcs) !== -1) {
      throw new StorpoolError('WIRE_ERR_CHECKSUM', `compare-and-write to ${h.volumeId}/${h.objectIndex}@${h.offset}: data does not match its CRC32C (corrupted in transit)`);
    }
    requireMinReplicas(h, placement);
    this.counters.compareAndWrites++;
    const token = h.version;
    let result: OpResult;
    const toCopy: SyncRun[] = [];
    const release = await this.#locks.acquire(`${key.volumeId}/${key.objectIndex}`, firstBlock, endBlock - firstBlock);
    try {
      const current = await this.#readChain(h, key, firstBlock, endBlock, placement.replicas, parents);
      const skip = h.offset - firstBlock * BLOCK_BYTES;
      const range = current.data.subarray(skip, skip + h.length);
      const retried = this.#cawAttempts.wasWritten(key, token);
      const at = retried ? -1 : firstDifference(range, compare);
      if (at >= 0) {
        this.counters.compareAndWriteMiscompares++;
        result = { payload: [encodeCompareAndWriteResult({ written: false, offset: at })], version: current.version };
      } else if (retried && !range.equals(data)) {
        // Written by the earlier attempt, and changed since by a later write: nothing to redo.
        this.counters.compareAndWriteRetriesWritten++;
        result = { payload: [encodeCompareAndWriteResult({ written: true })], version: current.version };
      } else {
        if (retried) this.counters.compareAndWriteRetriesWritten++;
        // Written again even on a retry: a replica the first attempt missed gets the data.
        result = await this.#writeCompared(h, key, firstBlock, placement, current.data, skip, data, crcs, token, toCopy);
      }
    } finally {
      release();
    }
    for (const s of toCopy) await this.#sync.pushLocked(s, key, h.placementId, h.shard);
    return result;
  }

  /** The write half of COMPARE_AND_WRITE, under its range lock: `data` laid over the blocks just read. */
  async #writeCompared(h: RequestHeader, key: ObjectKey, firstBlock: number, placement: ShardPlacement, current: Buffer, skip: number, data: Buffer, crcs: Uint32Array, token: number, toCopy: SyncRun[]): Promise<OpResult> {
    const fan = this.#fanout(placement, h, key, toCopy);
    const version = this.#nextVersion(key, placement.term);
    const aligned = skip === 0 && data.length % BLOCK_BYTES === 0;
    let blocks = data;
    let blockCrcs = crcs; // the client's CRCs go to disk as they are: end to end
    if (!aligned) {
      blocks = Buffer.from(current);
      data.copy(blocks, skip);
      blockCrcs = chunkCrcs(blocks);
    }
    const writes = this.#fanOutWrite(h, key, fan, firstBlock, blocks, blockCrcs, version);
    const results = await Promise.allSettled(writes);
    // writes[0] is the local store's: once it holds the data, a retry must not see a miscompare.
    if (results[0]!.status === 'fulfilled' && token > 0) this.#cawAttempts.recordWritten(key, token);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    return { payload: [encodeCompareAndWriteResult({ written: true })], version };
  }

  /**
   * Where a mutation goes besides the local store. Joining disks: a synced one is a replica; while
   * its copy runs, verified objects get the write (its failure stops the copy, not the write) and
   * the others go to `toCopy` (a whole-object copy after the write). No joining disk, no allocation.
   */
  #fanout(placement: ShardPlacement, h: RequestHeader, key: ObjectKey, toCopy: SyncRun[]): Fanout {
    if (placement.joining.length === 0) return { replicas: placement.replicas, joiners: NO_JOINERS };
    let replicas = placement.replicas;
    const joiners: SyncRun[] = [];
    for (const target of placement.joining) {
      const route = this.#sync.route(target, h.group, h.shard);
      if (route === undefined) continue;
      if (route.kind === 'replica') replicas = [...replicas, target];
      else if (this.#sync.isVerified(route.run, key)) joiners.push(route.run);
      else toCopy.push(route.run);
    }
    return { replicas, joiners };
  }

  /**
   * The version of this primary's next mutation of the object: above every version it has seen,
   * and in this primary's term (see ShardGroup.terms).
   */
  #nextVersion(key: ObjectKey, term: number): number {
    const id = `${key.volumeId}/${key.objectIndex}`;
    const next = Math.max(this.#versions.get(id) ?? 0, this.#o.store.objectVersion(key), term * VERSION_TERM_SCALE - 1) + 1;
    this.#versions.set(id, next);
    return next;
  }

  /** The blocks [firstBlock, endBlock) as the volume sees them now, with `data` laid over them at byte `start`. */
  async #merged(h: RequestHeader, key: ObjectKey, firstBlock: number, endBlock: number, start: number, data: Buffer, replicas: readonly number[], parents: readonly number[]): Promise<Buffer> {
    const current = await this.#readChain(h, key, firstBlock, endBlock, replicas, parents);
    const blocks = Buffer.from(current.data);
    data.copy(blocks, start - firstBlock * BLOCK_BYTES);
    return blocks;
  }

  #fanOutWrite(h: RequestHeader, key: ObjectKey, fan: Fanout, firstBlock: number, blocks: Buffer, crcs: Uint32Array, version: number): Promise<void>[] {
    const out: Promise<void>[] = [this.#o.store.write(key, firstBlock, blocks, crcs, version)];
    const crcBytes = encodeCrcs(crcs);
    const rh = this.#replicaRequest(h, Op.REPLICA_WRITE, 0, firstBlock * BLOCK_BYTES, blocks.length, version);
    for (const peer of fan.replicas) {
      if (peer === this.#o.diskId) continue;
      out.push(this.#toReplica(peer, rh, [blocks, crcBytes]));
    }
    for (const s of fan.joiners) out.push(this.#toJoiner(s, key, rh, [blocks, crcBytes]));
    return out;
  }

  #fanOutTrim(h: RequestHeader, key: ObjectKey, fan: Fanout, firstBlock: number, blockCount: number, version: number, zeroMarkers: boolean): Promise<void>[] {
    const store = this.#o.store;
    const out: Promise<void>[] = [zeroMarkers ? store.zero(key, firstBlock, blockCount, version) : store.trim(key, firstBlock, blockCount, version)];
    const flags = zeroMarkers ? RequestFlag.ZERO_MARKERS : 0;
    const rh = this.#replicaRequest(h, Op.REPLICA_TRIM, flags, firstBlock * BLOCK_BYTES, blockCount * BLOCK_BYTES, version);
    for (const peer of fan.replicas) {
      if (peer === this.#o.diskId) continue;
      out.push(this.#toReplica(peer, rh, []));
    }
    for (const s of fan.joiners) out.push(this.#toJoiner(s, key, rh, []));
    return out;
  }

  /** The primary's request to replicas and joining disks, at this server's epoch (fields spelled out: one object shape). */
  #replicaRequest(h: RequestHeader, op: OpCode, flags: number, offset: number, length: number, version: number): RequestFields {
    return { op, flags, epoch: this.epoch, group: h.group, parentCount: 0, volumeId: h.volumeId, objectIndex: h.objectIndex, offset, length, version, placementId: h.placementId, shard: h.shard };
  }

  /** A joining disk's copy of a write while its catch-up runs: a failure stops the copy, not the client's write. */
  #toJoiner(run: SyncRun, key: ObjectKey, rh: RequestFields, payload: Uint8Array[]): Promise<void> {
    return this.#o.peers.request(run.session.target, rh, payload, this.#o.replicaTimeoutMs).then(
      () => undefined,
      (err: unknown) => this.#sync.forwardFailed(run, key, err),
    );
  }

  #toReplica(peer: number, rh: RequestFields, payload: Uint8Array[]): Promise<void> {
    this.counters.replicaWrites++;
    return this.#o.peers.request(peer, rh, payload, this.#o.replicaTimeoutMs).then(
      () => undefined,
      (err: unknown) => {
        this.counters.replicaFailures++;
        const e = err as StorpoolError;
        // A replica's own verdict (no space, bad data) is passed on as it is; anything else is a failed replica.
        if (e instanceof StorpoolError && (e.code === 'STORE_ERR_NO_SPACE' || e.code === 'WIRE_ERR_CHECKSUM' || e.code === 'MAP_ERR_STALE_EPOCH')) throw e;
        throw new StorpoolError('REPL_ERR_REPLICA_FAILED', `replica disk ${peer} did not confirm: ${e.message}`, { cause: err });
      },
    );
  }


  #replicaOp(h: RequestHeader, payload: Buffer): Promise<OpResult> {
    // COPY_READ serves this disk's copy wherever the map places the object (the scrubber's source).
    const routed = h.op === Op.COPY_READ ? undefined : this.#route(h, 'replica');
    if (routed instanceof Promise) return routed.then(() => this.#replicaOn(h, payload));
    return this.#replicaOn(h, payload);
  }

  /** Throws (no rejected promise) on a request refused outright: handle() turns that into one. */
  #replicaOn(h: RequestHeader, payload: Buffer): Promise<OpResult> {
    const key = { volumeId: h.volumeId, objectIndex: h.objectIndex };
    if (h.offset % BLOCK_BYTES !== 0 || h.length % BLOCK_BYTES !== 0) {
      throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `${opName(h.op)} must cover whole 4 KiB blocks (offset ${h.offset}, length ${h.length})`);
    }
    const firstBlock = h.offset / BLOCK_BYTES;
    const blockCount = h.length / BLOCK_BYTES;
    if (blockCount === 0) return Promise.resolve({ payload: [], version: this.#o.store.objectVersion(key) });
    const replace = (h.flags & RequestFlag.REPLACE) !== 0;
    if (replace && ((h.flags & RequestFlag.SYNC) === 0 || (h.op !== Op.REPLICA_WRITE && h.op !== Op.REPLICA_TRIM))) {
      throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `REPLACE is a flag of a catch-up copy's REPLICA_WRITE/REPLICA_TRIM, not of ${opName(h.op)}`);
    }
    switch (h.op) {
      case Op.REPLICA_WRITE: {
        const { data, crcs } = splitDataPayload(payload, h.length);
        const done = { payload: [], version: h.version };
        // The store checks every block against its CRC before writing anything (once, here).
        const written = this.#o.store.write(key, firstBlock, data, crcs, h.version);
        // The copy's last piece (the primary holds the object's lock for the whole copy): every
        // block is the primary's now, and so is the version, lower than ours included.
        if (replace) return written.then(() => this.#o.store.setVersion(key, h.version)).then(() => done);
        return written.then(() => done);
      }
      case Op.REPLICA_TRIM: {
        const store = this.#o.store;
        const released = (h.flags & RequestFlag.ZERO_MARKERS) !== 0 ? store.zero(key, firstBlock, blockCount, h.version) : store.trim(key, firstBlock, blockCount, h.version);
        const done = { payload: [], version: h.version };
        if (replace) return released.then(() => store.setVersion(key, h.version)).then(() => done);
        return released.then(() => done);
      }
      case Op.REPLICA_READ:
      case Op.COPY_READ:
        return this.#o.store.read(key, firstBlock, blockCount).then((result) => {
          if (result.bad.length > 0) throw this.#corrupt(key, firstBlock, result.bad);
          return { payload: [result.data, encodeCrcs(result.crcs)], version: result.version };
        });
      default:
        throw new StorpoolError('WIRE_ERR_UNSUPPORTED_OP', `${opName(h.op)} is not a replica op`);
    }
  }

  /**
   * Deletes every object of data id h.volumeId on this disk (all shards): a deleted volume or
   * snapshot. Reply version = objects purged. Each object's release is durable before the reply.
   */
  async #purge(h: RequestHeader): Promise<OpResult> {
    if (h.volumeId < 1) throw new StorpoolError('WIRE_ERR_FRAME_INVALID', 'PURGE needs a data id');
    const store = this.#o.store;
    let purged = 0;
    let after: ObjectKey = { volumeId: h.volumeId - 1, objectIndex: 0xffffffff };
    for (;;) {
      const batch = store.listObjects({ after, limit: 256 }).filter((o) => o.key.volumeId === h.volumeId);
      if (batch.length === 0) break;
      await Promise.all(batch.map((o) => store.forget(o.key)));
      purged += batch.length;
      after = batch[batch.length - 1]!.key;
    }
    this.#o.log.info({ volumeId: h.volumeId, objects: purged }, 'purged');
    return { payload: [], version: purged };
  }

  #objectList(h: RequestHeader): OpResult {
    const limit = Math.min(Math.max(h.length, 1), OBJECT_LIST_LIMIT_MAX);
    // volumeId/objectIndex carry the cursor (exclusive); 0/0 starts from the beginning.
    const after = h.volumeId === 0 && h.objectIndex === 0 ? undefined : { volumeId: h.volumeId, objectIndex: h.objectIndex };
    const entries = this.#o.store.listObjects(after === undefined ? { limit } : { after, limit });
    return { payload: [encodeObjectList(entries.map((e) => ({ volumeId: e.key.volumeId, objectIndex: e.key.objectIndex, allocatedBlocks: e.allocatedBlocks, version: e.version })))], version: 0 };
  }
}

/** Where a mutation goes besides the local store: replicas (must confirm) and disks being copied to. */
interface Fanout {
  replicas: readonly number[];
  joiners: readonly SyncRun[];
}

const NO_JOINERS: readonly SyncRun[] = Object.freeze([]);

function requireMinReplicas(h: RequestHeader, placement: ShardPlacement): void {
  if (placement.replicas.length < placement.minReplicas) {
    throw new StorpoolError('REPL_ERR_TOO_FEW_REPLICAS', `group ${h.group} shard ${h.shard} has ${placement.replicas.length} in-sync copies, fewer than its minimum ${placement.minReplicas}: writes wait until a disk returns or is replaced`);
  }
}

function locate(router: ShardRouter, h: RequestHeader): { shard: number; replicas: readonly number[] } {
  return router.locate(h.group, h.placementId, h.objectIndex);
}

/**
 * Waits for every promise; then rejects with the failure of the first one (in array order: the
 * local store's verdict before a replica's) that failed, so no write is left running unobserved.
 * One promise, not Promise.allSettled's result objects and reactions.
 */
function settleAll(promises: Promise<void>[]): Promise<void> {
  return new Promise((resolve, reject) => {
    let left = promises.length;
    let failedAt = promises.length;
    let failure: unknown;
    const settled = (): void => {
      if (--left > 0) return;
      if (failedAt < promises.length) reject(failure);
      else resolve();
    };
    promises.forEach((p, i) => {
      p.then(settled, (err: unknown) => {
        if (i < failedAt) {
          failedAt = i;
          failure = err;
        }
        settled();
      });
    });
    if (left === 0) resolve();
  });
}

