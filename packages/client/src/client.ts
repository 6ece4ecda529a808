/**
 * The storpool client library: one connection to every disk, each request routed to the primary
 * of its object's shard, split at object boundaries and sent in parallel; retried through map
 * changes, reconnects and replica failures until a deadline. Used by the block service, the iSCSI
 * target and tools.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { StorpoolError, toStorpoolError } from '@storpool/errors';
import { ConnectionPool, ShardMapView, type ShardMapSource, type WireRequest } from '@storpool/net';
import {
  COMPARE_AND_WRITE_BYTES_MAX,
  OBJECT_BYTES,
  Op,
  PARENTS_MAX,
  PeerRole,
  RequestFlag,
  encodeParents,
  opTakesParents,
  VOLUME_BYTES_MAX,
  chunkCrcs,
  decodeCompareAndWriteResult,
  decodeObjectList,
  decodeScrubStatus,
  decodeShardReleaseResult,
  decodeShardSyncResult,
  encodeShardReleaseRequest,
  encodeShardSyncRequest,
  type ShardReleaseRequest,
  type ShardReleaseResult,
  type ShardSyncRequest,
  type ShardSyncResult,
  encodeCrcs,
  ScrubCommand,
  firstBadChunk,
  splitDataPayload,
  type ObjectListEntry,
  type ReplyFrame,
  type ScrubStatus,
  type ShardRouter,
} from '@storpool/protocol';
import { pino, type Logger } from 'pino';

export interface ClientOptions {
  mapSource: ShardMapSource;
  /** This client host's id (SP_OURID). */
  clientId: number;
  log?: Logger;
  /** Timeout of one attempt of one request. */
  requestTimeoutMs?: number;
  /**
   * How long an operation keeps retrying transient failures (a disk down, a shard below its
   * minimum copies, a map change) before it fails; default 60 s. Infinity: as long as they last —
   * what a block device wants (as with Ceph's and StorPool's, I/O waits while the cluster recovers
   * instead of handing the file system an I/O error).
   */
  retryDeadlineMs?: number;
}

/** A retried operation is logged (warn) once it has waited this long: the operator sees why I/O stalls. */
const RETRY_WARN_AFTER_MS = 10_000;

export interface VolumeSpec {
  /** Data id of this volume's (or snapshot's) own objects: unique in the cluster, never reused. */
  volumeId: number;
  /**
   * Objects hash to shards by (placementId, objectIndex). A whole lineage (a volume, its
   * snapshots and their clones) shares one placementId, so an object and its ancestors' copies
   * live on the same disks and copy-on-write reads fall through locally. Default: volumeId.
   */
  placementId?: number;
  /** Data ids of the ancestor snapshots, nearest first: reads of blocks this volume never wrote fall through to them. */
  parents?: number[];
  sizeBytes: number;
  /** Shard group id (the volume's placement policy). */
  group: number;
  readOnly?: boolean;
}

export interface ClientCounters {
  requests: number;
  retries: number;
  mapRefreshes: number;
  checksumRetries: number;
}

const RETRY_BACKOFF_MS_MIN = 20;
const RETRY_BACKOFF_MS_MAX = 1_000;

export class StorpoolClient {
  readonly counters: ClientCounters = { requests: 0, retries: 0, mapRefreshes: 0, checksumRetries: 0 };
  readonly #view: ShardMapView;
  readonly #pool: ConnectionPool;
  readonly #requestTimeoutMs: number;
  readonly #retryDeadlineMs: number;
  readonly #purgeTimeoutMs: number;
  readonly log: Logger;
  #closed = false;

  private constructor(view: ShardMapView, options: ClientOptions) {
    this.#view = view;
    this.log = options.log ?? pino({ level: 'silent' });
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#retryDeadlineMs = options.retryDeadlineMs ?? 60_000;
    this.#purgeTimeoutMs = Math.max(this.#requestTimeoutMs, 120_000);
    this.#pool = new ConnectionPool({ view, clusterId: view.router.map.clusterId, role: PeerRole.CLIENT, senderId: options.clientId, log: this.log });
  }

  static async connect(options: ClientOptions): Promise<StorpoolClient> {
    return new StorpoolClient(await ShardMapView.open(options.mapSource), options);
  }

  get router(): ShardRouter {
    return this.#view.router;
  }

