/**
 * The scrubber: a background pass that re-reads every data block of this disk (the store checks
 * each block against its CRC32C), and replaces a bad block with a good copy from another disk.
 * Throttled to a bandwidth, run every `intervalMs` after the previous pass ended (0 = only when
 * asked: the SCRUB op, which mgmt's DiskScrubStart sends), stoppable. Counters and progress go into
 * STATS (`scrub`) and the SCRUB reply; findings are logged.
 *
 * Where the good copy comes from: the store knows an object by (data id, index) only, not the
 * lineage its shard is hashed by, so the scrubber cannot locate the shard's replicas; it asks every
 * other disk of the map on another server for its copy (COPY_READ) and takes one only when its
 * bytes match the CRC this disk's index holds for the block. Bad blocks are rare; asking n disks
 * for one is cheap.
 */
import assert from 'node:assert/strict';
import { BLOCK_BYTES, BLOCK_DATA, BLOCKS_PER_OBJECT, ScrubCommand, SCRUB_UNREPAIRABLE_LISTED_MAX, scrubCommandName, type ScrubCommandCode, type ScrubCounters, type ScrubStatus, type ShardRouter } from '@storpool/protocol';
import type { Logger } from 'pino';
import type { BadBlock, ObjectStore } from './shard-service.js';
import type { ObjectKey } from './store/index.js';

/** Objects listed per store call: bounds the memory of one listing. */
export const SCRUB_LIST_BATCH = 256;
/** Objects per listing when counting them at the start of a pass. */
export const SCRUB_COUNT_BATCH = 4096;
/** Blocks per store read (256 KiB): bounds memory, and is the throttle's step. */
export const SCRUB_READ_BLOCKS = 64;
/** Default throttle: 32 MB/s, a fraction of a disk, so that client I/O keeps the rest. */
export const SCRUB_BANDWIDTH_BYTES_PER_SECOND_DEFAULT = 32_000_000;
/** Default schedule: a full pass a week after the previous one ended. */
export const SCRUB_INTERVAL_MS_DEFAULT = 7 * 24 * 3600 * 1000;
assert(BLOCKS_PER_OBJECT % SCRUB_READ_BLOCKS === 0);

export interface ScrubberOptions {
  diskId: number;
  store: ObjectStore;
  /** Good copies of bad blocks written over the local ones (ShardService.repairFromPeers). */
  repair: (key: ObjectKey, blocks: readonly BadBlock[]) => Promise<unknown>;
  log: Logger;
  /** 0 = unthrottled. */
  bandwidthBytesPerSecond: number;
  /** 0 = no schedule, only on demand. */
  intervalMs: number;
}

interface Pass extends ScrubCounters {
  startedAt: number | null;
  finishedAt: number | null;
  objectsTotal: number;
  bytesTotal: number;
  aborted: boolean;
}

const zeroCounters = (): ScrubCounters => ({ objects: 0, bytes: 0, errorsFound: 0, repaired: 0, unrepairable: 0 });

/** The disks that may hold a copy of any object of `diskId`: every other disk on another server. */
export function scrubPeers(router: ShardRouter, diskId: number): number[] {
  const self = router.disk(diskId);
  return router.map.disks.filter((d) => d.id !== diskId && d.serverId !== self?.serverId).map((d) => d.id);
}

export class Scrubber {
  readonly #o: ScrubberOptions;
  #pass: Pass = { ...zeroCounters(), startedAt: null, finishedAt: null, objectsTotal: 0, bytesTotal: 0, aborted: false };
  readonly #total: ScrubCounters = zeroCounters();
  #passesCompleted = 0;
  #lastCompletedAt: number | null = null;
  #nextScheduledAt: number | null = null;
  readonly #unrepairable: ScrubStatus['unrepairableBlocks'] = [];
  #running: Promise<void> | undefined;
  #abort = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  /** Wakes a throttle sleep early (stop, close). */
  #wake: (() => void) | undefined;

