/**
 * DiskStore: the crash-safe, redirect-on-write object store of one storage-server disk.
 *
 * Invariants:
 * - Live data is never overwritten: a write goes to free blocks, then one LMDB transaction switches
 *   the index pointers; the old blocks are freed only after that commit, and only once no read that
 *   may have looked up the old pointer is still in flight (reads are tagged with the commit
 *   generation they looked up in).
 * - The allocator's used set is exactly: blocks referenced by the index, plus blocks allocated to
 *   the running cycle, plus blocks freed by a commit whose older readers are still in flight.
 * - A write()/trim()/zero()/repair() promise resolves only after its data and its cycle's journal
 *   record are fdatasync()ed (one flush); the index changes are then visible through an in-memory
 *   overlay until a background checkpoint writes them to LMDB; open() replays journal records the
 *   index lacks (see tryStartCycle's DURABILITY).
 * - Every allocated block has a CRC32C in the index; every read verifies it.
 *
 * See docs/on-disk-format.md for the layout and the crash-recovery argument.
 */
import { BLOCK_BYTES, BLOCK_DATA, BLOCK_ZERO, BLOCKS_PER_OBJECT, OBJECT_BYTES, ZERO_BLOCK_CRC, crc32c } from '@storpool/protocol';
import { StorpoolError } from '@storpool/errors';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { pino, type Logger } from 'pino';
import { BlockAllocator, type Extent } from './allocator.js';
import { checkIdentity, defaultIndexDir, indexExists, openIndexDb, type IndexDb } from './index-db.js';
import { preadAll, preadAllAsync, preadAllSync, storeError, writevAll, writevAllSync, type Done } from './io.js';
import {
  blockKeyBytes,
  checkObjectKey,
  decodeBlockInObject,
  decodeBlockValue,
  decodeObjectKey,
  decodeObjectValue,
  encodeBlockValue,
  encodeObjectValue,
  objectKeyBytes,
  type ObjectKey,
  type ObjectValue,
} from './keys.js';
import { CYCLE_BYTES_MAX, CYCLE_OPS_MAX, CYCLE_SYNC_WRITE_BYTES_MAX, LIST_OBJECTS_LIMIT_MAX, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSETS, ZERO_MARKER_PHYSICAL } from './limits.js';
import { acquireDiskLock } from './lock.js';
import { JOURNAL_BYTES, JOURNAL_OFFSET, JournalRing, RECORD_HEADER_BYTES, decodeRecord, encodeRecord, journalSalt, recordBodyBytes, recordBytes, type JournalOp } from './journal.js';
import { ReadPath, type ReadPathOptions } from './read-path.js';
import { chooseSuperblock, type Superblock } from './superblock.js';

export interface DiskStoreOptions {
  /** Index directory; default `${path}.idx`. Required for block devices. */
  indexDir?: string;
  /** Default: a silent logger. */
  logger?: Logger;
  /** When small reads go synchronously (page-cache hits) instead of through the threadpool. */
  readPath?: Partial<ReadPathOptions>;
}

export interface ReadResult {
  /** blockCount * 4096 bytes; holes read as zeros. */
  data: Buffer;
  /** Per block: the stored CRC32C, or ZERO_BLOCK_CRC for a hole. */
  crcs: Uint32Array;
  /** Per block: BLOCK_DATA, BLOCK_ZERO (a zero marker: reads as zeros, hides parents) or BLOCK_HOLE. */
  allocated: Uint8Array;
  /** Block indexes (relative to firstBlock) whose data on disk does not match its CRC32C. */
  bad: number[];
  /** The object's version (0 when never written). */
  version: number;
}

export interface ObjectInfo {
  key: ObjectKey;
  version: number;
  allocatedBlocks: number;
}

export interface StoreStats {
  blocksTotal: number;
  blocksUsed: number;
  blocksFree: number;
  reads: number;
  writes: number;
  trims: number;
  /** Group-commit cycles that committed an index transaction. */
  commits: number;
  writesCommitted: number;
  corruptBlocksFound: number;
  corruptBlocksRepaired: number;
  noSpaceErrors: number;
  /** Reads done synchronously on the event loop / through the threadpool (see read-path.ts). */
  syncReads: number;
  asyncReads: number;
  slowSyncReads: number;
}

type OpKind = 'write' | 'trim' | 'zero' | 'repair' | 'forget' | 'version';

/** Ops that write data blocks (allocated, written, then referenced); the others change the index only. */
function carriesData(kind: OpKind): boolean {
  return kind === 'write' || kind === 'repair';
}

interface Op {
  kind: OpKind;
  key: ObjectKey;
  firstBlock: number;
  blockCount: number;
  /** write/repair only. Must not be modified by the caller until the promise settles. */
  data: Buffer | null;
  crcs: Uint32Array | null;
  version: number;
  /** Physical block of each logical block (write/repair), set by allocation. */
  phys: Uint32Array | null;
  /** repair only: whether the repair was applied. */
  applied: boolean;
  resolve: (applied: boolean) => void;
  reject: (err: Error) => void;
}

interface PendingFree {
  /** Generation whose commit freed the blocks; reads of older generations may still use them. */
  generation: number;
  blocks: number[];
}

interface Lookup {
  version: number;
  /** Data blocks: index relative to the first block, physical block, CRC. */
  index: number[];
  phys: number[];
  crcs: number[];
  /** Zero markers: index relative to the first block. */
  zeros: number[];
}

const EMPTY_OBJECT: ObjectValue = { version: 0, allocatedBlocks: 0 };

export class DiskStore {
  readonly path: string;
  readonly indexDir: string;
  readonly superblock: Superblock;
  private readonly fd: number;
  private readonly db: IndexDb;
  private readonly allocator: BlockAllocator;
  private readonly log: Logger;
  private readonly releaseLock: () => Promise<void>;
  private readonly readPath: ReadPath;
  private readonly readBuffers = new BufferSlab();

  private queue: Op[] = [];
  /** Sequence number of the last journal record written. */
  private journalSeq: number;
  private readonly ring: JournalRing;
  private readonly journalSaltValue: number;
  /** A cycle is allocating/writing/fdatasyncing its data (stage 1). */
  /**
   * The running cycle's ops (allocate, write, journal, fdatasync, publish), or null. One cycle at
   * a time: ops arriving meanwhile queue for the next one, which is what batches them; the LMDB
   * checkpoint runs apart, in the background.
   */
  private cycle: Op[] | null = null;
  private cycleScheduled = false;
  /** Journal sequence of the last cycle made durable and visible (published). */
  private publishedSeq: number;
  /** Ring position after that cycle's record. */
  private publishedPos: number;
  /**
   * The index changes of published cycles not yet checkpointed into LMDB, by object id (latin1
   * object key). Reads and later cycles see LMDB through them. A checkpoint takes them all (they
   * become `checkpointing`, under the changes published meanwhile) and writes them in one LMDB
   * transaction; the journal holds them durably until then.
   */
  private overlay = new Map<string, ObjectChange>();
  /** The changes the running checkpoint writes, seen under `overlay` until LMDB has them. */
  private checkpointing: Map<string, ObjectChange> | null = null;
  private checkpointRunning: Promise<void> | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private readonly reader: IndexReader;
  /** Set when a data fdatasync or an index commit failed: the on-disk state is unknown until reopen. */
  private failed: StorpoolError | null = null;
  private closing = false;
  private idleWaiters: (() => void)[] = [];

