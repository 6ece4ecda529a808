/**
 * CloudStack against a real local cluster (mgmt + 3 storage servers + the block service of
 * client 1): every API call and field of CloudStack's StorPool plugin (API.md §6.6) as its
 * management server sends them, the KVM agent's `storpool -M ...` invocations through the real
 * CLI, and storpool-cloudstack registering, listing and checking the primary storage against a
 * fake CloudStack management server that verifies signatures.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '@storpool/local';
import { startFakeCloudStack, type FakeCloudStack } from './fake-cloudstack.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/bin/storpool.js', import.meta.url));
const SPCS = fileURLToPath(new URL('../bin/storpool-cloudstack.js', import.meta.url));
const GiB = 1024 ** 3;
const KEYS = { apiKey: 'cs-api-key', secretKey: 'cs-secret-key' };

interface Summary { name: string; globalId: string; size: number; templateName: string; parentName: string; tags: Record<string, string>; deleted?: boolean; clusterId?: string; iops?: number | string }

let c: TestCluster;
let fake: FakeCloudStack;
beforeAll(async () => {
  c = await startTestCluster('cloudstack');
  fake = await startFakeCloudStack(KEYS, [{ id: '3f0c9b1e-1111-4a2b-9c3d-5e6f7a8b9c01', name: 'zone1' }, { id: '3f0c9b1e-2222-4a2b-9c3d-5e6f7a8b9c02', name: 'empty-zone' }]);
}, 240_000);
afterAll(async () => {
  await fake?.close();
  await c?.stop();
}, 60_000);

function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { env: { ...process.env, STORPOOL_CONF: c.local.confPath, ...env }, timeout: 120_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}
const storpool = (...words: string[]): ReturnType<typeof run> => run(CLI, words);

/** CloudStack always creates anonymous volumes and strips the `~` from data.name. */
async function csCreate(body: Record<string, unknown>): Promise<string> {
  const d = await c.ok<{ name: string; globalId: string }>('POST', 'MultiCluster/VolumeCreate', { name: '', template: 'default', ...body });
  expect(d.name).toBe(`~${d.globalId}`);
  return d.globalId;
}