  constructor(options: ScrubberOptions) {
    if (!Number.isSafeInteger(options.bandwidthBytesPerSecond) || options.bandwidthBytesPerSecond < 0) throw new RangeError(`scrub bandwidth ${options.bandwidthBytesPerSecond} must be a non-negative integer`);
    if (!Number.isSafeInteger(options.intervalMs) || options.intervalMs < 0) throw new RangeError(`scrub interval ${options.intervalMs} must be a non-negative integer`);
    this.#o = options;
    this.#schedule();
  }

  get running(): boolean {
    return this.#running !== undefined;
  }

  command(code: ScrubCommandCode): ScrubStatus {
    if (code !== ScrubCommand.STATUS) this.#o.log.info({ command: scrubCommandName(code) }, 'scrub command');
    if (code === ScrubCommand.START) this.start();
    else if (code === ScrubCommand.STOP) this.stop();
    return this.status();
  }

  /** Starts a full pass now; a pass already running goes on. */
  start(): void {
    if (this.#closed || this.#running !== undefined) return;
    clearTimeout(this.#timer);
    this.#nextScheduledAt = null;
    this.#abort = false;
    const now = Date.now();
    this.#pass = { ...zeroCounters(), startedAt: now, finishedAt: null, objectsTotal: 0, bytesTotal: this.#o.store.stats().blocksUsed * BLOCK_BYTES, aborted: false };
    this.#o.log.info({ bytesTotal: this.#pass.bytesTotal, bandwidthBytesPerSecond: this.#o.bandwidthBytesPerSecond }, 'scrub pass started');
    this.#running = this.#run(this.#pass).finally(() => {
      this.#running = undefined;
      this.#schedule();
    });
  }

