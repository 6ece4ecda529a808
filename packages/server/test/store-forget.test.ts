/**
 * forget(): an object leaves the disk altogether — blocks released, entry and version gone — and
 * stays gone after a reopen and after a journal replay into an index that lost the change.
 * setVersion(): the version set exactly (lower included), blocks untouched; the same durability.
 */
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_HOLE } from '@storpool/protocol';
import { DiskStore } from '../src/store/index.js';
import { blocksData, formatTestDisk, makeTempDir, removeDir } from './store-helpers.js';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

/**
 * Opens the store twice and runs `check`: as closed, then with the index rolled back to the copy in
 * `<dir>/old.idx`, so that everything since must come back from the journal.
 */
async function reopenBothWays(path: string, dir: string, check: (store: DiskStore, replay: boolean) => Promise<void>): Promise<void> {
  for (const replay of [false, true]) {
    if (replay) {
      await rm(`${path}.idx`, { recursive: true, force: true });
      await cp(join(dir, 'old.idx'), `${path}.idx`, { recursive: true });
    }
    const store = await DiskStore.open(path);
    try {
      await check(store, replay);
    } finally {
      await store.close();
    }
  }
}

describe('forgetting objects', () => {
  it('releases the blocks, drops the entry and its version; a trim keeps them; both survive reopen and replay', async () => {
    dir = await makeTempDir('forget');
    const path = await formatTestDisk(dir);
    let store = await DiskStore.open(path);
    const a = { volumeId: 7, objectIndex: 1 };
    const b = { volumeId: 7, objectIndex: 2 };
    const c = { volumeId: 7, objectIndex: 3 };
    const empty = store.stats().blocksUsed;
    for (const [i, key] of [a, b, c].entries()) {
      const { data, crcs } = blocksData([i * 10 + 1, i * 10 + 2, i * 10 + 3], 4);
      await store.write(key, 4, data, crcs, 100 + i);
    }
    expect(store.stats().blocksUsed).toBe(empty + 9);
    await store.close();
    // The index as of here: the forget below must be replayed from the journal into it.
    await cp(`${path}.idx`, join(dir, 'old.idx'), { recursive: true });

    store = await DiskStore.open(path);
    await store.forget(a);
    await store.trim(b, 0, 1024, 200);
    expect(store.objectVersion(a)).toBe(0);
    expect(store.objectVersion(b)).toBe(200);
    expect(store.listObjects({ limit: 10 }).map((o) => [o.key.objectIndex, o.version, o.allocatedBlocks])).toEqual([[2, 200, 0], [3, 102, 3]]);
    expect(store.stats().blocksUsed).toBe(empty + 3);
    expect([...store.allocation(a, 4, 3)]).toEqual([BLOCK_HOLE, BLOCK_HOLE, BLOCK_HOLE]);
    // A forgotten object can be written again from scratch (a shard that comes back).
    const again = blocksData([99], 0);
    await store.write(c, 0, again.data, again.crcs, 5);
    expect(store.objectVersion(c)).toBe(102);
    await store.close();

    await reopenBothWays(path, dir, async (reopened, replay) => {
      expect(reopened.objectVersion(a), `replay=${replay}`).toBe(0);
      expect(reopened.listObjects({ limit: 10 }).map((o) => o.key.objectIndex), `replay=${replay}`).toEqual([2, 3]);
      expect(reopened.stats().blocksUsed, `replay=${replay}`).toBe(empty + 4);
      const r = await reopened.read(c, 0, 1);
      expect(r.data.equals(again.data), `replay=${replay}`).toBe(true);
    });
  });

  it('setVersion sets the version exactly, lower included, keeps the blocks; 0 on an emptied object drops it; both survive reopen and replay', async () => {
    dir = await makeTempDir('setversion');
    const path = await formatTestDisk(dir);
    let store = await DiskStore.open(path);
    const a = { volumeId: 9, objectIndex: 1 };
    const b = { volumeId: 9, objectIndex: 2 };
    const da = blocksData([1, 2], 0);
    await store.write(a, 0, da.data, da.crcs, 500);
    const db = blocksData([3], 0);
    await store.write(b, 0, db.data, db.crcs, 600);
    await store.close();
    await cp(`${path}.idx`, join(dir, 'old.idx'), { recursive: true });

    store = await DiskStore.open(path);
    const used = store.stats().blocksUsed;
    await store.setVersion(a, 300);
    expect(store.objectVersion(a)).toBe(300);
    // A later write still takes the max, as always.
    const more = blocksData([4], 5);
    await store.write(a, 5, more.data, more.crcs, 0);
    expect(store.objectVersion(a)).toBe(300);
    await store.trim(b, 0, 1024, 0);
    await store.setVersion(b, 0);
    expect(store.objectVersion(b)).toBe(0);
    expect(store.listObjects({ limit: 10 }).map((o) => [o.key.objectIndex, o.version, o.allocatedBlocks])).toEqual([[1, 300, 3]]);
    expect(store.stats().blocksUsed).toBe(used);
    await expect(store.setVersion(a, -1)).rejects.toThrow(/non-negative/);
    await store.close();

    await reopenBothWays(path, dir, async (reopened, replay) => {
      expect(reopened.listObjects({ limit: 10 }).map((o) => [o.key.objectIndex, o.version, o.allocatedBlocks]), `replay=${replay}`).toEqual([[1, 300, 3]]);
      const r = await reopened.read(a, 0, 2);
      expect(r.data.equals(da.data), `replay=${replay}`).toBe(true);
    });
  });
});