  /** Bumped after every committed index transaction. */
  private generation = 0;
  private readonly readsByGeneration = new Map<number, number>();
  private readsInFlight = 0;
  private pendingFrees: PendingFree[] = [];

  private readonly counters = {
    reads: 0,
    writes: 0,
    trims: 0,
    commits: 0,
    writesCommitted: 0,
    corruptBlocksFound: 0,
    corruptBlocksRepaired: 0,
    noSpaceErrors: 0,
  };

  private constructor(init: {
    path: string;
    indexDir: string;
    superblock: Superblock;
    fd: number;
    db: IndexDb;
    allocator: BlockAllocator;
    log: Logger;
    releaseLock: () => Promise<void>;
    journal: { seq: number; pos: number };
    readPath: ReadPath;
  }) {
    this.journalSeq = init.journal.seq;
    this.publishedSeq = init.journal.seq;
    this.publishedPos = init.journal.pos;
    this.ring = new JournalRing(init.journal.pos);
    this.ring.flushedThrough(init.journal.seq);
    this.journalSaltValue = journalSalt(init.superblock.diskUuid);
    this.path = init.path;
    this.indexDir = init.indexDir;
    this.superblock = init.superblock;
    this.fd = init.fd;
    this.db = init.db;
    this.allocator = init.allocator;
    this.log = init.log;
    this.releaseLock = init.releaseLock;
    this.readPath = init.readPath;
    this.reader = this.overlayReader();
  }

  /**
   * Opens a formatted disk: validates the superblock (either copy), checks the index belongs to this
   * disk, and rebuilds the allocator from the index. Recovery needs nothing more: blocks written
   * by a cycle whose index commit never happened are simply not referenced, hence free.
   */
  static async open(path: string, opts: DiskStoreOptions = {}): Promise<DiskStore> {
    const log = opts.logger ?? pino({ level: 'silent' });
    const st = await fs.promises.stat(path).catch((err: unknown) => {
      throw new StorpoolError('STORE_ERR_DISK_INVALID', `cannot open disk ${path}: ${(err as Error).message}; run \`storpool-server disk init\` first`);
    });
    if (st.isBlockDevice() && opts.indexDir === undefined) {
      throw new StorpoolError('CONFIG_ERR_INVALID', `${path} is a block device: pass indexDir`);
    }
    const indexDir = opts.indexDir ?? defaultIndexDir(path);
    const fh = await fs.promises.open(path, 'r+');
    let stage = 'superblock';
    let db: IndexDb | null = null;
    let releaseLock: (() => Promise<void>) | null = null;
    try {
      const superblock = await readSuperblock(fh.fd, path);
      if (st.isFile() && st.size < superblock.diskBytes) {
        throw new StorpoolError('STORE_ERR_DISK_INVALID', `${path} is ${st.size} bytes but its superblock says ${superblock.diskBytes}; the file was truncated`);
      }
      if (!(await indexExists(indexDir))) {
        throw new StorpoolError('STORE_ERR_DISK_INVALID', `index ${indexDir} of ${path} is missing; pass the right indexDir, or run \`storpool-server disk init --force\` (loses the data)`);
      }
      stage = 'lock';
      releaseLock = await acquireDiskLock(path, indexDir);
      stage = 'index';
      db = openIndexDb(indexDir);
      checkIdentity(db, indexDir, { diskUuid: superblock.diskUuid, clusterId: superblock.clusterId, diskId: superblock.diskId });
      stage = 'journal replay';
      const journal = await replayJournal(fh.fd, db, log, path, journalSalt(superblock.diskUuid));
      stage = 'allocator';
      const allocator = rebuildAllocator(db, superblock, indexDir);
      log.info({ path, indexDir, diskId: superblock.diskId, blocksUsed: allocator.usedBlocks, blocksTotal: allocator.blockCount, journalSeq: journal.seq }, 'disk store opened');
      const fd = fs.openSync(path, 'r+');
      return new DiskStore({ path, indexDir, superblock, fd, db, allocator, log, releaseLock, journal, readPath: new ReadPath(opts.readPath) });
    } catch (err) {
      if (db !== null) await db.root.close();
      if (releaseLock !== null) await releaseLock();
      throw err instanceof StorpoolError ? err : storeError(err, `opening ${path} (${stage})`);
    } finally {
      await fh.close();
    }
  }

