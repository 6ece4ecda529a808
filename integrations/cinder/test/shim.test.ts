/**
 * storpool-cinder-api (the real binary) in front of a local cluster, driven by OpenStack's own
 * clients from Debian with /usr/bin/python3: python-cinderclient (noauth, and through Keystone),
 * the `cinder` and `openstack` CLIs, openstacksdk's block_storage proxy, and tempest.lib's volume
 * and snapshot clients, which check every response against Cinder's JSON schemas. Keystone is a
 * minimal peer (keystone-peer.ts); the shim validates its tokens.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '@storpool/local';
import { startKeystonePeer, type KeystonePeer, type PeerUser } from './keystone-peer.js';

const BIN = fileURLToPath(new URL('../bin/storpool-cinder-api.js', import.meta.url));
const PY = (name: string): string => fileURLToPath(new URL(`./py/${name}`, import.meta.url));
const GiB = 1024 ** 3;

const PROJECT = { name: 'demo', id: '2c9d6d7e-5b3b-4f2a-9a43-1c6b8f0e7a11' };
const USERS: PeerUser[] = [
  { name: 'cinder', password: 'cinder-pw', id: '0b7a9e3c-7f5e-4a57-8f0c-2d7f3f1d9c01', project: { name: 'service', id: 'b0c3f1b6-3c3e-4d6a-8a1f-6a9e8f6c2d02' }, roles: ['admin', 'service'] },
  { name: 'demo', password: 'demo-pw', id: '9f1c2b3d-4e5f-4a6b-8c7d-0e1f2a3b4c05', project: PROJECT, roles: ['member'] },
];

interface Proc { proc: ChildProcess; exited: Promise<void>; out: string[] }

let c: TestCluster;
let keystone: KeystonePeer | undefined;
const procs: Proc[] = [];
let noauthUrl: string;
let noauthUrl2: string;
let ksShimUrl: string;

async function startShim(args: string[]): Promise<string> {
  const proc = spawn(process.execPath, [BIN, ...args, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = { proc, exited: new Promise((r) => proc.once('exit', () => r())), out: [] };
  procs.push(p);
  return new Promise((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      p.out.push(d.toString());
      const m = /listening on (\S+)/.exec(p.out.join(''));
      if (m !== null) resolve(m[1]!);
    });
    proc.stderr!.on('data', (d: Buffer) => p.out.push(d.toString()));
    proc.once('exit', (code) => reject(new Error(`storpool-cinder-api exited (${code}): ${p.out.join('')}`)));
  });
}

/** Debian's python and OpenStack CLIs, with no OS_* variables from the caller's environment. */
function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean: Record<string, string> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: c.dir, LANG: 'C.UTF-8', ...env };
  return new Promise((resolve) => {
    execFile(cmd, args, { env: clean, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function py<T = Record<string, unknown>>(script: string, env: Record<string, string>): Promise<T> {
  const r = await run('/usr/bin/python3', [PY(script)], env);
  if (r.code !== 0) throw new Error(`${script} failed (${r.code}):\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

interface CliResult { argv: string[]; rc: number; stdout: string; stderr: string }

/**
 * Several commands of the `openstack` or `cinder` CLI through the CLI's own entry point in one
 * Python process (a new process per command costs seconds of start-up each on a busy machine).
 */
async function cliBatch(cli: 'openstack' | 'cinder', commands: string[][], env: Record<string, string>): Promise<CliResult[]> {
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile('/usr/bin/python3', [PY('cli_batch.py'), cli], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: c.dir, LANG: 'C.UTF-8', ...env }, timeout: 240_000, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : 1, stdout, stderr });
    });
    child.stdin!.end(JSON.stringify(commands));
  });
  if (r.code !== 0) throw new Error(`cli_batch.py ${cli} failed: ${r.stderr}`);
  const results = JSON.parse(r.stdout.trim().split('\n').pop()!) as CliResult[];
  for (const x of results) expect(x.rc, `${cli} ${x.argv.join(' ')}: ${x.stderr}${x.stdout}`).toBe(0);
  expect(results).toHaveLength(commands.length);
  return results;
}

const ksEnv = (): Record<string, string> => ({ KS_URL: keystone!.url, OS_USER: 'demo', OS_PW: 'demo-pw', OS_PROJECT: 'demo' });

beforeAll(async () => {
  c = await startTestCluster('cinder-shim');
  // The shim's storpool.conf: the cluster's without this host's SP_OURID, and the SP_OURID of
  // connector host "compute1" in its own section.
  const conf = join(c.dir, 'shim-storpool.conf');
  const global = (await readFile(c.local.confPath, 'utf8')).split('\n').filter((l) => !l.startsWith('SP_OURID=')).join('\n');
  await writeFile(conf, `${global}\n[compute1]\nSP_OURID=1\n`);
  const [p1, p2, pk] = [await freePort(), await freePort(), await freePort()];
  // iSCSI: a portal group as an operator sets it up; connector host "iscsi-host" gets iSCSI exports.
  await c.ok('POST', 'iSCSIConfig', { commands: [
    { setBaseName: { name: 'iqn.2020-01.com.example:storpool' } }, { createPortalGroup: { name: 'cinder-pg' } },
    { portalGroupAddNetwork: { portalGroup: 'cinder-pg', net: '127.0.0.0/8' } }, { createPortal: { portalGroup: 'cinder-pg', controller: 1, ip: '127.0.0.1', port: 3260 } },
  ] });
  noauthUrl = await startShim(['--listen', `127.0.0.1:${p1}`, '--storpool-conf', conf, '--iscsi-export-to', 'iscsi-host', '--iscsi-portal-group', 'cinder-pg', '--iscsi-chap']);
  noauthUrl2 = await startShim(['--listen', `127.0.0.1:${await freePort()}`, '--storpool-conf', conf]);
  ksShimUrl = await startShim([
    '--listen', `127.0.0.1:${p2}`, '--storpool-conf', conf, '--auth', 'keystone', '--keystone-url', `http://127.0.0.1:${pk}/v3`,
    '--keystone-user', 'cinder', '--keystone-password', 'cinder-pw', '--keystone-project', 'service',
  ]);
  keystone = await startKeystonePeer(pk, ksShimUrl, USERS);
}, 300_000);

afterAll(async () => {
  for (const p of procs) {
    if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGTERM');
    await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))]);
    p.proc.kill('SIGKILL');
  }
  await keystone?.close();
  await c?.stop();
}, 60_000);

