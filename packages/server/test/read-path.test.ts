import { describe, expect, it } from 'vitest';
import { ReadPath } from '../src/store/read-path.js';

describe('ReadPath: synchronous reads while they hit the page cache', () => {
  it('reads small ranges synchronously until several in a row are slow, then through the threadpool for a period', () => {
    let now = 1000;
    const p = new ReadPath({ syncBytesMax: 65536, slowReadUs: 50, asyncPeriodMs: 100 }, () => now);
    const read = (us: number): boolean => {
      const sync = p.trySync(4096);
      if (sync) {
        const start = p.now();
        now += us / 1000;
        p.took(start);
      }
      return sync;
    };
    expect(read(10)).toBe(true); // 10 us: a page-cache hit
    expect(p.trySync(65536)).toBe(true);
    expect(p.trySync(65537)).toBe(false); // too big to risk on the event loop
    // Slow reads now and then, even two in a row (preempted), keep reads synchronous.
    for (let i = 0; i < 100; i++) expect(read(i % 20 < 2 ? 500 : 10)).toBe(true);
    // Reads that go to the device: after three in a row, the threadpool.
    expect(read(200)).toBe(true);
    expect(read(200)).toBe(true);
    expect(read(200)).toBe(true);
    expect(read(10)).toBe(false);
    now += 99;
    expect(read(10)).toBe(false);
    now += 2;
    expect(read(10)).toBe(true); // tried again after the period
    expect(p.counters).toEqual({ syncReads: 106, asyncReads: 3, slowSyncReads: 13 });
  });

  it('syncBytesMax 0 sends every read to the threadpool', () => {
    const p = new ReadPath({ syncBytesMax: 0 });
    expect(p.trySync(4096)).toBe(false);
    expect(p.counters.syncReads).toBe(0);
  });
});
