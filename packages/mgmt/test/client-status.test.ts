/**
 * The block service's side channel (ClientAttachments, ClientStatus) and what it changes:
 * VolumesReassignWait waits for a connected client to apply the change (with a timeout), and a
 * device the client reports open cannot be detached without force. The block service is played
 * by the test.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openMetaStore, type MetaStore } from '@storpool/meta';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startManagementService, type ManagementService } from '../src/index.js';
import { Api, GiB } from './helpers.js';

describe('block service side channel', () => {
  let dir: string;
  let meta: MetaStore;
  let service: ManagementService;
  let api: Api;
  const token = '42';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-client-'));
    meta = await openMetaStore({ backend: 'embedded', dir: join(dir, 'meta') });
    service = await startManagementService({ meta, token, cluster: { spClusterId: 'tst.b', name: 'c' }, shardCount: 16 });
    api = new Api(service.url, token);
    for (let id = 1; id <= 3; id++) await service.registerDisk({ id, serverId: id, address: { host: '127.0.0.1', port: 1 }, placementGroups: ['default'] });
    await api.post('ClientRegister/7');
    await api.post('ClientRegister/8');
    await api.post('VolumeTemplateCreate', { name: 'tpl', replication: 3, placeAll: 'default' });
  });

  afterAll(async () => {
    await service?.close();
    await meta?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('ClientAttachments lists attachments with data identities; a snapshot changes the identity', async () => {
    await api.post('VolumeCreate', { name: 'cs1', size: GiB, template: 'tpl' });
    await api.post('VolumesReassign', [{ volume: 'cs1', rw: [8] }]);
    const before = await api.get<{ generation: number; attachments: any[] }>('ClientAttachments/8');
    expect(before.attachments).toHaveLength(1);
    const a = before.attachments[0];
    expect(a).toMatchObject({ name: 'cs1', snapshot: false, rights: 'rw', pos: 0, size: GiB });
    expect(a.dataId).toBeGreaterThan(0);
    expect(a.parents).toEqual([]);
    await api.post('VolumeSnapshot/cs1', { name: 'cs1-s' });
    const after = await api.get<{ attachments: any[] }>('ClientAttachments/8');
    expect(after.attachments[0].dataId).not.toBe(a.dataId);
    expect(after.attachments[0].parents).toEqual([a.dataId]);
    expect(after.attachments[0].placementId).toBe(a.placementId);
    expect((await api.fail('GET', 'ClientAttachments/99')).name).toBe('objectDoesNotExist');
    expect((await api.fail('POST', 'ClientStatus/7', { generation: 'x' })).name).toBe('invalidParam');
    await api.post('VolumesReassign', [{ volume: 'cs1', detach: 'all' }]);
  });

  it('VolumesReassignWait waits for a connected client; an open device is busy unless forced', async () => {
    await api.post('VolumeCreate', { name: 'cs2', size: GiB, template: 'tpl' });
    // A "block service" for client 7 that applies every generation 300 ms after it appears.
    let running = true;
    let open: string[] = [];
    const gid = (await api.get<{ globalId: string }[]>('Volume/cs2'))[0]!.globalId;
    const fake = (async () => {
      while (running) {
        const { generation } = await api.get<{ generation: number }>('ClientAttachments/7');
        await sleep(300);
        await api.post('ClientStatus/7', { generation, open });
        await sleep(20);
      }
    })();
    await api.post('ClientStatus/7', { generation: 0, open: [] });
    const started = Date.now();
    await api.post('VolumesReassignWait', { reassign: [{ volume: 'cs2', rw: ['7'] }] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const dump = await api.get<any[]>('ClientsConfigDump');
    expect(dump.find((c) => c.id === 7).configStatus).not.toBe('down');

    open = [gid];
    await sleep(800);
    const busy = await api.fail('POST', 'VolumesReassignWait', { reassign: [{ volume: 'cs2', detach: [7], force: false }] });
    expect(busy.name).toBe('busy');
    expect(busy.descr).toBe("'cs2' is open at client 7");
    expect((await api.get<any[]>('AttachmentsList')).some((x) => x.volume === 'cs2' && x.client === 7)).toBe(true);
    await api.post('VolumesReassignWait', { reassign: [{ volume: 'cs2', detach: [7], force: true }] });
    expect((await api.get<any[]>('AttachmentsList')).some((x) => x.volume === 'cs2' && x.client === 7)).toBe(false);
    running = false;
    await fake;
    open = [];
  });

  it('a client that reports errors fails the attach; a disconnected client is waited for attachTimeout', async () => {
    await api.post('VolumeCreate', { name: 'cs3', size: GiB, template: 'tpl' });
    const gid = (await api.get<{ globalId: string }[]>('Volume/cs3'))[0]!.globalId;
    let running = true;
    const fake = (async () => {
      while (running) {
        const { generation } = await api.get<{ generation: number }>('ClientAttachments/8');
        await api.post('ClientStatus/8', { generation, open: [], errors: { [gid]: 'no loop device' } });
        await sleep(50);
      }
    })();
    await sleep(100);
    const failed = await api.fail('POST', 'VolumesReassignWait', { reassign: [{ volume: 'cs3', rw: [8] }] });
    expect(failed.name).toBe('busy');
    expect(failed.descr).toContain('no loop device');
    running = false;
    await fake;
    // Client 8 stops reporting: once its report is stale it is not connected. attachTimeout 0 does
    // not wait; a client that never ran a block service (none here) is not waited for either.
    await meta.put('mgmt-clients/8', JSON.stringify({ generation: 0, open: [], errors: {}, at: Date.now() - 60_000 }));
    const t0 = Date.now();
    await api.post('VolumesReassignWait', { reassign: [{ volume: 'cs3', detach: [8] }, { volume: 'cs3', ro: [8] }], attachTimeout: 0 });
    expect(Date.now() - t0).toBeLessThan(1_000);
    const timedOut = await api.fail('POST', 'VolumesReassignWait', { reassign: [{ volume: 'cs3', rw: [8] }], attachTimeout: 1 });
    expect(timedOut.name).toBe('busy');
    expect(timedOut.descr).toContain('not connected');
  });
});
