/**
 * The real `storpool` binary against a small fake API that records requests: every verb's exact
 * API call, `-j` printing the API's answer verbatim, human output, exit codes and bad input.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { apiError, ok, startFakeApi, type FakeApi, type FakeHandler } from '@storpool/testkit';
import { TOKEN, lines, storpool, writeConf } from './helpers.js';

interface Expected {
  method: 'GET' | 'POST';
  url: string;
  /** JSON body; undefined = no body at all. */
  body?: unknown;
}

type Case = [args: string[], requests: Expected[], handler?: FakeHandler];

const get = (call: string): Expected => ({ method: 'GET', url: `/ctrl/1.0/${call}` });
const post = (call: string, body?: unknown): Expected => (body === undefined ? { method: 'POST', url: `/ctrl/1.0/${call}` } : { method: 'POST', url: `/ctrl/1.0/${call}`, body });

/** Answers every call with an envelope spelled oddly, to prove `-j` prints it byte for byte. */
const VERBATIM = '{"generation": 9,  "data": {"ok": true, "generation": 9}}';
const verbatim: FakeHandler = () => ({ body: VERBATIM });
const templateMissing: FakeHandler = (r) => (r.method === 'GET' ? apiError('objectDoesNotExist', "template 'new' does not exist") : { body: VERBATIM });

