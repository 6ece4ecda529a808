/**
 * What Cinder's StorPool driver and os-brick's StorPool connector send and read (API.md §6.1,
 * §6.2), replayed byte for byte against a real local cluster (mgmt + 3 storage servers + the
 * block service of client 1): paths with and without `MultiCluster/`, string client ids, the
 * bodies they post, the fields they read and the error names and descriptions they branch on.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '@storpool/local';

const GiB = 1024 ** 3;
const P = 'os';
const volName = (id: string): string => `${P}--volume-${id}`;
const snapName = (id: string): string => `${P}--snap--none--snapshot-${id}`;
const cloneSnapName = (id: string): string => `${P}--clone--none--snapshot-${id}`;

interface Summary { name: string; globalId: string; size: number; templateName: string; parentName: string; tags: Record<string, string> }

let c: TestCluster;
beforeAll(async () => { c = await startTestCluster('cinder-compat'); }, 240_000);
afterAll(async () => { await c?.stop(); }, 60_000);

async function createVolume(id: string, extra: Record<string, unknown> = {}): Promise<string> {
  const name = volName(id);
  await c.ok('POST', 'MultiCluster/VolumeCreate', { name, size: 1 * GiB, template: 'default', ...extra });
  return name;
}

describe('Cinder driver (API.md §6.1)', () => {
  it('get_volume_stats: DisksList allocation groups, VolumeTemplatesList names', async () => {
    const disks = await c.ok<Record<string, Record<string, unknown>>>('GET', 'DisksList');
    expect(Object.keys(disks).sort()).toEqual(['1', '2', '3']);
    for (const d of Object.values(disks)) {
      for (const k of ['generationLeft', 'agCount', 'agAllocated', 'agFree']) expect(typeof d[k], k).toBe('number');
      // The driver computes capacity as agCount*512 MiB and free as agFree*512 MiB per disk.
      expect(d['agCount'] as number).toBeGreaterThan(0);
      expect((d['agAllocated'] as number) + (d['agFree'] as number)).toBe(d['agCount']);
    }
    const templates = await c.ok<{ name: string }[]>('GET', 'VolumeTemplatesList');
    expect(templates.map((t) => t.name)).toContain('default');
  });

  it('create_volume with template and qc tag; with replication only (pre-template drivers)', async () => {
    const id = randomUUID();
    const name = await createVolume(id, { tags: { qc: 'gold' } });
    const [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${name}`);
    expect(v).toMatchObject({ name, size: GiB, templateName: 'default', tags: { qc: 'gold' } });
    const id2 = randomUUID();
    await c.ok('POST', 'VolumeCreate', { name: volName(id2), size: GiB, replication: 3 });
    const [v2] = await c.ok<Summary[]>('GET', `Volume/${volName(id2)}`);
    expect(v2!.size).toBe(GiB);
  });

  it('create_snapshot, create_volume_from_snapshot (parent), create_cloned_volume (baseOn)', async () => {
    const src = await createVolume(randomUUID());
    const snap = snapName(randomUUID());
    await c.ok('POST', `MultiCluster/VolumeSnapshot/${src}`, { name: snap });
    const fromSnap = volName(randomUUID());
    await c.ok('POST', 'MultiCluster/VolumeCreate', { name: fromSnap, size: 2 * GiB, parent: snap, template: 'default' });
    const [a] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${fromSnap}`);
    expect(a).toMatchObject({ parentName: snap, size: 2 * GiB });
    const clone = volName(randomUUID());
    await c.ok('POST', 'MultiCluster/VolumeCreate', { name: clone, size: GiB, baseOn: src, template: 'default' });
    const [b] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${clone}`);
    expect(b!.size).toBe(GiB);
  });

  it('create_cloned_volume across templates: snapshot (objectExists ignored), SnapshotUpdate template, parent, transient tag', async () => {
    await c.ok('POST', 'VolumeTemplateCreate', { name: 'cinder-other', replication: 2, placeAll: 'default' });
    const src = await createVolume(randomUUID());
    const snap = cloneSnapName(randomUUID());
    await c.ok('POST', `MultiCluster/VolumeSnapshot/${src}`, { name: snap });
    const again = await c.call('POST', `MultiCluster/VolumeSnapshot/${src}`, { name: snap });
    expect(again.status).not.toBe(200);
    expect(again.body.error!.name).toBe('objectExists');
    await c.ok('POST', `SnapshotUpdate/${snap}`, { template: 'cinder-other' });
    const dst = volName(randomUUID());
    await c.ok('POST', 'MultiCluster/VolumeCreate', { name: dst, size: GiB, parent: snap, template: 'cinder-other' });
    await c.ok('POST', `SnapshotUpdate/${snap}`, { tags: { transient: '1.0' } });
    const [s] = await c.ok<Summary[]>('GET', `MultiCluster/Snapshot/${snap}`);
    expect(s).toMatchObject({ templateName: 'cinder-other', tags: { transient: '1.0' } });
    const [d] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${dst}`);
    expect(d).toMatchObject({ templateName: 'cinder-other', parentName: snap });
  });

  it('extend_volume, retype (template, qc cleared with ""), update_migrated_volume (rename)', async () => {
    const name = await createVolume(randomUUID(), { tags: { qc: 'gold' } });
    await c.ok('POST', `MultiCluster/VolumeUpdate/${name}`, { size: 3 * GiB });
    await c.ok('POST', `MultiCluster/VolumeUpdate/${name}`, { template: 'cinder-other' });
    await c.ok('POST', `MultiCluster/VolumeUpdate/${name}`, { tags: { qc: '' } });
    let [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${name}`);
    expect(v).toMatchObject({ size: 3 * GiB, templateName: 'cinder-other' });
    expect(v!.tags).not.toHaveProperty('qc');
    const list = await c.ok<Summary[]>('GET', 'MultiCluster/VolumesList');
    expect(list.map((x) => x.name)).toContain(name);
    const renamed = volName(randomUUID());
    await c.ok('POST', `MultiCluster/VolumeUpdate/${name}`, { rename: renamed });
    [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${renamed}`);
    expect(v!.size).toBe(3 * GiB);
    expect((await c.call('GET', `MultiCluster/Volume/${name}`)).body.error!.name).toBe('objectDoesNotExist');
  });

  it('revert_to_snapshot', async () => {
    const name = await createVolume(randomUUID());
    const snap = snapName(randomUUID());
    await c.ok('POST', `MultiCluster/VolumeSnapshot/${name}`, { name: snap });
    await c.ok('POST', `MultiCluster/VolumeUpdate/${name}`, { size: 2 * GiB });
    await c.ok('POST', `MultiCluster/VolumeRevert/${name}`, { toSnapshot: snap });
    const [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${name}`);
    expect(v!.parentName).toBe(snap);
  });

  it('delete_volume / delete_snapshot: detach all, delete, and objectDoesNotExist the second time', async () => {
    const name = await createVolume(randomUUID());
    const snap = snapName(randomUUID());
    await c.ok('POST', `MultiCluster/VolumeSnapshot/${name}`, { name: snap });
    await c.ok('POST', 'MultiCluster/VolumesReassign', [{ volume: name, detach: 'all' }]);
    await c.ok('POST', `MultiCluster/VolumeDelete/${name}`);
    const gone = await c.call('POST', `MultiCluster/VolumeDelete/${name}`);
    expect(gone.status).not.toBe(200);
    expect(gone.body.error).toMatchObject({ name: 'objectDoesNotExist', transient: false });
    await c.ok('POST', 'MultiCluster/VolumesReassign', [{ snapshot: snap, detach: 'all' }]);
    await c.ok('POST', `MultiCluster/SnapshotDelete/${snap}`);
    expect((await c.call('POST', `MultiCluster/SnapshotDelete/${snap}`)).body.error!.name).toBe('objectDoesNotExist');
    expect((await c.call('POST', 'MultiCluster/VolumesReassign', [{ volume: name, detach: 'all' }])).body.error!.name).toBe('objectDoesNotExist');
  });
});

describe('os-brick connector (API.md §6.2)', () => {
  it('connect_volume: VolumesReassignWait with a string client id, then VolumeGetInfo globalId; extend reads Volume [0].size', async () => {
    const name = await createVolume(randomUUID());
    await c.ok('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: name, rw: ['1'] }] });
    const info = await c.ok<{ globalId: string }>('GET', `MultiCluster/VolumeGetInfo/${name}`);
    expect(info.globalId).toMatch(/^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$/);
    const att = await c.ok<{ volume: string; client: number; rights: string; snapshot: boolean }[]>('GET', 'AttachmentsList');
    expect(att.find((a) => a.volume === name)).toMatchObject({ client: 1, rights: 'rw', snapshot: false });
    const [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/${name}`);
    expect(v!.size).toBe(GiB);
    // disconnect_volume derives ~<globalId> from /dev/storpool-byid/<globalId>.
    await c.ok('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: `~${info.globalId}`, detach: ['1'], force: false }] });
    const after = await c.ok<{ volume: string }[]>('GET', 'AttachmentsList');
    expect(after.find((a) => a.volume === name)).toBeUndefined();
  });

  it('read-only attach of a snapshot (older copies: VolumesReassign ro) and AttachmentsList fields', async () => {
    const name = await createVolume(randomUUID());
    const snap = snapName(randomUUID());
    await c.ok('POST', `VolumeSnapshot/${name}`, { name: snap });
    await c.ok('POST', 'VolumesReassign', [{ snapshot: snap, ro: ['1'] }]);
    const att = await c.ok<{ volume: string; client: number; rights: string; snapshot: boolean }[]>('GET', 'AttachmentsList');
    expect(att.find((a) => a.volume === snap)).toMatchObject({ client: 1, rights: 'ro', snapshot: true });
    await c.ok('POST', 'VolumesReassign', [{ snapshot: snap, detach: ['1'], force: false }]);
    await c.ok('POST', `VolumeUpdate/${name}`, { tags: { cinder: 'x' } });
    const [v] = await c.ok<Summary[]>('GET', `Volume/${name}`);
    expect(v!.tags).toMatchObject({ cinder: 'x' });
  });

  it('disconnect of a volume open on the client: busy with "is open at" (retried), then force succeeds', async () => {
    // Client 2 is a host whose block service reports the device open; this test plays that
    // peer through the block service's own report call (ClientStatus), as storpool-block does.
    await c.ok('POST', 'ClientRegister/2', {});
    const name = await createVolume(randomUUID());
    await c.ok('POST', 'MultiCluster/VolumesReassign', [{ volume: name, rw: ['2'] }]);
    const { globalId } = await c.ok<{ globalId: string }>('GET', `MultiCluster/VolumeGetInfo/${name}`);
    const gen = (await c.call('GET', 'VolumesList')).body.generation!;
    await c.ok('POST', 'ClientStatus/2', { generation: gen, open: [globalId] });
    const busy = await c.call('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: `~${globalId}`, detach: ['2'], force: false }] });
    expect(busy.status).not.toBe(200); // os-brick: any non-200 status or an "error" key is an error
    expect(['busy', 'invalidParam']).toContain(busy.body.error!.name);
    expect(busy.body.error!.descr).toContain('is open at');
    expect(busy.body.error!.transient).toBe(false);
    await c.ok('POST', 'MultiCluster/VolumesReassign', [{ volume: `~${globalId}`, detach: ['2'], force: true }]);
    const att = await c.ok<{ volume: string }[]>('GET', 'AttachmentsList');
    expect(att.find((a) => a.volume === name)).toBeUndefined();
  });

  it('attaching to an unknown client id: invalidParam "No such client registered"', async () => {
    const name = await createVolume(randomUUID());
    const r = await c.call('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: name, rw: ['77'] }] });
    expect(r.status).not.toBe(200);
    expect(r.body.error).toMatchObject({ name: 'invalidParam', descr: 'No such client registered' });
  });

  it('errors are JSON envelopes with a non-200 status, also for a wrong token', async () => {
    const r = await c.call('GET', `MultiCluster/VolumeGetInfo/${volName(randomUUID())}`);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.body.error).toMatchObject({ name: 'objectDoesNotExist', transient: false });
    expect(typeof r.body.error!.descr).toBe('string');
  });
});
