/**
 * Fault test 5 of issue #5, through the management API: bytes of one replica are flipped in its
 * disk file; DiskScrubStart makes that disk's server scrub it; TasksList shows the pass until it
 * ends; DiskDescribe shows the counters; every replica holds the written bytes again. A block bad
 * on every disk is reported unrepairable, and reads of it fail instead of returning made-up data.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient, type Volume, type VolumeSpec } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { BLOCK_BYTES, OBJECT_BYTES, type ScrubStatus } from '@storpool/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from './helpers.js';

const MiB = 1024 * 1024;
const SCRUB_MBPS = 1;
const OBJECTS = 4;
const BYTES_PER_OBJECT = 128 * BLOCK_BYTES;
let dir: string;
let cluster: LocalCluster | undefined;
let client: StorpoolClient;
let api: Api;
let spec: VolumeSpec;
let volume: Volume;
const model = new Map<number, Buffer>();

function blockContent(objectIndex: number, block: number): Buffer {
  const b = Buffer.alloc(BLOCK_BYTES);
  for (let i = 0; i < BLOCK_BYTES; i += 4) b.writeUInt32LE((objectIndex * 0x2545f491 + block * 0x9e3779b1 + i * 0x85ebca6b + 7) >>> 0, i);
  return b;
}

function diskPath(diskId: number): string {
  const s = cluster!.servers.find((x) => x.diskId === diskId);
  if (s === undefined) throw new Error(`no disk ${diskId}`);
  return s.diskPath;
}

/** Flips bytes of the block holding that content in a disk file (found by its bytes: a fresh disk keeps data near its start). */
async function corrupt(diskId: number, objectIndex: number, block: number): Promise<void> {
  const content = blockContent(objectIndex, block);
  const fh = await open(diskPath(diskId), 'r+');
  try {
    const window = Buffer.alloc(4 * MiB);
    for (let at = 0; at < 64 * MiB; at += window.length) {
      const { bytesRead } = await fh.read(window, 0, window.length, at);
      for (let off = 0; off + BLOCK_BYTES <= bytesRead; off += BLOCK_BYTES) {
        if (window.readUInt32LE(off) !== content.readUInt32LE(0) || !window.subarray(off, off + BLOCK_BYTES).equals(content)) continue;
        await fh.write(Buffer.from([0x01, 0x02, 0x03]), 0, 3, at + off + 2048);
        return;
      }
    }
  } finally {
    await fh.close();
  }
  throw new Error(`object ${objectIndex} block ${block} not found on disk ${diskId}`);
}

