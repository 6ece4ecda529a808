/**
 * The scrubber on real server processes (replication 3): bytes of data blocks are flipped directly
 * in the disk files, then a pass started with the SCRUB op must find them, repair them from
 * another disk's copy, and keep to its bandwidth; a block bad on every disk is reported, not made up.
 */
import { open } from 'node:fs/promises';
import { BLOCK_BYTES, OBJECT_BYTES, type ScrubStatus } from '@storpool/protocol';
import type { StorpoolClient, Volume } from '@storpool/client';
import { LocalCluster } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA_OFFSET_BYTES } from '../src/store/index.js';

const MB = 1_000_000;
const SCRUB_MBPS = 2;
const OBJECTS = 8;
const BYTES_PER_OBJECT = 64 * BLOCK_BYTES;
const VOLUME_ID = 21;

let cluster: LocalCluster | undefined;
let client: StorpoolClient;
let volume: Volume;
const model = new Map<number, Buffer>();

/** Distinct content for every 4 KiB block, so that a block can be found in a disk file by its bytes. */
function blockContent(objectIndex: number, block: number): Buffer {
  const b = Buffer.alloc(BLOCK_BYTES);
  for (let i = 0; i < BLOCK_BYTES; i += 4) b.writeUInt32LE((objectIndex * 0x9e3779b1 + block * 0x85ebca6b + i * 0x27d4eb2f + 1) >>> 0, i);
  return b;
}

/** Byte position of the block holding `content` in a disk file (a fresh disk: data near the start). */
async function findBlock(path: string, content: Buffer): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const window = Buffer.alloc(4 * 1024 * 1024);
    for (let at = DATA_OFFSET_BYTES; at < DATA_OFFSET_BYTES + 64 * 1024 * 1024; at += window.length) {
      const { bytesRead } = await fh.read(window, 0, window.length, at);
      for (let off = 0; off + BLOCK_BYTES <= bytesRead; off += BLOCK_BYTES) {
        if (window.readUInt32LE(off) === content.readUInt32LE(0) && window.subarray(off, off + BLOCK_BYTES).equals(content)) return at + off;
      }
    }
  } finally {
    await fh.close();
  }
  throw new Error(`block not found in ${path}`);
}

async function corrupt(diskId: number, objectIndex: number, block: number): Promise<void> {
  const at = await findBlock(cluster!.diskPath(diskId), blockContent(objectIndex, block));
  const fh = await open(cluster!.diskPath(diskId), 'r+');
  try {
    await fh.write(Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, at + 1000);
  } finally {
    await fh.close();
  }
}