describe('REST surface', () => {
  it('version documents, microversion echo and negotiation limits, Cinder error format', async () => {
    let r = await fetch(`${noauthUrl}/`);
    expect(r.status).toBe(300);
    const root = (await r.json()) as { versions: { id: string; version: string; min_version: string }[] };
    expect(root.versions[0]).toMatchObject({ id: 'v3.0', version: '3.70', min_version: '3.0' });
    r = await fetch(`${noauthUrl}/v3/`);
    expect(r.status).toBe(200);
    r = await fetch(`${noauthUrl}/v3/p1/volumes`, { headers: { 'OpenStack-API-Version': 'volume 3.59' } });
    expect(r.status).toBe(200);
    expect(r.headers.get('openstack-api-version')).toBe('volume 3.59');
    r = await fetch(`${noauthUrl}/v3/p1/volumes`, { headers: { 'OpenStack-API-Version': 'volume 3.99' } });
    expect(r.status).toBe(406);
    // Without the project in the path, the caller's project (noauth: the `user:project` token).
    r = await fetch(`${noauthUrl}/v3/volumes`, { method: 'POST', headers: { 'X-Auth-Token': 'u1:p1' }, body: JSON.stringify({ volume: { size: 1, name: 'no-project-path' } }) });
    expect(r.status).toBe(202);
    const made = ((await r.json()) as { volume: { id: string } }).volume;
    r = await fetch(`${noauthUrl}/v3/p1/volumes/${made.id}`);
    expect(((await r.json()) as { volume: { name: string; 'os-vol-tenant-attr:tenant_id': string } }).volume).toMatchObject({ name: 'no-project-path', 'os-vol-tenant-attr:tenant_id': 'p1' });
    r = await fetch(`${noauthUrl}/v3/p1/volumes/0b7a9e3c-0000-4a57-8f0c-2d7f3f1d9c01`);
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ itemNotFound: { code: 404, message: 'Volume 0b7a9e3c-0000-4a57-8f0c-2d7f3f1d9c01 could not be found.' } });
    r = await fetch(`${noauthUrl}/v3/p1/volumes`, { method: 'POST', body: JSON.stringify({ volume: { size: 'x' } }) });
    expect(r.status).toBe(400);
    expect(Object.keys((await r.json()) as object)).toEqual(['badRequest']);
    r = await fetch(`${noauthUrl}/v3/p1/attachments`);
    expect(r.status).toBe(404); // the attachments API needs 3.27
    r = await fetch(`${noauthUrl}/v3/p1/volumes/%E0%A4%A`);
    expect(r.status).toBe(400);
  });

  it('Keystone: no token or an unknown token is 401 with WWW-Authenticate; a token of another project is refused', async () => {
    let r = await fetch(`${ksShimUrl}/v3/${PROJECT.id}/volumes`);
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toContain(keystone!.url);
    r = await fetch(`${ksShimUrl}/v3/${PROJECT.id}/volumes`, { headers: { 'X-Auth-Token': 'nope' } });
    expect(r.status).toBe(401);
    const login = await fetch(`${keystone!.url}/v3/auth/tokens`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'demo', domain: { name: 'Default' }, password: 'demo-pw' } } }, scope: { project: { name: 'demo', domain: { name: 'Default' } } } } }),
    });
    const token = login.headers.get('x-subject-token')!;
    r = await fetch(`${ksShimUrl}/v3/${PROJECT.id}/volumes`, { headers: { 'X-Auth-Token': token } });
    expect(r.status).toBe(200);
    r = await fetch(`${ksShimUrl}/v3/some-other-project/volumes`, { headers: { 'X-Auth-Token': token } });
    expect(r.status).toBe(400);
    expect(keystone!.seen).toContain('GET /v3/auth/tokens');
  });
});