  /**
   * Writes whole blocks [firstBlock, firstBlock + data.length/4096) of one object.
   *
   * DURABILITY: when the promise resolves, the data is in newly allocated blocks and the new index
   * pointers (with their CRCs and the object's version = max(old, version)) are in the cycle's
   * journal record, both made durable by the cycle's one fdatasync(disk fd), and the pointers are
   * visible to reads (overlay, checkpointed into LMDB later). Until then the old pointers stay live, so a crash at
   * any step leaves either the old or the new content of the whole write, never a mix (one record,
   * one transaction). A rejected write left the index unchanged for it. Recovery: open() replays
   * the journal records the index lacks, then rebuilds the allocator; blocks written but never
   * journaled are unreferenced and so free again.
   */
  async write(key: ObjectKey, firstBlock: number, data: Buffer, crcs: Uint32Array, version: number): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    checkVersion(version);
    if (data.length === 0 || data.length % BLOCK_BYTES !== 0 || data.length > OBJECT_BYTES) {
      throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `write of ${data.length} bytes: must be a non-zero multiple of ${BLOCK_BYTES} and at most ${OBJECT_BYTES}`);
    }
    const blockCount = data.length / BLOCK_BYTES;
    checkRange(firstBlock, blockCount);
    if (crcs.length !== blockCount) {
      throw new StorpoolError('CONFIG_ERR_INVALID', `write of ${blockCount} blocks carries ${crcs.length} CRCs`);
    }
    checkCrcs(data, crcs);
    this.counters.writes++;
    await this.enqueue('write', key, firstBlock, blockCount, data, crcs, version);
  }

  /**
   * Deallocates whole blocks; they read back as zeros. Also records the object's version.
   *
   * DURABILITY: when the promise resolves, the removal of the blocks' index entries is in the
   * cycle's journal record (fdatasync()ed) and visible to reads. The freed blocks are reused
   * only after that, so a crash before it leaves the old data readable and intact; after it, holes.
   */
  async trim(key: ObjectKey, firstBlock: number, blockCount: number, version: number): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    checkVersion(version);
    checkRange(firstBlock, blockCount);
    this.counters.trims++;
    await this.enqueue('trim', key, firstBlock, blockCount, null, null, version);
  }

  /**
   * Removes the object altogether: its blocks are released and its entry leaves the index, version
   * included (objectVersion() is 0 again, listObjects() no longer shows it). For copies this disk no
   * longer holds (a deleted volume, a shard that moved away): a trim would keep the version, and a
   * later catch-up comparing versions would take the emptied copy for a current one.
   *
   * DURABILITY: as for trim(): journaled and committed before the promise resolves.
   */
  async forget(key: ObjectKey): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    this.counters.trims++;
    await this.enqueue('forget', key, 0, BLOCKS_PER_OBJECT, null, null, 0);
  }

  /**
   * Sets the object's version to exactly `version`, lower than the current one included (versions
   * otherwise only grow): the last step of a copy that makes this disk's object equal to another
   * disk's, content and version. Version 0 on an object without data blocks drops its entry, as
   * forget() does. No block changes.
   *
   * DURABILITY: as for trim(): journaled and committed before the promise resolves.
   */
  async setVersion(key: ObjectKey, version: number): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    checkVersion(version);
    await this.enqueue('version', key, 0, 0, null, null, version);
  }

  /**
   * Marks whole blocks as zeros without falling through to parent snapshots (zero markers), and
   * releases the data blocks they replace. For trim/write-zeroes in a volume that has parents.
   *
   * DURABILITY: as for trim(): journaled and committed before the promise resolves.
   */
  async zero(key: ObjectKey, firstBlock: number, blockCount: number, version: number): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    checkVersion(version);
    checkRange(firstBlock, blockCount);
    this.counters.trims++;
    await this.enqueue('zero', key, firstBlock, blockCount, null, null, version);
  }

  /**
   * Replaces a block whose on-disk data failed its CRC with a good copy (from a replica). The copy
   * must match the CRC the index holds for the block; when the block was rewritten or trimmed since
   * the failed read, nothing is changed (the bad block is gone already). The version is kept.
   *
   * DURABILITY: as for write(): new block and journal record fdatasync()ed, then the pointer switched;
   * a crash before that leaves the (bad) old block, which the next read reports again.
   */
  async repair(key: ObjectKey, block: number, data: Buffer, crc: number): Promise<void> {
    this.checkUsable();
    checkObjectKey(key);
    checkRange(block, 1);
    if (data.length !== BLOCK_BYTES) {
      throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `repair of ${data.length} bytes: must be one ${BLOCK_BYTES}-byte block`);
    }
    const crcs = Uint32Array.of(crc >>> 0);
    checkCrcs(data, crcs);
    await this.enqueue('repair', key, block, 1, data, crcs, 0);
  }

  /** Reads whole blocks, verifying every allocated block's CRC32C. */
  read(key: ObjectKey, firstBlock: number, blockCount: number): Promise<ReadResult> {
    try {
      this.checkUsable();
      checkObjectKey(key);
      checkRange(firstBlock, blockCount);
    } catch (err) {
      return Promise.reject(err);
    }
    this.counters.reads++;
    const generation = this.readBegin();
    let lookup: Lookup;
    let result: ReadResult;
    let later: Promise<void> | null;
    try {
      lookup = this.lookup(key, firstBlock, blockCount);
      const full = lookup.index.length === blockCount;
      result = {
        data: full ? this.readBuffers.take(blockCount * BLOCK_BYTES) : Buffer.alloc(blockCount * BLOCK_BYTES),
        crcs: new Uint32Array(blockCount).fill(ZERO_BLOCK_CRC),
        allocated: new Uint8Array(blockCount),
        bad: [],
        version: lookup.version,
      };
      // Page-cache hits complete here: one resolved promise, no async function around it.
      later = this.readRunsNow(result.data, lookup) ? null : this.readRunsLater(result.data, lookup);
    } catch (err) {
      this.readEnd(generation);
      return Promise.reject(err);
    }
    const finish = (): ReadResult => {
      try {
        this.verifyRead(result, lookup, key, firstBlock);
        return result;
      } finally {
        this.readEnd(generation);
      }
    };
    if (later === null) {
      try {
        return Promise.resolve(finish());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return later.then(finish, (err: unknown) => {
      this.readEnd(generation);
      throw err;
    });
  }

  /** Per block of [firstBlock, firstBlock + blockCount): BLOCK_HOLE, BLOCK_DATA or BLOCK_ZERO (marker). */
  allocation(key: ObjectKey, firstBlock: number, blockCount: number): Uint8Array {
    this.checkUsable();
    checkObjectKey(key);
    checkRange(firstBlock, blockCount);
    const map = new Uint8Array(blockCount);
    for (const [b, p] of this.reader.pointers(key, objectKeyBytes(key).toString('latin1'), firstBlock, blockCount)) {
      map[b - firstBlock] = p.physical === ZERO_MARKER_PHYSICAL ? BLOCK_ZERO : BLOCK_DATA;
    }
    return map;
  }

  /** The object's version: the max of all versions written or trimmed; 0 when never written. */
  objectVersion(key: ObjectKey): number {
    this.checkUsable();
    checkObjectKey(key);
    const keyBytes = objectKeyBytes(key);
    return this.reader.object(keyBytes, keyBytes.toString('latin1'))?.version ?? 0;
  }

  /** Objects in key order, starting after `after` (exclusive). Includes objects trimmed empty, not forgotten ones. */
  listObjects(opts: { after?: ObjectKey; limit: number }): ObjectInfo[] {
    this.checkUsable();
    if (!Number.isInteger(opts.limit) || opts.limit < 1 || opts.limit > LIST_OBJECTS_LIMIT_MAX) {
      throw new StorpoolError('CONFIG_ERR_INVALID', `listObjects limit ${opts.limit} must be in [1, ${LIST_OBJECTS_LIMIT_MAX}]`);
    }
    if (opts.after !== undefined) checkObjectKey(opts.after);
    const after = opts.after === undefined ? null : objectKeyBytes(opts.after);
    const found = new Map<string, { keyBytes: Buffer; value: ObjectValue }>();
    const range = this.db.objects.getRange(after === null ? {} : { start: after });
    for (const { key, value } of range) {
      if (after !== null && after.equals(key)) continue;
      found.set(Buffer.from(key).toString('latin1'), { keyBytes: Buffer.from(key), value: decodeObjectValue(value) });
      if (found.size === opts.limit) break;
    }
    // Objects changed since the last checkpoint: newer values, and objects LMDB does not have yet.
    for (const layer of [this.checkpointing, this.overlay]) {
      if (layer === null) continue;
      for (const [id, change] of layer) if (after === null || Buffer.compare(change.keyBytes, after) > 0) found.set(id, { keyBytes: change.keyBytes, value: change.value });
    }
    return [...found.values()]
      .filter(({ value }) => !isForgotten(value))
      .sort((a, b) => Buffer.compare(a.keyBytes, b.keyBytes))
      .slice(0, opts.limit)
      .map(({ keyBytes, value }) => ({ key: decodeObjectKey(keyBytes), version: value.version, allocatedBlocks: value.allocatedBlocks }));
  }

  stats(): StoreStats {
    return {
      blocksTotal: this.allocator.blockCount,
      blocksUsed: this.allocator.usedBlocks,
      blocksFree: this.allocator.freeBlocks,
      ...this.counters,
      ...this.readPath.counters,
    };
  }

  /** Waits for queued and running cycles and in-flight reads, then closes the index and the disk. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.waitIdle();
    assert.equal(this.queue.length, 0);
    assert.equal(this.readsInFlight, 0);
    if (this.failed === null) await this.checkpoint();
    await this.db.root.close();
    await new Promise<void>((resolve, reject) => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
    await this.releaseLock();
    this.log.info({ path: this.path }, 'disk store closed');
  }

  // ---- group commit ------------------------------------------------------------------------------

  private enqueue(kind: OpKind, key: ObjectKey, firstBlock: number, blockCount: number, data: Buffer | null, crcs: Uint32Array | null, version: number): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.queue.push({ kind, key, firstBlock, blockCount, data, crcs, version, phys: null, applied: false, resolve, reject });
      this.scheduleCycle();
    });
  }

  private scheduleCycle(): void {
    // A busy pipeline starts the next cycle itself when a stage frees up.
    if (this.cycleScheduled || this.cycle !== null) return;
    this.cycleScheduled = true;
    // A microtask lets every call made in the same tick join the cycle.
    queueMicrotask(() => {
      this.cycleScheduled = false;
      this.tryStartCycle();
    });
  }

  /** Takes ops from the queue up to CYCLE_OPS_MAX / CYCLE_BYTES_MAX (always at least one). */
  private takeBatch(): Op[] {
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < CYCLE_OPS_MAX) {
      const op = this.queue[n] as Op;
      const opBytes = op.data === null ? 0 : op.data.length;
      if (n > 0 && bytes + opBytes > CYCLE_BYTES_MAX) break;
      bytes += opBytes;
      n++;
    }
    return this.queue.splice(0, n);
  }

  /**
   * One group-commit cycle: allocate, write data, write the journal record, fdatasync, publish to
   * the overlay and resolve. One cycle runs at a time; the LMDB checkpoint runs in the background.
   *
   * DURABILITY: (1) blocks are allocated in memory only (never blocks the committed index or an
   * earlier in-flight cycle references); (2) every write's data goes to its new blocks, one writev
   * per contiguous physical run; (3) one journal record holds all the cycle's index changes;
   * (4) one fdatasync(disk fd) makes data and record durable: the durability point; (5) publish():
   * the pointer changes go to the in-memory overlay that reads see, replaced blocks are queued for
   * freeing, the ops resolve; (6) a background checkpoint writes the overlay into LMDB with the
   * journal sequence it covers. Crash before (4) completes: the record is not valid, the new blocks
   * are unreferenced, the old pointers intact. Crash after (4): open() replays every record newer
   * than the index's journal sequence. Nothing is acknowledged before (5).
   */
  private tryStartCycle(): void {
    if (this.failed !== null || this.cycle !== null || this.queue.length === 0) return;
    const ops = this.takeBatch();
    assert(ops.length > 0);
    this.cycle = ops;
    const live = this.allocateCycle(ops);
    const sync = cycleDataBytes(live) <= CYCLE_SYNC_WRITE_BYTES_MAX;
    this.writeCycleData(live, sync, (err, writesFailed) => {
      if (this.failed !== null || err !== null) {
        this.fail(this.failed ?? (err as StorpoolError), ops);
        return;
      }
      const toCommit = writesFailed === null ? live : live.filter((op) => !carriesData(op.kind));
      if (writesFailed !== null) this.rejectWrites(live, writesFailed);
      if (toCommit.length === 0) {
        this.endCycle(ops);
        return;
      }
      this.journalAndSync(toCommit, sync, (syncErr, seq) => {
        if (this.failed !== null || syncErr !== null) {
          this.fail(this.failed ?? (syncErr as StorpoolError), ops);
          return;
        }
        this.publish(toCommit, seq);
        this.endCycle(ops);
      });
    });
  }

  /**
   * Writes the cycle's journal record into the ring and fdatasyncs the disk: the one flush that
   * makes the cycle's data AND its index changes durable. Waits for an index flush when the ring
   * space is still needed.
   */
  private journalAndSync(toCommit: Op[], sync: boolean, done: (err: StorpoolError | null, seq: number) => void): void {
    const seq = this.journalSeq + 1;
    const record = encodeRecord({ seq, ops: toCommit }, this.journalSaltValue);
    const start = this.ring.place(record.length);
    if (start === undefined) {
      // The ring is full of records the index does not hold yet: checkpoint now and retry.
      this.checkpoint().then(
        () => this.journalAndSync(toCommit, sync, done),
        (err: unknown) => done(storeError(err, `checkpointing the index of ${this.path}`), seq),
      );
      return;
    }
    this.journalSeq = seq;
    this.ring.written(seq, start, record.length);
    const flush = (): void => {
      fs.fdatasync(this.fd, (syncErr) => done(syncErr ? storeError(syncErr, `fdatasync of ${this.path}`) : null, seq));
    };
    if (sync) {
      // Into the page cache, on this thread: only the fdatasync below makes it durable.
      try {
        writevAllSync(this.fd, [record], JOURNAL_OFFSET + start);
      } catch (writeErr) {
        done(storeError(writeErr, `writing the journal of ${this.path}`), seq);
        return;
      }
      flush();
      return;
    }
    writevAll(this.fd, [record], JOURNAL_OFFSET + start, (writeErr) => {
      if (writeErr !== null) {
        done(storeError(writeErr, `writing the journal of ${this.path}`), seq);
        return;
      }
      flush();
    });
  }

  /**
   * The cycle is durable (data and journal record fdatasync()ed): apply its index changes to the
   * overlay, where reads and later cycles see them, free the blocks it replaced, acknowledge its
   * ops, and schedule a checkpoint. A replaced block may be reused before the checkpoint: the
   * record that replaced it is durable, so replay moves the pointer off it again.
   */
  private publish(toCommit: Op[], seq: number): void {
    assert.equal(seq, this.publishedSeq + 1, 'cycles are published in journal order');
    const changes = computeChanges(this.reader, toCommit);
    for (const [id, change] of changes.objects) mergeChange(this.overlay, id, change);
    this.publishedSeq = seq;
    this.publishedPos = this.ring.position;
    // Reads that looked up before this point may still use the replaced blocks.
    this.generation++;
    this.counters.commits++;
    if (changes.frees.length > 0) this.pendingFrees.push({ generation: this.generation, blocks: changes.frees });
    this.releaseFrees();
    for (const op of toCommit) {
      if (op.kind === 'write') this.counters.writesCommitted++;
      if (op.kind === 'repair' && op.applied) this.counters.corruptBlocksRepaired++;
      op.resolve(op.applied);
    }
    this.scheduleCheckpoint();
  }

  private scheduleCheckpoint(): void {
    if (this.checkpointRunning !== null) return;
    // Many small cycles (4 KiB of ring each) fill the ring before the timer fires: checkpoint now,
    // in the background, rather than stall a cycle on a full ring later.
    if (this.ring.liveBytes > JOURNAL_BYTES / 2) {
      this.checkpoint().catch((err: unknown) => this.failStore(storeError(err, `checkpointing the index of ${this.path}`)));
      return;
    }
    if (this.checkpointTimer !== null) return;
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = null;
      this.checkpoint().catch((err: unknown) => this.failStore(storeError(err, `checkpointing the index of ${this.path}`)));
    }, CHECKPOINT_INTERVAL_MS);
  }

  /**
   * Writes every overlay change into LMDB in one transaction (with the journal sequence it covers),
   * then drops the overlay entries nothing changed since, and, once LMDB flushed, lets the journal
   * ring reuse the covered records. Resolves when flushed.
   */
  private checkpoint(): Promise<void> {
    if (this.checkpointTimer !== null) {
      clearTimeout(this.checkpointTimer);
      this.checkpointTimer = null;
    }
    if (this.checkpointRunning !== null) {
      // One at a time; run again afterwards for what was published meanwhile.
      return this.checkpointRunning.then(() => (this.publishedSeq > this.ring.flushedSeq ? this.checkpoint() : undefined));
    }
    const seq = this.publishedSeq;
    const meta = encodeJournalMeta(seq, this.publishedPos);
    assert(this.checkpointing === null, 'one checkpoint at a time');
    const taken = this.overlay;
    // Cycles published from now on change a fresh overlay, seen above the one being written.
    this.overlay = new Map();
    this.checkpointing = taken;
    const run = this.db.root
      .transaction(() => {
        writeChanges(this.db, taken.values());
        this.db.meta.putSync(JOURNAL_META_KEY, meta);
      })
      .then(
        () => {
          // LMDB now has what was taken: reads may stop looking at it.
          this.db.root.resetReadTxn();
          this.checkpointing = null;
          return this.db.root.flushed;
        },
        (err: unknown) => {
          // LMDB did not take it: back under the changes published since, for a later attempt.
          this.untake(taken);
          throw err;
        },
      )
      .then(() => {
        this.ring.flushedThrough(seq);
      })
      .finally(() => {
        this.checkpointRunning = null;
        if (this.publishedSeq > seq && !this.closing) this.scheduleCheckpoint();
        this.notifyIdle();
      });
    this.checkpointRunning = run;
    return run;
  }

  /** Puts the changes a failed checkpoint took back into the overlay, under those published since. */
  private untake(taken: Map<string, ObjectChange>): void {
    for (const [id, newer] of this.overlay) mergeChange(taken, id, newer);
    this.overlay = taken;
    this.checkpointing = null;
  }

  /** The index as reads and new cycles must see it: the overlay over what a checkpoint is writing, over LMDB. */
  private overlayReader(): IndexReader {
    const lmdb = lmdbReader(this.db);
    return {
      object: (keyBytes, id) => this.overlay.get(id)?.value ?? this.checkpointing?.get(id)?.value ?? lmdb.object(keyBytes, id),
      pointers: (key, id, firstBlock, count) => {
        const out = lmdb.pointers(key, id, firstBlock, count);
        const older = this.checkpointing?.get(id);
        if (older !== undefined) overlayRange(out, older.blocks, firstBlock, count);
        const newer = this.overlay.get(id);
        if (newer !== undefined) overlayRange(out, newer.blocks, firstBlock, count);
        return out;
      },
    };
  }

  /** Whether published changes not yet in LMDB touch the object (its pointers may then come out of block order). */
  private changedSinceCheckpoint(id: string): boolean {
    return this.overlay.has(id) || this.checkpointing?.has(id) === true;
  }

  /** Allocates blocks for each write/repair in order; an op that does not fit fails NO_SPACE. */
  private allocateCycle(ops: Op[]): Op[] {
    const live: Op[] = [];
    for (const op of ops) {
      if (!carriesData(op.kind)) {
        live.push(op);
        continue;
      }
      const extents = this.allocator.allocate(op.blockCount);
      if (extents === null) {
        this.counters.noSpaceErrors++;
        const free = this.allocator.freeBlocks;
        this.log.warn({ path: this.path, need: op.blockCount, free }, 'disk full');
        op.reject(
          new StorpoolError(
            'STORE_ERR_NO_SPACE',
            `disk ${this.superblock.diskId} (${this.path}) is full: ${free} blocks of ${BLOCK_BYTES} bytes free, ` +
              `the write needs ${op.blockCount}; trim unused data or add disks`,
          ),
        );
        continue;
      }
      op.phys = extentsToPhys(extents, op.blockCount);
      live.push(op);
    }
    return live;
  }

  /**
   * Writes all live ops' data (one writev per contiguous physical run); journalAndSync() then
   * makes it durable. done(fatal, writesFailed): a write error fails this cycle's writes only
   * (their blocks are freed, they were never referenced).
   */
  private writeCycleData(live: Op[], sync: boolean, done: (fatal: StorpoolError | null, writesFailed: StorpoolError | null) => void): void {
    const groups = physicalRuns(live, this.superblock.dataOffset);
    if (groups.length === 0) {
      done(null, null);
      return;
    }
    let pending = groups.length;
    let firstErr: unknown = null;
    const onWritten: Done = (err) => {
      if (err !== null && firstErr === null) firstErr = err;
      if (--pending > 0) return;
      if (firstErr !== null) {
        const mapped = storeError(firstErr, `writing data to ${this.path}`);
        this.log.error({ err: firstErr, path: this.path }, 'data write failed');
        this.freeUncommitted(live);
        done(mapped.code === 'STORE_ERR_IO' ? mapped : null, mapped);
        return;
      }
      done(null, null);
    };
    if (sync) {
      // A small cycle: into the page cache on this thread (the fdatasync still goes to the pool).
      for (const g of groups) {
        let err: Error | null = null;
        try {
          writevAllSync(this.fd, g.buffers, g.position);
        } catch (e) {
          err = e as Error;
        }
        onWritten(err);
      }
      return;
    }
    for (const g of groups) writevAll(this.fd, g.buffers, g.position, onWritten);
  }

  private endCycle(ops: Op[]): void {
    assert(this.cycle === ops, 'ending the running cycle');
    this.cycle = null;
    this.tryStartCycle();
    this.notifyIdle();
  }

  private rejectWrites(ops: Op[], err: StorpoolError): void {
    for (const op of ops) if (carriesData(op.kind)) op.reject(err);
  }

  /** Frees blocks allocated to ops that were never committed. */
  private freeUncommitted(ops: Op[]): void {
    for (const op of ops) {
      if (op.phys === null) continue;
      for (const p of op.phys) this.allocator.free(p);
      op.phys = null;
    }
  }

  /**
   * A data fdatasync or index commit failed: whether the commit happened is unknown, so the store
   * stops (the allocator cannot be trusted) and every op fails; reopening rebuilds from the index.
   */
  private fail(err: StorpoolError, ops: Op[]): void {
    this.failStore(err);
    for (const op of ops) op.reject(err); // no-op for ops already settled
    this.endCycle(ops);
  }

  /** The store stops: every queued and later op fails until it is reopened (which replays the journal). */
  private failStore(err: StorpoolError): void {
    if (this.failed === null) {
      this.failed = new StorpoolError(err.code, `disk ${this.path} failed and must be reopened: ${err.message}`, { cause: err });
      this.log.error({ err, path: this.path }, 'disk store failed; reopen required');
    }
    for (const op of this.queue.splice(0)) op.reject(this.failed);
  }

  private notifyIdle(): void {
    if (this.cycle !== null || this.queue.length > 0 || this.readsInFlight > 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private waitIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.notifyIdle();
    });
  }

  private checkUsable(): void {
    if (this.closing) throw new StorpoolError('SERVER_ERR_SHUTTING_DOWN', `disk store ${this.path} is closed`);
    if (this.failed !== null) throw this.failed;
  }

  // ---- reads and deferred frees ------------------------------------------------------------------

  private readBegin(): number {
    const g = this.generation;
    this.readsByGeneration.set(g, (this.readsByGeneration.get(g) ?? 0) + 1);
    this.readsInFlight++;
    return g;
  }

  private readEnd(g: number): void {
    const n = this.readsByGeneration.get(g);
    assert(n !== undefined && n > 0, 'read generation was registered');
    if (n === 1) this.readsByGeneration.delete(g);
    else this.readsByGeneration.set(g, n - 1);
    this.readsInFlight--;
    this.releaseFrees();
    this.notifyIdle();
  }

  /** Frees blocks replaced at generation G once no read of a generation older than G is in flight. */
  private releaseFrees(): void {
    let oldest = Infinity;
    for (const g of this.readsByGeneration.keys()) oldest = Math.min(oldest, g);
    while (this.pendingFrees.length > 0 && (this.pendingFrees[0] as PendingFree).generation <= oldest) {
      const pf = this.pendingFrees.shift() as PendingFree;
      for (const p of pf.blocks) this.allocator.free(p);
    }
  }

  /** Synchronous index lookup: one snapshot for the object record and the block range. */
  private lookup(key: ObjectKey, firstBlock: number, blockCount: number): Lookup {
    const keyBytes = objectKeyBytes(key);
    const id = keyBytes.toString('latin1');
    const obj = this.reader.object(keyBytes, id);
    const out: Lookup = { version: obj?.version ?? 0, index: [], phys: [], crcs: [], zeros: [] };
    const pointers = this.reader.pointers(key, id, firstBlock, blockCount);
    const blocks = this.changedSinceCheckpoint(id) ? [...pointers.keys()].sort((a, b) => a - b) : pointers.keys();
    for (const b of blocks) {
      const v = pointers.get(b)!;
      if (v.physical === ZERO_MARKER_PHYSICAL) {
        out.zeros.push(b - firstBlock);
        continue;
      }
      assert(v.physical < this.allocator.blockCount, 'index points inside the data area');
      out.index.push(b - firstBlock);
      out.phys.push(v.physical);
      out.crcs.push(v.crc);
    }
    return out;
  }

  /**
   * Reads the runs on this thread when the read path says they are page-cache hits (or there is
   * nothing to read): true when done. Throws the read's error.
   */
  private readRunsNow(data: Buffer, lookup: Lookup): boolean {
    if (lookup.index.length === 0) return true;
    if (!this.readPath.trySync(lookup.index.length * BLOCK_BYTES)) return false;
    const start = this.readPath.now();
    try {
      for (const r of readRunsOf(data, lookup, this.superblock.dataOffset)) preadAllSync(this.fd, r.buf, r.position);
    } catch (err) {
      throw storeError(err, `reading ${this.path}`);
    }
    this.readPath.took(start);
    return true;
  }

  /** Reads each contiguous physical run with one pread through the threadpool, all runs in parallel. */
  private readRunsLater(data: Buffer, lookup: Lookup): Promise<void> {
    const runs = readRunsOf(data, lookup, this.superblock.dataOffset);
    return new Promise((resolve, reject) => {
      let pending = runs.length;
      let firstErr: unknown = null;
      const onRead: Done = (err) => {
        if (err !== null && firstErr === null) firstErr = err;
        if (--pending > 0) return;
        if (firstErr === null) resolve();
        else reject(storeError(firstErr, `reading ${this.path}`));
      };
      for (const r of runs) preadAll(this.fd, r.buf, r.position, onRead);
    });
  }

  private verifyRead(result: ReadResult, lookup: Lookup, key: ObjectKey, firstBlock: number): void {
    for (const idx of lookup.zeros) result.allocated[idx] = BLOCK_ZERO;
    for (let i = 0; i < lookup.index.length; i++) {
      const idx = lookup.index[i] as number;
      const crc = lookup.crcs[i] as number;
      result.allocated[idx] = BLOCK_DATA;
      result.crcs[idx] = crc;
      const actual = crc32c(result.data.subarray(idx * BLOCK_BYTES, (idx + 1) * BLOCK_BYTES));
      if (actual === crc) continue;
      result.bad.push(idx);
      this.counters.corruptBlocksFound++;
      this.log.error(
        { path: this.path, volumeId: key.volumeId, objectIndex: key.objectIndex, block: firstBlock + idx, physical: lookup.phys[i], expected: crc, actual },
        'block failed its CRC32C',
      );
    }
  }
}

