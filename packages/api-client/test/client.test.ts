import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { StorpoolError } from '@storpool/errors';
import { StorpoolApi, StorpoolApiError, StorpoolConfigError, StorpoolConnectionError, type RawResponse } from '../src/index.js';
import { apiError, ok, startFakeApi, type FakeApi } from '@storpool/testkit';

const TOKEN = '1556129910218014736';
let fake: FakeApi;
let api: StorpoolApi;

beforeAll(async () => {
  fake = await startFakeApi();
  api = new StorpoolApi({ host: '127.0.0.1', port: fake.port, token: TOKEN, retryDelayMs: 1 });
});
afterAll(async () => fake.close());
beforeEach(() => {
  fake.requests.length = 0;
  fake.setHandler(() => ok({ ok: true, generation: 7 }));
});

type Case = [label: string, run: (a: StorpoolApi) => Promise<unknown>, method: 'GET' | 'POST', url: string, body?: unknown];

/** Every call of API.md §4 (plus §4.11): the exact request it must produce. */
const CASES: Case[] = [
  ['VolumesList', (a) => a.volumesList(), 'GET', '/ctrl/1.0/VolumesList'],
  ['Volume', (a) => a.volume('vol1'), 'GET', '/ctrl/1.0/Volume/vol1'],
  ['VolumeDescribe', (a) => a.volumeDescribe('~a.b.c'), 'GET', '/ctrl/1.0/VolumeDescribe/~a.b.c'],
  ['VolumeGetInfo', (a) => a.volumeGetInfo('v.1:x'), 'GET', '/ctrl/1.0/VolumeGetInfo/v.1:x'],
  ['VolumeCreate', (a) => a.volumeCreate({ name: 'v', size: 10737418240, template: 'hdd', tags: { a: 'b' } }), 'POST', '/ctrl/1.0/VolumeCreate', { name: 'v', size: 10737418240, template: 'hdd', tags: { a: 'b' } }],
  ['VolumeUpdate', (a) => a.volumeUpdate('v', { size: 1024, shrinkOk: true }), 'POST', '/ctrl/1.0/VolumeUpdate/v', { size: 1024, shrinkOk: true }],
  ['VolumeDelete', (a) => a.volumeDelete('v'), 'POST', '/ctrl/1.0/VolumeDelete/v', undefined],
  ['VolumeDelete onAttached', (a) => a.volumeDelete('v', { onAttached: 'detachForce' }), 'POST', '/ctrl/1.0/VolumeDelete/v', { onAttached: 'detachForce' }],
  ['VolumeRevert', (a) => a.volumeRevert('v', { toSnapshot: 's', revertSize: true }), 'POST', '/ctrl/1.0/VolumeRevert/v', { toSnapshot: 's', revertSize: true }],
  ['VolumeFreeze', (a) => a.volumeFreeze('v'), 'POST', '/ctrl/1.0/VolumeFreeze/v', undefined],
  ['VolumeListSnapshots', (a) => a.volumeListSnapshots('v'), 'GET', '/ctrl/1.0/VolumeListSnapshots/v'],
  ['VolumesGetStatus', (a) => a.volumesGetStatus(), 'GET', '/ctrl/1.0/VolumesGetStatus'],
  ['VolumesSpace', (a) => a.volumesSpace(), 'GET', '/ctrl/1.0/VolumesSpace'],
  ['VolumesAndSnapshotsList', (a) => a.volumesAndSnapshotsList(), 'GET', '/ctrl/1.0/VolumesAndSnapshotsList'],
  ['VolumeAcquire', (a) => a.volumeAcquire('v', { onRemoteAttached: 'detachForce' }), 'POST', '/ctrl/1.0/VolumeAcquire/v', { onRemoteAttached: 'detachForce' }],
  ['VolumeBackup', (a) => a.volumeBackup({ volume: 'v', location: 'l' }), 'POST', '/ctrl/1.0/VolumeBackup', { volume: 'v', location: 'l' }],
  ['VolumeSnapshot', (a) => a.volumeSnapshot('v', { name: 's', deleteAfter: 60, tags: { k: 'v' } }), 'POST', '/ctrl/1.0/VolumeSnapshot/v', { name: 's', deleteAfter: 60, tags: { k: 'v' } }],
  ['SnapshotsList', (a) => a.snapshotsList(), 'GET', '/ctrl/1.0/SnapshotsList'],
  ['Snapshot', (a) => a.snapshot('*s@1'), 'GET', '/ctrl/1.0/Snapshot/*s@1'],
  ['SnapshotDescribe', (a) => a.snapshotDescribe('s'), 'GET', '/ctrl/1.0/SnapshotDescribe/s'],
  ['SnapshotGetInfo', (a) => a.snapshotGetInfo('s'), 'GET', '/ctrl/1.0/SnapshotGetInfo/s'],
  ['SnapshotsSpace', (a) => a.snapshotsSpace(), 'GET', '/ctrl/1.0/SnapshotsSpace'],
  ['SnapshotUpdate', (a) => a.snapshotUpdate('s', { tags: { qc: '' } }), 'POST', '/ctrl/1.0/SnapshotUpdate/s', { tags: { qc: '' } }],
  ['SnapshotDelete', (a) => a.snapshotDelete('s'), 'POST', '/ctrl/1.0/SnapshotDelete/s', undefined],
  ['SnapshotDeleteById', (a) => a.snapshotDeleteById('a.b.c'), 'POST', '/ctrl/1.0/SnapshotDeleteById/a.b.c', undefined],
  ['VolumesGroupSnapshot', (a) => a.volumesGroupSnapshot({ volumes: [{ volume: 'v', name: 's' }], tags: { nvm: '7' } }), 'POST', '/ctrl/1.0/VolumesGroupSnapshot', { volumes: [{ volume: 'v', name: 's' }], tags: { nvm: '7' } }],
  ['AttachmentsList', (a) => a.attachmentsList(), 'GET', '/ctrl/1.0/AttachmentsList'],
  ['VolumesReassign', (a) => a.volumesReassign([{ volume: 'v', detach: 'all' }]), 'POST', '/ctrl/1.0/VolumesReassign', [{ volume: 'v', detach: 'all' }]],
  ['VolumesReassignWait', (a) => a.volumesReassignWait({ reassign: [{ volume: 'v', rw: ['12'] }], attachTimeout: 5 }), 'POST', '/ctrl/1.0/VolumesReassignWait', { reassign: [{ volume: 'v', rw: ['12'] }], attachTimeout: 5 }],
  ['VolumeTemplatesList', (a) => a.volumeTemplatesList(), 'GET', '/ctrl/1.0/VolumeTemplatesList'],
  ['VolumeTemplatesStatus', (a) => a.volumeTemplatesStatus(), 'GET', '/ctrl/1.0/VolumeTemplatesStatus'],
  ['VolumeTemplateDescribe', (a) => a.volumeTemplateDescribe('hdd'), 'GET', '/ctrl/1.0/VolumeTemplateDescribe/hdd'],
  ['VolumeTemplateCreate', (a) => a.volumeTemplateCreate({ name: 'hdd', replication: 3, placeAll: 'hdd' }), 'POST', '/ctrl/1.0/VolumeTemplateCreate', { name: 'hdd', replication: 3, placeAll: 'hdd' }],
  ['VolumeTemplateUpdate', (a) => a.volumeTemplateUpdate('hdd', { propagate: true, iops: '-' }), 'POST', '/ctrl/1.0/VolumeTemplateUpdate/hdd', { propagate: true, iops: '-' }],
  ['VolumeTemplateDelete', (a) => a.volumeTemplateDelete('hdd'), 'POST', '/ctrl/1.0/VolumeTemplateDelete/hdd', undefined],
  ['PlacementGroupsList', (a) => a.placementGroupsList(), 'GET', '/ctrl/1.0/PlacementGroupsList'],
  ['PlacementGroupDescribe', (a) => a.placementGroupDescribe('pg'), 'GET', '/ctrl/1.0/PlacementGroupDescribe/pg'],
  ['PlacementGroupUpdate', (a) => a.placementGroupUpdate('pg', { addDisks: [1, '2'], rmDisks: [] }), 'POST', '/ctrl/1.0/PlacementGroupUpdate/pg', { addDisks: [1, '2'], rmDisks: [] }],
  ['PlacementGroupDelete', (a) => a.placementGroupDelete('pg'), 'POST', '/ctrl/1.0/PlacementGroupDelete/pg', undefined],
  ['FaultSetsList', (a) => a.faultSetsList(), 'GET', '/ctrl/1.0/FaultSetsList'],
  ['DisksList', (a) => a.disksList(), 'GET', '/ctrl/1.0/DisksList'],
  ['DiskDescribe', (a) => a.diskDescribe(101), 'GET', '/ctrl/1.0/DiskDescribe/101'],
  ['DiskEject', (a) => a.diskEject(101), 'POST', '/ctrl/1.0/DiskEject/101', undefined],
  ['DiskForget', (a) => a.diskForget(101), 'POST', '/ctrl/1.0/DiskForget/101', undefined],
  ['DiskSoftEject', (a) => a.diskSoftEject(101), 'POST', '/ctrl/1.0/DiskSoftEject/101', undefined],
  ['DiskScrubStart', (a) => a.diskScrubStart(101), 'POST', '/ctrl/1.0/DiskScrubStart/101', undefined],
  ['ServersList', (a) => a.serversList(), 'GET', '/ctrl/1.0/ServersList'],
  ['ServicesList', (a) => a.servicesList(), 'GET', '/ctrl/1.0/ServicesList'],
  ['ClientsConfigDump', (a) => a.clientsConfigDump(), 'GET', '/ctrl/1.0/ClientsConfigDump'],
  ['ClientConfigWait', (a) => a.clientConfigWait(12), 'GET', '/ctrl/1.0/ClientConfigWait/12'],
  ['TasksList', (a) => a.tasksList(), 'GET', '/ctrl/1.0/TasksList'],
  ['VolumeBalancerStatus get', (a) => a.volumeBalancerStatus(), 'GET', '/ctrl/1.0/VolumeBalancerStatus'],
  ['VolumeBalancerStatus set', (a) => a.volumeBalancerCommand({ cmd: 'start' }), 'POST', '/ctrl/1.0/VolumeBalancerStatus', { cmd: 'start' }],
  ['iSCSIConfig get', (a) => a.iSCSIConfig(), 'GET', '/ctrl/1.0/iSCSIConfig'],
  ['iSCSIConfig change', (a) => a.iSCSIConfigChange({ commands: [{ createTarget: { volumeName: 'v' } }] }), 'POST', '/ctrl/1.0/iSCSIConfig', { commands: [{ createTarget: { volumeName: 'v' } }] }],
  ['KV', (a) => a.kvBuckets(), 'GET', '/ctrl/1.0/KV'],
  ['KV/List', (a) => a.kvList('b'), 'GET', '/ctrl/1.0/KV/List/b'],
  ['KV/Get', (a) => a.kvGet('b', 'k'), 'GET', '/ctrl/1.0/KV/Get/b/k'],
  ['KV/Create', (a) => a.kvCreate('b'), 'POST', '/ctrl/1.0/KV/Create/b', undefined],
  ['KV/Delete', (a) => a.kvDelete('b'), 'POST', '/ctrl/1.0/KV/Delete/b', undefined],
  ['KV/Set', (a) => a.kvSet('b', { runIfVersionIs: 3, set: { k: 'v' } }), 'POST', '/ctrl/1.0/KV/Set/b', { runIfVersionIs: 3, set: { k: 'v' } }],
];