  volume(spec: VolumeSpec): Volume {
    if (!Number.isSafeInteger(spec.volumeId) || spec.volumeId < 1) throw new StorpoolError('CONFIG_ERR_INVALID', `volume id ${spec.volumeId} must be a positive integer`);
    if (!Number.isSafeInteger(spec.sizeBytes) || spec.sizeBytes < 0 || spec.sizeBytes > VOLUME_BYTES_MAX) throw new StorpoolError('CONFIG_ERR_INVALID', `volume size ${spec.sizeBytes} is out of range`);
    if (this.router.group(spec.group) === undefined) throw new StorpoolError('MAP_ERR_INVALID', `shard group ${spec.group} is not in the shard map`);
    const parents = spec.parents ?? [];
    if (parents.length > PARENTS_MAX) throw new StorpoolError('CONFIG_ERR_INVALID', `volume ${spec.volumeId} has ${parents.length} ancestors; at most ${PARENTS_MAX} are supported`);
    for (const p of [spec.placementId ?? spec.volumeId, ...parents]) {
      if (!Number.isSafeInteger(p) || p < 1) throw new StorpoolError('CONFIG_ERR_INVALID', `data id ${p} must be a positive integer`);
    }
    return new Volume(this, spec);
  }

  /**
   * Sends one request to the current primary of (volume, object), retrying transient failures:
   * a stale or moved map refreshes it, a lost connection reconnects, until the deadline.
   * `fill.version` is 0 but for COMPARE_AND_WRITE (its attempt token, the same on every retry).
   */
  async toPrimary(target: ObjectTarget, objectIndex: number, fill: Pick<WireRequest, 'op' | 'flags' | 'offset' | 'length'> & { version?: number }, payload: readonly Uint8Array[], check?: (reply: ReplyFrame) => void): Promise<ReplyFrame> {
    const { group, volumeId, placementId, parents } = target;
    const withParents = target.parentBytes.length > 0 && opTakesParents(fill.op) ? [...payload, target.parentBytes] : payload;
    const parentCount = withParents === payload ? 0 : parents.length;
    const started = Date.now();
    const deadline = started + this.#retryDeadlineMs;
    let backoff = RETRY_BACKOFF_MS_MIN;
    let warned = false;
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new StorpoolError('CLIENT_ERR_CLOSED', 'client closed');
      const router = this.#view.router;
      this.counters.requests++;
      try {
        const { shard, replicas } = router.locate(group, placementId, objectIndex);
        // Every field spelled out: one object shape for every request (a spread of `fill` was not).
        const fields: WireRequest = { op: fill.op, flags: fill.flags, epoch: router.epoch, group, parentCount, volumeId, objectIndex, offset: fill.offset, length: fill.length, version: fill.version ?? 0, placementId, shard };
        const reply = await this.#pool.request(replicas[0]!, fields, withParents, this.#requestTimeoutMs);
        check?.(reply);
        return reply;
      } catch (err) {
        const e = toStorpoolError(err);
        if (!e.transient || this.#closed) throw e;
        if (Date.now() + backoff > deadline) {
          throw new StorpoolError('CLIENT_ERR_TIMEOUT', `volume ${volumeId} object ${objectIndex}: gave up after ${attempt + 1} attempts in ${this.#retryDeadlineMs} ms; last error ${e.code}: ${e.message}`, { cause: e });
        }
        this.counters.retries++;
        if (!warned && Date.now() - started >= RETRY_WARN_AFTER_MS) {
          warned = true;
          this.log.warn({ volumeId, objectIndex, code: e.code, message: e.message, waitedMs: Date.now() - started }, 'I/O is waiting for the cluster (retrying)');
        }
        if (e.code === 'WIRE_ERR_CHECKSUM') this.counters.checksumRetries++;
        if (e.code.startsWith('MAP_ERR_')) {
          this.counters.mapRefreshes++;
          await this.#view.refresh();
        } else {
          this.log.debug({ volumeId, objectIndex, code: e.code, message: e.message, attempt }, 'retrying');
          await sleep(backoff);
          backoff = Math.min(backoff * 2, RETRY_BACKOFF_MS_MAX);
          // A moved primary shows up as a connection failure before any stale-epoch answer.
          await this.#view.refresh().catch(() => undefined);
        }
      }
    }
  }