const CASES: Case[] = [
  // volume
  [['volume', 'list'], [get('VolumesList')]],
  [['volume', 'status'], [get('VolumesGetStatus')]],
  [['volume', 'usedSpace'], [get('VolumesSpace')]],
  [['volume', 'vol1', 'list'], [get('Volume/vol1')]],
  [['volume', 'vol1', 'info'], [get('VolumeGetInfo/vol1')]],
  [['volume', 'vol1', 'describe'], [get('VolumeDescribe/vol1')]],
  [['volume', 'vol1', 'listSnapshots'], [get('VolumeListSnapshots/vol1')]],
  [['volume', 'vol1', 'size', '10G', 'template', 'hdd', 'create'], [post('VolumeCreate', { name: 'vol1', size: 10737418240, template: 'hdd' })]],
  [['volume', 'clone1', 'parent', 'snap1', 'tag', 'a=b', 'create'], [post('VolumeCreate', { name: 'clone1', parent: 'snap1', tags: { a: 'b' } })]],
  [['volume', 'copy1', 'baseOn', 'vol1', 'template', 'ssd', 'create'], [post('VolumeCreate', { name: 'copy1', baseOn: 'vol1', template: 'ssd' })]],
  [['volume', 'vol1', 'replication', '2', 'placeAll', 'hdd', 'placeTail', 'ssd', 'iops', '1000', 'bw', '-', 'create', 'size', '1T'],
    [post('VolumeCreate', { name: 'vol1', size: 2 ** 40, replication: 2, placeAll: 'hdd', placeTail: 'ssd', iops: 1000, bw: '-' })]],
  [['volume', 'vol1', 'update', 'size', '512M', 'shrinkOk'], [post('VolumeUpdate/vol1', { size: 536870912, shrinkOk: true })]],
  [['volume', 'vol1', 'sizeAdd', '4096', 'update'], [post('VolumeUpdate/vol1', { sizeAdd: 4096 })]],
  [['volume', 'vol1', 'rename', 'vol2', 'template', 'ssd', 'tag', 'qc=', 'tag', 'x=1', 'update'], [post('VolumeUpdate/vol1', { rename: 'vol2', template: 'ssd', tags: { qc: '', x: '1' } })]],
  [['volume', 'vol1', 'snapshot', 'snap1'], [post('VolumeSnapshot/vol1', { name: 'snap1' })]],
  [['volume', 'vol1', 'snapshot'], [post('VolumeSnapshot/vol1', {})]],
  [['volume', 'vol1', 'snapshot', 'deleteAfter', '2d', 'tag', 'k=v'], [post('VolumeSnapshot/vol1', { deleteAfter: 172800, tags: { k: 'v' } })]],
  [['volume', 'vol1', 'delete', 'vol1'], [post('VolumeDelete/vol1')]],
  [['volume', 'vol1', 'freeze'], [post('VolumeFreeze/vol1')]],
  [['volume', 'vol1', 'revertToSnapshot', 'snap1', 'revertSize'], [post('VolumeRevert/vol1', { toSnapshot: 'snap1', revertSize: true })]],
  [['volume', 'vol1', 'backup', 'remote1'], [post('VolumeBackup', { volume: 'vol1', location: 'remote1' })]],
  [['volume', '~a.b.c', 'info'], [get('VolumeGetInfo/~a.b.c')]],
  [['volume', '#odd', 'info'], [get('VolumeGetInfo/%23odd')]],
  // snapshot
  [['snapshot', 'list'], [get('SnapshotsList')]],
  [['snapshot', 'space'], [get('SnapshotsSpace')]],
  [['snapshot', 'snap1', 'list'], [get('Snapshot/snap1')]],
  [['snapshot', 'snap1', 'info'], [get('SnapshotGetInfo/snap1')]],
  [['snapshot', 'snap1', 'describe'], [get('SnapshotDescribe/snap1')]],
  [['snapshot', 'snap1', 'tag', 'keep=yes'], [post('SnapshotUpdate/snap1', { tags: { keep: 'yes' } })]],
  [['snapshot', 'snap1', 'rename', 'snap2', 'bind', 'update'], [post('SnapshotUpdate/snap1', { rename: 'snap2', bind: true })]],
  [['snapshot', 'vol1@3', 'delete', 'vol1@3'], [post('SnapshotDelete/vol1@3')]],
  // attach / detach
  [['attach', 'list'], [get('AttachmentsList')]],
  [['attach', 'volume', 'vol1', 'here'], [post('VolumesReassignWait', { reassign: [{ volume: 'vol1', rw: [12] }] })]],
  [['attach', 'volume', 'vol1', 'client', '7', 'mode', 'ro', 'timeout', '30'], [post('VolumesReassignWait', { reassign: [{ volume: 'vol1', ro: [7] }], attachTimeout: 30 })]],
  [['attach', 'snapshot', 'snap1', 'here'], [post('VolumesReassignWait', { reassign: [{ snapshot: 'snap1', ro: [12] }] })]],
  [['detach', 'volume', 'vol1', 'here'], [post('VolumesReassignWait', { reassign: [{ volume: 'vol1', detach: [12], force: false }] })]],
  [['detach', 'volume', 'vol1', 'all', 'force', 'yes'], [post('VolumesReassignWait', { reassign: [{ volume: 'vol1', detach: 'all', force: true }] })]],
  [['detach', 'snapshot', 'snap1', 'client', '7'], [post('VolumesReassignWait', { reassign: [{ snapshot: 'snap1', detach: [7], force: false }] })]],
  // template
  [['template', 'list'], [get('VolumeTemplatesList')]],
  [['template', 'status'], [get('VolumeTemplatesStatus')]],
  [['template', 'hdd', 'describe'], [get('VolumeTemplateDescribe/hdd')]],
  [['template', 'hdd', 'replication', '3', 'placeAll', 'hdd', 'size', '100G', 'create'], [post('VolumeTemplateCreate', { name: 'hdd', replication: 3, placeAll: 'hdd', size: 107374182400 })]],
  [['template', 'hdd', 'iops', '1000', 'propagate', 'yes', 'update'], [post('VolumeTemplateUpdate/hdd', { iops: 1000, propagate: true })]],
  [['template', 'new', 'replication', '2', 'placeAll', 'ssd'], [get('VolumeTemplateDescribe/new'), post('VolumeTemplateCreate', { name: 'new', replication: 2, placeAll: 'ssd' })], templateMissing],
  [['template', 'hdd', 'propagate', 'yes'], [get('VolumeTemplateDescribe/hdd'), post('VolumeTemplateUpdate/hdd', { propagate: true })]],
  [['template', 'hdd', 'delete', 'hdd'], [post('VolumeTemplateDelete/hdd')]],
  // placement groups, fault sets, disks
  [['placementGroup', 'list'], [get('PlacementGroupsList')]],
  [['placementGroup', 'hdd', 'describe'], [get('PlacementGroupDescribe/hdd')]],
  [['placementGroup', 'hdd', 'addDisk', '1', 'addDisk', '2,3', 'rmDisk', '4'], [post('PlacementGroupUpdate/hdd', { addDisks: [1, 2, 3], rmDisks: [4] })]],
  [['placementGroup', 'hdd', 'rename', 'slow', 'update'], [post('PlacementGroupUpdate/hdd', { addDisks: [], rmDisks: [], rename: 'slow' })]],
  [['placementGroup', 'hdd', 'delete', 'hdd'], [post('PlacementGroupDelete/hdd')]],
  [['faultSet', 'list'], [get('FaultSetsList')]],
  [['disk', 'list'], [get('DisksList')]],
  [['disk', '3', 'describe'], [get('DiskDescribe/3')]],
  [['disk', '3', 'eject'], [post('DiskEject/3')]],
  [['disk', '3', 'softEject'], [post('DiskSoftEject/3')]],
  [['disk', '3', 'forget', '3'], [post('DiskForget/3')]],
  [['disk', '3', 'scrub'], [post('DiskScrubStart/3')]],
  [['disk', '3', 'scrub', 'start'], [post('DiskScrubStart/3')]],
  [['disk', '3', 'scrub', 'status'], [get('DiskDescribe/3')]],
  // services, clients, tasks, balancer
  [['server', 'list'], [get('ServersList')]],
  [['service', 'list'], [get('ServicesList')]],
  [['client', 'status'], [get('ClientsConfigDump')]],
  [['client', 'list'], [get('ClientsConfigDump')]],
  [['client', '12', 'wait'], [get('ClientConfigWait/12')]],
  [['task', 'list'], [get('TasksList')]],
  [['balancer', 'status'], [get('VolumeBalancerStatus')]],
  [['balancer', 'start'], [post('VolumeBalancerStatus', { cmd: 'start' })]],
  [['balancer', 'stop'], [post('VolumeBalancerStatus', { cmd: 'stop' })]],
  [['balancer', 'commit'], [post('VolumeBalancerStatus', { cmd: 'commit' })]],
  // global flags
  [['-M', 'volume', 'list'], [get('MultiCluster/VolumesList')]],
  [['-M', 'template', 'list'], [get('VolumeTemplatesList')]],
  [['-Bj', 'volume', 'vol1', 'size', '1G', 'create', '-M'], [post('MultiCluster/VolumeCreate', { name: 'vol1', size: 1073741824 })]],
];

