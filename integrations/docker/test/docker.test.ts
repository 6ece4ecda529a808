/**
 * storpool-docker against a real Docker engine (Debian's docker.io dockerd with a private data
 * root, exec root and API socket; vfs storage, no bridge, no iptables) and a real local cluster
 * (3 storage servers, mgmt, the block service making loop devices over nbdfuse). dockerd finds
 * the plugin through a spec file /etc/docker/plugins/storpool.spec (the only fixed path dockerd
 * reads; created here only if absent, removed in teardown) naming our socket in the temp dir.
 * The image is a busybox-static root imported with `docker import`.
 * Teardown (even on failure): containers removed, dockerd and the plugin stopped by PID, mounts
 * under the temp dir unmounted, attachments detached, cluster stopped, loops/nbdfuse released.
 */
import { freePort } from '@storpool/testkit';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const PLUGIN_BIN = fileURLToPath(new URL('../bin/storpool-docker.js', import.meta.url));
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SPEC_DIR = '/etc/docker/plugins';
const SPEC_FILE = join(SPEC_DIR, 'storpool.spec');
const PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;
/** Debian's client matches Debian's daemon (API 1.41); a newer client elsewhere in PATH would too, but this is the pair under test. */
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

interface Result { code: number; stdout: string; stderr: string }

function sh(cmd: string, args: string[], timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, PATH } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

let tmp: string | undefined;
let cluster: LocalCluster | undefined;
let api: StorpoolApi;
let plugin: ChildProcess | undefined;
let pluginExited: Promise<void> = Promise.resolve();
let dockerd: ChildProcess | undefined;
let dockerdExited: Promise<void> = Promise.resolve();
/** Directories dockerd and containerd's shims make whatever their roots are; removed (if empty) when absent before. */
const RUN_DIRS = ['/run/docker/plugins', '/run/docker', '/run/containerd/s', '/run/containerd'];
const runDirsCreated: string[] = [];
let specCreated = false;
let specDirCreated = false;
let pluginSocket: string;
let mountRoot: string;
let dockerHost: string;

