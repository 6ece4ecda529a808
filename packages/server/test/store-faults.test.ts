import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import fsCb from 'node:fs';
import path from 'node:path';
import { BLOCK_BYTES, BLOCKS_PER_OBJECT, crc32c } from '@storpool/protocol';
import { DiskStore, formatDisk, DISK_BYTES_MIN, DATA_OFFSET_BYTES } from '../src/store/index.js';
import { CLUSTER_ID, blocksData, makeTempDir, patternBlock, removeDir } from './store-helpers.js';

let dir: string | undefined;
let disk: string;
let store: DiskStore | undefined;

beforeEach(async () => {
  dir = await makeTempDir('faults');
  disk = path.join(dir, 'disk.img');
});
afterEach(async () => {
  try {
    await store?.close();
  } finally {
    store = undefined;
    await removeDir(dir);
    dir = undefined;
  }
});

async function openNew(sizeBytes: number): Promise<DiskStore> {
  await formatDisk(disk, { sizeBytes, clusterId: CLUSTER_ID, diskId: 9 });
  store = await DiskStore.open(disk);
  return store;
}

const KEY = { volumeId: 42, objectIndex: 3 };

describe('corruption', () => {
  it('reports a flipped block in `bad`, counts it, and repair() fixes it', async () => {
    const s = await openNew(64 * 1024 * 1024);
    const { data, crcs } = blocksData([11, 12, 13, 14], 0);
    await s.write(KEY, 0, data, crcs, 5);
    // Fresh disk: the allocator hands out physical blocks 0..3 for this write.
    const fh = await fs.open(disk, 'r+');
    try {
      await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, DATA_OFFSET_BYTES + 2 * BLOCK_BYTES + 777);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const res = await s.read(KEY, 0, 4);
    expect(res.bad).toEqual([2]);
    expect(res.crcs[2]).toBe(crcs[2]);
    expect(s.stats().corruptBlocksFound).toBe(1);
    expect(res.data.subarray(0, 2 * BLOCK_BYTES).equals(data.subarray(0, 2 * BLOCK_BYTES))).toBe(true);

    const good = patternBlock(13, 2);
    await expect(s.repair(KEY, 2, good, (crcs[2] as number) ^ 1)).rejects.toMatchObject({ code: 'STORE_ERR_CHECKSUM' });
    await s.repair(KEY, 2, good, crc32c(good));
    const again = await s.read(KEY, 0, 4);
    expect(again.bad).toEqual([]);
    expect(again.data.equals(data)).toBe(true);
    expect(again.version).toBe(5);
    expect(s.stats()).toMatchObject({ corruptBlocksFound: 1, corruptBlocksRepaired: 1, blocksUsed: 4 });
  });

  it('drops a repair of a block rewritten since the failed read', async () => {
    const s = await openNew(64 * 1024 * 1024);
    const v1 = blocksData([1], 0);
    await s.write(KEY, 0, v1.data, v1.crcs, 1);
    const v2 = blocksData([2], 0);
    await s.write(KEY, 0, v2.data, v2.crcs, 2);
    await s.repair(KEY, 0, v1.data, v1.crcs[0] as number); // stale "good copy"
    const res = await s.read(KEY, 0, 1);
    expect(res.data.equals(v2.data)).toBe(true);
    expect(s.stats()).toMatchObject({ corruptBlocksRepaired: 0, blocksUsed: 1 });
  });
});

describe('disk full', () => {
  it('fails only the write that does not fit, keeps data intact, and recovers after trim', async () => {
    const s = await openNew(DISK_BYTES_MIN);
    const total = s.stats().blocksTotal;
    expect(total).toBe(2 * BLOCKS_PER_OBJECT);
    const objA = { volumeId: 1, objectIndex: 0 };
    const objB = { volumeId: 1, objectIndex: 1 };
    const full = blocksData(Array.from({ length: BLOCKS_PER_OBJECT }, (_, i) => 1000 + i), 0);
    await s.write(objA, 0, full.data, full.crcs, 1);
    const almost = blocksData(Array.from({ length: BLOCKS_PER_OBJECT - 10 }, (_, i) => 2000 + i), 0);
    await s.write(objB, 0, almost.data, almost.crcs, 1);
    expect(s.stats().blocksFree).toBe(10);

    // One cycle: a 20-block write that cannot fit and a 4-block one that can.
    const big = blocksData(Array.from({ length: 20 }, (_, i) => 3000 + i), 1004);
    const small = blocksData([4000, 4001, 4002, 4003], 1014);
    const [bigRes, smallRes] = await Promise.allSettled([s.write(objB, 1004, big.data, big.crcs, 2), s.write(objB, 1014, small.data, small.crcs, 3)]);
    expect(bigRes.status).toBe('rejected');
    expect((bigRes as PromiseRejectedResult).reason).toMatchObject({ code: 'STORE_ERR_NO_SPACE' });
    expect(String((bigRes as PromiseRejectedResult).reason.message)).toMatch(/disk 9 .* 10 blocks .* free/);
    expect(smallRes.status).toBe('fulfilled');
    expect(s.stats()).toMatchObject({ noSpaceErrors: 1, blocksFree: 6 });

    const a = await s.read(objA, 0, BLOCKS_PER_OBJECT);
    expect(a.bad).toEqual([]);
    expect(a.data.equals(full.data)).toBe(true);
    const b = await s.read(objB, 1004, 20);
    expect(b.allocated.slice(0, 10).every((x) => x === 1)).toBe(true); // untouched by the failed write
    expect(b.data.subarray(0, 10 * BLOCK_BYTES).equals(almost.data.subarray(1004 * BLOCK_BYTES))).toBe(true);
    expect(b.data.subarray(10 * BLOCK_BYTES, 14 * BLOCK_BYTES).equals(small.data)).toBe(true);
    expect(s.objectVersion(objB)).toBe(3);

    await s.trim(objA, 0, BLOCKS_PER_OBJECT, 2);
    expect(s.stats().blocksFree).toBe(6 + BLOCKS_PER_OBJECT);
    await s.write(objB, 1004, big.data, big.crcs, 4);
    const after = await s.read(objB, 1004, 20);
    expect(after.data.equals(big.data)).toBe(true);
    await s.close();
    store = await DiskStore.open(disk);
    expect(store.stats().blocksUsed).toBe(BLOCKS_PER_OBJECT);
  });
});