/** Polls TasksList until disk `diskId` has no scrub task; returns the tasks seen on the way. */
async function waitScrubTask(diskId: number): Promise<Record<string, unknown>[]> {
  const seen: Record<string, unknown>[] = [];
  const deadline = Date.now() + 120_000;
  for (;;) {
    const tasks = (await api.get<Record<string, unknown>[]>('TasksList')).filter((t) => t['kind'] === 'scrub' && t['diskId'] === diskId);
    if (tasks.length === 0) return seen;
    seen.push(...tasks);
    if (Date.now() > deadline) throw new Error(`scrub task of disk ${diskId} still running: ${JSON.stringify(tasks)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-scrub-'));
  cluster = await startLocalCluster({ dataDir: dir, port: 0, diskSizeBytes: 256 * MiB, shardCount: 64, serverLogLevel: 'warn', serverArgs: ['--scrub-mbps', String(SCRUB_MBPS), '--scrub-interval', '0'] });
  api = new Api(cluster.url, cluster.token);
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 1, retryDeadlineMs: 20_000 });
  await api.post('VolumeCreate', { name: 'scrubbed', size: 16 * MiB, template: 'default' });
  const o = [...(await cluster.service.model.read()).objects.values()].find((x) => x.name === 'scrubbed')!;
  spec = { volumeId: o.dataId, placementId: o.placementId, parents: [...o.parents], sizeBytes: o.size, group: o.group };
  await client.refreshMap();
  volume = client.volume(spec);
  for (let i = 0; i < OBJECTS; i++) {
    const data = Buffer.concat(Array.from({ length: BYTES_PER_OBJECT / BLOCK_BYTES }, (_, b) => blockContent(i, b)));
    model.set(i, data);
    await volume.write(i * OBJECT_BYTES, data);
  }
}, 120_000);

afterAll(async () => {
  client?.close();
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('scrubbing through the management API', () => {
  it('DiskScrubStart: a flipped replica is found and repaired; TasksList shows the pass; DiskDescribe the counters', async () => {
    const victim = 2;
    const before = await api.get('DiskDescribe/2');
    expect(before).toMatchObject({ scrubbingStartedBefore: 0, scrubbedBytes: 0, lastScrubCompleted: 0, scrubStatus: { running: false, passesCompleted: 0 } });
    await corrupt(victim, 1, 9);
    await corrupt(victim, 3, 127);

    const requested = Date.now();
    await api.post(`DiskScrubStart/${victim}`);
    const seen = await waitScrubTask(victim);
    // 2 MiB at 1 MB/s lasts 2 s: the task is seen running, with progress.
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[0]).toMatchObject({ diskId: victim, kind: 'scrub', state: 'running', unresolvedObjects: 0 });
    expect(seen.at(-1)!['allObjects']).toBe(OBJECTS);

    const disk = await api.get('DiskDescribe/2');
    const s = disk.scrubStatus as ScrubStatus;
    const dataBytes = OBJECTS * BYTES_PER_OBJECT;
    expect(s.pass).toMatchObject({ objects: OBJECTS, bytes: dataBytes, errorsFound: 2, repaired: 2, unrepairable: 0, progress: 1, aborted: false });
    expect(disk.lastScrubCompleted).toBeGreaterThanOrEqual(Math.floor(requested / 1000));
    expect(disk).toMatchObject({ scrubbingStartedBefore: 0, scrubbedBytes: 0, scrubbingPaused: false });
    // Throttled: the pass of dataBytes at 1 MB/s cannot have ended sooner than dataBytes/1e6 s.
    expect(s.pass.finishedAt! - s.pass.startedAt!).toBeGreaterThanOrEqual(Math.floor((dataBytes / (SCRUB_MBPS * 1e6)) * 1000));
    // The other disks were not scrubbed; DisksList shows the same fields.
    const list = await api.get('DisksList');
    expect(list['2'].scrubStatus.passesCompleted).toBe(1);
    expect(list['1'].scrubStatus.passesCompleted).toBe(0);

    for (const diskId of [1, 2, 3]) {
      for (let i = 0; i < OBJECTS; i++) {
        const { data } = await client.readReplica(diskId, spec.group, spec.volumeId, i, 0, BYTES_PER_OBJECT, spec.placementId);
        expect(data.equals(model.get(i)!), `disk ${diskId} object ${i}`).toBe(true);
      }
    }
  }, 180_000);

  it('a block bad on every replica: unrepairable, listed, and reads fail rather than make data up', async () => {
    for (const diskId of [1, 2, 3]) await corrupt(diskId, 0, 40);
    await api.post('DiskScrubStart/3');
    await waitScrubTask(3);
    const s = (await api.get('DiskDescribe/3')).scrubStatus as ScrubStatus;
    expect(s.pass).toMatchObject({ errorsFound: 1, repaired: 0, unrepairable: 1, progress: 1 });
    expect(s.unrepairableBlocks).toEqual([{ volumeId: spec.volumeId, objectIndex: 0, block: 40, at: expect.any(Number) }]);
    await expect(volume.read(40 * BLOCK_BYTES, BLOCK_BYTES)).rejects.toMatchObject({ code: 'STORE_ERR_CHECKSUM' });
    expect((await volume.read(41 * BLOCK_BYTES, BLOCK_BYTES)).equals(blockContent(0, 41))).toBe(true);
  }, 180_000);

  it('an unknown disk is objectDoesNotExist; a disk that is down cannot start a scrub (transient)', async () => {
    expect((await api.fail('POST', 'DiskScrubStart/99')).name).toBe('objectDoesNotExist');
    const server = cluster!.servers.find((x) => x.diskId === 1)!;
    server.process.kill('SIGKILL');
    await server.exited;
    const e = await api.fail('POST', 'DiskScrubStart/1');
    expect(e).toMatchObject({ name: 'notReady', transient: true });
  }, 60_000);
});
