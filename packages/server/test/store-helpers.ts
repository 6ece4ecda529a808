/** Shared helpers of the store*.test.ts files (not a test itself). */
import { BLOCK_BYTES, chunkCrcs } from '@storpool/protocol';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { formatDisk } from '../src/store/index.js';

export const CLUSTER_ID = '6f1c2a52-8f0e-4c1b-9d3a-2b7e5c4d1a90';
export const OTHER_CLUSTER_ID = '0b8e9a1c-3d2f-4e5a-8b7c-6d5e4f3a2b1c';

/** Small deterministic PRNG (mulberry32) so failures replay from their SEED. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(r: () => number, lo: number, hiExclusive: number): number {
  return lo + Math.floor(r() * (hiExclusive - lo));
}

/** A block whose every u32 is `tag` except the second, which is the block index: self-describing. */
export function patternBlock(tag: number, block: number): Buffer {
  const b = Buffer.alloc(BLOCK_BYTES);
  for (let i = 0; i < BLOCK_BYTES; i += 4) b.writeUInt32LE(tag >>> 0, i);
  b.writeUInt32LE(block, 4);
  return b;
}

export function blocksData(tags: number[], firstBlock: number): { data: Buffer; crcs: Uint32Array } {
  const data = Buffer.concat(tags.map((t, i) => patternBlock(t, firstBlock + i)));
  return { data, crcs: chunkCrcs(data) };
}

export async function makeTempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `storpool-${prefix}-`));
}

/** A 64 MiB disk file `disk.img` in `dir`, formatted for CLUSTER_ID as disk 1; returns its path. */
export async function formatTestDisk(dir: string): Promise<string> {
  const disk = path.join(dir, 'disk.img');
  await formatDisk(disk, { sizeBytes: 64 * 1024 ** 2, clusterId: CLUSTER_ID, diskId: 1 });
  return disk;
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
}

/** The crash test's op stream: op `seq` (1-based) is a pure function of (seed, seq). */
export interface CrashOp {
  seq: number;
  kind: 'write' | 'trim';
  objectIndex: number;
  firstBlock: number;
  blockCount: number;
}
export const CRASH_OBJECTS = 2;
export const CRASH_BLOCKS = 64;

export function crashOps(seed: number, count: number): CrashOp[] {
  const r = rng(seed);
  const ops: CrashOp[] = [];
  for (let seq = 1; seq <= count; seq++) {
    const blockCount = randInt(r, 1, 9);
    ops.push({
      seq,
      kind: r() < 0.2 ? 'trim' : 'write',
      objectIndex: randInt(r, 0, CRASH_OBJECTS),
      firstBlock: randInt(r, 0, CRASH_BLOCKS - blockCount + 1),
      blockCount,
    });
  }
  return ops;
}