// ---- helpers -------------------------------------------------------------------------------------

/** Bytes of one slab of read buffers. */
const READ_SLAB_BYTES = 1024 * 1024;
/** Read buffers up to this size come from a slab; bigger ones are allocated alone. */
const READ_SLAB_TAKE_MAX = 64 * 1024;

/**
 * Read buffers carved from 1 MiB slabs, as Buffer.allocUnsafe does from its 8 KiB pool for
 * buffers under 4 KiB: a 4 KiB read otherwise pays a malloc, an ArrayBuffer and its sweep (~10% of
 * a server's CPU per read). A slab is freed by the GC when no buffer cut from it is left; a read's
 * buffer lives until its reply is written.
 */
class BufferSlab {
  #slab = Buffer.allocUnsafeSlow(0);
  #used = 0;

  take(bytes: number): Buffer {
    if (bytes > READ_SLAB_TAKE_MAX) return Buffer.allocUnsafe(bytes);
    if (this.#used + bytes > this.#slab.length) {
      this.#slab = Buffer.allocUnsafeSlow(READ_SLAB_BYTES);
      this.#used = 0;
    }
    const out = this.#slab.subarray(this.#used, this.#used + bytes);
    this.#used += bytes;
    return out;
  }
}

interface Pointer {
  physical: number;
  crc: number;
}

