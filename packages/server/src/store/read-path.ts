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
 * `slowReadUs` likely did not come from the page cache — or the thread was preempted during it,
 * which on a busy host happens to one read in 100–250. A preemption delays the read it lands in,
 * not the next ones, so it takes SLOW_STREAK reads in a row to decide the data is not cached: then
 * reads go through the threadpool for the next `asyncPeriodMs`, and are tried synchronously again.
 * Where the data does not fit in RAM, the cost is SLOW_STREAK device reads on the event loop per
 * period (~0.3% of its time with 100 us reads and the 100 ms default).
 */
export interface ReadPathOptions {
  /** Reads up to this many bytes may go synchronously; 0 sends every read to the threadpool. */
  syncBytesMax: number;
  /** A synchronous read slower than this (wall time) came from the device. */
  slowReadUs: number;
  /** How long reads go to the threadpool after a slow synchronous one. */
  asyncPeriodMs: number;
}

const SLOW_STREAK = 3;

export const READ_PATH_DEFAULTS: ReadPathOptions = { syncBytesMax: 64 * 1024, slowReadUs: 50, asyncPeriodMs: 100 };

export interface ReadPathCounters {
  syncReads: number;
  asyncReads: number;
  /** Synchronous reads that were slow (SLOW_STREAK of them in a row switch reads to the threadpool for a period). */
  slowSyncReads: number;
}

export class ReadPath {
  readonly counters: ReadPathCounters = { syncReads: 0, asyncReads: 0, slowSyncReads: 0 };
  readonly #o: ReadPathOptions;
  readonly #nowMs: () => number;
  #asyncUntilMs = -Infinity;
  #slowStreak = 0;

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

  /** Reports that a synchronous read begun at `startMs` (from now()) has just ended. */
  took(startMs: number): void {
    const endMs = this.#nowMs();
    if ((endMs - startMs) * 1000 <= this.#o.slowReadUs) {
      this.#slowStreak = 0;
      return;
    }
    this.counters.slowSyncReads++;
    if (++this.#slowStreak < SLOW_STREAK) return;
    this.#slowStreak = 0;
    this.#asyncUntilMs = endMs + this.#o.asyncPeriodMs;
  }

  now(): number {
    return this.#nowMs();
  }
}
