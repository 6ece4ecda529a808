import { describe, expect, it } from 'vitest';
import { RangeLockTable } from '../src/range-locks.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('RangeLockTable', () => {
  it('hands out disjoint ranges at once and refuses an overlapping tryAcquire', () => {
    const locks = new RangeLockTable();
    const a = locks.tryAcquire('o', 0, 4);
    const b = locks.tryAcquire('o', 4, 4);
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    expect(locks.tryAcquire('o', 3, 2)).toBeNull();
    expect(locks.tryAcquire('other', 0, 256)).not.toBeNull();
    a!();
    expect(locks.tryAcquire('o', 0, 4)).not.toBeNull();
  });

  it('grants overlapping ranges in arrival order, after every earlier overlapping holder', async () => {
    const locks = new RangeLockTable();
    const order: string[] = [];
    const first = locks.tryAcquire('o', 0, 2)!;
    const second = locks.tryAcquire('o', 4, 2)!;
    // Overlaps both holders: waits for both.
    const spanning = locks.acquire('o', 1, 4).then((release) => {
      order.push('spanning');
      return release;
    });
    // Overlaps only the spanning waiter (queued before it): waits for it, not for the holders directly.
    const later = locks.acquire('o', 2, 1).then((release) => {
      order.push('later');
      return release;
    });
    first();
    await tick();
    expect(order).toEqual([]);
    second();
    const releaseSpanning = await spanning;
    await tick();
    expect(order).toEqual(['spanning']);
    releaseSpanning();
    (await later)();
    expect(order).toEqual(['spanning', 'later']);
    expect(locks.size).toBe(0);
  });

  it('refuses a second release', () => {
    const locks = new RangeLockTable();
    const release = locks.tryAcquire('o', 0, 1)!;
    release();
    expect(() => release()).toThrow(/released twice/);
  });
});