  /** Aborts the running pass (the next one starts from the beginning). */
  stop(): void {
    if (this.#running === undefined) return;
    this.#abort = true;
    this.#wake?.();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#nextScheduledAt = null;
    this.stop();
    await this.#running;
  }

  status(): ScrubStatus {
    const p = this.#pass;
    const end = p.finishedAt ?? Date.now();
    const seconds = p.startedAt === null ? 0 : (end - p.startedAt) / 1000;
    const completed = p.finishedAt !== null && !p.aborted;
    return {
      diskId: this.#o.diskId,
      running: this.#running !== undefined,
      bandwidthBytesPerSecond: this.#o.bandwidthBytesPerSecond,
      intervalMs: this.#o.intervalMs,
      passesCompleted: this.#passesCompleted,
      pass: {
        objects: p.objects, bytes: p.bytes, errorsFound: p.errorsFound, repaired: p.repaired, unrepairable: p.unrepairable,
        startedAt: p.startedAt, finishedAt: p.finishedAt, objectsTotal: p.objectsTotal, bytesTotal: p.bytesTotal, aborted: p.aborted,
        progress: completed ? 1 : p.bytesTotal === 0 ? 0 : Math.min(1, p.bytes / p.bytesTotal),
        rateBytesPerSecond: seconds > 0 ? p.bytes / seconds : 0,
      },
      total: { ...this.#total },
      lastCompletedAt: this.#lastCompletedAt,
      nextScheduledAt: this.#nextScheduledAt,
      unrepairableBlocks: this.#unrepairable.map((b) => ({ ...b })),
    };
  }

  #schedule(): void {
    if (this.#closed || this.#o.intervalMs === 0) return;
    this.#nextScheduledAt = Date.now() + this.#o.intervalMs;
    this.#timer = setTimeout(() => this.start(), this.#o.intervalMs);
    this.#timer.unref();
  }

  async #run(pass: Pass): Promise<void> {
    const store = this.#o.store;
    let after: ObjectKey | undefined;
    try {
      pass.objectsTotal = await this.#countObjects();
      for (;;) {
        const batch = store.listObjects(after === undefined ? { limit: SCRUB_LIST_BATCH } : { after, limit: SCRUB_LIST_BATCH });
        if (batch.length === 0 || this.#abort) break;
        for (const o of batch) {
          if (this.#abort) break;
          if (o.allocatedBlocks > 0) await this.#object(pass, o.key);
          this.#count(pass, 'objects', 1);
          after = o.key;
        }
      }
    } catch (err) {
      this.#abort = true;
      this.#o.log.error({ err: (err as Error).message, after }, 'scrub pass failed');
    }
    pass.finishedAt = Date.now();
    pass.aborted = this.#abort;
    if (!pass.aborted) {
      this.#passesCompleted++;
      this.#lastCompletedAt = pass.finishedAt;
    }
    const { objects, bytes, errorsFound, repaired, unrepairable, aborted } = pass;
    const log = unrepairable > 0 ? this.#o.log.error.bind(this.#o.log) : this.#o.log.info.bind(this.#o.log);
    log({ objects, bytes, errorsFound, repaired, unrepairable, aborted, ms: pass.finishedAt - pass.startedAt! }, aborted ? 'scrub pass stopped' : 'scrub pass completed');
  }

  /** Objects on the disk now (for the task's allObjects), yielding between batches. */
  async #countObjects(): Promise<number> {
    let n = 0;
    let after: ObjectKey | undefined;
    for (;;) {
      const batch = this.#o.store.listObjects(after === undefined ? { limit: SCRUB_COUNT_BATCH } : { after, limit: SCRUB_COUNT_BATCH });
      if (batch.length === 0 || this.#abort) return n;
      n += batch.length;
      after = batch[batch.length - 1]!.key;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Reads every block of one object, repairs the bad ones, and keeps to the bandwidth. */
  async #object(pass: Pass, key: ObjectKey): Promise<void> {
    for (let first = 0; first < BLOCKS_PER_OBJECT && !this.#abort; first += SCRUB_READ_BLOCKS) {
      const result = await this.#o.store.read(key, first, SCRUB_READ_BLOCKS);
      let dataBlocks = 0;
      for (const state of result.allocated) if (state === BLOCK_DATA) dataBlocks++;
      if (dataBlocks === 0) continue;
      this.#count(pass, 'bytes', dataBlocks * BLOCK_BYTES);
      if (result.bad.length > 0) await this.#repair(pass, key, result.bad.map((rel) => ({ block: first + rel, crc: result.crcs[rel]! })));
      await this.#throttle(pass);
    }
  }

  /** Repairs from peers, then reads each block back: good now = repaired, still bad = unrepairable. */
  async #repair(pass: Pass, key: ObjectKey, bad: BadBlock[]): Promise<void> {
    this.#count(pass, 'errorsFound', bad.length);
    this.#o.log.warn({ volumeId: key.volumeId, objectIndex: key.objectIndex, blocks: bad.map((b) => b.block) }, 'scrub: blocks failed their CRC32C');
    try {
      await this.#o.repair(key, bad);
    } catch (err) {
      this.#o.log.warn({ volumeId: key.volumeId, objectIndex: key.objectIndex, err: (err as Error).message }, 'scrub: repair failed');
    }
    for (const b of bad) {
      const again = await this.#o.store.read(key, b.block, 1);
      if (again.bad.length === 0) {
        this.#count(pass, 'repaired', 1);
        continue;
      }
      this.#count(pass, 'unrepairable', 1);
      this.#unrepairable.push({ volumeId: key.volumeId, objectIndex: key.objectIndex, block: b.block, at: Date.now() });
      if (this.#unrepairable.length > SCRUB_UNREPAIRABLE_LISTED_MAX) this.#unrepairable.shift();
      this.#o.log.error({ volumeId: key.volumeId, objectIndex: key.objectIndex, block: b.block }, 'scrub: no disk has a good copy of the block; left as it is (reads of it fail)');
    }
  }

  #count(pass: Pass, counter: keyof ScrubCounters, n: number): void {
    pass[counter] += n;
    this.#total[counter] += n;
  }

  /** Sleeps until the pass's bytes fit the bandwidth: a pass of X bytes at Y bytes/s lasts at least X/Y s. */
  async #throttle(pass: Pass): Promise<void> {
    const rate = this.#o.bandwidthBytesPerSecond;
    if (rate === 0) return;
    const due = pass.startedAt! + Math.ceil((pass.bytes / rate) * 1000);
    for (let now = Date.now(); now < due && !this.#abort; now = Date.now()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, due - now);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }
}