describe('CloudStack management server calls (API.md §6.6)', () => {
  it('template check: VolumeTemplateDescribe, objectDoesNotExist for an unknown one', async () => {
    await c.ok('GET', 'VolumeTemplateDescribe/default');
    const r = await c.call('GET', 'VolumeTemplateDescribe/nosuch');
    expect(r.body.error!.name).toBe('objectDoesNotExist');
  });

  it('anonymous volumes: create (with iops, the on-host probe), Volume/~gid, listings with tags objects', async () => {
    const gid = await csCreate({ size: GiB, iops: 1000, tags: { cs: 'volume', uuid: 'a0e0b7c1-7a52-4c8a-9f5e-0d4a1c8a9e11', cvm: 'i-2-10-VM', 'vc-policy': 'p1' } });
    const probe = await csCreate({ size: 512, tags: { cs: 'check-volume-is-on-host' } });
    const [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/~${gid}`);
    expect(v).toMatchObject({ name: `~${gid}`, globalId: gid, size: GiB, templateName: 'default', tags: { cs: 'volume', cvm: 'i-2-10-VM' } });
    const list = await c.ok<Summary[]>('GET', 'MultiCluster/VolumesList');
    for (const x of list) expect(typeof x.tags).toBe('object'); // .get("tags").getAsJsonObject()
    expect(list.find((x) => x.globalId === probe)).toMatchObject({ name: `~${probe}`, size: 512, tags: { cs: 'check-volume-is-on-host' } });
    await c.ok('POST', `MultiCluster/VolumeDelete/~${probe}`, { onAttached: 'detachForce' });
  });

  it('updates: rename with a uuid tag, iops + size + shrinkOk, iops + tags, template', async () => {
    await c.ok('POST', 'VolumeTemplateCreate', { name: 'cs-other', replication: 2, placeAll: 'default' });
    const gid = await csCreate({ size: 2 * GiB, tags: { cs: 'volume', uuid: 'u1' } });
    await c.ok('POST', `MultiCluster/VolumeUpdate/~${gid}`, { rename: 'cs-named-volume', tags: { uuid: 'u2' } });
    await c.ok('POST', `MultiCluster/VolumeUpdate/~${gid}`, { iops: 500, size: GiB, shrinkOk: true });
    await c.ok('POST', `MultiCluster/VolumeUpdate/~${gid}`, { iops: 800, tags: { 'vc-policy': 'p2' } });
    await c.ok('POST', `MultiCluster/VolumeUpdate/~${gid}`, { template: 'cs-other' });
    const [v] = await c.ok<Summary[]>('GET', `MultiCluster/Volume/~${gid}`);
    expect(v).toMatchObject({ name: 'cs-named-volume', size: GiB, templateName: 'cs-other', tags: { cs: 'volume', uuid: 'u2', 'vc-policy': 'p2' } });
  });

  it('snapshots: anonymous snapshot, Snapshot/~gid size, clone (parent) and baseOn, revert, VM group snapshot, delete', async () => {
    const gid = await csCreate({ size: GiB, tags: { cs: 'volume' } });
    const snap = await c.ok<{ snapshotGlobalId: string }>('POST', `MultiCluster/VolumeSnapshot/~${gid}`, { name: '', tags: { cs: 'snapshot', uuid: 's1' } });
    const [s] = await c.ok<Summary[]>('GET', `MultiCluster/Snapshot/~${snap.snapshotGlobalId}`);
    expect(s).toMatchObject({ globalId: snap.snapshotGlobalId, size: GiB, tags: { cs: 'snapshot', uuid: 's1' } });
    expect(s!.name.startsWith('*')).toBe(false);
    const snaps = await c.ok<Summary[]>('GET', 'MultiCluster/SnapshotsList');
    for (const x of snaps) expect(typeof x.tags).toBe('object');
    const fromSnap = await csCreate({ size: GiB, parent: `~${snap.snapshotGlobalId}`, tags: { cs: 'volume' } });
    const fromVol = await csCreate({ baseOn: `~${gid}`, tags: { cs: 'volume' } });
    expect((await c.ok<Summary[]>('GET', `MultiCluster/Volume/~${fromVol}`))[0]!.size).toBe(GiB);
    await c.ok('POST', `MultiCluster/VolumeRevert/~${gid}`, { toSnapshot: `~${snap.snapshotGlobalId}` });
    const group = await c.ok<{ snapshots: { volume: string; volumeGlobalId: string; snapshotGlobalId: string }[] }>('POST', 'MultiCluster/VolumesGroupSnapshot', {
      tags: { cs: 'vmsnapshot', vmsnapshot: 'vs1' }, volumes: [{ name: '', volume: `~${gid}` }, { name: '', volume: `~${fromSnap}` }],
    });
    expect(group.snapshots.map((x) => x.volumeGlobalId).sort()).toEqual([gid, fromSnap].sort());
    for (const x of group.snapshots) {
      const [gs] = await c.ok<Summary[]>('GET', `MultiCluster/Snapshot/~${x.snapshotGlobalId}`);
      expect(gs!.tags).toMatchObject({ vmsnapshot: 'vs1' });
      await c.ok('POST', 'MultiCluster/VolumesReassign', [{ snapshot: `~${x.snapshotGlobalId}`, detach: 'all', force: true }]);
      await c.ok('POST', `MultiCluster/SnapshotDelete/~${x.snapshotGlobalId}`);
    }
    // Gone, or listed as being deleted (`deleted: true` / a `*` name), which CloudStack skips.
    const gone = await c.call('GET', `MultiCluster/Snapshot/~${group.snapshots[0]!.snapshotGlobalId}`);
    if (gone.body.error === undefined) {
      const [d] = gone.body.data as Summary[];
      expect(d!.deleted === true || d!.name.startsWith('*'), JSON.stringify(d)).toBe(true);
    } else expect(gone.body.error.name).toBe('objectDoesNotExist');
  });

  it('VolumeAcquire, VolumeFreeze (no body), VolumeDelete with onAttached detachForce while attached', async () => {
    const gid = await csCreate({ size: GiB, tags: { cs: 'volume' } });
    await c.ok('POST', `MultiCluster/VolumeAcquire/~${gid}`, { onRemoteAttached: 'detachForce' });
    await c.ok('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: `~${gid}`, rw: [1] }] });
    await c.ok('POST', `MultiCluster/VolumeDelete/~${gid}`, { onAttached: 'detachForce' });
    expect((await c.call('GET', `MultiCluster/Volume/~${gid}`)).body.error!.name).toBe('objectDoesNotExist');
    const frozen = await csCreate({ size: GiB, tags: { cs: 'volume' } });
    const r = await c.call('POST', `MultiCluster/VolumeFreeze/~${frozen}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await c.ok<Summary[]>('GET', `MultiCluster/Snapshot/~${frozen}`))[0]!.globalId).toBe(frozen);
  });
});

