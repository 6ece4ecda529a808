/**
 * The journal makes a cycle durable with the data's own fdatasync; the index may lag behind it
 * (after an OS crash LMDB restarts from its last flushed transaction). Simulated here by putting
 * back an older copy of the index: open() must replay the journal up to every acknowledged op.
 */
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_BYTES } from '@storpool/protocol';
import { DiskStore } from '../src/store/index.js';
import { blocksData, formatTestDisk, makeTempDir, randInt, removeDir, rng } from './store-helpers.js';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

describe('index journal', () => {
  it('replays acknowledged cycles into an index that lost them', async () => {
    const seed = Date.now() % 100000;
    const r = rng(seed);
    dir = await makeTempDir('journal');
    const path = await formatTestDisk(dir);
    const model = new Map<string, Buffer | 'zero'>();
    const key = (o: number) => ({ volumeId: 5, objectIndex: o });
    const mutate = async (store: DiskStore, n: number, tagBase: number): Promise<void> => {
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const o = randInt(r, 0, 4);
          const b = randInt(r, 0, 60);
          const kind = r();
          if (kind < 0.7) {
            const { data, crcs } = blocksData([tagBase + i, tagBase + i + 1], b);
            model.set(`${o}:${b}`, data.subarray(0, BLOCK_BYTES));
            model.set(`${o}:${b + 1}`, data.subarray(BLOCK_BYTES));
            await store.write(key(o), b, data, crcs, tagBase + i);
          } else if (kind < 0.85) {
            model.delete(`${o}:${b}`);
            await store.trim(key(o), b, 1, tagBase + i);
          } else {
            model.set(`${o}:${b}`, 'zero');
            await store.zero(key(o), b, 1, tagBase + i);
          }
        }),
      );
    };
    // Overlapping concurrent ops on one block would make the model order-dependent: run rounds of
    // 8 (the model keeps the last one issued, the store the last one committed: same cycle order).
    let store = await DiskStore.open(path);
    for (let round = 0; round < 5; round++) await mutate(store, 1, 100 + round);
    await store.close();
    await cp(`${path}.idx`, join(dir, 'old.idx'), { recursive: true });

    store = await DiskStore.open(path);
    for (let round = 0; round < 40; round++) await mutate(store, 1, 1000 + round);
    const expectedUsed = store.stats().blocksUsed;
    await store.close();

    // The index goes back to its older state; the journal on the disk file has everything since.
    await rm(`${path}.idx`, { recursive: true });
    await cp(join(dir, 'old.idx'), `${path}.idx`, { recursive: true });
    store = await DiskStore.open(path);
    try {
      expect(store.stats().blocksUsed, `SEED=${seed}`).toBe(expectedUsed);
      for (let o = 0; o <= 4; o++) {
        const got = await store.read(key(o), 0, 62);
        expect(got.bad).toEqual([]);
        for (let b = 0; b < 62; b++) {
          const want = model.get(`${o}:${b}`);
          const block = got.data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
          if (want === undefined || want === 'zero') expect(block.equals(Buffer.alloc(BLOCK_BYTES)), `object ${o} block ${b} SEED=${seed}`).toBe(true);
          else expect(block.equals(want), `object ${o} block ${b} SEED=${seed}`).toBe(true);
          expect(got.allocated[b], `object ${o} block ${b} state SEED=${seed}`).toBe(want === undefined ? 0 : want === 'zero' ? 2 : 1);
        }
      }
      // Writing again after a replay works and survives another reopen.
      const { data, crcs } = blocksData([7777], 3);
      await store.write(key(9), 3, data, crcs, 99999);
    } finally {
      await store.close();
    }
    store = await DiskStore.open(path);
    expect((await store.read(key(9), 3, 1)).data.equals(blocksData([7777], 3).data)).toBe(true);
    await store.close();
  });
});