  /**
   * One disk's own copy of an object range of a data id (no forwarding, no repair, no fall-through
   * to parents): for checks and tools. placementId defaults to volumeId.
   */
  async readReplica(diskId: number, group: number, volumeId: number, objectIndex: number, offset: number, length: number, placementId = volumeId): Promise<{ data: Buffer; version: number }> {
    const conn = await this.#pool.get(diskId);
    let reply;
    for (let attempt = 1; ; attempt++) {
      const router = this.#view.router;
      const { shard } = router.locate(group, placementId, objectIndex);
      try {
        reply = await conn.request({ op: Op.REPLICA_READ, flags: RequestFlag.NO_REPAIR, epoch: router.epoch, group, parentCount: 0, volumeId, objectIndex, offset, length, version: 0, placementId, shard }, [], this.#requestTimeoutMs);
        break;
      } catch (err) {
        // The map moved on under us: read it again and ask the same disk at the new epoch.
        if (attempt >= 3 || !(err instanceof StorpoolError) || err.code !== 'MAP_ERR_STALE_EPOCH') throw err;
        await this.refreshMap();
      }
    }
    const { data, crcs } = splitDataPayload(reply.payload, length);
    if (firstBadChunk(data, crcs) !== -1) throw new StorpoolError('WIRE_ERR_CHECKSUM', `replica read from disk ${diskId}: CRC mismatch`);
    return { data, version: reply.header.version };
  }

  async listObjects(diskId: number, after?: { volumeId: number; objectIndex: number }, limit = 4096): Promise<ObjectListEntry[]> {
    const conn = await this.#pool.get(diskId);
    const reply = await conn.request(diskRequest(Op.OBJECT_LIST, this.#view.router.epoch, { volumeId: after?.volumeId ?? 0, objectIndex: after?.objectIndex ?? 0, length: limit }), [], this.#requestTimeoutMs);
    return decodeObjectList(reply.payload);
  }

  async diskStats(diskId: number): Promise<Record<string, unknown>> {
    const conn = await this.#pool.get(diskId);
    const reply = await conn.request(diskRequest(Op.STATS, this.#view.router.epoch, {}), [], this.#requestTimeoutMs);
    return JSON.parse(reply.payload.toString('utf8')) as Record<string, unknown>;
  }

  /**
   * Closes this client's connection to a disk found unresponsive: requests in flight to it fail
   * with CLIENT_ERR_CONNECTION now rather than at their deadlines; the next request reconnects.
   */
  dropConnection(diskId: number, reason: string): void {
    this.#pool.drop(diskId, reason);
  }

  /** One round trip to a disk (liveness); rejects after `timeoutMs`. */
  async ping(diskId: number, timeoutMs = this.#requestTimeoutMs): Promise<void> {
    const conn = await this.#pool.get(diskId);
    await conn.request(diskRequest(Op.PING, this.#view.router.epoch, {}), [], timeoutMs);
  }

  /**
   * Asks the shard primary `primaryDisk` to bring `request.target` up to date for some shards
   * (SHARD_SYNC, catch-up). Resolves when the copy is complete.
   */
  async shardSync(primaryDisk: number, request: ShardSyncRequest, timeoutMs: number): Promise<ShardSyncResult> {
    const conn = await this.#pool.get(primaryDisk);
    const reply = await conn.request(diskRequest(Op.SHARD_SYNC, this.#view.router.epoch, { group: request.group }), [encodeShardSyncRequest(request)], timeoutMs);
    return decodeShardSyncResult(reply.payload);
  }

  /** Asks a disk to forget its copies of shards that moved away (it checks that they did). */
  async shardRelease(diskId: number, request: ShardReleaseRequest, timeoutMs: number): Promise<ShardReleaseResult> {
    const conn = await this.#pool.get(diskId);
    const reply = await conn.request(diskRequest(Op.SHARD_RELEASE, this.#view.router.epoch, { group: request.group }), [encodeShardReleaseRequest(request)], timeoutMs);
    return decodeShardReleaseResult(reply.payload);
  }

  /** Starts a scrub pass on a disk (a running one goes on), stops it, or only reports (the default). */
  async scrub(diskId: number, command: 'start' | 'stop' | 'status' = 'status'): Promise<ScrubStatus> {
    const code = command === 'start' ? ScrubCommand.START : command === 'stop' ? ScrubCommand.STOP : ScrubCommand.STATUS;
    const conn = await this.#pool.get(diskId);
    const reply = await conn.request(diskRequest(Op.SCRUB, this.#view.router.epoch, { offset: code }), [], this.#requestTimeoutMs);
    return decodeScrubStatus(reply.payload);
  }

  /**
   * Deletes every object of a data id (a deleted volume or snapshot) on every disk of the map.
   * Resolves with the number of objects released; durable on every disk when it resolves.
   * Retries disks that are unreachable until the deadline.
   */
  async purge(volumeId: number): Promise<number> {
    if (!Number.isSafeInteger(volumeId) || volumeId < 1) throw new StorpoolError('CONFIG_ERR_INVALID', `data id ${volumeId} must be a positive integer`);
    const counts = await Promise.all(
      this.#view.router.map.disks.map((d) =>
        this.#withRetry(`purge of ${volumeId} on disk ${d.id}`, async () => {
          const conn = await this.#pool.get(d.id);
          const reply = await conn.request(diskRequest(Op.PURGE, this.#view.router.epoch, { volumeId }), [], this.#purgeTimeoutMs);
          return reply.header.version;
        }),
      ),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  async #withRetry<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#retryDeadlineMs;
    let backoff = RETRY_BACKOFF_MS_MIN;
    for (;;) {
      try {
        return await attempt();
      } catch (err) {
        const e = toStorpoolError(err);
        if (!e.transient || this.#closed) throw e;
        if (Date.now() + backoff > deadline) throw new StorpoolError('CLIENT_ERR_TIMEOUT', `${what}: gave up after ${this.#retryDeadlineMs} ms; last error ${e.code}: ${e.message}`, { cause: e });
        this.counters.retries++;
        await sleep(backoff);
        backoff = Math.min(backoff * 2, RETRY_BACKOFF_MS_MAX);
      }
    }
  }

  refreshMap(): Promise<ShardRouter> {
    return this.#view.refresh();
  }

  close(): void {
    this.#closed = true;
    this.#pool.close();
  }
}

/** Where a volume's objects are: its data id, lineage, ancestors and shard group. */
export interface ObjectTarget {
  group: number;
  volumeId: number;
  placementId: number;
  parents: readonly number[];
  /** The parents as they travel on the wire (encoded once per volume). */
  parentBytes: Buffer;
}

function diskRequest(op: (typeof Op)[keyof typeof Op], epoch: number, fill: Partial<WireRequest>): WireRequest {
  return { op, flags: 0, epoch, group: 0, parentCount: 0, volumeId: 0, objectIndex: 0, offset: 0, length: 0, version: 0, placementId: 0, shard: 0, ...fill };
}

interface Piece {
  objectIndex: number;
  /** Offset within the object. */
  offset: number;
  length: number;
  /** Offset within the caller's buffer. */
  at: number;
}

/** Cuts [offset, offset+length) of a volume at object boundaries. */
export function splitByObject(offset: number, length: number): Piece[] {
  const pieces: Piece[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const objectIndex = Math.floor(pos / OBJECT_BYTES);
    const inObject = pos - objectIndex * OBJECT_BYTES;
    const n = Math.min(OBJECT_BYTES - inObject, end - pos);
    pieces.push({ objectIndex, offset: inObject, length: n, at: pos - offset });
    pos += n;
  }
  return pieces;
}

/** I/O on one volume. Every method resolves only when the whole range is done (durably, for writes). */
export class Volume {
  readonly spec: VolumeSpec;
  readonly #client: StorpoolClient;
  readonly #target: ObjectTarget;

  constructor(client: StorpoolClient, spec: VolumeSpec) {
    this.#client = client;
    this.spec = spec;
    const parents = spec.parents ?? [];
    this.#target = { group: spec.group, volumeId: spec.volumeId, placementId: spec.placementId ?? spec.volumeId, parents, parentBytes: encodeParents(parents) };
  }

  get sizeBytes(): number {
    return this.spec.sizeBytes;
  }

  #check(offset: number, length: number, writing: boolean): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.spec.sizeBytes) {
      throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `range ${offset}+${length} is outside volume ${this.spec.volumeId} of ${this.spec.sizeBytes} bytes`);
    }
    if (writing && this.spec.readOnly === true) throw new StorpoolError('CONFIG_ERR_INVALID', `volume ${this.spec.volumeId} is open read-only`);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#check(offset, length, false);
    const pieces = splitByObject(offset, length);
    // Within one object (nearly every read): the reply's bytes, not a copy.
    if (pieces.length === 1) return (await this.#readPiece(pieces[0]!)).subarray(0, length);
    const out = Buffer.allocUnsafe(length);
    await Promise.all(
      pieces.map(async (p) => {
        (await this.#readPiece(p)).copy(out, p.at, 0, p.length);
      }),
    );
    return out;
  }

  /** One object's part of a read: the reply payload, its data first (checked against its CRCs). */
  async #readPiece(p: Piece): Promise<Buffer> {
    const reply = await this.#client.toPrimary(this.#target, p.objectIndex, { op: Op.READ, flags: 0, offset: p.offset, length: p.length }, [], (r) => {
      const { data, crcs } = splitDataPayload(r.payload, p.length);
      if (firstBadChunk(data, crcs) !== -1) throw new StorpoolError('WIRE_ERR_CHECKSUM', `read of volume ${this.spec.volumeId} object ${p.objectIndex}: data does not match its CRC32C`);
    });
    return reply.payload;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#check(offset, data.length, true);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
    await Promise.all(
      splitByObject(offset, data.length).map((p) => {
        const slice = buf.subarray(p.at, p.at + p.length);
        // CRCs are computed once, here, and checked by the primary, every replica and every read.
        return this.#client.toPrimary(this.#target, p.objectIndex, { op: Op.WRITE, flags: 0, offset: p.offset, length: p.length }, [slice, encodeCrcs(chunkCrcs(slice))]);
      }),
    );
  }

  /**
   * Atomically, cluster-wide: if [offset, offset + compare.length) holds `compare`, writes `data`
   * over it (durably on every replica, as `write`) and resolves -1; else writes nothing and
   * resolves the offset of the first differing byte within the range. The shard primary of the
   * object executes it under the lock that orders every write to the range, so two clients (two
   * iSCSI portals, two hosts) racing on one range never both win. The range must lie inside one
   * 4 MiB object and hold at most COMPARE_AND_WRITE_BYTES_MAX bytes (STORE_ERR_OUT_OF_RANGE).
   * Retried as `write` is (map refresh, reconnect); every retry carries the same attempt token, so
   * a retry of an attempt the primary already wrote is answered "written", not "miscompare".
   */
  async compareAndWrite(offset: number, compare: Uint8Array, data: Uint8Array): Promise<number> {
    const length = data.length;
    if (compare.length !== length) throw new StorpoolError('CONFIG_ERR_INVALID', `compare-and-write: ${compare.length} compare bytes for ${length} data bytes`);
    this.#check(offset, length, true);
    if (length === 0) return -1;
    if (length > COMPARE_AND_WRITE_BYTES_MAX) throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `compare-and-write of ${length} bytes exceeds ${COMPARE_AND_WRITE_BYTES_MAX}`);
    const [piece, ...rest] = splitByObject(offset, length);
    if (piece === undefined || rest.length > 0) {
      const boundary = (Math.floor(offset / OBJECT_BYTES) + 1) * OBJECT_BYTES;
      throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `compare-and-write of ${offset}+${length} crosses the object boundary at ${boundary}: it is atomic only within one ${OBJECT_BYTES}-byte object`);
    }
    const compareBytes = asBuffer(compare);
    const dataBytes = asBuffer(data);
    let result: ReturnType<typeof decodeCompareAndWriteResult> | undefined;
    await this.#client.toPrimary(
      this.#target,
      piece.objectIndex,
      { op: Op.COMPARE_AND_WRITE, flags: 0, offset: piece.offset, length, version: attemptToken() },
      [compareBytes, encodeCrcs(chunkCrcs(compareBytes)), dataBytes, encodeCrcs(chunkCrcs(dataBytes))],
      (reply) => {
        result = decodeCompareAndWriteResult(reply.payload);
        if (!result.written && result.offset >= length) throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `miscompare offset ${result.offset} outside the ${length}-byte range`);
      },
    );
    assert(result !== undefined, 'toPrimary resolves only after check() accepted the reply');
    return result.written ? -1 : result.offset;
  }

  /** Releases the range (reads return zeros); partial blocks at the edges are zeroed. */
  trim(offset: number, length: number): Promise<void> {
    return this.#rangeOp(Op.TRIM, offset, length);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#rangeOp(Op.WRITE_ZEROES, offset, length);
  }

  /** Nothing to do: every write is durable on every replica when it is acknowledged. */
  async flush(): Promise<void> {}

  /**
   * One byte per 4 KiB block of the block-aligned range around [offset, offset+length) within each
   * object: BLOCK_DATA, BLOCK_ZERO (reads as zeros) or BLOCK_HOLE (never written in the chain).
   */
  async allocation(offset: number, length: number): Promise<Uint8Array> {
    this.#check(offset, length, false);
    const parts = await Promise.all(
      splitByObject(offset, length).map(async (p) => {
        const reply = await this.#client.toPrimary(this.#target, p.objectIndex, { op: Op.BLOCK_STATUS, flags: 0, offset: p.offset, length: p.length }, []);
        return reply.payload;
      }),
    );
    return Buffer.concat(parts);
  }

  async #rangeOp(op: typeof Op.TRIM | typeof Op.WRITE_ZEROES, offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    await Promise.all(splitByObject(offset, length).map((p) => this.#client.toPrimary(this.#target, p.objectIndex, { op, flags: 0, offset: p.offset, length: p.length }, [])));
  }
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
}

/** A COMPARE_AND_WRITE attempt token: random, non-zero, below 2^48 (the primary keys retries by it). */
function attemptToken(): number {
  return randomBytes(6).readUIntLE(0, 6) || 1;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