/**
 * How long published cycles wait to be checkpointed into LMDB together. An LMDB transaction costs
 * ~0.5 ms of CPU however small, and one object's overwrites between two checkpoints are written
 * once: 250 ms took 8-12% less CPU per replicated write than 20 ms (docs/data-path.md). A
 * journal ring more than half full is checkpointed at once instead (see scheduleCheckpoint).
 */
const CHECKPOINT_INTERVAL_MS = 250;

/** What the index needs of an op: a live Op, or one replayed from the journal. */
type IndexOp = JournalOp & { applied?: boolean };

/** Reads the index as it stands (LMDB alone, or LMDB under the store's not-yet-checkpointed changes). */
interface IndexReader {
  object(keyBytes: Buffer, id: string): ObjectValue | undefined;
  /** Pointers of blocks [firstBlock, firstBlock + count) of an object. */
  pointers(key: ObjectKey, id: string, firstBlock: number, count: number): Map<number, Pointer>;
}

/** Ranges of at most this many blocks are looked up block by block instead of with a range scan. */
const POINT_LOOKUPS_MAX = 2;

function lmdbReader(db: IndexDb): IndexReader {
  return {
    object: (keyBytes) => {
      const raw = db.objects.getBinary(keyBytes);
      return raw === undefined ? undefined : decodeObjectValue(raw);
    },
    pointers: (key, _id, firstBlock, count) => {
      const out = new Map<number, Pointer>();
      if (count <= POINT_LOOKUPS_MAX) {
        // A few blocks (a 4 KiB write or read): direct gets cost ~1.4 us each, a range scan ~3.3 us.
        for (let b = firstBlock; b < firstBlock + count; b++) {
          const value = db.blocks.getBinaryFast(blockKeyBytes(key, b));
          if (value !== undefined) out.set(b, decodeBlockValue(value));
        }
        return out;
      }
      for (const { key: k, value } of db.blocks.getRange({ start: blockKeyBytes(key, firstBlock), end: blockKeyBytes(key, firstBlock + count) })) {
        out.set(decodeBlockInObject(k), decodeBlockValue(value));
      }
      return out;
    },
  };
}

