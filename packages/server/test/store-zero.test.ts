import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_BYTES, BLOCK_DATA, BLOCK_HOLE, BLOCK_ZERO, ZERO_BLOCK_CRC } from '@storpool/protocol';
import { DiskStore } from '../src/store/index.js';
import { blocksData, formatTestDisk, makeTempDir, removeDir } from './store-helpers.js';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

describe('zero markers', () => {
  it('read as zeros, hold no block, survive reopen, and are replaced by writes and removed by trims', async () => {
    dir = await makeTempDir('zero');
    const path = await formatTestDisk(dir);
    let store = await DiskStore.open(path);
    const key = { volumeId: 3, objectIndex: 1 };
    const { data, crcs } = blocksData([1, 2, 3, 4], 0);
    await store.write(key, 0, data, crcs, 1);
    const used = store.stats().blocksUsed;
    await store.zero(key, 1, 2, 2);
    expect(store.stats().blocksUsed).toBe(used - 2);
    expect([...store.allocation(key, 0, 5)]).toEqual([BLOCK_DATA, BLOCK_ZERO, BLOCK_ZERO, BLOCK_DATA, BLOCK_HOLE]);
    await store.close();
    store = await DiskStore.open(path);
    const r = await store.read(key, 0, 4);
    expect([...r.allocated]).toEqual([BLOCK_DATA, BLOCK_ZERO, BLOCK_ZERO, BLOCK_DATA]);
    expect(r.data.subarray(BLOCK_BYTES, 3 * BLOCK_BYTES).equals(Buffer.alloc(2 * BLOCK_BYTES))).toBe(true);
    expect(r.crcs[1]).toBe(ZERO_BLOCK_CRC);
    expect(r.data.subarray(0, BLOCK_BYTES).equals(data.subarray(0, BLOCK_BYTES))).toBe(true);
    expect(store.listObjects({ limit: 10 })[0]).toMatchObject({ version: 2, allocatedBlocks: 2 });
    // A write over a marker allocates a block again; a trim removes the marker (a hole).
    const again = blocksData([9], 1);
    await store.write(key, 1, again.data, again.crcs, 3);
    await store.trim(key, 2, 1, 4);
    expect([...store.allocation(key, 0, 4)]).toEqual([BLOCK_DATA, BLOCK_DATA, BLOCK_HOLE, BLOCK_DATA]);
    expect(store.stats().blocksUsed).toBe(used - 1);
    await store.close();
  });
});