const servers: FakeApi[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function fakeWithConf(handler: FakeHandler): Promise<{ fake: FakeApi; conf: string }> {
  const fake = await startFakeApi(handler);
  servers.push(fake);
  return { fake, conf: await writeConf(fake.port) };
}

describe.concurrent('storpool <verb> sends the exact API call; -j prints the answer verbatim', () => {
  it.each(CASES)('storpool -j %j', async (args, expected, handler = verbatim) => {
    const { fake, conf } = await fakeWithConf(handler);
    const r = await storpool(args.includes('-Bj') ? args : ['-j', ...args], conf);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${VERBATIM}\n`);
    expect(fake.requests.map((q) => ({ method: q.method, url: q.url, ...(q.body === '' ? {} : { body: JSON.parse(q.body) as unknown }) }))).toEqual(expected);
    for (const q of fake.requests) expect(q.headers.authorization).toBe(`Storpool v1:${TOKEN}`);
  });
});

// ---- failures -----------------------------------------------------------------------------------

describe.concurrent('failures: exit status and one line on stderr', () => {
  it('an API error: its name and descr, exit 3 for objectDoesNotExist; -j prints the error envelope', async () => {
    const { conf } = await fakeWithConf(() => apiError('objectDoesNotExist', "volume 'nope' does not exist"));
    const r = await storpool(['volume', 'nope', 'info'], conf);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toEqual(["storpool: error: objectDoesNotExist: volume 'nope' does not exist"]);
    const j = await storpool(['-j', 'volume', 'nope', 'info'], conf);
    expect(j.exitCode).toBe(3);
    expect(JSON.parse(j.stdout)).toEqual({ error: { name: 'objectDoesNotExist', descr: "volume 'nope' does not exist", transient: false } });
    expect(j.stderr).toBe('');
  });

  it('other API errors exit 1; transient ones 5', async () => {
    const { conf } = await fakeWithConf((req) => (req.method === 'POST' ? apiError('busy', "'vol1' is open at client 12") : apiError('clusterNotReady', 'not yet', true, 503)));
    const busy = await storpool(['volume', 'vol1', 'delete', 'vol1'], conf);
    expect([busy.exitCode, lines(busy.stderr)]).toEqual([1, ["storpool: error: busy: 'vol1' is open at client 12"]]);
    const transient = await storpool(['task', 'list'], conf, {});
    expect(transient.exitCode).toBe(5);
    expect(lines(transient.stderr)).toHaveLength(1);
  });

  it('an unreachable API: exit 5, naming the address', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const conf = await writeConf(port);
    const r = await storpool(['-B', 'volume', 'list'], conf);
    expect(r.exitCode).toBe(5);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(`cannot reach the StorPool API at http://127.0.0.1:${port}`);
  });

  const BAD: [string[], RegExp][] = [
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['volume', 'vol1', 'frob'], /unknown word 'frob'/],
    [['volume', 'vol1', 'size'], /'size' needs a value \(SIZE\)/],
    [['volume', 'vol1', 'size', '10X', 'create'], /bad size '10X'/],
    [['volume', 'vol1', 'delete', 'vol2'], /confirm by repeating the name: storpool volume vol1 delete vol1/],
  ];

  it.each(BAD)('usage error for %j: exit 2, one line, no request', async (args, message) => {
    const { fake, conf } = await fakeWithConf(() => ok({ ok: true, generation: 1 }));
    const r = await storpool(args, conf);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^storpool: usage: /);
    expect(r.stderr).toMatch(message);
    expect(fake.requests).toHaveLength(0);
  });

  it("'here' without SP_OURID is a configuration error (exit 2)", async () => {
    const { fake } = await fakeWithConf(() => ok({ ok: true, generation: 1 }));
    const r = await storpool(['attach', 'volume', 'vol1', 'here'], '', { SP_API_HTTP_HOST: '127.0.0.1', SP_API_HTTP_PORT: String(fake.port), SP_AUTH_TOKEN: TOKEN, STORPOOL_DATA: '/nonexistent' });
    expect(r.exitCode).toBe(2);
    expect(lines(r.stderr)).toEqual(["storpool: error: 'here' needs this host's SP_OURID (in /etc/storpool.conf, its [hostname] section or the environment)"]);
  });

  it('no token anywhere is a configuration error (exit 2)', async () => {
    const r = await storpool(['volume', 'list'], '', { STORPOOL_DATA: '/nonexistent' });
    expect(r.exitCode).toBe(2);
    expect(lines(r.stderr)).toEqual(['storpool: error: no API token: set SP_AUTH_TOKEN in /etc/storpool.conf (or STORPOOL_CONF) or the environment']);
  });
});

describe.concurrent('--help', () => {
  const conf = '/nonexistent/storpool.conf';
  it('lists the nouns', async () => {
    const r = await storpool(['--help'], conf);
    expect(r.exitCode).toBe(0);
    for (const noun of ['volume', 'snapshot', 'attach', 'detach', 'template', 'placementGroup', 'disk', 'task']) expect(r.stdout).toContain(noun);
  });

  it.each([['volume', '--help'], ['-j', 'volume', '--help'], ['volume', 'vol1', 'size', '10G', 'create', '--help'], ['help', 'template'], ['attach', '-h']])('%j shows the noun help', async (...args) => {
    const r = await storpool(args, conf);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/USAGE\n {2}\$ storpool (volume|template|attach)/);
    expect(r.stdout).toContain('GRAMMAR');
  });
});