/** What a batch of ops changes in the index: freed blocks, and per object its new record and block pointers. */
interface IndexChanges {
  /** Physical blocks the ops replace. */
  frees: number[];
  /** By object id (latin1 of the object key). */
  objects: Map<string, ObjectChange>;
}

/**
 * One object's changes: its record after the ops, and the final pointer (null: removed) of every
 * block they touched. The store's overlay holds these same objects, merged cycle after cycle, so a
 * changed block costs one map slot and one pointer, not a key buffer and entry objects (1 MiB
 * writes change 256 blocks each, and every entry lives until the next checkpoint).
 */
interface ObjectChange {
  key: ObjectKey;
  keyBytes: Buffer;
  value: ObjectValue;
  blocks: Map<number, Pointer | null>;
}

function computeChanges(reader: IndexReader, ops: IndexOp[]): IndexChanges {
  const changes: IndexChanges = { frees: [], objects: new Map() };
  for (const op of ops) {
    const keyBytes = objectKeyBytes(op.key);
    const id = keyBytes.toString('latin1');
    let change = changes.objects.get(id);
    if (change === undefined) {
      const current = reader.object(keyBytes, id) ?? EMPTY_OBJECT;
      change = { key: op.key, keyBytes, value: { version: current.version, allocatedBlocks: current.allocatedBlocks }, blocks: new Map() };
      changes.objects.set(id, change);
    }
    const existing = reader.pointers(op.key, id, op.firstBlock, op.blockCount);
    // The batch's earlier ops on the object come first.
    overlayRange(existing, change.blocks, op.firstBlock, op.blockCount);
    applyOp(op, change, existing, changes.frees);
  }
  return changes;
}

