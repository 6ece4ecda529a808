import { afterEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { BLOCK_BYTES, ZERO_BLOCK_CRC } from '@storpool/protocol';
import { DiskStore, formatDisk, type ObjectKey } from '../src/store/index.js';
import { CLUSTER_ID, blocksData, makeTempDir, patternBlock, randInt, removeDir, rng } from './store-helpers.js';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

/** Model: per object, per block the pattern tag (0 = hole), plus the object's version. */
class Model {
  readonly blocks = new Map<string, Map<number, number>>();
  readonly versions = new Map<string, number>();
  private id(k: ObjectKey): string {
    return `${k.volumeId}/${k.objectIndex}`;
  }
  write(k: ObjectKey, first: number, tags: number[], version: number): void {
    const m = this.blocks.get(this.id(k)) ?? new Map<number, number>();
    tags.forEach((t, i) => m.set(first + i, t));
    this.blocks.set(this.id(k), m);
    this.versions.set(this.id(k), Math.max(this.versions.get(this.id(k)) ?? 0, version));
  }
  trim(k: ObjectKey, first: number, count: number, version: number): void {
    const m = this.blocks.get(this.id(k)) ?? new Map<number, number>();
    for (let b = first; b < first + count; b++) m.delete(b);
    this.blocks.set(this.id(k), m);
    this.versions.set(this.id(k), Math.max(this.versions.get(this.id(k)) ?? 0, version));
  }
  forget(k: ObjectKey): void {
    this.blocks.delete(this.id(k));
    this.versions.delete(this.id(k));
  }
  /** Listed by the store: written at a version above 0, or holding blocks. */
  exists(k: ObjectKey): boolean {
    return this.version(k) > 0 || (this.blocks.get(this.id(k))?.size ?? 0) > 0;
  }
  tag(k: ObjectKey, b: number): number | undefined {
    return this.blocks.get(this.id(k))?.get(b);
  }
  version(k: ObjectKey): number {
    return this.versions.get(this.id(k)) ?? 0;
  }
  allocated(): number {
    let n = 0;
    for (const m of this.blocks.values()) n += m.size;
    return n;
  }
}

const KEYS: ObjectKey[] = [
  { volumeId: 1, objectIndex: 0 },
  { volumeId: 1, objectIndex: 1 },
  { volumeId: 2 ** 40 + 3, objectIndex: 0xffff_fffe },
  { volumeId: 7, objectIndex: 12 },
];

async function checkAll(store: DiskStore, model: Model, r: () => number): Promise<void> {
  for (const key of KEYS) {
    const first = randInt(r, 0, 64);
    const count = randInt(r, 1, 96);
    const res = await store.read(key, first, count);
    expect(res.bad).toEqual([]);
    expect(res.version).toBe(model.version(key));
    for (let i = 0; i < count; i++) {
      const tag = model.tag(key, first + i);
      const got = res.data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      if (tag === undefined) {
        expect(res.allocated[i], `block ${first + i} should be a hole`).toBe(0);
        expect(res.crcs[i]).toBe(ZERO_BLOCK_CRC);
        expect(got.equals(Buffer.alloc(BLOCK_BYTES))).toBe(true);
      } else {
        expect(res.allocated[i]).toBe(1);
        expect(got.equals(patternBlock(tag, first + i)), `block ${first + i} content`).toBe(true);
      }
    }
    expect(Array.from(store.allocation(key, first, count))).toEqual(Array.from(res.allocated));
    expect(store.objectVersion(key)).toBe(model.version(key));
  }
  expect(store.stats().blocksUsed).toBe(model.allocated());
  const listed = store.listObjects({ limit: 100 });
  expect(listed.reduce((s, o) => s + o.allocatedBlocks, 0)).toBe(model.allocated());
  expect(listed.length).toBe(KEYS.filter((k) => model.exists(k)).length);
}

/** One round: a burst of concurrent writes/trims (applied in call order), then checked reads. */
async function round(store: DiskStore, model: Model, r: () => number, version: { v: number }): Promise<void> {
  const ops: Promise<void>[] = [];
  const n = randInt(r, 1, 24);
  for (let i = 0; i < n; i++) {
    const key = KEYS[randInt(r, 0, KEYS.length)] as ObjectKey;
    const first = randInt(r, 0, 150);
    const count = randInt(r, 1, r() < 0.1 ? 200 : 12);
    const ver = r() < 0.2 ? randInt(r, 0, version.v + 1) : ++version.v;
    if (r() < 0.03) {
      model.forget(key);
      ops.push(store.forget(key));
    } else if (r() < 0.25) {
      model.trim(key, first, count, ver);
      ops.push(store.trim(key, first, count, ver));
    } else {
      const tags = Array.from({ length: count }, () => randInt(r, 1, 2 ** 31));
      const { data, crcs } = blocksData(tags, first);
      model.write(key, first, tags, ver);
      ops.push(store.write(key, first, data, crcs, ver));
    }
  }
  await Promise.all(ops);
}

describe('DiskStore against an in-memory model', () => {
  const seeds = process.env.SEED !== undefined ? [Number(process.env.SEED)] : [Date.now() % 1_000_000, 1, 2];
  for (const seed of seeds) {
    it(`random writes/trims/forgets/reads with reopen (SEED=${seed})`, async () => {
      try {
        dir = await makeTempDir('model');
        const disk = path.join(dir, 'disk.img');
        await formatDisk(disk, { sizeBytes: 48 * 1024 * 1024, clusterId: CLUSTER_ID, diskId: 1 });
        const r = rng(seed);
        const model = new Model();
        const version = { v: 0 };
        // Every other open reads through the threadpool only (the other: synchronous page-cache reads).
        let opens = 0;
        const open = (): Promise<DiskStore> => DiskStore.open(disk, { readPath: opens++ % 2 === 1 ? { syncBytesMax: 0 } : {} });
        const checkReadPath = (): void => {
          const s = store.stats();
          if (opens % 2 === 0) expect(s.syncReads).toBe(0);
          expect(s.syncReads + s.asyncReads).toBeGreaterThan(0);
        };
        let store = await open();
        try {
          for (let i = 0; i < 60; i++) {
            await round(store, model, r, version);
            await checkAll(store, model, r);
            if (i % 15 === 14) {
              checkReadPath();
              await store.close();
              store = await open();
              await checkAll(store, model, r);
            }
          }
          const existing = KEYS.filter((k) => model.exists(k)).length;
          const listed = store.listObjects({ limit: 2 });
          expect(listed.length).toBe(Math.min(2, existing));
          if (listed.length === 2) {
            const rest = store.listObjects({ after: (listed[1] as { key: ObjectKey }).key, limit: 100 });
            expect(rest.length).toBe(existing - 2);
          }
        } finally {
          await store.close();
        }
      } catch (err) {
        console.error(`store model test failed with SEED=${seed}`);
        throw err;
      }
    });
  }
});

describe('DiskStore overlay under a running checkpoint', () => {
  it('reads see each cycle as it is published, while the journal ring forces checkpoints under it, and after reopen', async () => {
    dir = await makeTempDir('overlay');
    const disk = path.join(dir, 'disk.img');
    await formatDisk(disk, { sizeBytes: 16 * 1024 * 1024, clusterId: CLUSTER_ID, diskId: 1 });
    const r = rng(7);
    const model = new Model();
    const key: ObjectKey = { volumeId: 3, objectIndex: 1 };
    let store = await DiskStore.open(disk);
    try {
      // One cycle per op (awaited): 4 KiB of ring each, so a checkpoint starts every ~120 cycles
      // and runs while the next cycles publish into the fresh overlay above it.
      const commitsBefore = store.stats().commits;
      for (let i = 1; i <= 600; i++) {
        const first = randInt(r, 0, 32);
        const count = randInt(r, 1, 4);
        if (r() < 0.2) {
          model.trim(key, first, count, i);
          await store.trim(key, first, count, i);
        } else {
          const tags = Array.from({ length: count }, () => randInt(r, 1, 2 ** 31));
          const { data, crcs } = blocksData(tags, first);
          model.write(key, first, tags, i);
          await store.write(key, first, data, crcs, i);
        }
        const res = await store.read(key, 0, 36);
        for (let b = 0; b < 36; b++) {
          const tag = model.tag(key, b);
          const got = res.data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
          expect(got.equals(tag === undefined ? Buffer.alloc(BLOCK_BYTES) : patternBlock(tag, b)), `op ${i} block ${b}`).toBe(true);
        }
        expect(res.version).toBe(i);
      }
      expect(store.stats().commits - commitsBefore).toBe(600);
      await store.close();
      store = await DiskStore.open(disk);
      const res = await store.read(key, 0, 36);
      for (let b = 0; b < 36; b++) {
        const tag = model.tag(key, b);
        expect(res.data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES).equals(tag === undefined ? Buffer.alloc(BLOCK_BYTES) : patternBlock(tag, b))).toBe(true);
      }
      expect(store.stats().blocksUsed).toBe(model.allocated());
    } finally {
      await store.close();
    }
  });
});

describe('DiskStore concurrent reads', () => {
  it('gives every read of a burst its own bytes (read buffers are cut from shared slabs)', async () => {
    dir = await makeTempDir('reads');
    const disk = path.join(dir, 'disk.img');
    await formatDisk(disk, { sizeBytes: 16 * 1024 * 1024, clusterId: CLUSTER_ID, diskId: 1 });
    const key: ObjectKey = { volumeId: 4, objectIndex: 0 };
    const store = await DiskStore.open(disk);
    try {
      const tags = Array.from({ length: 300 }, (_, i) => 1000 + i);
      const { data, crcs } = blocksData(tags, 0);
      await store.write(key, 0, data, crcs, 1);
      // 300 x 4 KiB (more than one 1 MiB slab), all in flight before any is looked at.
      const reads = await Promise.all(tags.map((_, b) => store.read(key, b, 1)));
      reads.forEach((res, b) => expect(res.data.equals(patternBlock(tags[b]!, b)), `block ${b}`).toBe(true));
    } finally {
      await store.close();
    }
  });
});
