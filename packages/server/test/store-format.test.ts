import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DiskStore, formatDisk, DISK_BYTES_MIN } from '../src/store/index.js';
import { CLUSTER_ID, OTHER_CLUSTER_ID, makeTempDir, removeDir, blocksData } from './store-helpers.js';

const SIZE = 64 * 1024 * 1024;
let dir: string | undefined;
let disk: string;

beforeEach(async () => {
  dir = await makeTempDir('format');
  disk = path.join(dir, 'disk.img');
});
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

describe('formatDisk / DiskStore.open', () => {
  it('round-trips the superblock and creates a sparse file', async () => {
    const sb = await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 7 });
    expect(sb).toMatchObject({ clusterId: CLUSTER_ID, diskId: 7, diskBytes: SIZE, blockBytes: 4096, dataOffset: 1024 * 1024 });
    expect(sb.blockCount).toBe((SIZE - 1024 * 1024) / 4096);
    const st = await fs.stat(disk);
    expect(st.size).toBe(SIZE);
    expect(st.blocks * 512).toBeLessThan(SIZE / 4); // sparse
    const store = await DiskStore.open(disk);
    try {
      expect(store.superblock).toEqual(sb);
      expect(store.stats()).toMatchObject({ blocksTotal: sb.blockCount, blocksUsed: 0, blocksFree: sb.blockCount });
    } finally {
      await store.close();
    }
  });

  it('refuses to reformat without force, and wipes with force', async () => {
    await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1 });
    let store = await DiskStore.open(disk);
    const { data, crcs } = blocksData([1, 2], 0);
    await store.write({ volumeId: 1, objectIndex: 0 }, 0, data, crcs, 1);
    await expectCode(formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1, force: true }), 'STORE_ERR_DISK_IN_USE');
    await store.close();
    await expectCode(formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1 }), 'STORE_ERR_DISK_IN_USE');
    const sb = await formatDisk(disk, { sizeBytes: SIZE, clusterId: OTHER_CLUSTER_ID, diskId: 2, force: true });
    expect(sb.clusterId).toBe(OTHER_CLUSTER_ID);
    store = await DiskStore.open(disk);
    try {
      expect(store.stats().blocksUsed).toBe(0);
      expect(store.objectVersion({ volumeId: 1, objectIndex: 0 })).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('validates options with CONFIG_ERR_INVALID', async () => {
    await expectCode(formatDisk(disk, { sizeBytes: DISK_BYTES_MIN - 4096, clusterId: CLUSTER_ID, diskId: 1 }), 'CONFIG_ERR_INVALID');
    await expectCode(formatDisk(disk, { clusterId: CLUSTER_ID, diskId: 1 }), 'CONFIG_ERR_INVALID');
    await expectCode(formatDisk(disk, { sizeBytes: SIZE, clusterId: 'not-a-uuid', diskId: 1 }), 'CONFIG_ERR_INVALID');
    await expectCode(formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: -1 }), 'CONFIG_ERR_INVALID');
    await formatDisk(disk, { sizeBytes: DISK_BYTES_MIN, clusterId: CLUSTER_ID, diskId: 1 });
  });

  it('uses copy 2 when copy 1 is corrupt, refuses when both are', async () => {
    await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 3 });
    const fh = await fs.open(disk, 'r+');
    try {
      await fh.write(Buffer.from([0xde, 0xad]), 0, 2, 100);
      let store = await DiskStore.open(disk);
      expect(store.superblock.diskId).toBe(3);
      await store.close();
      // Reserved bytes must be zero: a flip there invalidates the copy too (CRC covers it as well).
      await fh.write(Buffer.from([1]), 0, 1, 4096 + 2000);
      await expectCode(DiskStore.open(disk), 'STORE_ERR_DISK_INVALID');
      await expect(DiskStore.open(disk)).rejects.toThrow(/storpool-server disk init/);
    } finally {
      await fh.close();
    }
  });

  it('refuses an index that belongs to another disk, and a missing index', async () => {
    const disk2 = path.join(dir as string, 'disk2.img');
    await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1 });
    await formatDisk(disk2, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 2 });
    await expectCode(DiskStore.open(disk, { indexDir: `${disk2}.idx` }), 'STORE_ERR_DISK_INVALID');
    await expectCode(DiskStore.open(disk, { indexDir: path.join(dir as string, 'nowhere') }), 'STORE_ERR_DISK_INVALID');
    const store = await DiskStore.open(disk);
    await store.close();
  });

  it('refuses a second open of the same disk', async () => {
    await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1 });
    const store = await DiskStore.open(disk);
    try {
      await expectCode(DiskStore.open(disk), 'STORE_ERR_DISK_IN_USE');
    } finally {
      await store.close();
    }
    const again = await DiskStore.open(disk);
    await again.close();
  });

  it('rejects bad requests with typed errors', async () => {
    await formatDisk(disk, { sizeBytes: SIZE, clusterId: CLUSTER_ID, diskId: 1 });
    const store = await DiskStore.open(disk);
    try {
      const key = { volumeId: 5, objectIndex: 9 };
      const { data, crcs } = blocksData([1, 2], 0);
      await expectCode(store.write(key, 1023, data, crcs, 1), 'STORE_ERR_OUT_OF_RANGE');
      await expectCode(store.write(key, 0, data.subarray(0, 100), crcs, 1), 'STORE_ERR_OUT_OF_RANGE');
      await expectCode(store.write({ volumeId: -1, objectIndex: 0 }, 0, data, crcs, 1), 'STORE_ERR_OUT_OF_RANGE');
      await expectCode(store.read(key, 0, 0), 'STORE_ERR_OUT_OF_RANGE');
      await expectCode(store.trim(key, 1000, 25, 1), 'STORE_ERR_OUT_OF_RANGE');
      const bad = Uint32Array.from(crcs);
      bad[1] = (bad[1] as number) ^ 1;
      await expectCode(store.write(key, 0, data, bad, 1), 'STORE_ERR_CHECKSUM');
      expect(store.stats().blocksUsed).toBe(0);
      expect(store.allocation(key, 0, 4)).toEqual(new Uint8Array(4));
    } finally {
      await store.close();
    }
  });
});
