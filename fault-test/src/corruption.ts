/**
 * Bit rot for fault tests: a "cold" volume written once with self-describing blocks, bytes of one
 * copy of such a block flipped in a disk file (found by its content: the store keeps data blocks
 * as they were written, from 1 MiB into the file), and a scrub pass of that disk through the
 * management API (DiskScrubStart) watched in the server's STATS.
 */
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StorpoolClient } from '@storpool/client';
import type { FaultCluster, FaultVolume } from './cluster.js';

/** A server's scrub status (STATS `scrub`, packages/protocol's ScrubStatus). */
export type ScrubStatus = Awaited<ReturnType<StorpoolClient['scrub']>>;

const BLOCK = 4096;
const OBJECT = 4 * 1024 * 1024;
/** Where the data area of a disk file starts (docs/on-disk-format.md). */
const DATA_OFFSET = 1024 * 1024;

/** Block b of object o of a cold volume of run `seed`: unique in the run, recognisable in a disk file. */
export function coldBlock(seed: number, o: number, b: number): Buffer {
  const buf = Buffer.alloc(BLOCK);
  buf.write('SPCOLD01', 0, 'latin1');
  buf.writeUInt32LE(seed >>> 0, 8);
  buf.writeUInt32LE(o, 12);
  buf.writeUInt32LE(b, 16);
  let x = (seed ^ (o * 0x9e3779b1) ^ (b * 0x85ebca6b) ^ 0x2545f491) >>> 0 || 1;
  for (let i = 20; i + 4 <= BLOCK; i += 4) {
    // xorshift32: cheap, and no two blocks of a run alike.
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf;
}

/** Writes `blocks` cold blocks at the start of each of the volume's objects through a client (in the root namespace). */
export async function writeCold(c: FaultCluster, vol: FaultVolume, seed: number, blocks: number): Promise<void> {
  const client = await c.client();
  const v = client.volume({ volumeId: vol.dataId, placementId: vol.placementId, parents: [], sizeBytes: vol.size, group: vol.group });
  for (let o = 0; o < vol.size / OBJECT; o++) {
    await v.write(o * OBJECT, Buffer.concat(Array.from({ length: blocks }, (_, b) => coldBlock(seed, o, b))));
  }
}

/** Every cold block read back through the volume; the blocks that differ from what was written. */
export async function checkCold(c: FaultCluster, vol: FaultVolume, seed: number, blocks: number): Promise<string[]> {
  const client = await c.client();
  const v = client.volume({ volumeId: vol.dataId, placementId: vol.placementId, parents: [], sizeBytes: vol.size, group: vol.group });
  const bad: string[] = [];
  for (let o = 0; o < vol.size / OBJECT; o++) {
    const data = await v.read(o * OBJECT, blocks * BLOCK);
    for (let b = 0; b < blocks; b++) if (!data.subarray(b * BLOCK, (b + 1) * BLOCK).equals(coldBlock(seed, o, b))) bad.push(`object ${o} block ${b}`);
  }
  return bad;
}

/** Flips 4 bytes in the middle of the (only) copy of `content` in a disk file; returns its offset. */
export async function corruptBlockInFile(path: string, content: Buffer): Promise<number> {
  const fh = await open(path, 'r+');
  try {
    const size = (await fh.stat()).size;
    const window = Buffer.alloc(8 * 1024 * 1024);
    const head = content.readUInt32LE(0);
    for (let at = DATA_OFFSET; at < size; at += window.length) {
      const { bytesRead } = await fh.read(window, 0, window.length, at);
      for (let off = 0; off + BLOCK <= bytesRead; off += BLOCK) {
        if (window.readUInt32LE(off) !== head || !window.subarray(off, off + BLOCK).equals(content)) continue;
        const flip = Buffer.from(window.subarray(off + 2000, off + 2004).map((x) => x ^ 0xff));
        await fh.write(flip, 0, flip.length, at + off + 2000);
        await fh.datasync();
        return at + off;
      }
    }
  } finally {
    await fh.close();
  }
  throw new Error(`block ${content.subarray(0, 20).toString('hex')} not found in ${path}`);
}

/** DiskScrubStart through the API, then the server's scrub status until that pass has ended. */
export async function scrubPass(c: FaultCluster, diskId: number, timeoutMs = 120_000): Promise<ScrubStatus> {
  const status = async (): Promise<ScrubStatus> => ((await c.diskStats(diskId)) as { scrub: ScrubStatus }).scrub;
  const before = (await status()).passesCompleted;
  await c.api.request('POST', 'DiskScrubStart', [String(diskId)]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await status();
    if (!s.running && s.passesCompleted > before) return s;
    if (!s.running && s.pass.aborted) throw new Error(`scrub pass of disk ${diskId} was stopped: ${JSON.stringify(s.pass)}`);
    if (Date.now() > deadline) throw new Error(`scrub pass of disk ${diskId} not done after ${timeoutMs} ms: ${JSON.stringify(s.pass)}`);
    await sleep(200);
  }
}