describe('two shims in front of one cluster', () => {
  it('concurrent changes of one volume through both are all kept (compare-and-swap on the record bucket)', async () => {
    const r = await fetch(`${noauthUrl}/v3/p-two/volumes`, { method: 'POST', body: JSON.stringify({ volume: { size: 1, name: 'shared' } }) });
    const id = ((await r.json()) as { volume: { id: string } }).volume.id;
    const keys = Array.from({ length: 12 }, (_, i) => `k${i}`);
    const answers = await Promise.all(keys.map((k, i) => fetch(`${i % 2 === 0 ? noauthUrl : noauthUrl2}/v3/p-two/volumes/${id}/metadata`, { method: 'POST', body: JSON.stringify({ metadata: { [k]: 'v' } }) })));
    expect(answers.map((a) => a.status)).toEqual(keys.map(() => 200));
    const md = ((await (await fetch(`${noauthUrl2}/v3/p-two/volumes/${id}/metadata`)).json()) as { metadata: Record<string, string> }).metadata;
    expect(Object.keys(md).sort()).toEqual([...keys].sort());
  });
});

describe('connections', () => {
  const post = async (path: string, body: unknown, version = '3.0'): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`${noauthUrl}/v3/p-conn/${path}`, { method: 'POST', headers: { 'OpenStack-API-Version': `volume ${version}` }, body: JSON.stringify(body) });
    return { status: r.status, body: r.status === 204 || r.headers.get('content-length') === '0' ? {} : ((await r.json()) as Record<string, unknown>) };
  };

  it('iSCSI export (iscsi_export_to): initiator with CHAP, target, export, portal/IQN/LUN; terminate removes export and target', async () => {
    const v = (await post('volumes', { volume: { size: 1, name: 'iscsi-vol' } })).body['volume'] as { id: string };
    const connector = { host: 'iscsi-host', initiator: 'iqn.1993-08.org.debian:01:feedbeef', ip: '127.0.0.1' };
    const r = await post(`volumes/${v.id}/action`, { 'os-initialize_connection': { connector } });
    expect(r.status).toBe(200);
    const info = r.body['connection_info'] as { driver_volume_type: string; data: Record<string, unknown> };
    const cfg = (await c.ok<{ iscsi: { targets: Record<string, { name: string; volume: string }>; initiators: Record<string, { name: string; username: string; secret: string; exports: { portalGroup: string; target: string }[] }> } }>('GET', 'iSCSIConfig')).iscsi;
    const target = Object.values(cfg.targets).find((t) => t.volume === `os--volume-${v.id}`)!;
    const ini = Object.values(cfg.initiators).find((i) => i.name === connector.initiator)!;
    expect(target.name.startsWith('iqn.2020-01.com.example:storpool')).toBe(true);
    expect(ini.exports).toEqual([{ portalGroup: 'cinder-pg', target: target.name }]);
    expect(ini.username).not.toBe('');
    expect(info).toEqual({
      driver_volume_type: 'iscsi',
      data: {
        target_discovered: false, target_portal: '127.0.0.1:3260', target_iqn: target.name, target_lun: 0, volume_id: v.id, discard: true, access_mode: 'rw',
        target_portals: ['127.0.0.1:3260'], target_iqns: [target.name], target_luns: [0], auth_method: 'CHAP', auth_username: ini.username, auth_password: ini.secret,
      },
    });
    // A second initialize reuses initiator, target and export.
    expect((await post(`volumes/${v.id}/action`, { 'os-initialize_connection': { connector } })).body['connection_info']).toEqual(info);
    expect((await post(`volumes/${v.id}/action`, { 'os-terminate_connection': { connector } })).status).toBe(202);
    const after = (await c.ok<{ iscsi: { targets: Record<string, { volume: string }>; initiators: Record<string, { name: string; exports: unknown[] }> } }>('GET', 'iSCSIConfig')).iscsi;
    expect(Object.values(after.targets).find((t) => t.volume === `os--volume-${v.id}`)).toBeUndefined();
    expect(Object.values(after.initiators).find((i) => i.name === connector.initiator)!.exports).toEqual([]);
  });

  it('native connection: client id from the [host] section of storpool.conf; a host without SP_OURID is a 400', async () => {
    const v = (await post('volumes', { volume: { size: 1 } })).body['volume'] as { id: string };
    const r = await post(`volumes/${v.id}/action`, { 'os-initialize_connection': { connector: { host: 'compute1' } } });
    const { globalId } = await c.ok<{ globalId: string }>('GET', `VolumeGetInfo/os--volume-${v.id}`);
    expect(r.body['connection_info']).toEqual({ driver_volume_type: 'storpool', data: { client_id: 1, volume: v.id, access_mode: 'rw', global_id: globalId, device_path: `/dev/storpool-byid/${globalId}` } });
    const bad = await post(`volumes/${v.id}/action`, { 'os-initialize_connection': { connector: { host: 'nowhere' } } });
    expect(bad.status).toBe(400);
    expect((bad.body['badRequest'] as { message: string }).message).toContain('SP_OURID');
    // What os-brick's connector does with that info on the compute host: attach by name, wait.
    await c.ok('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: `os--volume-${v.id}`, rw: ['1'] }] });
    await c.ok('POST', 'MultiCluster/VolumesReassignWait', { reassign: [{ volume: `~${globalId}`, detach: ['1'], force: false }] });
  });
});

