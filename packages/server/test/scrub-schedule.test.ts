/**
 * The Scrubber over a real DiskStore in this process (no servers): the schedule, the throttle,
 * stop/close, and the repaired/unrepairable verdict, which is what the store reads back after the
 * repair callback, not what the callback claims.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { BLOCK_BYTES, crc32c } from '@storpool/protocol';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Scrubber, type ScrubberOptions } from '../src/scrubber.js';
import type { BadBlock } from '../src/shard-service.js';
import { DATA_OFFSET_BYTES, DiskStore, formatDisk, type ObjectKey } from '../src/store/index.js';
import { CLUSTER_ID, blocksData, makeTempDir, patternBlock, removeDir } from './store-helpers.js';

let dir: string | undefined;
let disk: string;
let store: DiskStore | undefined;
let scrubber: Scrubber | undefined;
const log = pino({ level: 'silent' });

beforeEach(async () => {
  dir = await makeTempDir('scrub');
  disk = path.join(dir, 'disk.img');
  await formatDisk(disk, { sizeBytes: 64 * 1024 * 1024, clusterId: CLUSTER_ID, diskId: 4 });
  store = await DiskStore.open(disk);
});
afterEach(async () => {
  try {
    await scrubber?.close();
    await store?.close();
  } finally {
    scrubber = undefined;
    store = undefined;
    await removeDir(dir);
    dir = undefined;
  }
});

function make(o: Partial<ScrubberOptions>): Scrubber {
  scrubber = new Scrubber({ diskId: 4, store: store!, log, repair: async () => undefined, bandwidthBytesPerSecond: 0, intervalMs: 0, ...o });
  return scrubber;
}

async function until(what: string, done: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Objects 0..n-1 of volume 5, `blocks` blocks each: tags 100*object + block. Fresh disk: physical blocks in write order. */
async function fill(objects: number, blocks: number): Promise<void> {
  for (let o = 0; o < objects; o++) {
    const { data, crcs } = blocksData(Array.from({ length: blocks }, (_, b) => 100 * o + b), 0);
    await store!.write({ volumeId: 5, objectIndex: o }, 0, data, crcs, 1);
  }
}

async function flip(physical: number): Promise<void> {
  const fh = await fs.open(disk, 'r+');
  try {
    await fh.write(Buffer.from([0x55, 0xaa]), 0, 2, DATA_OFFSET_BYTES + physical * BLOCK_BYTES + 100);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

describe('Scrubber schedule and throttle', () => {
  it('runs a pass every interval after the previous one, and none after close', async () => {
    await fill(3, 4);
    const s = make({ intervalMs: 150 });
    expect(s.status()).toMatchObject({ running: false, passesCompleted: 0, nextScheduledAt: expect.any(Number) });
    await until('two scheduled passes', () => s.status().passesCompleted >= 2);
    const st = s.status();
    expect(st.pass).toMatchObject({ objects: 3, objectsTotal: 3, bytes: 12 * BLOCK_BYTES, progress: 1, errorsFound: 0 });
    expect(st.total.bytes).toBeGreaterThanOrEqual(2 * 12 * BLOCK_BYTES);
    await s.close();
    const after = s.status().passesCompleted;
    expect(s.status().nextScheduledAt).toBeNull();
    await new Promise((r) => setTimeout(r, 400));
    expect(s.status().passesCompleted).toBe(after);
  }, 90_000);

  it('keeps to its bandwidth: X bytes at Y bytes/s take at least X/Y s; stop aborts', async () => {
    await fill(4, 64); // 1 MiB of data
    const rate = 2 * 1024 * 1024; // 2 MiB/s: at least 500 ms
    const s = make({ bandwidthBytesPerSecond: rate });
    s.start();
    await until('the pass', () => !s.running);
    const { pass } = s.status();
    expect(pass.bytes).toBe(4 * 64 * BLOCK_BYTES);
    expect(pass.finishedAt! - pass.startedAt!).toBeGreaterThanOrEqual((pass.bytes / rate) * 1000);
    expect(pass.rateBytesPerSecond).toBeLessThanOrEqual(rate);

    const slow = make({ bandwidthBytesPerSecond: 64 * 1024 }); // 16 s for the whole disk's data
    slow.start();
    await until('some progress', () => slow.status().pass.bytes > 0);
    slow.stop();
    await until('the stop', () => !slow.running);
    expect(slow.status()).toMatchObject({ passesCompleted: 0, lastCompletedAt: null, pass: { aborted: true } });
    expect(slow.status().pass.progress).toBeLessThan(1);
    await s.close();
  }, 90_000);
});

describe('Scrubber verdicts', () => {
  it('repaired only when the block reads back good; unrepairable otherwise, and listed', async () => {
    await fill(2, 4); // object 0: physical 0..3, object 1: physical 4..7
    await flip(1);
    await flip(6);
    const asked: { key: ObjectKey; blocks: readonly BadBlock[] }[] = [];
    // Supplies a good copy for object 0 only (what a peer would send), nothing for object 1.
    const repair = async (key: ObjectKey, blocks: readonly BadBlock[]): Promise<void> => {
      asked.push({ key, blocks });
      if (key.objectIndex !== 0) return;
      for (const b of blocks) {
        const good = patternBlock(100 * key.objectIndex + b.block, b.block);
        expect(crc32c(good)).toBe(b.crc);
        await store!.repair(key, b.block, good, b.crc);
      }
    };
    const s = make({ repair });
    s.start();
    await until('the pass', () => !s.running);
    const st = s.status();
    expect(st.pass).toMatchObject({ errorsFound: 2, repaired: 1, unrepairable: 1, progress: 1 });
    expect(asked.map((a) => [a.key.objectIndex, a.blocks.map((b) => b.block)])).toEqual([[0, [1]], [1, [2]]]);
    expect(st.unrepairableBlocks).toEqual([{ volumeId: 5, objectIndex: 1, block: 2, at: expect.any(Number) }]);
    expect((await store!.read({ volumeId: 5, objectIndex: 0 }, 0, 4)).bad).toEqual([]);
    expect((await store!.read({ volumeId: 5, objectIndex: 1 }, 0, 4)).bad).toEqual([2]);
  }, 60_000);
});