/** Lays a newer change of an object over what `into` holds for it (the newer record and pointers win). */
function mergeChange(into: Map<string, ObjectChange>, id: string, newer: ObjectChange): void {
  const held = into.get(id);
  if (held === undefined) {
    into.set(id, newer);
    return;
  }
  held.value = newer.value;
  for (const [b, pointer] of newer.blocks) held.blocks.set(b, pointer);
}

/** Lays `changed` (null: removed) over the pointers `out` holds of blocks [firstBlock, firstBlock + count). */
function overlayRange(out: Map<number, Pointer>, changed: Map<number, Pointer | null>, firstBlock: number, count: number): void {
  if (changed.size === 0) return;
  const apply = (b: number, pointer: Pointer | null): void => {
    if (pointer === null) out.delete(b);
    else out.set(b, pointer);
  };
  // Walk whichever is smaller: the range or the changes.
  if (count < changed.size) {
    for (let b = firstBlock; b < firstBlock + count; b++) {
      const p = changed.get(b);
      if (p !== undefined) apply(b, p);
    }
  } else {
    for (const [b, p] of changed) if (b >= firstBlock && b < firstBlock + count) apply(b, p);
  }
}

function writeChanges(db: IndexDb, objects: Iterable<ObjectChange>): void {
  for (const change of objects) {
    for (const [b, pointer] of change.blocks) {
      if (pointer === null) db.blocks.removeSync(blockKeyBytes(change.key, b));
      else db.blocks.putSync(blockKeyBytes(change.key, b), encodeBlockValue(pointer.physical, pointer.crc));
    }
    putObject(db, change.keyBytes, change.value);
  }
}

/** An object entry; a forgotten object (version 0, no blocks) has none. */
function putObject(db: IndexDb, keyBytes: Buffer, value: ObjectValue): void {
  if (isForgotten(value)) db.objects.removeSync(keyBytes);
  else db.objects.putSync(keyBytes, encodeObjectValue(value));
}

function isForgotten(value: ObjectValue): boolean {
  return value.version === 0 && value.allocatedBlocks === 0;
}

/** Applies one op to its object's change (pointers `existing` as the op finds them); replaced blocks go to `frees`. */
function applyOp(op: IndexOp, change: ObjectChange, existing: Map<number, Pointer>, frees: number[]): void {
  const obj = change.value;
  if (op.kind === 'repair') {
    const cur = existing.get(op.firstBlock);
    const crc = (op.crcs as Uint32Array)[0] as number;
    const phys = (op.phys as Uint32Array)[0] as number;
    if (cur === undefined || cur.physical === ZERO_MARKER_PHYSICAL || cur.crc !== crc) {
      frees.push(phys); // rewritten or trimmed since the failed read: drop the repair
      return;
    }
    op.applied = true;
    frees.push(cur.physical);
    change.blocks.set(op.firstBlock, { physical: phys, crc });
    return;
  }
  for (let i = 0; i < op.blockCount; i++) {
    const b = op.firstBlock + i;
    const cur = existing.get(b);
    // allocatedBlocks counts data blocks; zero markers hold no block.
    const curData = cur !== undefined && cur.physical !== ZERO_MARKER_PHYSICAL;
    if (curData) {
      frees.push(cur.physical);
      obj.allocatedBlocks--;
    }
    if (op.kind === 'trim' || op.kind === 'forget') {
      if (cur !== undefined) change.blocks.set(b, null);
      continue;
    }
    if (op.kind === 'zero') {
      change.blocks.set(b, { physical: ZERO_MARKER_PHYSICAL, crc: ZERO_BLOCK_CRC });
      continue;
    }
    obj.allocatedBlocks++;
    change.blocks.set(b, { physical: (op.phys as Uint32Array)[i] as number, crc: (op.crcs as Uint32Array)[i] as number });
  }
  assert(obj.allocatedBlocks >= 0 && obj.allocatedBlocks <= BLOCKS_PER_OBJECT, 'object block count in range');
  // Versions only grow, except that a forgotten object starts over as one never written and a
  // 'version' op (the end of a copy from another disk) sets it exactly.
  obj.version = op.kind === 'forget' ? 0 : op.kind === 'version' ? op.version : Math.max(obj.version, op.version);
}

function checkVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new StorpoolError('CONFIG_ERR_INVALID', `version ${version} must be a non-negative safe integer`);
  }
}

function checkRange(firstBlock: number, blockCount: number): void {
  if (!Number.isInteger(firstBlock) || !Number.isInteger(blockCount) || firstBlock < 0 || blockCount < 1 || firstBlock + blockCount > BLOCKS_PER_OBJECT) {
    throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `blocks [${firstBlock}, +${blockCount}) are outside the object (${BLOCKS_PER_OBJECT} blocks)`);
  }
}

