/**
 * End to end: the real `storpool` binary against the real management service (@storpool/mgmt,
 * embedded metadata store in a temp dir). The walk-through is metadata-only (template, volume,
 * snapshot, clone, resize, list, delete), so the disks are registered with placeholder addresses
 * and no storage server runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorpoolApi } from '@storpool/api-client';
import { openMetaStore, type MetaStore } from '@storpool/meta';
import { startManagementService, type ManagementService } from '@storpool/mgmt';
import { TOKEN, lines, storpool, writeConf } from './helpers.js';

const GiB = 2 ** 30;
/** ~25 CLI processes one after another; each pays node + tsx + oclif start-up (1-3 s on a busy 2-core box). */
const WALK_TIMEOUT_MS = 240_000;

describe('storpool CLI against @storpool/mgmt', () => {
  let dir: string;
  let meta: MetaStore;
  let service: ManagementService;
  let conf: string;
  let api: StorpoolApi;
  const raw: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'storpool-cli-e2e-'));
    meta = await openMetaStore({ backend: 'embedded', dir: join(dir, 'meta') });
    service = await startManagementService({ meta, token: TOKEN, mapFile: join(dir, 'shardmap.json'), cluster: { spClusterId: 'cli.a', name: 'clitest' }, shardCount: 64 });
    for (let id = 1; id <= 3; id++) await service.registerDisk({ id, serverId: id, address: { host: '127.0.0.1', port: 1 }, placementGroups: ['default'] });
    await service.registerClient(12);
    conf = await writeConf(service.port, 12);
    api = new StorpoolApi({ host: '127.0.0.1', port: service.port, token: TOKEN, onResponse: (r) => raw.push(r.body) });
  });

  afterAll(async () => {
    await service?.close();
    await meta?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  async function okRun(...args: string[]): Promise<string> {
    const r = await storpool(args, conf);
    expect(r.stderr, `storpool ${args.join(' ')}`).toBe('');
    expect(r.exitCode, `storpool ${args.join(' ')}`).toBe(0);
    return r.stdout;
  }

  async function jsonRun<T>(...args: string[]): Promise<T> {
    return (JSON.parse(await okRun('-j', ...args)) as { data: T }).data;
  }

  it('walks through template, volume, snapshot, clone, resize, list, delete', async () => {
    expect(lines(await okRun('placementGroup', 'list'))).toContainEqual(expect.stringMatching(/^default\s+1,2,3$/));
    expect(await okRun('template', 'hdd', 'replication', '3', 'placeAll', 'default', 'create')).toBe('OK\n');
    expect(lines(await okRun('template', 'list')).some((l) => /^hdd\s/.test(l))).toBe(true);

    expect(await okRun('volume', 'vol1', 'size', '1G', 'template', 'hdd', 'create')).toBe('OK\n');
    const info = await jsonRun<{ name: string; size: number; templateName: string; replication: number }>('volume', 'vol1', 'info');
    expect(info).toMatchObject({ name: 'vol1', size: GiB, templateName: 'hdd', replication: 3 });

    expect(await okRun('volume', 'vol1', 'snapshot', 'snap1')).toBe('OK\n');
    expect(await okRun('volume', 'clone1', 'parent', 'snap1', 'create')).toBe('OK\n');
    expect(await okRun('volume', 'clone1', 'size', '2G', 'update')).toBe('OK\n');
    const [clone] = await jsonRun<{ name: string; size: number; parentName: string }[]>('volume', 'clone1', 'list');
    expect(clone).toMatchObject({ name: 'clone1', size: 2 * GiB, parentName: 'snap1' });

    const shrink = await storpool(['volume', 'clone1', 'size', '1G', 'update'], conf);
    expect(shrink.exitCode).not.toBe(0);
    expect(lines(shrink.stderr)).toHaveLength(1);
    expect(shrink.stderr).toMatch(/^storpool: error: \w+: /);
    expect(await okRun('volume', 'clone1', 'size', '1G', 'shrinkOk', 'update')).toBe('OK\n');

    const volumes = lines(await okRun('volume', 'list'));
    expect(volumes[0]).toMatch(/^volume\s+size/);
    expect(volumes.slice(1).map((l) => l.split(/\s+/)[0]).sort()).toEqual(['clone1', 'vol1']);
    const snapshots = await jsonRun<{ name: string; onVolume: string }[]>('snapshot', 'list');
    expect(snapshots.map((s) => s.name)).toContain('snap1');

    // -j prints exactly what the API answers
    const listed = await okRun('-j', 'volume', 'list');
    await api.volumesList();
    expect(listed).toBe(`${raw.at(-1)}\n`);

    const missing = await storpool(['volume', 'nope', 'info'], conf);
    expect(missing.exitCode).toBe(3);
    expect(lines(missing.stderr)).toEqual([expect.stringMatching(/^storpool: error: objectDoesNotExist: /)]);
    const missingJson = await storpool(['-j', 'volume', 'nope', 'info'], conf);
    expect((JSON.parse(missingJson.stdout) as { error: { name: string } }).error.name).toBe('objectDoesNotExist');

    expect(await okRun('volume', 'clone1', 'delete', 'clone1')).toBe('OK\n');
    expect(await okRun('volume', 'vol1', 'delete', 'vol1')).toBe('OK\n');
    expect(await okRun('snapshot', 'snap1', 'delete', 'snap1')).toBe('OK\n');
    expect(await jsonRun<unknown[]>('volume', 'list')).toEqual([]);
    expect(await okRun('template', 'hdd', 'delete', 'hdd')).toBe('OK\n');
    expect((await jsonRun<{ name: string }[]>('template', 'list')).map((t) => t.name)).not.toContain('hdd');
  }, WALK_TIMEOUT_MS);

  it("picks up the local cluster's storpool.conf from STORPOOL_DATA (what npm start writes)", async () => {
    const dataDir = join(conf, '..');
    const r = await storpool(['-j', 'placementGroup', 'default', 'describe'], '', { STORPOOL_DATA: dataDir });
    expect(r.exitCode).toBe(0);
    expect((JSON.parse(r.stdout) as { data: { disks: number[] } }).data.disks).toEqual([1, 2, 3]);
  });

  it('reads the cluster views: disks, services, tasks, attachments', async () => {
    expect(Object.keys(await jsonRun<Record<string, unknown>>('disk', 'list')).sort()).toEqual(['1', '2', '3']);
    expect(lines(await okRun('service', 'list'))[0]).toMatch(/^cluster (running|waiting|down)$/);
    expect(Array.isArray(await jsonRun<unknown[]>('task', 'list'))).toBe(true);
    expect(await jsonRun<unknown[]>('attach', 'list')).toEqual([]);
  }, WALK_TIMEOUT_MS);
});