describe('OpenStack clients', { timeout: 240_000 }, () => {
  it('python-cinderclient, noauth: volumes, actions, legacy attach, attachments API, snapshots, clones', async () => {
    const out = await py('cinderclient_api.py', { ENDPOINT: `${noauthUrl}/v3`, USER_ID: 'u1', PROJECT_ID: 'p-cc', CONNECTOR_HOST: 'compute1' });
    expect(out).toMatchObject({
      max: '3.70', created: { status: 'available', size: 1 }, type: 'default', type_id_ok: true,
      updated: { name: 'cc-vol2', size: 2, description: 'renamed' }, found: true,
      legacy_attached: 'in-use', legacy_detached: 'available',
      attachment: { status: 'attaching', driver: 'storpool', volume: true, client_id: 1 }, attachment_updated: 'attaching',
      in_use: 'in-use', attachment_listed: 1, available: 'available', snapshot: { status: 'available', size: 2 },
      from_snapshot: true, clone: true, not_found: 'NotFound:404',
    });
    expect((out['legacy_connection'] as { driver_volume_type: string; data: { client_id: number; device_path: string } })).toMatchObject({ driver_volume_type: 'storpool', data: { client_id: 1 } });
    expect(out['types']).toContain('default');
  });

  it('python-cinderclient through Keystone', async () => {
    const out = await py('cinderclient_api.py', { ...ksEnv(), CONNECTOR_HOST: 'compute1' });
    expect(out).toMatchObject({ max: '3.70', created: { status: 'available', size: 1 }, in_use: 'in-use', not_found: 'NotFound:404' });
  });

  it('the cinder CLI (noauth): create, list, show, extend, delete; the volume is a storpool volume', async () => {
    const base = ['--os-auth-type', 'noauth', '--os-user-id', 'u1', '--os-project-id', 'p-cli', '--os-endpoint', `${noauthUrl}/v3`];
    const version = await run('/usr/bin/cinder', ['--version']);
    expect(version.stdout + version.stderr).toMatch(/\d+\.\d+/);
    const [created] = await cliBatch('cinder', [[...base, 'create', '--name', 'cli-vol', '1']], {});
    const id = /\|\s+id\s+\|\s+([0-9a-f-]{36})\s+\|/.exec(created!.stdout)![1]!;
    const r = await cliBatch('cinder', [[...base, 'list'], [...base, 'extend', id, '3'], [...base, 'show', 'cli-vol']], {});
    expect(r[0]!.stdout).toContain('cli-vol');
    expect(r[2]!.stdout).toMatch(/\|\s+size\s+\|\s+3\s+\|/);
    const [sp] = await c.ok<{ size: number }[]>('GET', `Volume/os--volume-${id}`);
    expect(sp!.size).toBe(3 * GiB);
    await cliBatch('cinder', [[...base, 'delete', id]], {});
    expect((await c.call('GET', `Volume/os--volume-${id}`)).body.error!.name).toBe('objectDoesNotExist');
  }, 300_000);

  it('openstack volume create/list/show/set --size/delete and volume snapshot create/list/show/delete (Keystone)', async () => {
    const env = { OS_AUTH_URL: `${keystone!.url}/v3`, OS_USERNAME: 'demo', OS_PASSWORD: 'demo-pw', OS_PROJECT_NAME: 'demo', OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default', OS_REGION_NAME: 'RegionOne', OS_IDENTITY_API_VERSION: '3' };
    // /usr/bin/openstack once; the commands through its entry point in one process (cliBatch).
    const version = await run('/usr/bin/openstack', ['--version'], env);
    expect(version.stdout + version.stderr).toMatch(/openstack \d+\./);
    const commands = [
      ['volume', 'create', '--size', '1', '--description', 'from osc', 'osc-vol', '-f', 'json'],
      ['volume', 'list', '-f', 'json'],
      ['volume', 'set', '--size', '2', 'osc-vol'],
      ['volume', 'show', 'osc-vol', '-f', 'json'],
      ['volume', 'snapshot', 'create', '--volume', 'osc-vol', 'osc-snap', '-f', 'json'],
      ['volume', 'snapshot', 'list', '-f', 'json'],
      ['volume', 'snapshot', 'show', 'osc-snap', '-f', 'json'],
      ['volume', 'snapshot', 'delete', 'osc-snap'],
      ['volume', 'delete', 'osc-vol'],
      ['volume', 'list', '-f', 'json'],
    ];
    const results = await cliBatch('openstack', commands, env);
    const json = (i: number): unknown => JSON.parse(results[i]!.stdout);
    const v = json(0) as { id: string; size: number; status: string };
    expect(v).toMatchObject({ size: 1, status: 'available' });
    expect((json(1) as { Name: string }[]).map((x) => x.Name)).toContain('osc-vol');
    expect(json(3)).toMatchObject({ id: v.id, size: 2, description: 'from osc' });
    const s = json(4) as { id: string; status: string; size: number };
    expect(s).toMatchObject({ status: 'available', size: 2 });
    expect((json(5) as { Name: string }[]).map((x) => x.Name)).toContain('osc-snap');
    expect(json(6)).toMatchObject({ id: s.id, size: 2 });
    expect((json(9) as { Name: string }[]).map((x) => x.Name)).not.toContain('osc-vol');
    expect((await c.call('GET', `Volume/os--volume-${v.id}`)).body.error!.name).toBe('objectDoesNotExist');
    expect((await c.call('GET', `Snapshot/os--snap--none--snapshot-${s.id}`)).body.error!.name).toBe('objectDoesNotExist');
  }, 300_000);

  it('openstacksdk block_storage (Keystone)', async () => {
    const out = await py('sdk_block_storage.py', ksEnv());
    expect(out).toMatchObject({ created: { status: 'available', size: 1, name: 'sdk-vol' }, listed: 1, extended: 3, snapshot: { status: 'available', size: 3 }, snapshots: 1, gone: true });
    expect(out['types']).toContain('default');
  });

  it("tempest.lib volume and snapshot clients: every response valid against Cinder's schemas (Keystone)", async () => {
    const out = await py('tempest_clients.py', ksEnv());
    expect(out).toMatchObject({
      created: { status: 'available', size: 1, name: 'tempest-vol' }, shown: { status: 'available', size: 1, metadata: { k1: 'v1' }, tenant: PROJECT.id },
      listed: 1, detailed: 1, metadata: { k1: 'v1', k2: 'v2' }, reserved: 'attaching', attached: { status: 'in-use', attachments: 1, device: '/dev/vdb' },
      after: { status: 'available', size: 2, name: 'tempest-vol2' }, snapshot: { status: 'available', size: 2, volume_id: true, progress: '100%' },
      snapshots_listed: 1, clone: { snapshot_id: true, size: 2 }, delete_with_snapshot: 'BadRequest', not_found: 404,
    });
  });
});
