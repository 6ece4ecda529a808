import assert from 'node:assert/strict';

interface Held {
  first: number;
  end: number;
  /** Called when this holder releases (later overlapping operations waiting on it); null: none yet. */
  waiters: (() => void)[] | null;
}

/**
 * Orders overlapping operations on an object at its primary: an operation waits for every earlier
 * operation whose block range overlaps its own, in arrival order; disjoint ranges run in parallel.
 * This is what makes a read-modify-write of a partial block, and the order replicas apply writes
 * to the same block, match the order the primary acknowledged them.
 *
 * Uncontended (the common case), a lock costs no promise: tryAcquire() hands the release function
 * back at once; a waiter is only woken by the holders it overlaps.
 */
export class RangeLockTable {
  readonly #held = new Map<string, Held[]>();

  /** The release function when no earlier holder overlaps the range (held from now), else null (nothing taken). */
  tryAcquire(key: string, first: number, count: number): (() => void) | null {
    assert(count > 0);
    const end = first + count;
    const list = this.#held.get(key);
    if (list !== undefined) for (const h of list) if (h.first < end && first < h.end) return null;
    return this.#hold(key, list, { first, end, waiters: null });
  }

  /** Resolves with a release function once all earlier overlapping holders released. */
  acquire(key: string, first: number, count: number): Promise<() => void> {
    const now = this.tryAcquire(key, first, count);
    if (now !== null) return Promise.resolve(now);
    const end = first + count;
    const list = this.#held.get(key)!;
    const overlapping = list.filter((h) => h.first < end && first < h.end);
    // Queued now, so that later overlapping operations wait for this one too (arrival order).
    const release = this.#hold(key, list, { first, end, waiters: null });
    return new Promise((resolve) => {
      let left = overlapping.length;
      const one = (): void => {
        if (--left === 0) resolve(release);
      };
      for (const h of overlapping) (h.waiters ??= []).push(one);
    });
  }

  get size(): number {
    return this.#held.size;
  }

  #hold(key: string, list: Held[] | undefined, entry: Held): () => void {
    if (list === undefined) this.#held.set(key, [entry]);
    else list.push(entry);
    let released = false;
    return () => {
      assert(!released, 'range lock released twice');
      released = true;
      const current = this.#held.get(key)!;
      const at = current.indexOf(entry);
      assert(at >= 0);
      current.splice(at, 1);
      if (current.length === 0) this.#held.delete(key);
      if (entry.waiters !== null) for (const wake of entry.waiters) wake();
    };
  }
}
