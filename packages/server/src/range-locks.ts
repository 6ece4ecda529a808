import assert from 'node:assert/strict';

interface Held {
  first: number;
  end: number;
  done: Promise<void>;
}

/**
 * Orders overlapping operations on an object at its primary: an operation waits for every earlier
 * operation whose block range overlaps its own, in arrival order; disjoint ranges run in parallel.
 * This is what makes a read-modify-write of a partial block, and the order replicas apply writes
 * to the same block, match the order the primary acknowledged them.
 */
export class RangeLockTable {
  readonly #held = new Map<string, Held[]>();

  /** Resolves with a release function once all earlier overlapping holders released. */
  async acquire(key: string, first: number, count: number): Promise<() => void> {
    assert(count > 0);
    const end = first + count;
    let list = this.#held.get(key);
    if (list === undefined) {
      list = [];
      this.#held.set(key, list);
    }
    const waits: Promise<void>[] = [];
    for (const h of list) if (h.first < end && first < h.end) waits.push(h.done);
    let release!: () => void;
    const done = new Promise<void>((resolve) => {
      release = resolve;
    });
    const entry: Held = { first, end, done };
    list.push(entry);
    if (waits.length > 0) await Promise.all(waits);
    let released = false;
    return () => {
      assert(!released, 'range lock released twice');
      released = true;
      const current = this.#held.get(key)!;
      const at = current.indexOf(entry);
      assert(at >= 0);
      current.splice(at, 1);
      if (current.length === 0) this.#held.delete(key);
      release();
    };
  }

  get size(): number {
    return this.#held.size;
  }
}
