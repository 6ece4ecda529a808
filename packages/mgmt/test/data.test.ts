/**
 * Snapshots, clones, revert and delete checked through the data path: real storage servers (the
 * one-command local cluster, in this process), data written and read with the client library
 * using the identity (dataId, placementId, parents, group) the management service assigned.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient, type VolumeSpec } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from './helpers.js';

const MiB = 1024 * 1024;
let dir: string;
let cluster: LocalCluster;
let client: StorpoolClient;
let api: Api;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-data-'));
  cluster = await startLocalCluster({ dataDir: dir, port: 0, diskSizeBytes: 256 * MiB, shardCount: 64, serverLogLevel: 'warn' });
  api = new Api(cluster.url, cluster.token);
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 1, retryDeadlineMs: 20_000 });
}, 60_000);

afterAll(async () => {
  client?.close();
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** The data-path identity the management service keeps for a volume or snapshot. */
async function spec(ref: string): Promise<VolumeSpec> {
  const state = await cluster.service.model.read();
  const o = [...state.objects.values()].find((x) => x.name === ref || `~${x.globalId}` === ref);
  if (o === undefined) throw new Error(`no object ${ref}`);
  return { volumeId: o.dataId, placementId: o.placementId, parents: [...o.parents], sizeBytes: o.size, group: o.group, readOnly: o.kind === 'snapshot' };
}

async function open(ref: string): Promise<ReturnType<StorpoolClient['volume']>> {
  await client.refreshMap();
  return client.volume(await spec(ref));
}

const fill = (byte: number, length = 64 * 1024): Buffer => Buffer.alloc(length, byte);