// Every CLI run is a new Node process (seconds each on a busy machine).
describe("the KVM agent's storpool CLI invocations", { timeout: 240_000 }, () => {
  it('attach here (onRemoteAttached), -j attach, resize by bytes with shrinkOk, detach here, snapshot delete, freeze', async () => {
    const gid = await csCreate({ size: GiB, tags: { cs: 'volume' } });
    let r = await storpool('-M', 'attach', 'volume', `~${gid}`, 'here', 'onRemoteAttached', 'export');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const att = await c.ok<{ volume: string; client: number }[]>('GET', 'AttachmentsList');
    expect(att.find((a) => a.volume === `~${gid}`)).toMatchObject({ client: 1 });
    r = await storpool('-M', '-j', 'attach', 'volume', `~${gid}`, 'here', 'onRemoteAttached', 'detachForce');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveProperty('data');
    r = await storpool('-M', 'volume', `~${gid}`, 'update', 'size', String(3 * GiB), 'shrinkOk');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await c.ok<Summary[]>('GET', `Volume/~${gid}`))[0]!.size).toBe(3 * GiB);
    r = await storpool('-M', 'detach', 'volume', `~${gid}`, 'here');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await c.ok<{ volume: string }[]>('GET', 'AttachmentsList')).find((a) => a.volume === `~${gid}`)).toBeUndefined();
    const snap = await c.ok<{ snapshotGlobalId: string }>('POST', `MultiCluster/VolumeSnapshot/~${gid}`, { name: '', tags: { cs: 'snapshot' } });
    r = await storpool('-M', 'snapshot', `~${snap.snapshotGlobalId}`, 'delete', `~${snap.snapshotGlobalId}`);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    r = await storpool('volume', `~${gid}`, 'freeze');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // The storage-pool wrapper parses error.name out of -j output.
    r = await storpool('-M', '-j', 'attach', 'volume', '~a.b.nosuch', 'here');
    expect(r.code).not.toBe(0);
    expect((JSON.parse(r.stdout + r.stderr.replace(/^[^{]*/, '')) as { error: { name: string } }).error.name).toBe('objectDoesNotExist');
  });
});

describe('storpool_confget', () => {
  it("prints a host's merged configuration, one value, or shell assignments", async () => {
    const conf = `${c.dir}/confget.conf`;
    const { writeFile } = await import('node:fs/promises');
    await writeFile(conf, 'SP_API_HTTP_HOST=10.0.0.10\nSP_AUTH_TOKEN=12345\n[kvm1]\nSP_OURID=31\n[kvm2]\nSP_OURID=32\nSP_API_HTTP_HOST=10.0.0.11\n');
    const bin = fileURLToPath(new URL('../bin/storpool_confget.js', import.meta.url));
    let r = await run(bin, ['-f', conf, '-s', 'kvm1', 'SP_OURID']);
    expect(r.stdout).toBe('31\n');
    r = await run(bin, ['-f', conf, '-s', 'kvm2']);
    expect(r.stdout).toBe('SP_API_HTTP_HOST=10.0.0.11\nSP_AUTH_TOKEN=12345\nSP_OURID=32\n');
    r = await run(bin, ['-f', conf, '-s', 'kvm1', '-S', 'SP_AUTH_TOKEN']);
    expect(r.stdout).toBe("SP_AUTH_TOKEN='12345'\n");
    r = await run(bin, ['-f', conf, '-s', 'kvm9', 'SP_OURID']);
    expect(r.code).toBe(1);
  }, 120_000);
});

describe('storpool-cloudstack: register, list, check', { timeout: 240_000 }, () => {
  const env = (): Record<string, string> => ({ CLOUDSTACK_ENDPOINT: fake.endpoint, CLOUDSTACK_KEY: KEYS.apiKey, CLOUDSTACK_SECRET: KEYS.secretKey });
  const spcs = (...args: string[]): ReturnType<typeof run> => run(SPCS, args, env());

  it('registers storpool as primary storage (provider StorPool, SP_API_HTTP/SP_AUTH_TOKEN/SP_TEMPLATE URL), idempotently; lists; checks', async () => {
    let r = await spcs('check', '--zone', 'zone1');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAIL\s+primary storage: no StorPool primary storage in zone zone1/);
    r = await spcs('register', '--zone', 'zone1', '--name', 'storpool-primary', '--template', 'nosuch');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('storpool has no template nosuch');
    r = await spcs('register', '--zone', 'zone1', '--name', 'storpool-primary', '--template', 'default', '--tags', 'storpool', '--capacity-bytes', String(100 * GiB), '-j');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ created: true, pool: { name: 'storpool-primary', provider: 'StorPool', state: 'Up', path: 'default', scope: 'ZONE', hypervisor: 'KVM', managed: true, tags: 'storpool' } });
    expect(fake.pools).toHaveLength(1);
    r = await spcs('register', '--zone', 'zone1', '--name', 'storpool-primary', '--template', 'default');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('already registered');
    expect(fake.pools).toHaveLength(1);
    r = await spcs('list', '-j');
    expect((JSON.parse(r.stdout) as { name: string }[]).map((p) => p.name)).toEqual(['storpool-primary']);
    r = await spcs('check', '--zone', 'zone1', '-j');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { check: string; ok: boolean }[]).map((x) => `${x.check}:${x.ok}`)).toEqual(['cloudstack api:true', 'storpool api:true', 'zone:true', 'primary storage:true', 'template default:true']);
    r = await spcs('check', '--zone', 'empty-zone');
    expect(r.code).toBe(1);
    expect(fake.refused).toEqual([]);
    expect(fake.accepted).toContain('createStoragePool');
  });

  it('a wrong secret key is refused by CloudStack and reported', async () => {
    const r = await run(SPCS, ['list'], { ...env(), CLOUDSTACK_SECRET: 'wrong' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('unable to verify user credentials and/or request signature');
  });
});