describe('StorpoolApi requests', () => {
  it.each(CASES)('%s sends the exact request', async (_label, run, method, url, ...rest) => {
    await run(api);
    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.method).toBe(method);
    expect(req.url).toBe(url);
    expect(req.headers.authorization).toBe(`Storpool v1:${TOKEN}`);
    if (method === 'GET' || rest[0] === undefined) expect(req.body).toBe('');
    else expect(JSON.parse(req.body)).toEqual(rest[0]);
  });

  it('returns data from the success envelope', async () => {
    const volume = { name: 'v', globalId: 'a.b.c', size: 512 };
    fake.setHandler(() => ok([volume], 42));
    await expect(api.volume('v')).resolves.toEqual([volume]);
    const env = await api.request('GET', 'VolumesList');
    expect(env).toEqual({ generation: 42, data: [volume] });
  });

  it('sends safe name characters raw and percent-encodes only what a URL cannot carry', async () => {
    await api.volumeDescribe('#vol');
    await api.snapshotDescribe('vol@3');
    expect(fake.requests.map((r) => r.url)).toEqual(['/ctrl/1.0/VolumeDescribe/%23vol', '/ctrl/1.0/SnapshotDescribe/vol@3']);
  });

  it('uses the MultiCluster/ prefix for MC calls only, and RemoteCommand/ when a cluster is named', async () => {
    const mc = new StorpoolApi({ host: '127.0.0.1', port: fake.port, token: TOKEN, multiCluster: true });
    await mc.volumesList();
    await mc.volumeTemplatesList();
    const remote = new StorpoolApi({ host: '127.0.0.1', port: fake.port, token: TOKEN, multiCluster: true, clusterName: '~a.b' });
    await remote.volumesReassignWait({ reassign: [{ volume: 'v', detach: 'all' }] });
    expect(fake.requests.map((r) => r.url)).toEqual([
      '/ctrl/1.0/MultiCluster/VolumesList',
      '/ctrl/1.0/VolumeTemplatesList',
      '/ctrl/1.0/RemoteCommand/~a.b/MultiCluster/VolumesReassignWait',
    ]);
  });

  it('hands every raw answer to onResponse', async () => {
    const seen: RawResponse[] = [];
    const watched = new StorpoolApi({ host: '127.0.0.1', port: fake.port, token: TOKEN, onResponse: (r) => seen.push(r) });
    fake.setHandler(() => ({ body: '{"generation": 3,  "data": []}' }));
    await watched.tasksList();
    expect(seen).toEqual([{ method: 'GET', path: '/ctrl/1.0/TasksList', status: 200, body: '{"generation": 3,  "data": []}' }]);
  });
});

