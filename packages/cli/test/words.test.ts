/**
 * The grammar, value parsing and human output, in-process (runWords) against the fake API: fast
 * coverage of the many bad-input cases; cli.test.ts covers the real binary.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { StorpoolApiError, StorpoolConfigError, StorpoolConnectionError } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import { exitCodeFor, formatSize, orderForOclif, parseDuration, parseSize, parseTags, runWords, splitGlobalFlags, UsageError, type CliIo } from '../src/index.js';
import { apiError, ok, startFakeApi, type FakeApi } from '@storpool/testkit';

let fake: FakeApi;
beforeAll(async () => {
  fake = await startFakeApi();
});
afterAll(async () => fake.close());
beforeEach(() => {
  fake.requests.length = 0;
  fake.setHandler(() => ok({ ok: true, generation: 1 }));
});

async function cli(args: string[], options: { tty?: boolean; ourId?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), isTty: options.tty ?? false, env: {} };
  const apiOptions = { host: '127.0.0.1', port: fake.port, token: 't', retryDelayMs: 1, ...(options.ourId === undefined ? {} : { ourId: options.ourId }) };
  const code = await runWords(args, io, { apiOptions });
  return { code, stdout, stderr };
}

const lines = (t: string): string[] => t.split('\n').filter((l) => l !== '');

describe('values', () => {
  it('parses sizes with units (powers of 1024) and plain bytes', () => {
    expect(parseSize('10G')).toBe(10 * 2 ** 30);
    expect(parseSize('512M')).toBe(512 * 2 ** 20);
    expect(parseSize('1T')).toBe(2 ** 40);
    expect(parseSize('1.5g')).toBe(1.5 * 2 ** 30);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('2GiB')).toBe(2 ** 31);
    expect(parseSize('4096')).toBe(4096);
  });

  it.each(['', 'G', '10X', '-1G', '0', '100', '1.1K', '10 G G', '1e9', '99999999999P'])('rejects size %j naming it', (text) => {
    expect(() => parseSize(text)).toThrow(UsageError);
    expect(() => parseSize(text)).toThrow(`bad size '${text}'`);
  });

  it('parses durations and tags', () => {
    expect([parseDuration('30', 'd'), parseDuration('30s', 'd'), parseDuration('5m', 'd'), parseDuration('2h', 'd'), parseDuration('1d', 'd')]).toEqual([30, 30, 300, 7200, 86400]);
    expect(() => parseDuration('1w', 'deleteAfter')).toThrow("bad deleteAfter '1w'");
    expect(parseTags(['a=b', 'c=', 'x.y:z=1-2_3'])).toEqual({ a: 'b', c: '', 'x.y:z': '1-2_3' });
    expect(() => parseTags(['a b=c'])).toThrow(/bad tag/);
    expect(() => parseTags(['a=b/c'])).toThrow(/bad tag/);
  });

  it('formats sizes', () => {
    expect([formatSize(0), formatSize(512), formatSize(10 * 2 ** 30), formatSize(1.5 * 2 ** 40), formatSize('-')]).toEqual(['0 B', '512 B', '10 GiB', '1.5 TiB', '-']);
  });
});

describe('global flags', () => {
  it('are taken from anywhere, combined or long, but not after --', () => {
    expect(splitGlobalFlags(['-Bj', 'volume', 'list', '-M'])).toEqual({ flags: { json: true, batch: true, multiCluster: true }, words: ['volume', 'list'] });
    expect(splitGlobalFlags(['--json', 'volume', '--', '-j', 'info'])).toEqual({ flags: { json: true, batch: false, multiCluster: false }, words: ['volume', '-j', 'info'] });
  });

  it('leading ones move behind the noun for oclif', () => {
    expect(orderForOclif(['-B', '-j', 'volume', 'list'])).toEqual(['volume', '-B', '-j', 'list']);
    expect(orderForOclif(['volume', 'list'])).toEqual(['volume', 'list']);
    expect(orderForOclif(['-j', '--help'])).toEqual(['--help', '-j']);
  });
});

describe('bad input: exit 2, one line, nothing sent', () => {
  const BAD: [string[], RegExp][] = [
    [[], /missing command/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['volume'], /storpool volume: missing arguments/],
    [['volume', 'vol1', 'frob'], /unknown word 'frob'/],
    [['volume', 'vol1', 'size'], /'size' needs a value \(SIZE\)/],
    [['volume', 'vol1', 'size', '10X', 'create'], /bad size '10X'/],
    [['volume', 'vol1', 'size', '1000', 'create'], /bad size '1000': must be a multiple of 512/],
    [['volume', 'vol1', 'size', '1G'], /missing verb/],
    [['volume', 'vol1', 'create', 'update'], /more than one verb/],
    [['volume', 'vol1', 'size', '1G', 'size', '2G', 'create'], /'size' given more than once/],
    [['volume', 'vol1', 'shrinkOk', 'create'], /'shrinkOk' does not apply here/],
    [['volume', 'vol1', 'parent', 's', 'baseOn', 'v', 'create'], /parent or baseOn, not both/],
    [['volume', 'vol1', 'update'], /nothing to do/],
    [['volume', 'vol1', 'delete', 'vol2'], /confirm by repeating the name: storpool volume vol1 delete vol1/],
    [['volume', 'vol1', 'delete'], /missing VOLUME/],
    [['volume', 'list', 'extra'], /unexpected 'extra'/],
    [['volume', 'vol1', 'replication', '4', 'create'], /bad replication '4': expected an integer 1\.\.3/],
    [['volume', 'vol1', 'iops', 'lots', 'create'], /bad iops 'lots'/],
    [['volume', 'vol1', 'tag', 'no-equals', 'update'], /bad tag 'no-equals'/],
    [['volume', 'vol1', 'snapshot', 'deleteAfter', '2w'], /bad deleteAfter '2w'/],
    [['snapshot', 'snap1'], /nothing to do/],
    [['snapshot', 'snap1', 'bind', 'unbind'], /bind or unbind, not both/],
    [['attach', 'frob'], /unknown word 'frob'/],
    [['attach', 'volume', 'vol1'], /exactly one of client ID, here/],
    [['attach', 'volume', 'v', 'snapshot', 's', 'here'], /exactly one of 'volume NAME' or 'snapshot NAME'/],
    [['attach', 'snapshot', 's', 'here', 'mode', 'rw'], /snapshots attach read-only/],
    [['attach', 'volume', 'v', 'client', '0'], /bad client '0': expected an integer 1\.\.4095/],
    [['attach', 'volume', 'v', 'here', 'mode', 'rx'], /bad mode 'rx': expected one of rw, ro/],
    [['detach', 'volume', 'vol1', 'here', 'all'], /exactly one of client ID, here, all/],
    [['detach', 'volume', 'vol1', 'all', 'force', 'maybe'], /bad force 'maybe': expected yes or no/],
    [['template', 'hdd'], /nothing to do/],
    [['template', 'hdd', 'propagate', 'yes', 'create'], /'propagate' does not apply here/],
    [['placementGroup', 'hdd', 'addDisk', 'x'], /bad addDisk 'x'/],
    [['disk', 'abc', 'eject'], /bad disk 'abc'/],
    [['disk', '3', 'forget'], /missing DISK/],
    [['disk', '3', 'forget', '4'], /confirm by repeating the name/],
    [['faultSet', 'x'], /unknown word 'x'/],
    [['client', 'x', 'wait'], /bad client 'x'/],
  ];

  it.each(BAD)('%j', async (args, message) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^storpool: usage: /);
    expect(r.stderr).toMatch(message);
    expect(fake.requests).toHaveLength(0);
  });

  it('a usage error with -j still goes to stderr (no API envelope exists)', async () => {
    const r = await cli(['-j', 'volume', 'vol1', 'size', 'big', 'create']);
    expect([r.code, r.stdout, lines(r.stderr)]).toEqual([2, '', ["storpool: usage: bad size 'big': expected a number with an optional unit K, M, G, T or P (e.g. 10G, 512M, 1T)"]]);
  });
});

describe('exit codes', () => {
  const apiErr = (name: string, transient = false): StorpoolApiError => new StorpoolApiError({ name, descr: 'd', transient, status: 500, method: 'GET', path: '/', body: '{}' });
  it('maps errors once', () => {
    expect(exitCodeFor(apiErr('objectDoesNotExist'))).toBe(3);
    expect(exitCodeFor(apiErr('busy'))).toBe(1);
    expect(exitCodeFor(apiErr('anything', true))).toBe(5);
    expect(exitCodeFor(apiErr('STORE_ERR_NO_SPACE'))).toBe(6);
    expect(exitCodeFor(new UsageError('x'))).toBe(2);
    expect(exitCodeFor(new StorpoolConfigError('x'))).toBe(2);
    expect(exitCodeFor(new StorpoolConnectionError('CLIENT_ERR_TIMEOUT', 'h:1', 'x'))).toBe(5);
    expect(exitCodeFor(new StorpoolError('INTERNAL_ERR'))).toBe(70);
    expect(exitCodeFor(new Error('bug'))).toBe(70);
  });
});

// ---- human output -------------------------------------------------------------------------------

const VOLUME = {
  name: 'vol1', globalId: 'a.b.c', size: 10737418240, replication: 3, placeAll: 'hdd', placeTail: 'ssd', placeHead: 'hdd',
  parentName: '', templateName: 'hdd', bw: '-', iops: '-', visibleVolumeId: 1, objectsCount: 320, creationTimestamp: 1716200000, tags: { virt: 'pve' },
};
const SNAPSHOT = { ...VOLUME, name: 'vol1@1', onVolume: 'vol1', autoName: true, bound: false, deleted: false, transient: false, recoveringFromRemote: false };
const DISK = { id: 2, serverId: 1, ssd: false, generationLeft: -1, model: 'file', serial: 's2', description: '', softEject: 'off', sectorsCount: 2097152, objectsOnDiskSize: 1048576, objectsCount: 100, objectsAllocated: 4, device: '/tmp/d2' };

describe('human output', () => {
  it('prints an aligned table, sizes with units', async () => {
    fake.setHandler(() => ok([VOLUME, { ...VOLUME, name: 'second-volume', size: 536870912, tags: {} }]));
    const r = await cli(['volume', 'list']);
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toMatch(/^volume\s+size\s+rdnd\.\s+placeHead\s+placeAll\s+placeTail/);
    expect(out[1]).toMatch(/^vol1\s+10 GiB\s+3\s+hdd\s+hdd\s+ssd\s+-\s+-\s+hdd\s+a\.b\.c\s+virt=pve$/);
    expect(out[2]).toMatch(/^second-volume\s+512 MiB/);
    expect(out[1]?.indexOf('10 GiB')).toBe((out[0]?.indexOf('size') ?? 0) + 'size'.length - '10 GiB'.length);
  });

  it('-B prints tab-separated rows with sizes in bytes; a terminal gets a bold header', async () => {
    fake.setHandler(() => ok([VOLUME]));
    const r = await cli(['-B', 'volume', 'list']);
    expect(lines(r.stdout)[1]?.split('\t').slice(0, 3)).toEqual(['vol1', '10737418240', '3']);
    const tty = await cli(['volume', 'list'], { tty: true });
    expect(tty.stdout.startsWith('\x1b[1mvolume')).toBe(true);
    const batchTty = await cli(['-B', 'volume', 'list'], { tty: true });
    expect(batchTty.stdout).not.toContain('\x1b[');
  });

  it('prints OK after a change', async () => {
    const r = await cli(['volume', 'vol1', 'size', '10G', 'create']);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, 'OK\n', '']);
  });

  it('prints snapshots with their flags and creation time', async () => {
    fake.setHandler(() => ok([SNAPSHOT]));
    const out = lines((await cli(['snapshot', 'list'])).stdout);
    expect(out[1]).toMatch(/^vol1@1\s+10 GiB\s+3\s+hdd\s+hdd\s+ssd\s+vol1\s+hdd\s+2024-05-20T10:13:20Z\s+auto\s+a\.b\.c\s+virt=pve$/);
  });

  it('prints map answers (disks, placement groups) as rows in id order', async () => {
    fake.setHandler((req) => (req.url.endsWith('DisksList') ? ok({ '10': { ...DISK, id: 10, generationLeft: 5 }, '2': DISK }) : ok({ ssd: { name: 'ssd', disks: [1, 2] }, hdd: { name: 'hdd', disks: [3] } })));
    const disks = lines((await cli(['disk', 'list'])).stdout);
    expect(disks[1]).toMatch(/^\s*2\s+1\s+no\s+up\s+1 GiB\s+1 MiB\s+4\/100\s+off\s+\/tmp\/d2/);
    expect(disks[2]).toMatch(/^\s*10\s+1\s+no\s+down/);
    expect(lines((await cli(['placementGroup', 'list'])).stdout)).toEqual(['placementGroup  disks', 'hdd             3', 'ssd             1,2']);
  });

  it('prints one object as key/value lines, and services per kind', async () => {
    fake.setHandler((req) =>
      req.url.endsWith('VolumeBalancerStatus')
        ? ok({ status: 'nothing to do', auto: false })
        : ok({ clusterStatus: 'running', mgmt: { '1': { id: 1, status: 'running', active: true, version: '0.1.0', startTime: null } }, servers: { '1': { id: 1, status: 'running', version: '0.1.0', startTime: null, missingDisks: [], pendingDisks: [] } }, clients: {}, bridges: {}, iscsiTargets: {} }),
    );
    expect(lines((await cli(['balancer', 'status'])).stdout)).toEqual(['status  nothing to do', 'auto    no']);
    const services = lines((await cli(['service', 'list'])).stdout);
    expect(services[0]).toBe('cluster running');
    expect(services[2]).toMatch(/^mgmt\s+1\s+running\s+yes\s+0\.1\.0/);
    expect(services[3]).toMatch(/^server\s+1\s+running/);
  });

  it("'here' uses SP_OURID", async () => {
    const r = await cli(['attach', 'volume', 'v', 'here', 'timeout', '0'], { ourId: 33 });
    expect(r.code).toBe(0);
    expect(JSON.parse(fake.requests[0]?.body ?? '')).toEqual({ reassign: [{ volume: 'v', rw: [33] }], attachTimeout: 0 });
  });

  it('template without a verb: a failing describe other than objectDoesNotExist is reported, nothing created', async () => {
    fake.setHandler(() => apiError('busy', 'metadata store busy'));
    const r = await cli(['template', 'x', 'replication', '2']);
    expect([r.code, lines(r.stderr)]).toEqual([1, ['storpool: error: busy: metadata store busy']]);
    expect(fake.requests.map((q) => q.method)).toEqual(['GET']);
  });
});
