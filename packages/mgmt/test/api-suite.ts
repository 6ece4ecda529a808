/**
 * The API suite, run over real HTTP against storpool-mgmt on each metadata-store backend.
 * Disks are registered with addresses where nothing listens (no storage servers here): placement
 * works, live statistics report them down. Data checks through real servers are in data.test.ts.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MetaStore } from '@storpool/meta';
import { parseShardMap } from '@storpool/protocol';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MetaShardMapSource, startManagementService, type ManagementService } from '../src/index.js';
import { Api, GiB, unique } from './helpers.js';

export interface SuiteBackend {
  /** A fresh, empty store (the suite closes it). */
  open(): Promise<MetaStore>;
}

export function apiSuite(label: string, backend: SuiteBackend): void {
  describe(`management API (${label})`, () => {
    let service: ManagementService;
    let meta: MetaStore;
    let api: Api;
    let dir: string;
    const token = '1556129910218014736';

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-test-'));
      meta = await backend.open();
      service = await startManagementService({ meta, token, mapFile: join(dir, 'shardmap.json'), cluster: { spClusterId: 'tst.a', name: 'testcluster' }, shardCount: 64, ...(process.env['MGMT_TEST_LOG'] ? { log: pino({ level: 'trace' }, pino.destination(process.env['MGMT_TEST_LOG'])) } : {}) });
      api = new Api(service.url, token);
      for (let id = 1; id <= 6; id++) {
        await service.registerDisk({ id, serverId: id, address: { host: '127.0.0.1', port: 1 }, placementGroups: [id <= 3 ? 'default' : 'hdd'] });
      }
      await service.registerClient(1);
      await service.registerClient(2);
      await api.post('VolumeTemplateCreate', { name: 'tpl', replication: 3, placeAll: 'default' });
      await api.post('VolumeTemplateCreate', { name: 'tpl2', replication: 2, placeAll: 'hdd', size: GiB });
    });

    afterAll(async () => {
      await service?.close();
      await meta?.close();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    });

    async function volume(extra: Record<string, unknown> = {}): Promise<string> {
      const name = unique('vol');
      await api.post('VolumeCreate', { name, size: GiB, template: 'tpl', ...extra });
      return name;
    }

    describe('transport', () => {
      it('refuses a missing or wrong token with an error envelope, changing nothing', async () => {
        const before = await api.generation();
        for (const auth of [null, 'Storpool v1:wrong', `storpool v1:${token}`, `Storpool v1:${token}x`]) {
          const r = await api.raw('POST', 'VolumeCreate', JSON.stringify({ name: unique('x'), size: GiB, template: 'tpl' }), {}, auth);
          expect(r.status).toBe(401);
          expect(r.json).toEqual({ error: { name: 'authError', descr: expect.any(String), transient: false } });
        }
        expect(await api.generation()).toBe(before);
      });

      it('serves MultiCluster/ and RemoteCommand/<own name or ~id>/ as local calls; other clusters are unknown', async () => {
        const name = await volume();
        const plain = await api.get(`Volume/${name}`);
        expect(await api.get(`MultiCluster/Volume/${name}`)).toEqual(plain);
        expect(await api.get(`RemoteCommand/~tst.a/MultiCluster/Volume/${name}`)).toEqual(plain);
        expect(await api.get(`RemoteCommand/~TST.A/Volume/${name}`)).toEqual(plain);
        expect(await api.get(`RemoteCommand/testcluster/Volume/${name}`)).toEqual(plain);
        expect((await api.fail('GET', `RemoteCommand/~other.b/Volume/${name}`)).name).toBe('objectDoesNotExist');
      });

      it('takes raw and percent-encoded path arguments, any Content-Type and ?json=', async () => {
        const name = `#${unique('hash')}`;
        await api.post('VolumeCreate', { name, size: GiB, template: 'tpl' });
        expect((await api.get(`Volume/${name}`))[0].name).toBe(name);
        expect((await api.get(`Volume/${encodeURIComponent(name)}`))[0].name).toBe(name);
        const snap = await api.post(`VolumeSnapshot/${name}`, {});
        expect(snap.autoName).toMatch(/^hash-\d+-\d+@1$/);
        for (const contentType of ['application/x-www-form-urlencoded', 'application/json', 'text/plain']) {
          const r = await api.raw('POST', 'VolumeUpdate/' + name, JSON.stringify({ tags: { ct: contentType.replace(/[^a-z]/g, '') } }), { 'Content-Type': contentType });
          expect(r.json.data).toMatchObject({ ok: true });
        }
        expect((await api.get(`VolumesList?json=${encodeURIComponent('{}')}`)).length).toBeGreaterThan(0);
        const r = await api.raw('GET', `Volume/${name}`);
        expect(r.status).toBe(200);
        expect(Object.keys(r.json).sort()).toEqual(['data', 'generation']);
      });

      it('answers unknown calls, wrong methods, wrong argument counts and non-JSON bodies with invalidParam', async () => {
        expect((await api.fail('GET', 'NoSuchCall')).name).toBe('invalidParam');
        expect((await api.fail('GET', 'VolumeCreate')).name).toBe('invalidParam');
        expect((await api.fail('GET', 'Volume')).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeCreate', '{not json')).name).toBe('invalidParam');
        expect((await api.fail('GET', '/other/path')).name).toBe('invalidParam');
      });
    });

    describe('templates', () => {
      it('creates, lists, describes, updates and deletes; errors change nothing', async () => {
        const name = unique('t');
        await api.post('VolumeTemplateCreate', { name, replication: 2, placeAll: 'hdd', placeTail: 'default', iops: 1000, unknownField: 1 });
        const t = await api.get(`VolumeTemplateDescribe/${name}`);
        expect(t).toMatchObject({ name, replication: 2, placeAll: 'hdd', placeTail: 'default', placeHead: 'hdd', iops: 1000, bw: '-', size: '-', parentName: '' });
        expect((await api.get('VolumeTemplatesList')).map((x: { name: string }) => x.name)).toContain(name);
        const before = await api.generation();
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name, replication: 3 })).name).toBe('objectExists');
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: 'bad.name', replication: 3 })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: 'list', replication: 3 })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: unique('t'), replication: 4 })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: unique('t'), replication: 3, placeAll: 'nosuchpg' })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: unique('t'), size: 1000 })).name).toBe('invalidParam');
        expect((await api.fail('GET', 'VolumeTemplateDescribe/nosuch')).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeTemplateUpdate/nosuch', { replication: 1 })).name).toBe('objectDoesNotExist');
        expect(await api.generation()).toBe(before);
        await api.post(`VolumeTemplateUpdate/${name}`, { replication: 1, size: 2 * GiB, bw: '-' });
        expect(await api.get(`VolumeTemplateDescribe/${name}`)).toMatchObject({ replication: 1, size: 2 * GiB });
        const renamed = unique('t');
        await api.post(`VolumeTemplateUpdate/${name}`, { rename: renamed });
        expect((await api.fail('GET', `VolumeTemplateDescribe/${name}`)).name).toBe('objectDoesNotExist');
        await api.post(`VolumeTemplateDelete/${renamed}`);
        expect((await api.fail('POST', `VolumeTemplateDelete/${renamed}`)).name).toBe('objectDoesNotExist');
      });

      it('refuses to delete a template in use; propagate applies it to its volumes', async () => {
        const name = unique('t');
        await api.post('VolumeTemplateCreate', { name, replication: 3, placeAll: 'default' });
        const vol = await volume({ template: name });
        expect((await api.fail('POST', `VolumeTemplateDelete/${name}`)).name).toBe('busy');
        await api.post(`VolumeTemplateUpdate/${name}`, { replication: 2, placeAll: 'hdd' });
        expect((await api.get(`Volume/${vol}`))[0]).toMatchObject({ replication: 3, placeAll: 'default', templateName: name });
        await api.post(`VolumeTemplateUpdate/${name}`, { propagate: true });
        expect((await api.get(`Volume/${vol}`))[0]).toMatchObject({ replication: 2, placeAll: 'hdd', placeTail: 'default', templateName: name });
      });

      it('reports status with capacity figures per template', async () => {
        const status = await api.get('VolumeTemplatesStatus');
        const tpl = status.find((x: { name: string }) => x.name === 'tpl');
        expect(tpl).toMatchObject({ name: 'tpl', replication: 3, volumesCount: expect.any(Number), stored: { capacity: expect.any(Number), free: expect.any(Number), internal: { u2: 0, u3: 0 } } });
      });
    });

    describe('placement groups and the shard map', () => {
      it('PlacementGroupUpdate creates a group, takes string disk ids, renames, and rebuilds the published map', async () => {
        const name = unique('pg');
        const mapBefore = parseShardMap(JSON.parse(await readFile(join(dir, 'shardmap.json'), 'utf8')));
        await api.post(`PlacementGroupUpdate/${name}`, { addDisks: ['1', 2, '3'] });
        expect(await api.get(`PlacementGroupDescribe/${name}`)).toMatchObject({ name, disks: [1, 2, 3] });
        await api.post(`PlacementGroupUpdate/${name}`, { rmDisks: [2] });
        expect((await api.get('PlacementGroupsList'))[name]).toMatchObject({ name, disks: [1, 3] });
        const before = await api.generation();
        expect((await api.fail('POST', `PlacementGroupUpdate/${name}`, { addDisks: [99] })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', `PlacementGroupUpdate/${name}`, { addDisks: ['x'] })).name).toBe('invalidParam');
        expect((await api.fail('POST', `PlacementGroupUpdate/${name}`, { rename: 'hdd' })).name).toBe('objectExists');
        expect((await api.fail('POST', 'PlacementGroupUpdate/bad.name', {})).name).toBe('invalidParam');
        expect(await api.generation()).toBe(before);
        // A template with a new combination adds a shard group: the epoch goes up in meta and the file.
        await api.post(`PlacementGroupUpdate/${name}`, { addDisks: [2] });
        const tname = unique('t');
        await api.post('VolumeTemplateCreate', { name: tname, replication: 3, placeAll: name });
        await service.publishShardMap();
        const map = parseShardMap(JSON.parse(await readFile(join(dir, 'shardmap.json'), 'utf8')));
        expect(map.epoch).toBeGreaterThan(mapBefore.epoch);
        expect(map.groups.some((g) => g.placeAll === name && g.replication === 3)).toBe(true);
        expect((await new MetaShardMapSource(meta).load()).epoch).toBe(map.epoch);
        const renamed = unique('pg');
        await api.post(`PlacementGroupUpdate/${name}`, { rename: renamed });
        expect(await api.get(`VolumeTemplateDescribe/${tname}`)).toMatchObject({ placeAll: renamed });
        expect((await api.fail('POST', `PlacementGroupDelete/${renamed}`)).name).toBe('busy');
        await api.post(`VolumeTemplateDelete/${tname}`);
        await api.post(`PlacementGroupDelete/${renamed}`);
        expect((await api.fail('GET', `PlacementGroupDescribe/${renamed}`)).name).toBe('objectDoesNotExist');
      });

      it('places no two replicas on one server', async () => {
        const map = await new MetaShardMapSource(meta).load();
        const disks = new Map(map.disks.map((d) => [d.id, d]));
        for (const g of map.groups) for (const replicas of g.shards) expect(new Set(replicas.map((d) => disks.get(d)!.serverId)).size).toBe(replicas.length);
      });

      it('refuses a template or volume its placement groups cannot hold (insufficientResources)', async () => {
        const pg = unique('pg');
        await api.post(`PlacementGroupUpdate/${pg}`, { addDisks: [1, 2] });
        expect((await api.fail('POST', 'VolumeTemplateCreate', { name: unique('t'), replication: 3, placeAll: pg })).name).toBe('insufficientResources');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, replication: 3, placeAll: pg })).name).toBe('insufficientResources');
        await api.post(`PlacementGroupDelete/${pg}`);
      });

    });

    describe('volumes', () => {
      it('creates from a template and lists in every shape', async () => {
        const name = unique('vol');
        const created = await api.post('VolumeCreate', { name, size: 10 * GiB, template: 'tpl', tags: { virt: 'pve', 'pve-vm': '101' } });
        expect(created).toMatchObject({ ok: true, name, globalId: expect.stringMatching(/^tst\.a\.[a-z0-9]+$/) });
        const [summary] = await api.get(`Volume/${name}`);
        expect(summary).toMatchObject({
          name, globalId: created.globalId, size: 10 * GiB, replication: 3, placeAll: 'default', placeTail: 'default', placeHead: 'default',
          parentName: '', templateName: 'tpl', bw: '-', iops: '-', tags: { virt: 'pve', 'pve-vm': '101' }, objectsCount: expect.any(Number),
          visibleVolumeId: expect.any(Number), creationTimestamp: expect.any(Number),
        });
        expect(summary).not.toHaveProperty('dataId');
        expect(await api.get(`Volume/~${created.globalId}`)).toEqual([summary]);
        expect((await api.get('VolumesList')).find((v: { name: string }) => v.name === name)).toEqual(summary);
        const described = await api.get(`VolumeDescribe/${name}`);
        expect(described).toMatchObject({ ...summary, targetDiskSets: expect.any(Array), objects: expect.any(Array) });
        expect(described.objects[0]).toHaveLength(3);
        const info = await api.get(`VolumeGetInfo/${name}`);
        expect(info).toMatchObject({ globalId: created.globalId, disksCount: 3, objectsPerDisk: expect.any(Object), objectsPerChain: expect.any(Array) });
        expect((await api.get('VolumesSpace')).find((v: { name: string }) => v.name === name)).toMatchObject({ storedSize: expect.any(Number), spaceUsed: expect.any(Number) });
        expect((await api.get('VolumesGetStatus'))[name]).toMatchObject({ snapshot: false, status: expect.any(String) });
      });

      it('creates anonymous volumes named ~<globalId> (name "" or absent) and from explicit policy', async () => {
        const a = await api.post('VolumeCreate', { name: '', size: 512, template: 'tpl', tags: { cs: 'check' } });
        expect(a.name).toBe(`~${a.globalId}`);
        expect((await api.get(`Volume/${a.name}`))[0]).toMatchObject({ name: a.name, size: 512 });
        const b = await api.post('VolumeCreate', { size: GiB, replication: 2, placeAll: 'hdd' });
        expect((await api.get(`Volume/~${b.globalId}`))[0]).toMatchObject({ replication: 2, placeAll: 'hdd', templateName: '' });
        const c = await api.post('VolumeCreate', { name: unique('v'), size: GiB, replication: 3 });
        expect((await api.get(`Volume/${c.name}`))[0]).toMatchObject({ placeAll: 'default' });
        const d = await api.post('VolumeCreate', { template: 'tpl2' });
        expect((await api.get(`Volume/~${d.globalId}`))[0]).toMatchObject({ size: GiB, replication: 2 });
        const e = await api.post('VolumeCreate', { template: 'tpl', size: String(2 * GiB) });
        expect((await api.get(`Volume/~${e.globalId}`))[0].size).toBe(2 * GiB);
      });

      it('rejects duplicate names, bad names, bad sizes, unknown templates — and changes nothing', async () => {
        const name = await volume();
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap });
        const before = await api.generation();
        const count = (await api.get('VolumesList')).length;
        expect((await api.fail('POST', 'VolumeCreate', { name, size: GiB, template: 'tpl' })).name).toBe('objectExists');
        expect((await api.fail('POST', 'VolumeCreate', { name: snap, size: GiB, template: 'tpl' })).name).toBe('objectExists');
        for (const bad of ['a b', 'a/b', 'list', 'status', 'x'.repeat(200), '*star', '~abc', 'a@b']) {
          expect((await api.fail('POST', 'VolumeCreate', { name: bad, size: GiB, template: 'tpl' })).name, bad).toBe('invalidParam');
        }
        for (const size of [0, 1000, -512, 1.5, 'abc', 2 ** 60]) {
          expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size, template: 'tpl' })).name, String(size)).toBe('invalidParam');
        }
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), template: 'tpl' })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, template: 'nosuch' })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, template: 'tpl', replication: 5 })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, template: 'tpl', tags: { 'bad tag': 'x' } })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, template: 'tpl', tags: { t: 'bad/value' } })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, parent: 'nosuchsnap' })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), size: GiB, parent: snap, baseOn: name })).name).toBe('invalidParam');
        expect((await api.fail('GET', 'Volume/nosuch')).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', `Volume/${snap}`)).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', 'Volume/~tst.a.zzzzzz')).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', 'VolumeDescribe/nosuch')).name).toBe('objectDoesNotExist');
        expect(await api.generation()).toBe(before);
        expect((await api.get('VolumesList')).length).toBe(count);
      });

      it('updates: grow by size and sizeAdd, shrink only with shrinkOk, rename, tags merge, template', async () => {
        const name = await volume({ tags: { a: '1', b: '2' } });
        await api.post(`VolumeUpdate/${name}`, { size: 2 * GiB });
        await api.post(`VolumeUpdate/${name}`, { sizeAdd: GiB });
        expect((await api.get(`Volume/${name}`))[0].size).toBe(3 * GiB);
        const before = await api.generation();
        const shrink = await api.fail('POST', `VolumeUpdate/${name}`, { size: GiB });
        expect(shrink.name).toBe('invalidParam');
        expect(shrink.descr).toContain('shrinkOk');
        expect((await api.fail('POST', `VolumeUpdate/${name}`, { size: 1234 })).name).toBe('invalidParam');
        expect((await api.fail('POST', `VolumeUpdate/${name}`, { sizeAdd: 100 })).name).toBe('invalidParam');
        expect((await api.fail('POST', `VolumeUpdate/${name}`, { template: 'nosuch' })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeUpdate/nosuch', { size: GiB })).name).toBe('objectDoesNotExist');
        const other = await volume();
        const afterOther = await api.generation();
        expect((await api.fail('POST', `VolumeUpdate/${name}`, { rename: other })).name).toBe('objectExists');
        expect((await api.fail('POST', `VolumeUpdate/${name}`, { rename: 'bad name' })).name).toBe('invalidParam');
        expect(afterOther).toBe(before + 1);
        expect(await api.generation()).toBe(afterOther);
        expect((await api.get(`Volume/${name}`))[0].size).toBe(3 * GiB);
        await api.post(`VolumeUpdate/${name}`, { size: GiB, shrinkOk: true, tags: { a: '', c: '3' } });
        const renamed = unique('vol');
        await api.post(`VolumeUpdate/${name}`, { rename: renamed, template: 'tpl2' });
        const [v] = await api.get(`Volume/${renamed}`);
        expect(v).toMatchObject({ size: GiB, tags: { b: '2', c: '3' }, templateName: 'tpl2', replication: 2, placeAll: 'hdd' });
        expect(v.tags).not.toHaveProperty('a');
        expect((await api.fail('GET', `Volume/${name}`)).name).toBe('objectDoesNotExist');
      });

      it('deletes (tolerating {} and extra fields); a missing volume is objectDoesNotExist', async () => {
        const a = await volume();
        const b = await volume();
        await api.post(`VolumeDelete/${a}`);
        await api.post(`VolumeDelete/${b}`, { onAttached: 'detachForce' });
        const c = await volume();
        const r = await api.raw('POST', `VolumeDelete/${c}`, '{}');
        expect(r.json.data).toMatchObject({ ok: true });
        expect((await api.fail('POST', `VolumeDelete/${a}`)).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', `Volume/${a}`)).name).toBe('objectDoesNotExist');
      });
    });

    describe('snapshots', () => {
      it('snapshots a volume (named and auto-named), making it the volume\'s parent, without the volume\'s tags', async () => {
        const name = await volume({ tags: { v: '1' } });
        const snap = unique('snap');
        const r = await api.post(`VolumeSnapshot/${name}`, { name: snap, tags: { s: 'x' } });
        expect(r).toMatchObject({ ok: true, snapshotGlobalId: expect.stringMatching(/^tst\.a\./), snapshotVisibleVolumeId: expect.any(Number) });
        expect((await api.get(`Volume/${name}`))[0].parentName).toBe(snap);
        const [s] = await api.get(`Snapshot/${snap}`);
        expect(s).toMatchObject({ name: snap, globalId: r.snapshotGlobalId, onVolume: name, autoName: false, bound: false, deleted: false, transient: false, recoveringFromRemote: false, tags: { s: 'x' }, size: GiB, templateName: 'tpl', parentName: '' });
        expect(await api.get(`Snapshot/~${r.snapshotGlobalId}`)).toEqual([s]);
        const auto = await api.post(`VolumeSnapshot/${name}`);
        expect(auto.autoName).toBe(`${name}@1`);
        const [a] = await api.get(`Snapshot/${auto.autoName}`);
        expect(a).toMatchObject({ autoName: true, parentName: snap, onVolume: name, tags: {} });
        expect(s.onVolume).toBe(name);
        expect((await api.get(`Snapshot/${snap}`))[0].onVolume).toBe('-');
        expect((await api.get(`VolumeListSnapshots/${name}`)).map((x: { name: string }) => x.name)).toEqual([auto.autoName, snap]);
        expect((await api.get('SnapshotsList')).map((x: { name: string }) => x.name)).toEqual(expect.arrayContaining([snap, auto.autoName]));
        expect((await api.get(`SnapshotDescribe/${snap}`)).objects).toBeInstanceOf(Array);
        expect(await api.get(`SnapshotGetInfo/${snap}`)).toMatchObject({ name: snap, disksCount: 3 });
        expect((await api.get('SnapshotsSpace')).find((x: { name: string }) => x.name === snap)).toMatchObject({ storedSize: expect.any(Number) });
        expect((await api.get('VolumesGetStatus'))[snap]).toMatchObject({ snapshot: true });
        const before = await api.generation();
        expect((await api.fail('POST', `VolumeSnapshot/${name}`, { name: snap })).name).toBe('objectExists');
        expect((await api.fail('POST', `VolumeSnapshot/${name}`, { name: 'bad name' })).name).toBe('invalidParam');
        expect((await api.fail('POST', `VolumeSnapshot/${name}`, { name: unique('s'), targetDeleteDate: 1000 })).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumeSnapshot/nosuch', {})).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', 'Snapshot/nosuch')).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', `Snapshot/${name}`)).name).toBe('objectDoesNotExist');
        expect(await api.get('VolumesList')).toBeInstanceOf(Array);
        expect(await api.generation()).toBe(before);
      });

      it('clones with parent and baseOn; the clone may be larger, not smaller', async () => {
        const name = await volume();
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap });
        const clone = unique('clone');
        await api.post('VolumeCreate', { name: clone, parent: snap, tags: { p: '1' } });
        expect((await api.get(`Volume/${clone}`))[0]).toMatchObject({ parentName: snap, size: GiB, templateName: 'tpl', replication: 3 });
        const big = await api.post('VolumeCreate', { name: unique('clone'), parent: snap, size: 2 * GiB });
        expect((await api.get(`Volume/${big.name}`))[0].size).toBe(2 * GiB);
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('clone'), parent: snap, size: GiB / 2 })).name).toBe('invalidParam');
        const copy = await api.post('VolumeCreate', { name: unique('copy'), baseOn: name });
        expect(copy.autoName).toEqual(expect.any(String));
        const [transient] = await api.get(`Snapshot/${copy.autoName}`);
        expect(transient).toMatchObject({ transient: true });
        expect((await api.get(`Volume/${copy.name}`))[0].parentName).toBe(copy.autoName);
        expect((await api.get(`Volume/${name}`))[0].parentName).toBe(copy.autoName);
        const gidClone = await api.post('VolumeCreate', { parent: `~${transient.globalId}` });
        expect((await api.get(`Volume/${gidClone.name}`))[0].parentName).toBe(copy.autoName);
      });

      it('updates snapshots: tags merge, rename, bind, deletion date', async () => {
        const name = await volume();
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap, tags: { a: '1' } });
        await api.post(`SnapshotUpdate/${snap}`, { tags: { b: '2' }, deleteAfter: 3600 });
        const [s] = await api.get(`Snapshot/${snap}`);
        expect(s.tags).toEqual({ a: '1', b: '2' });
        expect(s.targetDeleteDate).toBeGreaterThan(Date.now() / 1000);
        const renamed = unique('snap');
        await api.post(`SnapshotUpdate/${snap}`, { rename: renamed, tags: { a: '' }, targetDeleteDate: 0, template: 'tpl2' });
        const [r] = await api.get(`Snapshot/${renamed}`);
        expect(r).toMatchObject({ tags: { b: '2' }, templateName: 'tpl2' });
        expect(r).not.toHaveProperty('targetDeleteDate');
        expect((await api.fail('POST', `SnapshotUpdate/${renamed}`, { rename: name })).name).toBe('objectExists');
        expect((await api.fail('POST', 'SnapshotUpdate/nosuch', { tags: {} })).name).toBe('objectDoesNotExist');
      });

      it('keeps a deleted snapshot that has children (deleted, *name) until its last child goes', async () => {
        const name = await volume();
        const snap = unique('snap');
        const { snapshotGlobalId } = await api.post(`VolumeSnapshot/${name}`, { name: snap });
        const clone = await api.post('VolumeCreate', { name: unique('clone'), parent: snap });
        await api.post(`SnapshotDelete/${snap}`, {});
        const [s] = await api.get(`Snapshot/~${snapshotGlobalId}`);
        expect(s).toMatchObject({ deleted: true, name: `*${snap}` });
        expect((await api.fail('GET', `Snapshot/${snap}`)).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumeCreate', { name: unique('v'), parent: snap })).name).toBe('objectDoesNotExist');
        // The name is free again.
        const other = await volume();
        await api.post(`VolumeSnapshot/${other}`, { name: snap });
        await api.post(`VolumeDelete/${clone.name}`);
        expect((await api.get('SnapshotsList')).some((x: { globalId: string }) => x.globalId === snapshotGlobalId)).toBe(true);
        await api.post(`VolumeDelete/${name}`);
        expect((await api.get('SnapshotsList')).some((x: { globalId: string }) => x.globalId === snapshotGlobalId)).toBe(false);
        const tasks = await api.get('TasksList');
        expect(tasks.some((t: { globalId: string; kind: string }) => t.globalId === snapshotGlobalId && t.kind === 'purge')).toBe(true);
        expect(tasks[0]).toMatchObject({ diskId: expect.any(Number), transactionId: expect.any(Number), allObjects: expect.any(Number), completedObjects: 0, dispatchedObjects: 0 });
      });

      it('deletes a childless snapshot at once, also by global id', async () => {
        const name = await volume();
        const s1 = await api.post(`VolumeSnapshot/${name}`, {});
        const s2 = await api.post(`VolumeSnapshot/${name}`, {});
        await api.post(`VolumeRevert/${name}`, { toSnapshot: s1.autoName });
        // s2 lost its only child (the volume now descends from s1): deleting it removes it at once.
        await api.post(`SnapshotDeleteById/${s2.snapshotGlobalId}`);
        expect((await api.fail('GET', `Snapshot/~${s2.snapshotGlobalId}`)).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'SnapshotDelete/nosuch')).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'SnapshotDeleteById/not-a-gid')).name).toBe('invalidParam');
      });

      it('deletes a snapshot when its deleteAfter time comes (leader background work)', async () => {
        const name = await volume();
        const s = await api.post(`VolumeSnapshot/${name}`, { deleteAfter: 1 });
        expect((await api.get(`Snapshot/~${s.snapshotGlobalId}`))[0].targetDeleteDate).toBeGreaterThan(0);
        await new Promise((r) => setTimeout(r, 1_100));
        await service.runBackground();
        const [left] = await api.get(`Snapshot/~${s.snapshotGlobalId}`);
        expect(left).toMatchObject({ deleted: true, name: `*${s.autoName}` });
        await api.post(`VolumeDelete/${name}`);
        expect((await api.fail('GET', `Snapshot/~${s.snapshotGlobalId}`)).name).toBe('objectDoesNotExist');
      });

      it('group-snapshots all or nothing', async () => {
        const a = await volume();
        const b = await volume();
        const before = await api.generation();
        const missing = await api.fail('POST', 'VolumesGroupSnapshot', { volumes: [{ volume: a, name: unique('g') }, { volume: 'nosuch' }] });
        expect(missing.name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumesGroupSnapshot', { volumes: [{ volume: a }, { volume: a }] })).name).toBe('invalidParam');
        expect(await api.generation()).toBe(before);
        const gA = unique('g');
        const bGid = (await api.get(`Volume/${b}`))[0].globalId;
        const r = await api.post('VolumesGroupSnapshot', { volumes: [{ volume: a, name: gA, tags: { x: '1' } }, { volume: `~${bGid}`, name: '' }], tags: { nvm: '7' } });
        expect(r.snapshots).toHaveLength(2);
        expect(r.snapshots[0]).toMatchObject({ volume: a, snapshot: gA, snapshotGlobalId: expect.any(String), remoteId: r.snapshots[0].snapshotGlobalId, volumeGlobalId: expect.any(String) });
        expect(r.snapshots[1]).toMatchObject({ volume: `~${bGid}`, volumeGlobalId: bGid });
        expect((await api.get(`Snapshot/${gA}`))[0].tags).toEqual({ nvm: '7', x: '1' });
      });

      it('reverts a volume to a snapshot (keeping its globalId) and freezes a volume into a snapshot', async () => {
        const name = await volume();
        const [v] = await api.get(`Volume/${name}`);
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap });
        await api.post(`VolumeUpdate/${name}`, { size: 2 * GiB });
        await api.post(`VolumeSnapshot/${name}`, {});
        await api.post(`VolumeRevert/~${v.globalId}`, { toSnapshot: snap });
        expect((await api.get(`Volume/${name}`))[0]).toMatchObject({ globalId: v.globalId, parentName: snap, size: 2 * GiB });
        await api.post(`VolumeRevert/${name}`, { toSnapshot: snap, revertSize: true });
        expect((await api.get(`Volume/${name}`))[0].size).toBe(GiB);
        expect((await api.fail('POST', `VolumeRevert/${name}`, { toSnapshot: 'nosuch' })).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', `VolumeRevert/${name}`, {})).name).toBe('invalidParam');
        await api.post(`VolumeFreeze/${name}`);
        expect((await api.fail('GET', `Volume/${name}`)).name).toBe('objectDoesNotExist');
        expect((await api.get(`Snapshot/${name}`))[0]).toMatchObject({ name, globalId: v.globalId, parentName: snap });
      });
    });

    describe('attachments', () => {
      it('attaches with string or numeric client ids, lists, changes rights, detaches', async () => {
        const name = await volume();
        await api.post('VolumesReassign', [{ volume: name, rw: ['1'] }]);
        const [v] = await api.get(`Volume/${name}`);
        let list = (await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name);
        expect(list).toEqual([{ volume: name, snapshot: false, client: 1, rights: 'rw', pos: expect.any(Number), globalId: v.globalId }]);
        await api.post('VolumesReassignWait', { reassign: [{ volume: `~${v.globalId}`, ro: [2] }], attachTimeout: 0 });
        await api.post('VolumesReassignWait', [{ volume: name, ro: [1] }]);
        list = (await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name);
        expect(list.map((a: { client: number; rights: string }) => [a.client, a.rights])).toEqual([[1, 'ro'], [2, 'ro']]);
        // detach "all" keeps the client being attached in the same entry.
        await api.post('VolumesReassignWait', { reassign: [{ volume: name, rw: [2], detach: 'all', force: true }] });
        list = (await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name);
        expect(list.map((a: { client: number; rights: string }) => [a.client, a.rights])).toEqual([[2, 'rw']]);
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap });
        await api.post('VolumesReassign', [{ snapshot: snap, ro: [1] }]);
        expect((await api.get('AttachmentsList')).find((a: { volume: string }) => a.volume === snap)).toMatchObject({ snapshot: true, rights: 'ro', client: 1 });
        expect((await api.fail('POST', `SnapshotDelete/${snap}`)).name).toBe('busy');
        await api.post('VolumesReassign', [{ snapshot: snap, detach: 'all' }, { volume: name, detach: [2] }]);
        expect((await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name || a.volume === snap)).toEqual([]);
      });

      it('refuses unknown clients, rw snapshots and bad entries as a whole (nothing changes)', async () => {
        const name = await volume();
        const snap = unique('snap');
        await api.post(`VolumeSnapshot/${name}`, { name: snap });
        const before = await api.generation();
        const unknown = await api.fail('POST', 'VolumesReassignWait', { reassign: [{ volume: name, rw: [1] }, { volume: name, rw: [77] }] });
        expect(unknown).toMatchObject({ name: 'invalidParam', descr: 'No such client registered' });
        expect((await api.fail('POST', 'VolumesReassign', [{ snapshot: snap, rw: [1] }])).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumesReassign', [{ volume: 'nosuch', rw: [1] }])).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'VolumesReassign', [{ volume: name, rw: [0] }])).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumesReassign', [{ volume: name, rw: ['x'] }])).name).toBe('invalidParam');
        expect((await api.fail('POST', 'VolumesReassign', { volume: name })).name).toBe('invalidParam');
        expect(await api.generation()).toBe(before);
        expect((await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name)).toEqual([]);
      });

      it('refuses to delete an attached volume (busy, "is open at client N") unless told to detach', async () => {
        const name = await volume();
        await api.post('VolumesReassign', [{ volume: name, rw: [2] }]);
        const before = await api.generation();
        const busy = await api.fail('POST', `VolumeDelete/${name}`);
        expect(busy.name).toBe('busy');
        expect(busy.descr).toContain(`'${name}' is open at client 2`);
        expect(await api.generation()).toBe(before);
        expect((await api.get(`Volume/${name}`))[0].name).toBe(name);
        await api.post(`VolumeDelete/${name}`, { onAttached: 'detachForce' });
        expect((await api.get('AttachmentsList')).filter((a: { volume: string }) => a.volume === name)).toEqual([]);
      });
    });

    describe('disks, servers, services, clients, tasks, balancer, kv', () => {
      it('lists disks (down: no server answers), describes one, ejects and forgets', async () => {
        const disks = await api.get('DisksList');
        expect(Object.keys(disks)).toEqual(expect.arrayContaining(['1', '2', '3', '4', '5', '6']));
        expect(disks['1']).toMatchObject({ id: 1, serverId: 1, ssd: false, generationLeft: expect.any(Number), softEject: 'off', model: expect.any(String), serial: expect.any(String), description: '' });
        expect(disks['1'].generationLeft).toBeGreaterThanOrEqual(0);
        expect(await api.get('DiskDescribe/1')).toMatchObject({ id: 1, objects: {} });
        expect((await api.fail('GET', 'DiskDescribe/99')).name).toBe('objectDoesNotExist');
        expect((await api.fail('GET', 'DiskDescribe/abc')).name).toBe('invalidParam');
        expect((await api.fail('POST', 'DiskEject/99')).name).toBe('objectDoesNotExist');
        expect((await api.fail('POST', 'DiskScrubStart/1')).name).toBe('notReady'); // no server serves disk 1 here; scrub.test.ts has real ones
        expect((await api.fail('POST', 'DiskRegister/7', { serverId: 7 })).name).toBe('invalidParam');
        await api.post('DiskRegister/7', { serverId: '7', address: { host: '127.0.0.1', port: 1 }, placementGroups: ['spare'], faultSet: 'rack7' });
        expect(await api.get('FaultSetsList')).toEqual({ rack7: { name: 'rack7', servers: [7] } });
        await api.post('DiskSoftEject/7');
        expect((await api.get('DisksList'))['7'].softEject).toBe('on');
        await api.post('DiskEject/7');
        await api.post('DiskForget/7');
        expect((await api.get('DisksList'))['7']).toBeUndefined();
        expect((await api.get('PlacementGroupDescribe/spare')).disks).toEqual([]);
      });

      it('reports servers, services (one active mgmt), clients and their config', async () => {
        const servers = await api.get('ServersList');
        expect(servers).toMatchObject({ clusterStatus: 'running', clients: {}, bridges: {}, iscsiTargets: {} });
        expect(servers.servers['1']).toMatchObject({ id: 1, status: 'down', missingDisks: [1], pendingDisks: [] });
        const services = await api.get('ServicesList');
        const mgmt = Object.values(services.mgmt) as { active: boolean; status: string }[];
        expect(mgmt.filter((m) => m.active)).toHaveLength(1);
        expect(services.clients['1']).toMatchObject({ id: 1, status: 'running' });
        const dump = await api.get('ClientsConfigDump');
        expect(dump.find((c: { id: number }) => c.id === 1)).toMatchObject({ id: 1, generation: expect.any(Number), clientGeneration: expect.any(Number), configStatus: 'ok', delay: 0 });
        expect(await api.get('ClientConfigWait/1')).toHaveLength(1);
        expect((await api.fail('GET', 'ClientConfigWait/99')).name).toBe('objectDoesNotExist');
        await api.post('ClientRegister/9');
        expect((await api.get('ClientsConfigDump')).some((c: { id: number }) => c.id === 9)).toBe(true);
      });

      it('lists tasks; balancer status; VolumeAcquire is a local no-op', async () => {
        expect(await api.get('TasksList')).toBeInstanceOf(Array);
        expect(await api.get('VolumeBalancerStatus')).toMatchObject({ status: 'nothing to do', auto: true, joiningShards: 0 });
        await api.post('VolumeBalancerStatus', { cmd: 'start' });
        await api.post('VolumeBalancerStatus', { cmd: 'commit' });
        const stop = await api.fail('POST', 'VolumeBalancerStatus', { cmd: 'stop' });
        expect(stop.name).toBe('notImplemented');
        expect(stop.descr).toMatch(/--sync-mbps/);
        expect((await api.fail('POST', 'VolumeBalancerStatus', { cmd: 'go' })).name).toBe('invalidParam');
        const name = await volume();
        expect(await api.post(`MultiCluster/VolumeAcquire/${name}`, { onRemoteAttached: 'detachForce' })).toMatchObject({ ok: true });
        expect((await api.fail('POST', 'VolumeBackup', { volume: name, location: 'x' })).name).toBe('notImplemented');
      });

      it('key/value buckets with versions', async () => {
        const bucket = unique('b');
        await api.post(`KV/Create/${bucket}`);
        expect((await api.fail('POST', `KV/Create/${bucket}`)).name).toBe('objectExists');
        await api.post(`KV/Set/${bucket}`, { set: { k1: 'v1', k2: 'v2' } });
        const list = await api.get(`KV/List/${bucket}`);
        expect(list).toMatchObject({ name: bucket, pairs: { k1: 'v1', k2: 'v2' } });
        expect((await api.fail('POST', `KV/Set/${bucket}`, { runIfVersionIs: list.version - 1, set: { k1: 'x' } })).name).toBe('runIfVersionIsMismatch');
        await api.post(`KV/Set/${bucket}`, { runIfVersionIs: list.version, set: { k1: '' } });
        expect(await api.get(`KV/Get/${bucket}/k2`)).toMatchObject({ pairs: { k2: 'v2' } });
        expect((await api.get(`KV/List/${bucket}`)).pairs).toEqual({ k2: 'v2' });
        expect((await api.get('KV')).buckets[bucket]).toBe(list.version + 1);
        await api.post(`KV/Delete/${bucket}`);
        expect((await api.fail('GET', `KV/List/${bucket}`)).name).toBe('objectDoesNotExist');
      });
    });
  });
}