describe('group commit', () => {
  it('64 concurrent writes share far fewer than 64 commits', async () => {
    const s = await openNew(64 * 1024 * 1024);
    const writes = Array.from({ length: 64 }, (_, i) => {
      const { data, crcs } = blocksData([i + 1], i * 3);
      return s.write({ volumeId: 1, objectIndex: i % 4 }, i * 3, data, crcs, i);
    });
    await Promise.all(writes);
    const st = s.stats();
    expect(st.writesCommitted).toBe(64);
    expect(st.commits).toBeLessThan(st.writes);
    expect(st.commits).toBeLessThanOrEqual(4);
  });

  it('reads racing overwrites never see a reused block (deferred frees)', async () => {
    const s = await openNew(DISK_BYTES_MIN); // small: freed blocks are reused quickly
    const count = 256;
    let tag = 1;
    const write = (): Promise<void> => {
      const t = tag++;
      const { data, crcs } = blocksData(Array.from({ length: count }, () => t), 0);
      return s.write(KEY, 0, data, crcs, t);
    };
    await write();
    for (let round = 0; round < 15; round++) {
      const reads = Array.from({ length: 8 }, () => s.read(KEY, 0, count));
      const writes = [write(), write()];
      for (const r of await Promise.all(reads)) {
        expect(r.bad).toEqual([]);
        const first = r.data.readUInt32LE(0);
        for (let i = 0; i < count; i++) expect(r.data.readUInt32LE(i * BLOCK_BYTES)).toBe(first); // one write's content
      }
      await Promise.all(writes);
    }
    expect(s.stats().corruptBlocksFound).toBe(0);
    expect(s.stats().blocksUsed).toBe(count);
  });

  it('does not reuse a block freed by a commit while an older read still reads it', async () => {
    const s = await openNew(DISK_BYTES_MIN); // 2048 blocks
    const objA = { volumeId: 1, objectIndex: 0 };
    const w = (key: typeof objA, n: number, t: number) => {
      const { data, crcs } = blocksData(Array.from({ length: n }, () => t), 0);
      return s.write(key, 0, data, crcs, t);
    };
    await w(objA, 256, 1); // physical 0..255
    // Hold every pread until released: the read below looks up blocks 0..255 now, reads them later.
    const held: (() => void)[] = [];
    const realRead = fsCb.read;
    (fsCb as { read: unknown }).read = (...args: unknown[]) => {
      held.push(() => (realRead as (...a: unknown[]) => void)(...args));
    };
    let reading: Promise<Awaited<ReturnType<DiskStore['read']>>>;
    try {
      reading = s.read(objA, 0, 256);
    } finally {
      (fsCb as { read: unknown }).read = realRead;
    }
    expect(held.length).toBe(1);
    try {
      await w(objA, 256, 2); // physical 256..511; frees 0..255, but a read of the old generation is in flight
      await w({ volumeId: 2, objectIndex: 0 }, 1024, 3); // 512..1535
      await w({ volumeId: 3, objectIndex: 0 }, 512, 4); // 1536..2047: the cursor wraps next
      expect(s.stats().blocksFree).toBe(0);
      // Without deferred frees this would land on 0..255 and the held read would see its data.
      await expect(w({ volumeId: 4, objectIndex: 0 }, 256, 5)).rejects.toMatchObject({ code: 'STORE_ERR_NO_SPACE' });
    } finally {
      for (const go of held.splice(0)) go(); // also on failure, so close() does not wait forever
    }
    const res = await reading;
    expect(res.bad).toEqual([]);
    expect(res.data.readUInt32LE(0)).toBe(1);
    expect(s.stats().blocksFree).toBe(256); // released when the read finished
    await w({ volumeId: 4, objectIndex: 0 }, 256, 5);
    expect((await s.read(objA, 0, 256)).data.readUInt32LE(0)).toBe(2);
  });
});