/** Starts a pass and waits for its end; returns the final status. */
async function scrubPass(diskId: number): Promise<ScrubStatus> {
  const started = await client.scrub(diskId, 'start');
  expect(started.running).toBe(true);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const s = await client.scrub(diskId);
    if (!s.running) return s;
    if (Date.now() > deadline) throw new Error(`scrub of disk ${diskId} still running: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 128 * 1024 ** 2, shardCount: 64, serverArgs: ['--scrub-mbps', String(SCRUB_MBPS), '--scrub-interval', '0'] });
  client = await cluster.client();
  volume = client.volume({ volumeId: VOLUME_ID, sizeBytes: OBJECTS * OBJECT_BYTES, group: 1 });
  for (let o = 0; o < OBJECTS; o++) {
    const data = Buffer.concat(Array.from({ length: BYTES_PER_OBJECT / BLOCK_BYTES }, (_, b) => blockContent(o, b)));
    model.set(o, data);
    await volume.write(o * OBJECT_BYTES, data);
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('scrubber', () => {
  it('is idle until asked (interval 0), and reports its settings', async () => {
    const s = await client.scrub(2);
    expect(s).toMatchObject({ diskId: 2, running: false, bandwidthBytesPerSecond: SCRUB_MBPS * MB, intervalMs: 0, passesCompleted: 0, nextScheduledAt: null, pass: { startedAt: null, bytes: 0 } });
    const stats = (await client.diskStats(2)) as { scrub: ScrubStatus };
    expect(stats.scrub).toEqual({ ...s, pass: { ...s.pass, rateBytesPerSecond: expect.any(Number) } });
  });

  it('finds flipped bytes in one replica, repairs them from another disk, within its bandwidth', async () => {
    const victim = 2;
    const bad = [[0, 5], [3, 63], [7, 0]] as const;
    for (const [o, b] of bad) await corrupt(victim, o, b);

    const s = await scrubPass(victim);
    const dataBytes = OBJECTS * BYTES_PER_OBJECT;
    expect(s.pass).toMatchObject({ objects: OBJECTS, objectsTotal: OBJECTS, bytes: dataBytes, bytesTotal: dataBytes, errorsFound: bad.length, repaired: bad.length, unrepairable: 0, progress: 1, aborted: false });
    expect(s.passesCompleted).toBe(1);
    expect(s.lastCompletedAt).toBe(s.pass.finishedAt);
    expect(s.unrepairableBlocks).toEqual([]);
    // Throttle: X bytes at Y bytes/s cannot take less than X/Y seconds (server clock, both ends).
    const minimumMs = (dataBytes / (SCRUB_MBPS * MB)) * 1000;
    expect(s.pass.finishedAt! - s.pass.startedAt!).toBeGreaterThanOrEqual(Math.floor(minimumMs));
    expect(s.pass.rateBytesPerSecond).toBeLessThanOrEqual(SCRUB_MBPS * MB * 1.001);

    // Every replica holds the written bytes again.
    for (const diskId of [1, 2, 3]) {
      for (let o = 0; o < OBJECTS; o++) expect((await client.readReplica(diskId, 1, VOLUME_ID, o, 0, BYTES_PER_OBJECT)).data.equals(model.get(o)!), `disk ${diskId} object ${o}`).toBe(true);
    }
    const stats = (await client.diskStats(victim)) as { store: { corruptBlocksFound: number; corruptBlocksRepaired: number }; scrub: ScrubStatus };
    expect(stats.store).toMatchObject({ corruptBlocksFound: bad.length, corruptBlocksRepaired: bad.length });
    expect(stats.scrub.total).toMatchObject({ errorsFound: bad.length, repaired: bad.length, unrepairable: 0 });
    const log = cluster!.servers.get(victim)!.log;
    expect(log.filter((l) => l.includes('scrub: blocks failed their CRC32C'))).toHaveLength(bad.length);
    expect(log.filter((l) => l.includes('scrub pass completed'))).toHaveLength(1);

    // A second pass finds nothing.
    const again = await scrubPass(victim);
    expect(again.pass).toMatchObject({ errorsFound: 0, repaired: 0, unrepairable: 0, bytes: dataBytes, progress: 1 });
    expect(again.passesCompleted).toBe(2);
    expect(again.total.repaired).toBe(bad.length);
  }, 180_000);

  it('client writes during a pass: no false findings, every replica ends with the last write', async () => {
    const other = client.volume({ volumeId: VOLUME_ID + 1, sizeBytes: OBJECTS * OBJECT_BYTES, group: 1 });
    const content = (round: number, o: number): Buffer => Buffer.concat(Array.from({ length: BYTES_PER_OBJECT / BLOCK_BYTES }, (_, b) => blockContent(1000 * round + o, b)));
    await Promise.all(Array.from({ length: OBJECTS }, (_, o) => other.write(o * OBJECT_BYTES, content(0, o))));
    const started = await client.scrub(3, 'start');
    expect(started.running).toBe(true);
    for (let round = 1; round <= 3; round++) await Promise.all(Array.from({ length: OBJECTS }, (_, o) => other.write(o * OBJECT_BYTES, content(round, o))));
    let s = await client.scrub(3);
    for (let i = 0; s.running && i < 1200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      s = await client.scrub(3);
    }
    expect(s.pass).toMatchObject({ errorsFound: 0, repaired: 0, unrepairable: 0, progress: 1, aborted: false });
    for (const diskId of [1, 2, 3]) {
      for (let o = 0; o < OBJECTS; o++) expect((await client.readReplica(diskId, 1, VOLUME_ID + 1, o, 0, BYTES_PER_OBJECT)).data.equals(content(3, o)), `disk ${diskId} object ${o}`).toBe(true);
    }
  }, 180_000);

  it('a block bad on every disk: counted unrepairable and listed, nothing made up', async () => {
    const [o, b] = [4, 17];
    for (const diskId of [1, 2, 3]) await corrupt(diskId, o, b);

    const s = await scrubPass(1);
    expect(s.pass).toMatchObject({ errorsFound: 1, repaired: 0, unrepairable: 1, progress: 1, aborted: false });
    expect(s.unrepairableBlocks).toEqual([{ volumeId: VOLUME_ID, objectIndex: o, block: b, at: expect.any(Number) }]);
    expect(cluster!.servers.get(1)!.log.some((l) => l.includes('no disk has a good copy of the block'))).toBe(true);
    // Still reported as bad on every disk: no copy was fabricated, and reads fail instead of returning wrong bytes.
    for (const diskId of [1, 2, 3]) await expect(client.readReplica(diskId, 1, VOLUME_ID, o, b * BLOCK_BYTES, BLOCK_BYTES)).rejects.toMatchObject({ code: 'STORE_ERR_CHECKSUM' });
    await expect(volume.read(o * OBJECT_BYTES + b * BLOCK_BYTES, BLOCK_BYTES)).rejects.toMatchObject({ code: 'STORE_ERR_CHECKSUM' });
    // The neighbours of the bad block are intact.
    expect((await volume.read(o * OBJECT_BYTES + (b + 1) * BLOCK_BYTES, BLOCK_BYTES)).equals(blockContent(o, b + 1))).toBe(true);
  }, 180_000);

  it('stops a running pass on request', async () => {
    const completed = (await client.scrub(3)).passesCompleted;
    await client.scrub(3, 'start');
    const stopped = await client.scrub(3, 'stop');
    expect(stopped.pass.startedAt).not.toBeNull();
    let s = stopped;
    for (let i = 0; s.running && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      s = await client.scrub(3);
    }
    expect(s).toMatchObject({ running: false, passesCompleted: completed, pass: { aborted: true } });
    expect(s.pass.progress).toBeLessThan(1);
  }, 60_000);
});
