/**
 * DiskStore throughput (not a test). Run from the repo root:
 *   npx tsx packages/server/test/store-throughput.ts [seconds-per-phase]
 *   THICK=1 npx tsx ...   (zero-fills the file first, like a block device: no sparse-file allocation)
 * Formats a 1 GiB disk file in os.tmpdir() (sparse unless THICK=1) and reports
 *   - 4 KiB random writes at queue depth 32 (IOPS, commits, writes per commit)
 *   - 1 MiB sequential writes at queue depth 8 (MiB/s)
 *   - 4 KiB random reads at queue depth 32 (IOPS)
 */
import { BLOCK_BYTES, BLOCKS_PER_OBJECT, chunkCrcs } from '@storpool/protocol';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DiskStore, formatDisk } from '../src/store/index.js';

const SECONDS = Number(process.argv[2] ?? 5);
const DISK_BYTES = 1024 * 1024 * 1024;
const OBJECTS = 128; // 512 MiB of address space: half the disk, room for redirect-on-write

async function runPhase(depth: number, seconds: number, op: (i: number) => Promise<unknown>): Promise<{ ops: number; secs: number }> {
  const deadline = performance.now() + seconds * 1000;
  const start = performance.now();
  let n = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) await op(n++);
  };
  await Promise.all(Array.from({ length: depth }, worker));
  return { ops: n, secs: (performance.now() - start) / 1000 };
}

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'storpool-bench-'));
try {
  const disk = path.join(dir, 'disk.img');
  if (process.env.THICK === '1') {
    const fh = await fs.open(disk, 'w');
    const zeros = Buffer.alloc(8 * 1024 * 1024);
    for (let off = 0; off < DISK_BYTES; off += zeros.length) await fh.write(zeros, 0, zeros.length, off);
    await fh.sync();
    await fh.close();
  }
  await formatDisk(disk, { sizeBytes: DISK_BYTES, clusterId: '6f1c2a52-8f0e-4c1b-9d3a-2b7e5c4d1a90', diskId: 1 });
  const store = await DiskStore.open(disk);
  const block = Buffer.alloc(BLOCK_BYTES, 0xa5);
  const blockCrc = chunkCrcs(block);
  const big = Buffer.alloc(1024 * 1024, 0x5a);
  const bigCrcs = chunkCrcs(big);
  const blocksPerMiB = (1024 * 1024) / BLOCK_BYTES;

  let c0 = store.stats().commits;
  const rnd = await runPhase(32, SECONDS, () => {
    const o = Math.floor(Math.random() * OBJECTS);
    const b = Math.floor(Math.random() * BLOCKS_PER_OBJECT);
    return store.write({ volumeId: 1, objectIndex: o }, b, block, blockCrc, 1);
  });
  const rndCommits = store.stats().commits - c0;
  console.log(`4 KiB random write QD32: ${Math.round(rnd.ops / rnd.secs)} IOPS (${rnd.ops} writes, ${rndCommits} commits, ${(rnd.ops / rndCommits).toFixed(1)} writes/commit)`);

  c0 = store.stats().commits;
  const seq = await runPhase(8, SECONDS, (i) => {
    const mib = i % (OBJECTS * 4);
    const o = Math.floor(mib / 4);
    return store.write({ volumeId: 2, objectIndex: o }, (mib % 4) * blocksPerMiB, big, bigCrcs, 1);
  });
  const seqCommits = store.stats().commits - c0;
  console.log(`1 MiB sequential write QD8: ${(seq.ops / seq.secs).toFixed(0)} MiB/s (${seq.ops} writes, ${seqCommits} commits)`);

  const rd = await runPhase(32, SECONDS, () => {
    const o = Math.floor(Math.random() * OBJECTS);
    const b = Math.floor(Math.random() * BLOCKS_PER_OBJECT);
    return store.read({ volumeId: 1, objectIndex: o }, b, 1);
  });
  console.log(`4 KiB random read QD32: ${Math.round(rd.ops / rd.secs)} IOPS (page cache warm for written blocks)`);
  console.log('stats', store.stats());
  await store.close();
} finally {
  await fs.rm(dir, { recursive: true, force: true });
}