describe('StorpoolApi errors', () => {
  it('turns the error envelope into a typed StorpoolApiError', async () => {
    fake.setHandler(() => apiError('objectDoesNotExist', "volume 'nope' does not exist"));
    const err = await api.volumeDelete('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorpoolApiError);
    const e = err as StorpoolApiError;
    expect([e.name, e.descr, e.transient, e.status, e.method, e.path]).toEqual(['objectDoesNotExist', "volume 'nope' does not exist", false, 500, 'POST', '/ctrl/1.0/VolumeDelete/nope']);
    expect(JSON.parse(e.body)).toEqual({ error: { name: 'objectDoesNotExist', descr: "volume 'nope' does not exist", transient: false } });
  });

  it('treats an error envelope with status 200 as an error, and a non-200 without one too', async () => {
    fake.setHandler(() => apiError('busy', "'v' is open at client 12", false, 200));
    await expect(api.volumesList()).rejects.toMatchObject({ name: 'busy', status: 200 });
    fake.setHandler(() => ({ status: 503, body: { generation: 1, data: [] } }));
    await expect(api.volumesList()).rejects.toMatchObject({ name: 'httpError', status: 503 });
    fake.setHandler(() => ({ status: 502, body: '<html>bad gateway</html>' }));
    await expect(api.volumesList()).rejects.toMatchObject({ name: 'invalidResponse', status: 502 });
  });

  it('retries a GET after transient errors, then succeeds', async () => {
    let n = 0;
    fake.setHandler(() => (++n < 3 ? apiError('clusterNotReady', 'no active management instance', true, 503) : ok([])));
    await expect(api.tasksList()).resolves.toEqual([]);
    expect(fake.requests).toHaveLength(3);
  });

  it('gives up after the configured retries and never retries non-transient errors or POSTs', async () => {
    fake.setHandler(() => apiError('clusterNotReady', 'not ready', true, 503));
    await expect(api.tasksList()).rejects.toMatchObject({ name: 'clusterNotReady', transient: true });
    expect(fake.requests).toHaveLength(4);
    fake.requests.length = 0;
    await expect(api.volumeCreate({ name: 'v', size: 512 })).rejects.toMatchObject({ name: 'clusterNotReady' });
    expect(fake.requests).toHaveLength(1);
    fake.requests.length = 0;
    fake.setHandler(() => apiError('invalidParam', 'bad'));
    await expect(api.tasksList()).rejects.toMatchObject({ name: 'invalidParam' });
    expect(fake.requests).toHaveLength(1);
  });

  it('names the address when the API cannot be reached', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const dead = new StorpoolApi({ host: '127.0.0.1', port, token: TOKEN, retries: 1, retryDelayMs: 1 });
    const err = await dead.volumesList().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorpoolConnectionError);
    expect(err).toBeInstanceOf(StorpoolError);
    expect((err as StorpoolConnectionError).code).toBe('CLIENT_ERR_CONNECTION');
    expect((err as Error).message).toContain(`http://127.0.0.1:${port}`);
    expect((err as Error).message).toContain('ECONNREFUSED');
  });

  it('times out with CLIENT_ERR_TIMEOUT', async () => {
    fake.setHandler(() => ({ ...ok([]), delayMs: 500 }));
    const slow = new StorpoolApi({ host: '127.0.0.1', port: fake.port, token: TOKEN, timeoutMs: 100 });
    const err = await slow.volumesList().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorpoolConnectionError);
    expect((err as StorpoolConnectionError).code).toBe('CLIENT_ERR_TIMEOUT');
    expect((err as StorpoolConnectionError).address).toBe(`127.0.0.1:${fake.port}`);
  });

  it('refuses to start without a token', () => {
    expect(() => new StorpoolApi({ host: 'h', port: 81, token: '' })).toThrow(StorpoolConfigError);
    expect(() => new StorpoolApi({ host: 'h', port: 0, token: 't' })).toThrow(/invalid API port/);
  });
});

describe('error classes', () => {
  it('instanceof tells the client error classes apart, and all are StorpoolErrors except API refusals', () => {
    const conn = new StorpoolConnectionError('CLIENT_ERR_CONNECTION', 'h:1', 'x');
    const conf = new StorpoolConfigError('y');
    expect(conn instanceof StorpoolConnectionError && !(conn instanceof StorpoolConfigError)).toBe(true);
    expect(conf instanceof StorpoolConfigError && !(conf instanceof StorpoolConnectionError)).toBe(true);
    expect(conn instanceof StorpoolError && conf instanceof StorpoolError).toBe(true);
    expect(new StorpoolError('INTERNAL_ERR') instanceof StorpoolConfigError).toBe(false);
  });
});