describe('copy-on-write through the data path', () => {
  it('reports live disk figures from the storage servers', async () => {
    const disks = await api.get('DisksList');
    expect(Object.keys(disks)).toEqual(['1', '2', '3']);
    for (const d of Object.values(disks) as Record<string, number>[]) {
      expect(d).toMatchObject({ generationLeft: -1, agCount: expect.any(Number), agAllocated: expect.any(Number), agFree: expect.any(Number), sectorsCount: expect.any(Number) });
      expect(d['sectorsCount']).toBeGreaterThan(0);
      expect(d['agCount']! - d['agAllocated']!).toBe(d['agFree']);
    }
    const servers = await api.get('ServersList');
    expect(Object.values(servers.servers).map((s) => (s as { status: string }).status)).toEqual(['running', 'running', 'running']);
    const status = await api.get('VolumeTemplatesStatus');
    const t = status.find((x: { name: string }) => x.name === 'default');
    expect(t.stored.capacity).toBeGreaterThan(0);
    expect(t.stored.capacity).toBeLessThanOrEqual(t.capacityPlaceAll / 3 + 1);
  });

  it('space figures come from the disks: storedSize is what an object holds itself, spaceUsed adds its snapshots', async () => {
    await api.post('VolumeCreate', { name: 'space', size: 16 * MiB, template: 'default' });
    let v = await open('space');
    await v.write(0, fill(1, MiB)); // 256 blocks
    await v.write(5 * MiB, fill(2, 12 * 1024)); // 3 blocks in another object
    await api.post('VolumeSnapshot/space', { name: 'space-s' });
    v = await open('space');
    await v.write(0, fill(3, 8 * 1024)); // 2 blocks of the volume's own
    // The scan is reused for a few seconds: wait for a fresh one after the writes.
    await new Promise((r) => setTimeout(r, 5_100));
    const vol = (await api.get('VolumesSpace')).find((x: { name: string }) => x.name === 'space');
    expect(vol).toMatchObject({ storedSize: 8 * 1024, spaceUsed: 8 * 1024 + MiB + 12 * 1024 });
    const snap = (await api.get('SnapshotsSpace')).find((x: { name: string }) => x.name === 'space-s');
    expect(snap).toMatchObject({ storedSize: MiB + 12 * 1024, spaceUsed: MiB + 12 * 1024 });
    const status = (await api.get('VolumesGetStatus'))['space'];
    expect(status).toMatchObject({ storedSize: 8 * 1024, onDiskSize: 3 * 8 * 1024 });
    const t = (await api.get('VolumeTemplatesStatus')).find((x: { name: string }) => x.name === 'default');
    expect(t.storedSize).toBeGreaterThanOrEqual(8 * 1024 + MiB + 12 * 1024);
    await api.post('VolumeDelete/space', {});
    await api.post('SnapshotDelete/space-s', {});
  });

  it('snapshot keeps the old data, the volume sees new writes and falls through for the rest; clone, revert, delete', async () => {
    await api.post('VolumeCreate', { name: 'v', size: 16 * MiB, template: 'default' });
    let v = await open('v');
    await v.write(0, fill(0xa1));
    await v.write(8 * MiB, fill(0xa2));
    await api.post('VolumeSnapshot/v', { name: 's1' });
    v = await open('v');
    await v.write(0, fill(0xb1));
    const s1 = await open('s1');
    expect((await s1.read(0, 64 * 1024)).equals(fill(0xa1))).toBe(true);
    expect((await s1.read(8 * MiB, 64 * 1024)).equals(fill(0xa2))).toBe(true);
    expect((await v.read(0, 64 * 1024)).equals(fill(0xb1))).toBe(true);
    // Never written by the volume since the snapshot: read through to s1.
    expect((await v.read(8 * MiB, 64 * 1024)).equals(fill(0xa2))).toBe(true);
    expect((await v.read(12 * MiB, 4096)).equals(fill(0, 4096))).toBe(true);

    // A clone of s1 sees s1's data, and its writes touch neither s1 nor v.
    await api.post('VolumeCreate', { name: 'c', parent: 's1', size: 32 * MiB });
    const c = await open('c');
    expect((await c.read(0, 64 * 1024)).equals(fill(0xa1))).toBe(true);
    await c.write(8 * MiB, fill(0xc2));
    await c.write(20 * MiB, fill(0xc3));
    expect((await c.read(8 * MiB, 64 * 1024)).equals(fill(0xc2))).toBe(true);
    expect((await (await open('s1')).read(8 * MiB, 64 * 1024)).equals(fill(0xa2))).toBe(true);
    expect((await (await open('v')).read(8 * MiB, 64 * 1024)).equals(fill(0xa2))).toBe(true);

    // baseOn copies the volume's current state.
    const copy = await api.post('VolumeCreate', { name: 'copy', baseOn: 'v' });
    expect(copy.autoName).toEqual(expect.any(String));
    expect((await (await open('copy')).read(0, 64 * 1024)).equals(fill(0xb1))).toBe(true);
    await (await open('v')).write(0, fill(0xd1));
    expect((await (await open('copy')).read(0, 64 * 1024)).equals(fill(0xb1))).toBe(true);

    // Revert: v equals s1 again.
    await api.post('VolumeRevert/v', { toSnapshot: 's1' });
    expect((await (await open('v')).read(0, 64 * 1024)).equals(fill(0xa1))).toBe(true);

    // Deleting s1 while it has children keeps its data for them.
    await api.post('SnapshotDelete/s1');
    expect((await api.get('SnapshotsList')).find((s: { name: string }) => s.name === '*s1')).toMatchObject({ deleted: true });
    expect((await (await open('c')).read(0, 64 * 1024)).equals(fill(0xa1))).toBe(true);
  });

  it('purges the data of deleted objects (TasksList drains) once nothing needs it', async () => {
    const s1 = await spec('*s1');
    const c = await spec('c');
    await api.post('VolumeDelete/c');
    await api.post('VolumeDelete/v');
    // Before the purge the deleted objects' data is on the disks.
    const before = new Set<number>();
    for (const diskId of [1, 2, 3]) for (const o of await client.listObjects(diskId)) if (o.allocatedBlocks > 0) before.add(o.volumeId);
    expect(before.has(c.volumeId)).toBe(true);
    expect(before.has(s1.volumeId)).toBe(true);
    const tasks = await api.get('TasksList');
    expect(tasks.length).toBeGreaterThan(0);
    await cluster.service.runBackground();
    expect(await api.get('TasksList')).toEqual([]);
    const remaining = new Set<number>();
    for (const diskId of [1, 2, 3]) for (const o of await client.listObjects(diskId)) if (o.allocatedBlocks > 0) remaining.add(o.volumeId);
    expect(remaining.has(c.volumeId)).toBe(false);
    // s1 is still needed: the baseOn copy was taken while v descended from s1.
    expect(remaining.has(s1.volumeId)).toBe(true);
    expect((await (await open('copy')).read(0, 64 * 1024)).equals(fill(0xb1))).toBe(true);
    expect((await (await open('copy')).read(8 * MiB, 64 * 1024)).equals(fill(0xa2))).toBe(true);
    // Deleting the copy frees its transient snapshot and then s1.
    await api.post('VolumeDelete/copy');
    expect((await api.get('SnapshotsList')).map((x: { name: string }) => x.name)).toEqual([]);
    await cluster.service.runBackground();
    expect(await api.get('TasksList')).toEqual([]);
    const left = new Set<number>();
    for (const diskId of [1, 2, 3]) for (const o of await client.listObjects(diskId)) if (o.allocatedBlocks > 0) left.add(o.volumeId);
    expect([...left]).toEqual([]);
  });
});