function checkCrcs(data: Buffer, crcs: Uint32Array): void {
  for (let i = 0; i < crcs.length; i++) {
    const actual = crc32c(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
    if (actual !== crcs[i]) {
      throw new StorpoolError('STORE_ERR_CHECKSUM', `block ${i} of the write does not match its CRC32C (got ${actual}, expected ${crcs[i]}); nothing was written`);
    }
  }
}

/** Data bytes the cycle's live ops write. */
function cycleDataBytes(ops: readonly Op[]): number {
  let n = 0;
  for (const op of ops) if (op.data !== null && op.phys !== null) n += op.data.length;
  return n;
}

function extentsToPhys(extents: Extent[], count: number): Uint32Array {
  const phys = new Uint32Array(count);
  let i = 0;
  for (const e of extents) for (let j = 0; j < e.count; j++) phys[i++] = e.start + j;
  assert.equal(i, count, 'extents cover the write');
  return phys;
}

/** A lookup's data blocks as physically contiguous runs: the part of `data` each fills, and where on disk it is. */
function readRunsOf(data: Buffer, lookup: Lookup, dataOffset: number): { buf: Buffer; position: number }[] {
  const runs: { index: number; physical: number; count: number }[] = [];
  for (let i = 0; i < lookup.index.length; i++) {
    const last = runs[runs.length - 1];
    const idx = lookup.index[i] as number;
    const p = lookup.phys[i] as number;
    if (last !== undefined && last.index + last.count === idx && last.physical + last.count === p) last.count++;
    else runs.push({ index: idx, physical: p, count: 1 });
  }
  return runs.map((r) => ({ buf: data.subarray(r.index * BLOCK_BYTES, (r.index + r.count) * BLOCK_BYTES), position: dataOffset + r.physical * BLOCK_BYTES }));
}

/** Groups every write's blocks into physically contiguous runs: one writev (many buffers) each. */
function physicalRuns(ops: Op[], dataOffset: number): { position: number; buffers: Buffer[] }[] {
  const segs: { physical: number; count: number; buf: Buffer }[] = [];
  for (const op of ops) {
    if (op.phys === null) continue;
    const data = op.data as Buffer;
    const phys = op.phys;
    // Runs of the op's logical blocks that are physically contiguous too.
    for (let i = 0; i < op.blockCount; ) {
      let n = 1;
      while (i + n < op.blockCount && (phys[i + n] as number) === (phys[i] as number) + n) n++;
      segs.push({ physical: phys[i] as number, count: n, buf: n === op.blockCount ? data : data.subarray(i * BLOCK_BYTES, (i + n) * BLOCK_BYTES) });
      i += n;
    }
  }
  segs.sort((a, b) => a.physical - b.physical);
  const groups: { position: number; buffers: Buffer[]; end: number }[] = [];
  for (const s of segs) {
    const last = groups[groups.length - 1];
    assert(last === undefined || s.physical >= last.end, 'no physical block written twice in a cycle');
    if (last !== undefined && last.end === s.physical) {
      last.buffers.push(s.buf);
      last.end += s.count;
    } else {
      groups.push({ position: dataOffset + s.physical * BLOCK_BYTES, buffers: [s.buf], end: s.physical + s.count });
    }
  }
  return groups;
}

const JOURNAL_META_KEY = 'journal';

/** u64 seq of the last journal record the index includes, u32 ring position after it. */
function encodeJournalMeta(seq: number, pos: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(seq % 0x1_0000_0000, 0);
  b.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 4);
  b.writeUInt32LE(pos, 8);
  return b;
}

function decodeJournalMeta(b: Buffer | undefined): { seq: number; pos: number } {
  if (b === undefined) return { seq: 0, pos: 0 };
  return { seq: b.readUInt32LE(4) * 0x1_0000_0000 + b.readUInt32LE(0), pos: b.readUInt32LE(8) };
}

/** The journal record at ring offset `pos` if it is valid and has sequence `seq`. */
async function readRecordAt(fd: number, pos: number, seq: number, salt: number): Promise<{ ops: JournalOp[]; bytes: number } | undefined> {
  if (pos + RECORD_HEADER_BYTES > JOURNAL_BYTES) return undefined;
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  await preadAllAsync(fd, header, JOURNAL_OFFSET + pos);
  const body = recordBodyBytes(header, salt);
  if (body < 0 || pos + recordBytes(body) > JOURNAL_BYTES) return undefined;
  const whole = Buffer.alloc(RECORD_HEADER_BYTES + body);
  await preadAllAsync(fd, whole, JOURNAL_OFFSET + pos);
  const rec = decodeRecord(whole, salt);
  if (rec === undefined || rec.seq !== seq) return undefined;
  return { ops: rec.ops, bytes: recordBytes(body) };
}

/**
 * Brings the index up to the journal: applies, in order, every valid record newer than the
 * sequence the index holds (after an OS crash the index may be behind by the transactions it had
 * not flushed), then waits for the index flush so the ring can be reused from the start.
 */
async function replayJournal(fd: number, db: IndexDb, log: Logger, path: string, salt: number): Promise<{ seq: number; pos: number }> {
  let { seq, pos } = decodeJournalMeta(db.meta.getBinary(JOURNAL_META_KEY));
  let replayed = 0;
  for (;;) {
    // The writer puts a record that does not fit before the end of the ring at its start.
    let at = pos;
    let next = await readRecordAt(fd, pos, seq + 1, salt);
    if (next === undefined && pos !== 0) {
      at = 0;
      next = await readRecordAt(fd, 0, seq + 1, salt);
    }
    if (next === undefined) break;
    seq += 1;
    pos = (at + next.bytes) % JOURNAL_BYTES;
    const meta = encodeJournalMeta(seq, pos);
    db.root.transactionSync(() => {
      writeChanges(db, computeChanges(lmdbReader(db), next.ops).objects.values());
      db.meta.putSync(JOURNAL_META_KEY, meta);
    });
    replayed++;
  }
  if (replayed > 0) log.warn({ path, records: replayed, seq }, 'index brought up to date from the journal');
  await db.root.flushed;
  return { seq, pos };
}

async function readSuperblock(fd: number, path: string): Promise<Superblock> {
  const copies: Buffer[] = [];
  for (const offset of SUPERBLOCK_OFFSETS) {
    const buf = Buffer.alloc(SUPERBLOCK_BYTES);
    await preadAllAsync(fd, buf, offset).catch(() => undefined); // a short disk leaves zeros: invalid
    copies.push(buf);
  }
  return chooseSuperblock(path, copies);
}

/**
 * Walks the whole index once: marks every referenced block used, refuses duplicates and pointers
 * outside the data area, and checks each object's allocated-block count.
 */
function rebuildAllocator(db: IndexDb, sb: Superblock, indexDir: string): BlockAllocator {
  const allocator = new BlockAllocator(sb.blockCount);
  const corrupt = (what: string): StorpoolError =>
    new StorpoolError('STORE_ERR_DISK_INVALID', `index ${indexDir} is inconsistent (${what}); rebuild this disk from its replicas`);
  let curObj: Buffer | null = null;
  let count = 0;
  const checkCount = (): void => {
    if (curObj === null) return;
    const raw = db.objects.getBinary(curObj);
    const expect = raw === undefined ? -1 : decodeObjectValue(raw).allocatedBlocks;
    if (expect !== count) throw corrupt(`object ${JSON.stringify(decodeObjectKey(curObj))} counts ${expect} blocks, index has ${count}`);
  };
  for (const { key, value } of db.blocks.getRange({})) {
    const objKey = Buffer.from(key.subarray(0, 12));
    if (curObj === null || !curObj.equals(objKey)) {
      checkCount();
      curObj = objKey;
      count = 0;
    }
    const { physical } = decodeBlockValue(value);
    if (physical === ZERO_MARKER_PHYSICAL) continue;
    count++;
    if (physical >= sb.blockCount) throw corrupt(`block ${physical} is outside the data area`);
    if (!allocator.markUsed(physical)) throw corrupt(`block ${physical} is referenced twice`);
  }
  checkCount();
  let counted = 0;
  for (const { value } of db.objects.getRange({})) counted += decodeObjectValue(value).allocatedBlocks;
  if (counted !== allocator.usedBlocks) throw corrupt(`objects count ${counted} blocks, index has ${allocator.usedBlocks}`);
  return allocator;
}
