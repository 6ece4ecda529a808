/**
 * storpool-block end to end, with real processes and real clients: a local cluster (3 storage
 * servers + mgmt), the block service as its own process (`bin/storpool-block.js`), the storpool
 * CLI for attach/detach, nbdinfo/nbdsh for the exports, and a loop device over nbdfuse carrying
 * an ext4 file system. Device links go to a temporary dev root (not /dev), NBD to a free port.
 * Cleanup (even on failure): block service stopped by PID, then anything left under the temp
 * directory — mounts, loop devices, nbdfuse mounts and processes — is released.
 */
import { freePort } from '@storpool/testkit';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BLOCK_BIN = fileURLToPath(new URL('../bin/storpool-block.js', import.meta.url));
const CLI_BIN = fileURLToPath(new URL('../../cli/bin/storpool.js', import.meta.url));
const MiB = 1024 * 1024;

interface Result { code: number; stdout: string; stderr: string }

/** nbdsh runs `python3 -mnbd`: the Debian python that has the nbd module (python3-libnbd) must come first. */
const DEBIAN_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

function sh(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, PATH: DEBIAN_PATH, ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await sh(cmd, args, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

let tmp: string;
let cluster: LocalCluster | undefined;
let block: ChildProcess | undefined;
let blockExited: Promise<void> = Promise.resolve();
let api: StorpoolApi;
let nbdPort: number;
let devRoot: string;
let runtimeDir: string;
const mounted: string[] = [];

const cliEnv = (): Record<string, string> => ({ STORPOOL_CONF: cluster!.confPath });
const storpool = (...words: string[]): Promise<Result> => sh(process.execPath, [CLI_BIN, ...words], cliEnv());
const tcpUri = (name: string): string => `nbd://127.0.0.1:${nbdPort}/${name}`;
const unixUri = (name: string): string => `nbd+unix:///${name}?socket=${join(runtimeDir, 'nbd', `${name}.sock`)}`;

async function clientStatus(): Promise<{ generation: number; open: string[]; errors: Record<string, string> } | undefined> {
  const kv = await cluster!.service.meta.get('mgmt-clients/1');
  return kv === undefined ? undefined : JSON.parse(kv.value.toString('utf8'));
}

async function globalId(name: string): Promise<string> {
  return (await api.request<{ globalId: string }[]>('GET', 'Volume', [name])).data[0]!.globalId;
}

async function createVolume(name: string, size = 128 * MiB): Promise<void> {
  await api.request('POST', 'VolumeCreate', [], { name, size, template: 'default' });
}

/** Releases whatever is left under `tmp`: mounts, loop devices, nbdfuse mounts and processes. */
async function sweep(): Promise<void> {
  for (const m of mounted.splice(0).reverse()) await sh('umount', [m]).then((r) => r.code === 0 ? r : sh('umount', ['-l', m]));
  const loops = (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => n.startsWith('loop'));
  for (const l of loops) {
    const backing = (await readFile(`/sys/block/${l}/loop/backing_file`, 'utf8').catch(() => '')).trim();
    if (backing.startsWith(`${tmp}/`)) await sh('losetup', ['-d', `/dev/${l}`]);
  }
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${tmp}/`));
  for (const m of mounts.reverse()) await sh('umount', ['-l', m]);
  // nbdfuse processes started for this test (their command line names our temp directory).
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('nbdfuse\0') && cmdline.includes(`${tmp}/`)) process.kill(Number(pid), 'SIGKILL');
  }
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-block-'));
  devRoot = join(tmp, 'dev');
  runtimeDir = join(tmp, 'run');
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn' });
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  nbdPort = await freePort();
  const logFile = createWriteStream(join(tmp, 'block.log'));
  block = spawn(process.execPath, [BLOCK_BIN, '--nbd', `127.0.0.1:${nbdPort}`, '--runtime-dir', runtimeDir, '--dev-root', devRoot, '--map-file', cluster.mapFile, '--log-level', 'debug'], {
    env: { ...process.env, STORPOOL_CONF: cluster.confPath, SP_OURID: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  block.stdout!.pipe(logFile);
  block.stderr!.pipe(logFile);
  const child = block;
  blockExited = new Promise((r) => child.once('exit', () => r()));
  await until('the block service to report', async () => (await clientStatus()) !== undefined, 30_000);
});

afterAll(async () => {
  if (block !== undefined && block.exitCode === null && block.signalCode === null) {
    block.kill('SIGTERM');
    const done = await Promise.race([blockExited.then(() => true), sleep(15_000).then(() => false)]);
    if (!done) block.kill('SIGKILL');
    await blockExited;
  }
  if (tmp !== undefined) await sweep();
  await cluster?.stop();
  if (process.env['KEEP_TMP'] === undefined && tmp !== undefined) await rm(tmp, { recursive: true, force: true });
});

describe('storpool-block', () => {
  it('attach here: TCP and unix exports, a loop device over nbdfuse with ext4; detach while mounted is busy', async () => {
    await createVolume('blk1', 128 * MiB);
    const gid = await globalId('blk1');
    let r = await storpool('attach', 'volume', 'blk1', 'here');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // The links exist when VolumesReassignWait returns.
    const byName = join(devRoot, 'storpool', 'blk1');
    const byId = join(devRoot, 'storpool-byid', gid);
    expect((await lstat(byName)).isSymbolicLink()).toBe(true);
    expect((await lstat(byId)).isSymbolicLink()).toBe(true);
    const device = await readlink(byName);
    expect(device).toMatch(/^\/dev\/(loop|nbd)\d+$/);
    expect(await readlink(byId)).toBe(device);
    expect((await stat(byName)).isBlockDevice()).toBe(true);

    for (const uri of [tcpUri('blk1'), unixUri('blk1')]) {
      const info = JSON.parse(await ok('nbdinfo', ['--json', uri])) as { exports: { 'export-size': number; is_read_only: boolean }[] };
      expect(info.exports[0]!['export-size']).toBe(128 * MiB);
      expect(info.exports[0]!.is_read_only).toBe(false);
    }

    await ok('mkfs.ext4', ['-q', '-F', byName]);
    const mnt = join(tmp, 'mnt1');
    await mkdir(mnt);
    await ok('mount', [byName, mnt]);
    mounted.push(mnt);
    const payload = Buffer.alloc(3 * MiB, 'storpool-block ');
    for (let i = 0; i < 5; i++) await writeFile(join(mnt, `file-${i}`), payload);
    await ok('sync', []);

    // The block service reports the device open; detach without force is refused and changes nothing.
    await until('the device to be reported open', async () => (await clientStatus())?.open.includes(gid));
    r = await storpool('-j', 'detach', 'volume', 'blk1', 'here');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain('busy');
    expect(r.stdout + r.stderr).toContain("'blk1' is open at client 1");
    expect((await api.request<{ volume: string; client: number }[]>('GET', 'AttachmentsList')).data.some((a) => a.volume === 'blk1' && a.client === 1)).toBe(true);
    expect(await readlink(byName)).toBe(device);
    expect((await readFile(join(mnt, 'file-4'))).equals(payload)).toBe(true);

    await ok('umount', [mnt]);
    mounted.pop();
    const fsck = await sh('fsck', ['-n', byName]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    await until('the device to be reported closed', async () => !(await clientStatus())!.open.includes(gid));
    r = await storpool('detach', 'volume', 'blk1', 'here');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(existsSync(byName)).toBe(false);
    expect(existsSync(byId)).toBe(false);
    expect((await sh('nbdinfo', [tcpUri('blk1')])).code).not.toBe(0);
    // The unix export closes once the device released it (asynchronously, after the detach is applied).
    await until('the unix socket to go', async () => !existsSync(join(runtimeDir, 'nbd', 'blk1.sock')));

    // Attach again: the file system written through the first device is there.
    r = await storpool('attach', 'volume', 'blk1', 'here');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const again = await sh('fsck', ['-n', byName]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    r = await storpool('detach', 'volume', 'blk1', 'here');
    expect(r.code, r.stderr + r.stdout).toBe(0);
  });

  it('does not export a volume that is not attached here', async () => {
    await createVolume('blk2', 64 * MiB);
    expect((await sh('nbdinfo', [tcpUri('blk2')])).code).not.toBe(0);
    const list = await ok('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${nbdPort}`]);
    expect((JSON.parse(list) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name'])).not.toContain('blk2');
    expect(existsSync(join(devRoot, 'storpool', 'blk2'))).toBe(false);
  });

  it('exports a read-only attachment read-only: writes fail with EPERM', async () => {
    await api.volumesReassignWait({ reassign: [{ volume: 'blk2', ro: [1] }] });
    const info = JSON.parse(await ok('nbdinfo', ['--json', tcpUri('blk2')])) as { exports: { is_read_only: boolean }[] };
    expect(info.exports[0]!.is_read_only).toBe(true);
    // libnbd refuses a write to a read-only export itself; with strict mode off the request goes
    // to the server, which must refuse it too.
    const code = [
      'import errno',
      'for strict in (None, 0):',
      '  if strict is not None: h.set_strict_mode(strict)',
      '  try:',
      '    h.pwrite(b"x" * 4096, 0)',
      '    print("WROTE")',
      '  except nbd.Error as e:',
      '    print(e.errno if isinstance(e.errno, str) else errno.errorcode.get(e.errno))',
    ].join('\n');
    for (const uri of [tcpUri('blk2'), unixUri('blk2')]) {
      expect((await ok('nbdsh', ['-u', uri, '-c', code])).trim().split('\n')).toEqual(['EPERM', 'EPERM']);
    }
    const device = join(devRoot, 'storpool', 'blk2');
    expect((await ok('blockdev', ['--getro', device])).trim()).toBe('1');
    await api.volumesReassignWait({ reassign: [{ volume: 'blk2', detach: [1] }] });
    expect(existsSync(device)).toBe(false);
  });

  it('switches to the new data identity after a snapshot; the snapshot attaches read-only with the old data', async () => {
    await createVolume('blk3', 16 * MiB);
    await api.volumesReassignWait({ reassign: [{ volume: 'blk3', rw: [1] }] });
    const write = (uri: string, ch: string): Promise<string> => ok('nbdsh', ['-u', uri, '-c', `h.pwrite(b"${ch}" * 65536, 0)`]);
    const read = async (uri: string): Promise<string> => (await ok('nbdsh', ['-u', uri, '-c', 'print(h.pread(65536, 0).decode())'])).trim();
    await write(tcpUri('blk3'), 'A');
    await api.request('POST', 'VolumeSnapshot', ['blk3'], { name: 'blk3-snap' });
    await write(tcpUri('blk3'), 'B');
    await api.volumesReassignWait({ reassign: [{ snapshot: 'blk3-snap', ro: [1] }] });
    expect(await read(tcpUri('blk3-snap'))).toBe('A'.repeat(65536));
    expect(await read(tcpUri('blk3'))).toBe('B'.repeat(65536));
    expect(existsSync(join(devRoot, 'storpool', 'blk3-snap'))).toBe(true);
    await api.volumesReassignWait({ reassign: [{ snapshot: 'blk3-snap', detach: 'all' }, { volume: 'blk3', detach: 'all' }] });
    expect(existsSync(join(devRoot, 'storpool', 'blk3'))).toBe(false);
  });
});
