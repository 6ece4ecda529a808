/**
 * Which way a small read goes: a synchronous pread on the event loop, or the libuv threadpool.
 *
 * A 4 KiB pread that hits the page cache costs a few microseconds; the threadpool round trip
 * costs ~20 us of CPU (a futex wake of a worker, its wake-up, the completion's async handle and
 * callback) — measured here, it was a third of a storage server's CPU per 4 KiB random read, and
 * synchronous reads took rep3 client-library random reads from 18k to 27k IOPS. But a read that goes
 * to the device would stall every connection of the server for the device's whole latency.
 *
 * So small reads are tried synchronously and timed (wall clock). One that takes longer than
 * `slowReadUs` likely did not come from the page cache — or the process was preempted during it,
 * which on a busy host happens to one read in a few hundred. So one slow read is not enough: when
 * slow ones make up more than SLOW_SHARE_MAX of the recent reads (an average over ~16, i.e. about
 * three in a row), reads go through the threadpool for the next `asyncPeriodMs`, then are tried
 * synchronously again. Where the data does not fit in RAM, the cost is about three device reads on
 * the event loop per period (~0.3% of its time with 100 us reads and the 100 ms default).
 */
export interface ReadPathOptions {
  /** Reads up to this many bytes may go synchronously; 0 sends every read to the threadpool. */
  syncBytesMax: number;
  /** A synchronous read slower than this (wall time) came from the device. */
  slowReadUs: number;
  /** How long reads go to the threadpool after a slow synchronous one. */
  asyncPeriodMs: number;
}

/** Weight of the newest read in the running share of slow reads (1/16: the last ~16 reads count). */
const SLOW_SHARE_WEIGHT = 1 / 16;
const SLOW_SHARE_MAX = 0.15;

export const READ_PATH_DEFAULTS: ReadPathOptions = { syncBytesMax: 64 * 1024, slowReadUs: 50, asyncPeriodMs: 100 };

export interface ReadPathCounters {
  syncReads: number;
  asyncReads: number;
  /** Synchronous reads that were slow (each switched reads to the threadpool for a period). */
  slowSyncReads: number;
}

export class ReadPath {
  readonly counters: ReadPathCounters = { syncReads: 0, asyncReads: 0, slowSyncReads: 0 };
  readonly #o: ReadPathOptions;
  readonly #nowMs: () => number;
  #asyncUntilMs = -Infinity;
  #slowShare = 0;

  constructor(options: Partial<ReadPathOptions> = {}, nowMs: () => number = () => performance.now()) {
    this.#o = { ...READ_PATH_DEFAULTS, ...options };
    this.#nowMs = nowMs;
  }

  /** Whether a read of `bytes` should be done synchronously now (counted either way). */
  trySync(bytes: number): boolean {
    const sync = bytes <= this.#o.syncBytesMax && this.#nowMs() >= this.#asyncUntilMs;
    if (sync) this.counters.syncReads++;
    else this.counters.asyncReads++;
    return sync;
  }

  /** Reports how long a synchronous read took (from nowMs() before it to nowMs() after). */
  took(startMs: number, endMs: number): void {
    const slow = (endMs - startMs) * 1000 > this.#o.slowReadUs;
    this.#slowShare += ((slow ? 1 : 0) - this.#slowShare) * SLOW_SHARE_WEIGHT;
    if (!slow) return;
    this.counters.slowSyncReads++;
    if (this.#slowShare <= SLOW_SHARE_MAX) return;
    this.#slowShare = 0;
    this.#asyncUntilMs = endMs + this.#o.asyncPeriodMs;
  }

  now(): number {
    return this.#nowMs();
  }
}
