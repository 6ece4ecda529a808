/**
 * The Proxmox VE plugin: `prove t/` (Test::More, stand-in PVE modules in t/lib) runs every plugin
 * method against a local cluster (3 servers, mgmt) with the block service making real devices
 * (loop over nbdfuse) under a temporary dev root; and the Debian package built with dpkg-deb has
 * the plugin in place. Cleanup (even on failure): cluster and block service stopped, leftovers
 * under the temp dir released, temp dir removed.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILD_DEB, PLUGIN_MODULE, PLUGIN_ROOT } from '../src/index.js';

const MiB = 1024 * 1024;
const PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

interface Result { code: number; stdout: string; stderr: string }

function sh(cmd: string, args: string[], env: Record<string, string> = {}, cwd?: string, timeoutMs = 400_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 * MiB, env: { ...process.env, PATH, ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

let tmp: string;
let cluster: LocalCluster | undefined;
let devRoot: string;
let runtimeDir: string;

/** Releases whatever is left under `tmp`: loop devices, nbdfuse mounts and processes. */
async function sweep(): Promise<void> {
  for (const l of (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => n.startsWith('loop'))) {
    const backing = (await readFile(`/sys/block/${l}/loop/backing_file`, 'utf8').catch(() => '')).trim();
    if (backing.startsWith(`${tmp}/`)) await sh('losetup', ['-d', `/dev/${l}`]);
  }
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${tmp}/`));
  for (const m of mounts.reverse()) await sh('umount', ['-l', m]);
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('nbdfuse\0') && cmdline.includes(`${tmp}/`)) process.kill(Number(pid), 'SIGKILL');
  }
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-pve-'));
  devRoot = join(tmp, 'dev');
  runtimeDir = join(tmp, 'run');
  // On a machine shared by many test runs a storage server can miss the launcher's start
  // deadline; a second attempt (fresh data directory) rides that out.
  for (let attempt = 1; cluster === undefined; attempt++) {
    try {
      cluster = await startLocalCluster({
        dataDir: join(tmp, `data-${attempt}`), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, shardCount: 64, ourId: 1, serverLogLevel: 'warn',
        block: { nbd: `127.0.0.1:${await freePort()}`, devRoot, runtimeDir, attachMethod: 'nbdfuse', logLevel: 'warn' },
      });
    } catch (err) {
      if (attempt >= 2) throw err;
    }
  }
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (tmp !== undefined) {
    await sweep();
    if (process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
  }
}, 120_000);

describe('Proxmox VE plugin', () => {
  it('prove: every plugin method against the cluster', async () => {
    const r = await sh('prove', ['-v', '-I', 't/lib', '-I', 'lib', 't/'], {
      STORPOOL_CONF: cluster!.confPath, STORPOOL_DEV_ROOT: devRoot, STORPOOL_RUNTIME_DIR: runtimeDir,
    }, PLUGIN_ROOT);
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(0);
    expect(out).toMatch(/^Result: PASS$/m);
    // The subtests ran (not skipped): one "ok N - <name>" per subtest at the top level.
    const top = out.split('\n').filter((l) => /^ok \d+ - /.test(l));
    expect(top.length, out).toBe(12);
    const nested = out.split('\n').filter((l) => /^\s+ok \d+/.test(l));
    expect(nested.length, out).toBeGreaterThan(90);
    // It left nothing of its own in the cluster.
    const api = new StorpoolApi({ config: { path: cluster!.confPath } });
    const left = await api.volumesAndSnapshotsList();
    expect([...left.volumes, ...left.snapshots].filter((o) => o.tags?.['virt'] === 'pve' && !o.name.startsWith('*')).map((o) => o.name)).toEqual([]);
    expect(await api.attachmentsList()).toEqual([]);
  }, 600_000);

  it('the plugin fails the tests when the cluster is not there', async () => {
    const conf = join(tmp, 'nowhere.conf');
    await writeFile(conf, `SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=${await freePort()}\nSP_AUTH_TOKEN=1\nSP_OURID=1\n`);
    const r = await sh('prove', ['-I', 't/lib', '-I', 'lib', 't/'], { STORPOOL_CONF: conf, STORPOOL_DEV_ROOT: devRoot, STORPOOL_RUNTIME_DIR: runtimeDir }, PLUGIN_ROOT, 120_000);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/Result: FAIL/);
  }, 180_000);

  it('dpkg-deb builds the package with the plugin in place', async () => {
    const out = join(tmp, 'deb');
    await mkdir(out);
    const r = await sh('sh', [BUILD_DEB, out]);
    expect(r.code, r.stderr).toBe(0);
    const deb = r.stdout.trim();
    expect(deb).toBe(join(out, 'storpool-pve-plugin_0.1.0_all.deb'));
    const fields = await sh('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Architecture', 'Depends']);
    expect(fields.stdout).toBe('Package: storpool-pve-plugin\nVersion: 0.1.0\nArchitecture: all\nDepends: perl, libpve-storage-perl\n');
    const list = await sh('dpkg-deb', ['-c', deb]);
    const files = list.stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/));
    const plugin = files.find((f) => f[5] === './usr/share/perl5/PVE/Storage/Custom/StorPoolPlugin.pm');
    expect(plugin, list.stdout).toBeDefined();
    expect(plugin![0]).toBe('-rw-r--r--');
    expect(plugin![1]).toBe('root/root');
    const x = join(tmp, 'x');
    expect((await sh('dpkg-deb', ['-x', deb, x])).code).toBe(0);
    expect(await readFile(join(x, 'usr/share/perl5/PVE/Storage/Custom/StorPoolPlugin.pm'), 'utf8')).toBe(await readFile(PLUGIN_MODULE, 'utf8'));
    // The installed copy compiles (with the stand-in PVE modules).
    const c = await sh('perl', ['-c', '-I', join(PLUGIN_ROOT, 't/lib'), '-I', join(x, 'usr/share/perl5'), join(x, 'usr/share/perl5/PVE/Storage/Custom/StorPoolPlugin.pm')]);
    expect(c.stderr).toMatch(/syntax OK/);
    const ctrl = await sh('dpkg-deb', ['-I', deb, 'postinst']);
    expect(ctrl.stdout).toMatch(/systemctl try-restart pvedaemon/);
  }, 120_000);
});