const docker = (...args: string[]): Promise<Result> => sh(DOCKER, ['-H', dockerHost, ...args]);
async function dockerOk(...args: string[]): Promise<string> {
  const r = await docker(...args);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** One plugin call straight on the socket, as dockerd makes it. */
function pluginCall(path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const req = request({ socketPath: pluginSocket, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

async function stopChild(child: ChildProcess | undefined, exited: Promise<void>, graceMs: number): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) child.kill('SIGKILL');
  await exited;
}

async function mountsUnder(dir: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${dir}/`));
}

/** Releases whatever is left under `tmp`: mounts, loop devices, nbdfuse processes. */
async function sweep(dir: string): Promise<void> {
  for (const m of (await mountsUnder(dir)).reverse()) {
    if ((await sh('umount', [m])).code !== 0) await sh('umount', ['-l', m]);
  }
  for (const l of (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => n.startsWith('loop'))) {
    const backing = (await readFile(`/sys/block/${l}/loop/backing_file`, 'utf8').catch(() => '')).trim();
    if (backing.startsWith(`${dir}/`)) await sh('losetup', ['-d', `/dev/${l}`]);
  }
  for (const m of (await mountsUnder(dir)).reverse()) await sh('umount', ['-l', m]);
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('nbdfuse\0') && cmdline.includes(`${dir}/`)) process.kill(Number(pid), 'SIGKILL');
  }
}

async function makeImage(dir: string): Promise<void> {
  const root = join(dir, 'image');
  await mkdir(join(root, 'bin'), { recursive: true });
  await mkdir(join(root, 'data'));
  await copyFile('/bin/busybox', join(root, 'bin', 'busybox'));
  for (const c of ['sh', 'cat', 'echo', 'ls', 'sleep', 'df', 'grep']) await symlink('busybox', join(root, 'bin', c));
  const tar = join(dir, 'image.tar');
  const r = await sh('tar', ['-C', root, '-cf', tar, '.']);
  if (r.code !== 0) throw new Error(`tar failed: ${r.stderr}`);
  await dockerOk('import', tar, 'spbox');
}

beforeAll(async () => {
  if (existsSync(SPEC_FILE) || existsSync('/run/docker/plugins/storpool.sock')) {
    throw new Error(`a storpool docker plugin is already installed on this host (${SPEC_FILE} or /run/docker/plugins/storpool.sock): not touching it`);
  }
  tmp = await mkdtemp(join(tmpdir(), 'storpool-docker-'));
  const devRoot = join(tmp, 'dev');
  // On a machine shared by many test runs a storage server can miss the launcher's start
  // deadline; a second attempt (fresh data directory and port) rides that out.
  for (let attempt = 1; cluster === undefined; attempt++) {
    try {
      cluster = await startLocalCluster({
        dataDir: join(tmp, `data-${attempt}`), port: 0, disks: 3, diskSizeBytes: 2 * GiB, ourId: 1, serverLogLevel: 'warn',
        block: { nbd: `127.0.0.1:${await freePort()}`, runtimeDir: join(tmp, 'run'), devRoot, attachMethod: 'nbdfuse' },
      });
    } catch (err) {
      if (attempt >= 2) throw err;
    }
  }
  api = new StorpoolApi({ config: { path: cluster.confPath } });

  pluginSocket = join(tmp, 'plugin', 'storpool.sock');
  mountRoot = join(tmp, 'mnt');
  const pluginLog = createWriteStream(join(tmp, 'plugin.log'));
  plugin = spawn(process.execPath, [PLUGIN_BIN, '--socket', pluginSocket, '--root', mountRoot, '--dev-root', devRoot, '--default-size', '256M', '--log-level', 'debug'], {
    env: { ...process.env, STORPOOL_CONF: cluster.confPath, SP_OURID: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  plugin.stdout!.pipe(pluginLog);
  plugin.stderr!.pipe(pluginLog);
  const p = plugin;
  pluginExited = new Promise((r) => p.once('exit', () => r()));
  await until('the plugin socket', async () => existsSync(pluginSocket));

  if (!existsSync(SPEC_DIR)) {
    await mkdir(SPEC_DIR, { recursive: true });
    specDirCreated = true;
  }
  await writeFile(SPEC_FILE, `unix://${pluginSocket}\n`, { flag: 'wx' });
  specCreated = true;

  const d = join(tmp, 'docker');
  dockerHost = `unix://${join(d, 'docker.sock')}`;
  const dockerLog = createWriteStream(join(tmp, 'dockerd.log'));
  // dockerd 20.10 writes a trust key to /etc/docker/key.json unless told otherwise.
  await mkdir(d);
  await writeFile(join(d, 'daemon.json'), JSON.stringify({ 'deprecated-key-path': join(d, 'key.json') }));
  for (const dir of RUN_DIRS) if (!existsSync(dir)) runDirsCreated.push(dir);
  dockerd = spawn('dockerd', [
    '--config-file', join(d, 'daemon.json'),
    '--data-root', join(d, 'data'), '--exec-root', join(d, 'exec'), '--pidfile', join(d, 'docker.pid'), '-H', dockerHost,
    '--storage-driver', 'vfs', '--bridge=none', '--iptables=false', '--ip6tables=false',
  ], { env: { ...process.env, PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
  dockerd.stdout!.pipe(dockerLog);
  dockerd.stderr!.pipe(dockerLog);
  const dd = dockerd;
  dockerdExited = new Promise((r) => dd.once('exit', () => r()));
  await until('dockerd', async () => (await docker('version')).code === 0, 60_000);
  await makeImage(tmp);
}, 360_000);

afterAll(async () => {
  if (dockerd !== undefined && dockerd.exitCode === null) {
    const ids = (await docker('ps', '-aq')).stdout.split('\n').filter((s) => s !== '');
    if (ids.length > 0) await docker('rm', '-f', ...ids);
  }
  await stopChild(dockerd, dockerdExited, 20_000);
  await stopChild(plugin, pluginExited, 10_000);
  if (specCreated) await rm(SPEC_FILE, { force: true });
  if (specDirCreated) await rmdir(SPEC_DIR).catch(() => undefined);
  for (const dir of runDirsCreated) await rmdir(dir).catch(() => undefined);
  if (tmp !== undefined) {
    for (const m of (await mountsUnder(join(tmp, 'mnt'))).reverse()) await sh('umount', ['-l', m]);
    if (cluster !== undefined) {
      const attached = await api.attachmentsList().catch(() => []);
      for (const a of attached) {
        await api.volumesReassignWait({ reassign: [{ volume: a.volume, detach: 'all', force: true }] }).catch(() => undefined);
      }
    }
  }
  await cluster?.stop();
  if (tmp !== undefined) {
    await sweep(tmp);
    if (process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
  }
}, 120_000);

describe('storpool-docker with a real dockerd', { timeout: 180_000 }, () => {
  it('speaks the plugin protocol: Activate, Capabilities (global), Get of an unknown name is an error', async () => {
    expect(await pluginCall('/Plugin.Activate', {})).toEqual({ status: 200, body: { Implements: ['VolumeDriver'] } });
    expect(await pluginCall('/VolumeDriver.Capabilities', {})).toEqual({ status: 200, body: { Capabilities: { Scope: 'global' } } });
    const get = await pluginCall('/VolumeDriver.Get', { Name: 'nosuchvol' });
    expect(get.status).toBe(500);
    expect(get.body['Err']).toMatch(/nosuchvol/);
    const bad = await pluginCall('/VolumeDriver.Mount', { Name: '../etc', ID: 'x' });
    expect(bad.body['Err']).toMatch(/invalid volume name/);
  });

  it('systemd socket activation: a second plugin process serves the socket it inherits as fd 3', async () => {
    const socket = join(tmp!, 'activated.sock');
    // What systemd does for storpool-docker.socket: bind, listen, exec with LISTEN_FDS/LISTEN_PID.
    const py = [
      'import os, socket, sys',
      's = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(16)',
      // The socket may already be fd 3 (then dup2 is a no-op): clear close-on-exec either way.
      'if s.fileno() != 3: os.dup2(s.fileno(), 3)',
      'os.set_inheritable(3, True)',
      "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())",
      'os.execv(sys.argv[2], sys.argv[2:])',
    ].join('\n');
    const child = spawn('python3', ['-c', py, socket, process.execPath, PLUGIN_BIN, '--socket', join(tmp!, 'not-this.sock'), '--root', join(tmp!, 'mnt2')], {
      env: { ...process.env, STORPOOL_CONF: cluster!.confPath, SP_OURID: '1' }, stdio: 'ignore',
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      const saved = pluginSocket;
      pluginSocket = socket;
      try {
        await until('the activated plugin', async () => (await pluginCall('/Plugin.Activate', {}).catch(() => undefined))?.status === 200);
        expect((await pluginCall('/VolumeDriver.Capabilities', {})).body).toEqual({ Capabilities: { Scope: 'global' } });
      } finally {
        pluginSocket = saved;
      }
      expect(existsSync(join(tmp!, 'not-this.sock'))).toBe(false);
    } finally {
      await stopChild(child, exited, 10_000);
    }
  });

  it('docker volume create -d storpool -o size=1G, ls, inspect', async () => {
    await dockerOk('volume', 'create', '-d', 'storpool', '-o', 'size=1G', 'v1');
    const ls = await dockerOk('volume', 'ls', '--format', '{{.Driver}} {{.Name}}');
    expect(ls.split('\n')).toContain('storpool v1');
    const inspect = JSON.parse(await dockerOk('volume', 'inspect', 'v1')) as { Name: string; Driver: string; Scope: string; Status: Record<string, unknown> }[];
    expect(inspect[0]).toMatchObject({ Name: 'v1', Driver: 'storpool', Scope: 'global' });
    expect(inspect[0]!.Status).toMatchObject({ size: GiB, template: 'default', replication: 3, fs: 'ext4', mountedHere: 0 });
    const v = (await api.volume('v1'))[0]!;
    expect(v.size).toBe(GiB);
    expect(v.tags).toMatchObject({ dockerFs: 'ext4' });
  });

  it('a container writes to the volume, a second one reads it back; the volume is detached in between', async () => {
    await dockerOk('run', '--rm', '--network', 'none', '-v', 'v1:/data', 'spbox', 'sh', '-c', 'echo storpool-was-here > /data/f && grep -q " /data " /proc/mounts');
    // After the container: unmounted here and detached from the client.
    expect(await mountsUnder(mountRoot)).toEqual([]);
    expect((await api.attachmentsList()).filter((a) => a.volume === 'v1')).toEqual([]);
    const out = await dockerOk('run', '--rm', '--network', 'none', '-v', 'v1:/data:ro', 'spbox', 'cat', '/data/f');
    expect(out).toBe('storpool-was-here\n');
  });

  it('rm is refused while a container uses the volume (by docker and by the plugin itself), then works', async () => {
    await dockerOk('run', '-d', '--name', 'holder', '--network', 'none', '-v', 'v1:/data', 'spbox', 'sleep', '3600');
    const mp = join(mountRoot, 'v1');
    await until('the mount', async () => (await mountsUnder(mountRoot)).includes(mp));
    const fstype = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === mp)!.split(' - ')[1]!.split(' ')[0];
    expect(fstype).toBe('ext4');
    expect((await api.attachmentsList()).filter((a) => a.volume === 'v1').map((a) => [a.client, a.rights])).toEqual([[1, 'rw']]);
    const state = JSON.parse(await readFile(join(mountRoot, '.mounts.json'), 'utf8')) as Record<string, string[]>;
    expect(state['v1']).toHaveLength(1);
    // A second container on the same volume: a second mount ID, the same mount; its end leaves
    // the first container's mount in place (reference count per mount ID).
    expect(await dockerOk('run', '--rm', '--network', 'none', '-v', 'v1:/data', 'spbox', 'cat', '/data/f')).toBe('storpool-was-here\n');
    expect(await mountsUnder(mountRoot)).toEqual([mp]);
    expect(JSON.parse(await readFile(join(mountRoot, '.mounts.json'), 'utf8'))['v1']).toEqual(state['v1']);
    expect((await pluginCall('/VolumeDriver.Get', { Name: 'v1' })).body).toMatchObject({ Volume: { Name: 'v1', Mountpoint: mp, Status: { mountedHere: 1 } } });

    const refused = await docker('volume', 'rm', 'v1');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/in use/);
    const direct = await pluginCall('/VolumeDriver.Remove', { Name: 'v1' });
    expect(direct.status).toBe(500);
    expect(direct.body['Err']).toMatch(/volume 'v1' is in use/);
    const path = await pluginCall('/VolumeDriver.Path', { Name: 'v1' });
    expect(path.body).toEqual({ Mountpoint: mp });

    await dockerOk('rm', '-f', 'holder');
    await until('the unmount', async () => !(await mountsUnder(mountRoot)).includes(mp));
    await dockerOk('volume', 'rm', 'v1');
    await expect(api.volume('v1')).rejects.toThrow(/objectDoesNotExist|does not exist/);
    expect((await dockerOk('volume', 'ls', '-q')).split('\n')).not.toContain('v1');
  });

  it('replication= and template= reach the volume', async () => {
    await dockerOk('volume', 'create', '-d', 'storpool', '-o', 'size=64M', '-o', 'replication=2', 'vr');
    await dockerOk('volume', 'create', '-d', 'storpool', '-o', 'size=64M', '-o', 'template=default', 'vt');
    expect((await api.volume('vr'))[0]).toMatchObject({ replication: 2, size: 64 * MiB });
    expect((await api.volume('vt'))[0]).toMatchObject({ replication: 3, templateName: 'default' });
    await dockerOk('volume', 'rm', 'vr', 'vt');
  });

  it('bad options give clear errors and create nothing', async () => {
    const cases: [string[], RegExp][] = [
      [['-o', 'size=lots'], /size=lots: expected a number/],
      [['-o', 'size=1000'], /multiple of 512/],
      [['-o', 'fs=btrfs'], /fs=btrfs: expected one of ext4, xfs/],
      [['-o', 'replication=5'], /replication=5: expected 1, 2 or 3/],
      [['-o', 'colour=blue'], /unknown option 'colour'/],
      [['-o', 'template=nosuchtemplate'], /nosuchtemplate/],
      [['-o', 'snapshot=nosuchsnap'], /nosuchsnap/],
    ];
    for (const [opts, message] of cases) {
      const r = await docker('volume', 'create', '-d', 'storpool', ...opts, 'bad1');
      expect(r.code, opts.join(' ')).not.toBe(0);
      expect(r.stderr, opts.join(' ')).toMatch(message);
    }
    await expect(api.volume('bad1')).rejects.toThrow();
  });

  it('fs=xfs, and snapshot= clones a volume with its data', async () => {
    await dockerOk('volume', 'create', '-d', 'storpool', '-o', 'size=512M', '-o', 'fs=xfs', 'vx');
    await dockerOk('run', '--rm', '--network', 'none', '-v', 'vx:/data', 'spbox', 'sh', '-c', 'echo from-xfs > /data/g');
    await api.volumeSnapshot('vx', { name: 'vx-snap' });
    await dockerOk('volume', 'create', '-d', 'storpool', '-o', 'snapshot=vx-snap', 'vclone');
    const out = await dockerOk('run', '--rm', '--network', 'none', '-v', 'vclone:/data', 'spbox', 'sh', '-c', 'cat /data/g; grep " /data " /proc/mounts');
    expect(out).toMatch(/^from-xfs\n.* \/data xfs /);
    await dockerOk('volume', 'rm', 'vclone');
    await dockerOk('volume', 'rm', 'vx');
    await api.snapshotDelete('vx-snap');
  });
});
