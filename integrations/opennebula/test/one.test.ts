/**
 * The OpenNebula drivers end to end: every DS, TM and VMM action run through its shell entry
 * point in remotes/ (as oned runs it: document base64 on stdin, arguments as OpenNebula passes
 * them) against a local cluster (3 servers, mgmt) with the block service making real devices
 * (loop over nbdfuse) under a temporary dev root. A second "host" node2 (client 2) is reached
 * through a stand-in for ssh that runs the script in a private mount namespace where the system
 * datastore directory is node2's own, so links made "on node2" are not visible here.
 * Cleanup (even on failure): cluster and block service stopped, leftovers under the temp dir released.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'storpool-one.js');
const MiB = 1024 * 1024;
const PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

interface Result { code: number; stdout: string; stderr: string }

function sh(cmd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}, timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, PATH, ...opts.env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.on('error', () => {}); // actions that take no document exit without reading it
    child.stdin?.end(opts.input ?? '');
  });
}

let tmp: string;
let cluster: LocalCluster | undefined;
let api: StorpoolApi;
let devRoot: string;
let sysDs: string; // system datastore 0 as seen on this host (localhost)
let node2Ds: string; // ... and on node2
let driverEnv: Record<string, string>;

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** Runs remotes/<kind>/storpool/<action> like oned does. */
function action(kind: 'datastore' | 'tm' | 'vmm', name: string, args: string[], input = ''): Promise<Result> {
  return sh(join(ROOT, 'remotes', kind, 'storpool', name), args, { input, env: driverEnv });
}

async function ok(kind: 'datastore' | 'tm' | 'vmm', name: string, args: string[], input = ''): Promise<string> {
  const r = await action(kind, name, args, input);
  if (r.code !== 0) throw new Error(`${kind}/${name} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const DATASTORE_100 = `<DATASTORE><ID>100</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>storpool-images</NAME>
<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>1</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>
<DS_MAD><![CDATA[storpool]]></DS_MAD><TM_MAD><![CDATA[storpool]]></TM_MAD><BASE_PATH><![CDATA[/var/lib/one//datastores/100]]></BASE_PATH><TYPE>0</TYPE><DISK_TYPE>0</DISK_TYPE><STATE>0</STATE>
<CLUSTERS><ID>0</ID></CLUSTERS><TOTAL_MB>0</TOTAL_MB><FREE_MB>0</FREE_MB><USED_MB>0</USED_MB><IMAGES></IMAGES>
<TEMPLATE><ALLOW_ORPHANS><![CDATA[yes]]></ALLOW_ORPHANS><CLONE_TARGET><![CDATA[SELF]]></CLONE_TARGET><DISK_TYPE><![CDATA[BLOCK]]></DISK_TYPE><DS_MAD><![CDATA[storpool]]></DS_MAD><LN_TARGET><![CDATA[NONE]]></LN_TARGET><SP_PLACEALL><![CDATA[default]]></SP_PLACEALL><SP_REPLICATION><![CDATA[3]]></SP_REPLICATION><TM_MAD><![CDATA[storpool]]></TM_MAD><TYPE><![CDATA[IMAGE_DS]]></TYPE></TEMPLATE></DATASTORE>`;

const DATASTORE_0 = `<DATASTORE><ID>0</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>system</NAME><DS_MAD><![CDATA[-]]></DS_MAD><TM_MAD><![CDATA[storpool]]></TM_MAD><BASE_PATH><![CDATA[/var/lib/one//datastores/0]]></BASE_PATH><TYPE>1</TYPE><DISK_TYPE>0</DISK_TYPE><STATE>0</STATE>
<TEMPLATE><SHARED><![CDATA[YES]]></SHARED><SP_PLACEALL><![CDATA[default]]></SP_PLACEALL><SP_REPLICATION><![CDATA[3]]></SP_REPLICATION><SP_PLACETAIL><![CDATA[default]]></SP_PLACETAIL><TM_MAD><![CDATA[storpool]]></TM_MAD><TYPE><![CDATA[SYSTEM_DS]]></TYPE></TEMPLATE></DATASTORE>`;

function image(f: { id: number; path?: string; source?: string; size?: number; fs?: string; cloningId?: number; targetSnapshot?: number; name?: string }): string {
  return `<IMAGE><ID>${f.id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>${f.name ?? `image-${f.id}`}</NAME>
<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>
<TYPE>${f.fs !== undefined ? 2 : 0}</TYPE><DISK_TYPE>0</DISK_TYPE><PERSISTENT>0</PERSISTENT><REGTIME>1764090000</REGTIME>
<SOURCE><![CDATA[${f.source ?? ''}]]></SOURCE><PATH><![CDATA[${f.path ?? ''}]]></PATH><FORMAT><![CDATA[raw]]></FORMAT><FS><![CDATA[${f.fs ?? ''}]]></FS>
<SIZE>${f.size ?? 0}</SIZE><STATE>4</STATE><PREV_STATE>0</PREV_STATE><RUNNING_VMS>0</RUNNING_VMS><CLONING_OPS>0</CLONING_OPS><CLONING_ID>${f.cloningId ?? -1}</CLONING_ID>
<TARGET_SNAPSHOT>${f.targetSnapshot ?? -1}</TARGET_SNAPSHOT><DATASTORE_ID>100</DATASTORE_ID><DATASTORE>storpool-images</DATASTORE><VMS></VMS><CLONES></CLONES><APP_CLONES></APP_CLONES>
<TEMPLATE><DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX></TEMPLATE><SNAPSHOTS><ALLOW_ORPHANS><![CDATA[YES]]></ALLOW_ORPHANS><CURRENT_BASE><![CDATA[-1]]></CURRENT_BASE><NEXT_SNAPSHOT><![CDATA[0]]></NEXT_SNAPSHOT></SNAPSHOTS></IMAGE>`;
}

const dsData = (img: string, ds = DATASTORE_100): string => b64(`<DS_DRIVER_ACTION_DATA>${img}${ds}<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS></DS_DRIVER_ACTION_DATA>`);

const VM_42_XML = (): string => `<VM><ID>42</ID><UID>0</UID><GID>0</GID><NAME>vm-42</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE>
<TEMPLATE><DISK><ALLOW_ORPHANS><![CDATA[yes]]></ALLOW_ORPHANS><CLONE><![CDATA[YES]]></CLONE><DATASTORE><![CDATA[storpool-images]]></DATASTORE><DATASTORE_ID><![CDATA[100]]></DATASTORE_ID><DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX><DISK_ID><![CDATA[0]]></DISK_ID><DISK_TYPE><![CDATA[BLOCK]]></DISK_TYPE><IMAGE><![CDATA[image-5]]></IMAGE><IMAGE_ID><![CDATA[5]]></IMAGE_ID><PERSISTENT><![CDATA[NO]]></PERSISTENT><SOURCE><![CDATA[one-img-5]]></SOURCE><TARGET><![CDATA[vda]]></TARGET><TM_MAD><![CDATA[storpool]]></TM_MAD><TYPE><![CDATA[BLOCK]]></TYPE></DISK>
<DISK><CLONE><![CDATA[NO]]></CLONE><DATASTORE_ID><![CDATA[100]]></DATASTORE_ID><DISK_ID><![CDATA[1]]></DISK_ID><IMAGE_ID><![CDATA[7]]></IMAGE_ID><PERSISTENT><![CDATA[YES]]></PERSISTENT><SOURCE><![CDATA[one-img-7]]></SOURCE><TARGET><![CDATA[vdb]]></TARGET><TM_MAD><![CDATA[storpool]]></TM_MAD><TYPE><![CDATA[BLOCK]]></TYPE></DISK>
<CONTEXT><DISK_ID><![CDATA[3]]></DISK_ID><NETWORK><![CDATA[YES]]></NETWORK></CONTEXT></TEMPLATE>
<HISTORY_RECORDS><HISTORY><HOSTNAME>localhost</HOSTNAME><DS_ID>0</DS_ID><TM_MAD>storpool</TM_MAD></HISTORY></HISTORY_RECORDS></VM>`;
/** The VM document alone, base64 (what TM premigrate/postmigrate get on stdin). */
const VM_42 = (): string => b64(VM_42_XML());
/**
 * What one_vmm_exec hands a VMM action on stdin: the decoded driver message (root
 * VMM_DRIVER_ACTION_DATA with HOST, DEPLOY_ID and the VM), plain XML when the action runs on the
 * host, base64 of it when it is a local (-l) action on the front-end.
 */
const VMM_MSG_42 = (snapshot: string): string => {
  // The VM's last history record says where its directory is: <DS_LOCATION>/<DS_ID>/<VM ID>.
  const vm = VM_42_XML().replace('</TEMPLATE>', `${snapshot}</TEMPLATE>`).replace('<DS_ID>0</DS_ID>', `<DS_LOCATION>${join(sysDs, '..')}/</DS_LOCATION><DS_ID>0</DS_ID>`);
  return `<VMM_DRIVER_ACTION_DATA><HOST>localhost</HOST><MIGR_HOST/><DEPLOY_ID>one-42</DEPLOY_ID><DEPLOY_FILE/><CHECKPOINT_FILE/>${vm}<DATASTORE/></VMM_DRIVER_ACTION_DATA>`;
};

async function attachedClients(name: string): Promise<number[]> {
  return (await api.attachmentsList()).filter((a) => a.volume === name).map((a) => a.client).sort();
}
async function volumeNames(): Promise<string[]> { return (await api.volumesList()).map((v) => v.name); }
/** Snapshots, without the ones pending deletion ('*name'). */
async function snapshotNames(): Promise<string[]> { return (await api.snapshotsList()).map((s) => s.name).filter((n) => !n.startsWith('*')); }
async function withDevice<T>(name: string, fn: (dev: string) => Promise<T>, snapshot = false): Promise<T> {
  await api.volumesReassignWait({ reassign: [snapshot ? { snapshot: name, ro: [1] } : { volume: name, ro: [1] }] });
  try {
    return await fn(join(devRoot, 'storpool', name));
  } finally {
    await api.volumesReassignWait({ reassign: [snapshot ? { snapshot: name, detach: [1], force: true } : { volume: name, detach: [1], force: true }] });
  }
}
async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const r = await sh('dd', [`if=${path}`, 'bs=4096', `skip=${offset / 4096}`, `count=${length / 4096}`, 'iflag=direct', 'status=none'], {});
  if (r.code !== 0) throw new Error(r.stderr);
  return Buffer.from(r.stdout, 'latin1');
}
async function writePattern(path: string, offset: number, byte: string): Promise<void> {
  const r = await sh('sh', ['-c', `printf '${byte}%.0s' $(seq 4096) | dd of=${path} bs=4096 seek=${offset / 4096} count=1 oflag=direct conv=notrunc status=none`]);
  if (r.code !== 0) throw new Error(r.stderr);
}

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

const rawImage = (): Buffer => {
  const b = Buffer.alloc(8 * MiB);
  for (let i = 0; i < b.length; i += 4096) b.write(`block ${i / 4096} of the test image`, i);
  return b;
};

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-one-'));
  devRoot = join(tmp, 'dev');
  sysDs = join(tmp, 'hosts', 'localhost', 'datastores', '0');
  node2Ds = join(tmp, 'hosts', 'node2', 'datastores', '0');
  await mkdir(sysDs, { recursive: true });
  await mkdir(node2Ds, { recursive: true });
  // On a machine shared by many test runs a storage server can miss the launcher's start
  // deadline; a second attempt (fresh data directory) rides that out.
  for (let attempt = 1; cluster === undefined; attempt++) {
    try {
      cluster = await startLocalCluster({
        dataDir: join(tmp, `data-${attempt}`), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, shardCount: 64, ourId: 1, serverLogLevel: 'warn',
        block: { nbd: `127.0.0.1:${await freePort()}`, devRoot, runtimeDir: join(tmp, 'run'), attachMethod: 'nbdfuse', logLevel: 'warn' },
      });
    } catch (err) {
      if (attempt >= 2) throw err;
    }
  }
  // Host node2 is client 2 (its own section, as in StorPool's storpool.conf).
  await appendFile(cluster.confPath, '\n[node2]\nSP_OURID=2\n[node3]\nSP_OURID=3\n');
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  await api.request('POST', 'ClientRegister', ['2']);
  await api.request('POST', 'ClientRegister', ['3']);
  // ssh stand-in: node2's system datastore directory is bind-mounted over ours, in its own mount namespace.
  const fakeSsh = join(tmp, 'fake-ssh');
  // node3 (client 3) and fe (a front-end with no storpool client id) share this host's system
  // datastore directory, as on NFS.
  await writeFile(fakeSsh, `#!/bin/sh\nhost=$1; shift\ncase "$host" in node3|fe) exec sh -c "$1" ;; node2) ;; *) echo "unknown host $host" >&2; exit 255 ;; esac\nexec unshare -m sh -c 'mount --bind "$0" "$1" && exec sh -c "$2"' '${node2Ds}' '${sysDs}' "$1"\n`);
  await chmod(fakeSsh, 0o755);
  await mkdir(join(tmp, 'bin'));
  await writeFile(join(tmp, 'bin', 'virsh'), `#!/bin/sh
echo "$*" >> '${tmp}/virsh.log'
[ "$1" = -c ] && [ "$2" = qemu:///system ] || { echo "virsh: unexpected URI" >&2; exit 1; }
case "$3" in
  domstate) cat '${tmp}/virsh.state' 2>/dev/null || echo 'shut off'; echo ;;
  destroy) echo 'shut off' > '${tmp}/virsh.state' ;;
  create) echo running > '${tmp}/virsh.state' ;;
  *) echo "virsh: unexpected $3" >&2; exit 1 ;;
esac
`);
  await chmod(join(tmp, 'bin', 'virsh'), 0o755);
  driverEnv = {
    STORPOOL_CONF: cluster.confPath, STORPOOL_DEV_ROOT: devRoot, STORPOOL_ONE: `${process.execPath} ${BIN}`,
    STORPOOL_ONE_SSH: fakeSsh, STORPOOL_ONE_ATTACH_TIMEOUT: '30',
    // A stand-in virsh (the hosts' libvirt) that logs its calls and keeps one domain's state.
    PATH: `${join(tmp, 'bin')}:${PATH}`, STORPOOL_ONE_LIBVIRT_URI: 'qemu:///system',
  };
  await writeFile(join(tmp, 'image.raw'), rawImage());
  const conv = await sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(tmp, 'image.raw'), join(tmp, 'image.qcow2')]);
  if (conv.code !== 0) throw new Error(conv.stderr);
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (tmp !== undefined) {
    await sweep();
    if (process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
  }
}, 120_000);

describe('OpenNebula datastore driver (DS_MAD)', () => {
  it('monitor creates the datastore template from SP_REPLICATION/SP_PLACEALL and reports its space', async () => {
    const out = await ok('datastore', 'monitor', ['100'], dsData(''));
    const m = /^USED_MB=(\d+)\nTOTAL_MB=(\d+)\nFREE_MB=(\d+)\n$/.exec(out);
    expect(m, out).not.toBeNull();
    expect(Number(m![2])).toBeGreaterThan(0);
    expect(Number(m![1]) + Number(m![3])).toBe(Number(m![2]));
    const t = (await api.volumeTemplatesList()).find((x) => x.name === 'one-ds-100');
    expect(t?.replication).toBe(3);
    expect(t?.placeAll).toBe('default');
  }, 60_000);

  it('stat prints the virtual size in MB; cp registers a qcow2 image as a raw volume with its data', async () => {
    expect((await ok('datastore', 'stat', ['5'], dsData(image({ id: 5, path: join(tmp, 'image.qcow2') })))).trim()).toBe('8');
    expect(await ok('datastore', 'cp', ['5'], dsData(image({ id: 5, path: join(tmp, 'image.qcow2') })))).toBe('one-img-5 raw\n');
    const v = await api.volumeDescribe('one-img-5');
    expect(v.size).toBe(8 * MiB);
    expect(v.templateName).toBe('one-ds-100');
    expect(await attachedClients('one-img-5')).toEqual([]);
    const cmp = await withDevice('one-img-5', (dev) => sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(tmp, 'image.raw'), dev]));
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
  }, 120_000);

  it('a compressed file is unpacked (as downloader.sh does) unless the datastore says NO_DECOMPRESS', async () => {
    const gz = join(tmp, 'image.qcow2.gz');
    const z = await sh('sh', ['-c', `gzip -c '${join(tmp, 'image.qcow2')}' > '${gz}'`]);
    expect(z.code, z.stderr).toBe(0);
    expect((await ok('datastore', 'stat', ['16'], dsData(image({ id: 16, path: gz })))).trim()).toBe('8');
    const noDecompress = DATASTORE_100.replace('<TEMPLATE>', '<TEMPLATE><NO_DECOMPRESS><![CDATA[YES]]></NO_DECOMPRESS>');
    expect((await ok('datastore', 'stat', ['16'], dsData(image({ id: 16, path: gz }), noDecompress))).trim()).toBe('1');
    expect(await ok('datastore', 'cp', ['16'], dsData(image({ id: 16, path: gz })))).toBe('one-img-16 raw\n');
    expect((await api.volumeDescribe('one-img-16')).size).toBe(8 * MiB);
    const cmp = await withDevice('one-img-16', (dev) => sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(tmp, 'image.raw'), dev]));
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    await ok('datastore', 'rm', ['16'], dsData(image({ id: 16, source: 'one-img-16' })));
  }, 120_000);

  it('an http source: stat from Content-Length, cp downloads it', async () => {
    const data = rawImage();
    const server = createServer((req, res) => {
      if (req.url !== '/images/alpine.raw') { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : data);
    });
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${port}/images/alpine.raw`;
      expect((await ok('datastore', 'stat', ['13'], dsData(image({ id: 13, path: url })))).trim()).toBe('8');
      expect(await ok('datastore', 'cp', ['13'], dsData(image({ id: 13, path: url })))).toBe('one-img-13 raw\n');
      const md5 = await withDevice('one-img-13', async (dev) => createHash('md5').update(await readFile(dev)).digest('hex'));
      expect(md5).toBe(createHash('md5').update(data).digest('hex'));
      const r = await action('datastore', 'cp', ['14'], dsData(image({ id: 14, path: `http://127.0.0.1:${port}/nope` })));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/cannot download .*: HTTP 404/);
      await ok('datastore', 'rm', ['13'], dsData(image({ id: 13, source: 'one-img-13' })));
    } finally {
      server.close();
    }
  }, 120_000);

  it('the older convention (document as first argument) works too', async () => {
    expect((await ok('datastore', 'stat', [dsData(image({ id: 5, path: join(tmp, 'image.raw') })), '5'])).trim()).toBe('8');
  }, 60_000);

  it('errors: missing file, a qcow2 with a backing file, bad XML, not base64, wrong root, missing fields; nothing is created', async () => {
    let r = await action('datastore', 'cp', ['6'], dsData(image({ id: 6, path: join(tmp, 'nope.img') })));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^ERROR: storpool datastore cp: image file .*nope\.img does not exist/);
    expect(r.stdout).toBe('');
    const overlay = join(tmp, 'overlay.qcow2');
    expect((await sh('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-b', join(tmp, 'image.raw'), overlay])).code).toBe(0);
    r = await action('datastore', 'cp', ['6'], dsData(image({ id: 6, path: overlay })));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/has a backing file/);
    // RESTRICTED_DIRS / SAFE_DIRS of the datastore, as OpenNebula's drivers apply them.
    const guarded = DATASTORE_100.replace('<TEMPLATE>', `<TEMPLATE><RESTRICTED_DIRS><![CDATA[/]]></RESTRICTED_DIRS><SAFE_DIRS><![CDATA[/var/tmp ${tmp}/safe]]></SAFE_DIRS>`);
    await mkdir(join(tmp, 'safe'), { recursive: true });
    await writeFile(join(tmp, 'safe', 'escape.img'), '');
    await sh('ln', ['-sfn', '/etc/hostname', join(tmp, 'safe', 'escape.img')]);
    for (const p of [join(tmp, 'image.raw'), join(tmp, 'safe', 'escape.img')]) {
      r = await action('datastore', 'cp', ['6'], dsData(image({ id: 6, path: p }), guarded));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/Not allowed to copy image file .* \(under RESTRICTED_DIRS of the datastore\)/);
    }
    await writeFile(join(tmp, 'safe', 'ok.raw'), rawImage());
    expect(await ok('datastore', 'cp', ['17'], dsData(image({ id: 17, path: join(tmp, 'safe', 'ok.raw') }), guarded))).toBe('one-img-17 raw\n');
    await ok('datastore', 'rm', ['17'], dsData(image({ id: 17, source: 'one-img-17' })));
    r = await action('datastore', 'cp', ['6'], b64('<DS_DRIVER_ACTION_DATA><IMAGE><ID>6</ID></DS_DRIVER_ACTION_DATA>'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/bad XML/);
    r = await action('datastore', 'mkfs', ['6'], '%%% not base64 %%%');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/neither base64 nor XML/);
    r = await action('datastore', 'mkfs', ['6'], b64('<VM><ID>1</ID></VM>'));
    expect(r.stderr).toMatch(/no <DS_DRIVER_ACTION_DATA> element/);
    r = await action('datastore', 'mkfs', ['6'], dsData(image({ id: 6 }).replace('<SIZE>0</SIZE>', '')));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/SIZE is missing, expected an integer/);
    r = await action('datastore', 'mkfs', ['6'], '');
    expect(r.stderr).toMatch(/no driver action data/);
    expect(await volumeNames()).not.toContain('one-img-6');
  }, 60_000);

  it('mkfs makes an empty datablock, with a file system when FS is set', async () => {
    expect(await ok('datastore', 'mkfs', ['7'], dsData(image({ id: 7, size: 32, fs: 'ext4' })))).toBe('one-img-7\n');
    expect(await ok('datastore', 'mkfs', ['10'], dsData(image({ id: 10, size: 16 })))).toBe('one-img-10\n');
    expect((await api.volumeDescribe('one-img-7')).size).toBe(32 * MiB);
    expect((await api.volumeDescribe('one-img-10')).size).toBe(16 * MiB);
    const fsType = await withDevice('one-img-7', (dev) => sh('blkid', ['-o', 'value', '-s', 'TYPE', dev]));
    expect(fsType.stdout.trim()).toBe('ext4');
    expect((await ok('datastore', 'stat', ['7'], dsData(image({ id: 7, source: 'one-img-7' })))).trim()).toBe('32');
    // Disk save-as: IMAGE/FORMAT is save_as; mkfs only names the source, TM cpds makes the volume.
    const saveAs = image({ id: 15, size: 16 }).replace('<FORMAT><![CDATA[raw]]></FORMAT>', '<FORMAT><![CDATA[save_as]]></FORMAT>');
    expect(await ok('datastore', 'mkfs', ['15'], dsData(saveAs))).toBe('one-img-15\n');
    expect(await volumeNames()).not.toContain('one-img-15');
  }, 120_000);

  it('clone copies an image (copy-on-write) and grows it to SIZE', async () => {
    expect(await ok('datastore', 'clone', ['8'], dsData(image({ id: 8, path: 'one-img-5', cloningId: 5, size: 12 })))).toBe('one-img-8 raw\n');
    expect((await api.volumeDescribe('one-img-8')).size).toBe(12 * MiB);
    const head = await withDevice('one-img-8', (dev) => readAt(dev, 4096 * 3, 4096));
    expect(head.toString('latin1', 0, 24)).toBe('block 3 of the test imag');
    const r = await action('datastore', 'clone', ['9'], dsData(image({ id: 9, path: 'one-img-404', cloningId: 404 })));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/image one-img-404 does not exist/);
  }, 120_000);
});

describe('OpenNebula transfer manager (TM_MAD) and VM snapshots', () => {
  const disk = (n: number): string => join(sysDs, '42', `disk.${n}`);

  it('monitor of the system datastore creates its template', async () => {
    const out = await ok('tm', 'monitor', ['0'], dsData('', DATASTORE_0));
    expect(out).toMatch(/^USED_MB=\d+\nTOTAL_MB=\d+\nFREE_MB=\d+\n$/);
    expect((await api.volumeTemplatesList()).find((t) => t.name === 'one-ds-0')).toMatchObject({ replication: 3, placeTail: 'default' });
  }, 60_000);

  it('clone (non-persistent), ln (persistent), mkimage (volatile) and context: volumes attached here, disks linked to their devices', async () => {
    await ok('tm', 'clone', ['frontend:one-img-5', `localhost:${disk(0)}`, '42', '100']);
    await ok('tm', 'ln', ['frontend:one-img-7', `localhost:${disk(1)}`, '42', '100']);
    await ok('tm', 'mkimage', ['24', 'raw', `localhost:${disk(2)}`, '42', '0']);
    await writeFile(join(tmp, 'init.sh'), '#!/bin/sh\necho hello\n');
    await writeFile(join(tmp, 'context.sh'), "ETH0_IP='10.0.0.42'\n");
    // As one_tm runs it: every file its own argument (context.sh first, FILES_DS entries as path:'name').
    await ok('tm', 'context', [join(tmp, 'context.sh'), `${join(tmp, 'init.sh')}:'start.sh'`, `localhost:${disk(3)}`, '42', '0']);

    const expected: [number, string][] = [[0, 'one-sys-42-0'], [1, 'one-img-7'], [2, 'one-sys-42-2'], [3, 'one-sys-42-3-iso']];
    for (const [n, vol] of expected) {
      expect(await readlink(disk(n))).toBe(join(devRoot, 'storpool', vol));
      expect((await stat(disk(n))).isBlockDevice()).toBe(true);
      expect(await attachedClients(vol)).toEqual([1]);
    }
    const clone = await api.volumeDescribe('one-sys-42-0');
    expect(clone.tags).toMatchObject({ virt: 'one', nvm: '42' });
    expect((await readAt(disk(0), 4096 * 7, 4096)).toString('latin1', 0, 24)).toBe('block 7 of the test imag');
    expect((await api.volumeDescribe('one-sys-42-2')).size).toBe(24 * MiB);
    expect((await api.volumeDescribe('one-sys-42-2')).templateName).toBe('one-ds-0');
    expect((await api.attachmentsList()).find((a) => a.volume === 'one-sys-42-3-iso')?.rights).toBe('ro');
    const iso = await sh('isoinfo', ['-i', disk(3), '-J', '-f']);
    expect(iso.stdout.split('\n').filter(Boolean).sort()).toEqual(['/context.sh', '/start.sh']);
    const ctx = await sh('isoinfo', ['-i', disk(3), '-J', '-x', '/context.sh']);
    expect(ctx.stdout).toBe("ETH0_IP='10.0.0.42'\n");
  }, 180_000);

  it('errors: a missing image, a bad disk path, a missing context file leave nothing behind', async () => {
    let r = await action('tm', 'ln', ['frontend:one-img-404', `localhost:${disk(5)}`, '42', '100']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^ERROR: storpool tm ln: image one-img-404 does not exist/);
    await expect(lstat(disk(5))).rejects.toThrow();
    r = await action('tm', 'clone', ['frontend:one-img-5', 'localhost:/somewhere/else', '42', '100']);
    expect(r.stderr).toMatch(/not a VM disk path/);
    r = await action('tm', 'context', [join(tmp, 'missing.sh'), `localhost:${disk(6)}`, '42', '0']);
    expect(r.stderr).toMatch(/context file .*missing\.sh does not exist/);
    r = await action('tm', 'clone', ['frontend:one-img-5', `localhost:${disk(0)}`, '42', '100']);
    expect(r.stderr).toMatch(/one-sys-42-0 already exists/);
    r = await action('tm', 'resize', [`localhost:${join(sysDs, '77', 'disk.0')}`, '64', '77', '0']);
    expect(r.stderr).toMatch(/no volume one-sys-77-0 for disk .*\/77\/disk\.0/);
    r = await sh(process.execPath, [BIN, 'tm', 'nosuch'], { env: driverEnv });
    expect(r.stderr).toMatch(/unknown tm action "nosuch"/);
    expect(await volumeNames()).not.toContain('one-sys-42-5');
  }, 120_000);

  it('resize grows the disk; monitor reports the VM disks', async () => {
    await ok('tm', 'resize', [`localhost:${disk(0)}`, '16', '42', '0']);
    expect((await api.volumeDescribe('one-sys-42-0')).size).toBe(16 * MiB);
    const out = await ok('tm', 'monitor', [], dsData('', DATASTORE_0));
    const vm = /VM = \[ ID = 42, MONITOR = "([A-Za-z0-9+/=]+)" \]/.exec(out);
    expect(vm, out).not.toBeNull();
    const disks = Buffer.from(vm![1]!, 'base64').toString('utf8').split('\n');
    expect(disks).toContain('DISK_SIZE=[ID=0,SIZE=16]');
    expect(disks).toContain('DISK_SIZE=[ID=2,SIZE=24]');
    // The persistent disk (the image's own volume, ln tagged it nvm/ndisk) too.
    expect(disks).toContain('DISK_SIZE=[ID=1,SIZE=32]');
    expect((await api.volumeDescribe('one-img-7')).tags).toMatchObject({ nvm: '42', ndisk: '1' });
    // A round where oned does not want VM disk sizes: the usage only.
    const quiet = b64(`<DS_DRIVER_ACTION_DATA>${DATASTORE_0}<DATASTORE_LOCATION>/var/lib/one//datastores</DATASTORE_LOCATION><MONITOR_VM_DISKS>0</MONITOR_VM_DISKS></DS_DRIVER_ACTION_DATA>`);
    expect(await ok('tm', 'monitor', ['0'], quiet)).toMatch(/^USED_MB=\d+\nTOTAL_MB=\d+\nFREE_MB=\d+\n$/);
  }, 60_000);

  it('mkimage with format swap (and mkswap of older cores) makes swap disks', async () => {
    const d43 = (n: number): string => join(sysDs, '43', `disk.${n}`);
    await ok('tm', 'mkimage', ['8', 'swap', `localhost:${d43(0)}`, '43', '0']);
    await ok('tm', 'mkswap', ['8', `localhost:${d43(1)}`, '43', '0']);
    for (const n of [0, 1]) {
      expect(await readlink(d43(n))).toBe(join(devRoot, 'storpool', `one-sys-43-${n}`));
      expect((await sh('blkid', ['-o', 'value', '-s', 'TYPE', d43(n)])).stdout.trim()).toBe('swap');
    }
    await ok('tm', 'delete', [`localhost:${join(sysDs, '43')}`, '43', '0']);
    expect((await volumeNames()).filter((v) => v.startsWith('one-sys-43'))).toEqual([]);
  }, 120_000);

  it('disk snapshots: snap_create, write, snap_revert restores the data; DS snap_delete and snap_flatten', async () => {
    const at = 20 * MiB;
    await writePattern(disk(1), at, 'A');
    await ok('tm', 'snap_create', [`localhost:${disk(1)}`, '0', '42', '100']);
    expect(await snapshotNames()).toContain('one-img-7-snap0');
    await writePattern(disk(1), at, 'B');
    expect((await readAt(disk(1), at, 4096)).toString('latin1', 0, 4)).toBe('BBBB');
    await ok('tm', 'snap_revert', [`localhost:${disk(1)}`, '0', '42', '100']);
    expect((await readAt(disk(1), at, 4096)).toString('latin1', 0, 4)).toBe('AAAA');
    await ok('tm', 'snap_create', [`localhost:${disk(1)}`, '1', '42', '100']);
    const mon = await ok('tm', 'monitor', ['0'], dsData('', DATASTORE_0));
    const vm42 = Buffer.from(/VM = \[ ID = 42, MONITOR = "([A-Za-z0-9+/=]+)" \]/.exec(mon)![1]!, 'base64').toString('utf8').split('\n');
    expect(vm42).toEqual(expect.arrayContaining(['DISK_SIZE=[ID=1,SIZE=32]', 'SNAPSHOT_SIZE=[ID=0,DISK_ID=1,SIZE=32]', 'SNAPSHOT_SIZE=[ID=1,DISK_ID=1,SIZE=32]']));
    // A running VM's disk (LIVE_DISK_SNAPSHOTS="... kvm-storpool"): snap_create_live, same arguments.
    await ok('tm', 'snap_create_live', [`localhost:${disk(1)}`, '2', '42', '100']);
    expect(await snapshotNames()).toContain('one-img-7-snap2');
    await ok('tm', 'snap_delete', [`localhost:${disk(1)}`, '2', '42', '100']);
    await ok('datastore', 'snap_delete', ['7'], dsData(image({ id: 7, source: 'one-img-7', targetSnapshot: 0 })));
    expect((await snapshotNames()).filter((s) => s.startsWith('one-img-7-'))).toEqual(['one-img-7-snap1']);
    await ok('datastore', 'snap_revert', ['7'], dsData(image({ id: 7, source: 'one-img-7', targetSnapshot: 1 })));
    await ok('datastore', 'snap_flatten', ['7'], dsData(image({ id: 7, source: 'one-img-7', targetSnapshot: 1 })));
    expect((await snapshotNames()).filter((s) => s.startsWith('one-img-7-'))).toEqual([]);
    const r = await action('datastore', 'snap_revert', ['7'], dsData(image({ id: 7, source: 'one-img-7', targetSnapshot: 9 })));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/storpool API: objectDoesNotExist/);
  }, 180_000);

  it('VM snapshots are one group snapshot of the VM disks; revert and delete', async () => {
    const at = 24 * MiB;
    await writePattern(disk(0), 4 * MiB, 'C');
    await writePattern(disk(1), at, 'C');
    const active = '<SNAPSHOT><ACTIVE>YES</ACTIVE><SNAPSHOT_ID>3</SNAPSHOT_ID><NAME>s3</NAME></SNAPSHOT>';
    // create as a -l (front-end) action: base64 of the driver message on stdin.
    expect(await ok('vmm', 'snapshot_create', ['one-42', '3', '42', 'localhost'], b64(VMM_MSG_42(active)))).toBe('ONESNAP3\n');
    const snaps = (await api.snapshotsList()).filter((s) => s.name.endsWith('-ONESNAP3'));
    expect(snaps.map((s) => s.name).sort()).toEqual(['one-img-7-ONESNAP3', 'one-sys-42-0-ONESNAP3']);
    for (const s of snaps) expect(s.tags).toMatchObject({ nvm: '42', virt: 'one' });
    await writePattern(disk(0), 4 * MiB, 'D');
    await writePattern(disk(1), at, 'D');
    // revert as run on the host: the driver message as plain XML; the second argument is create's output.
    const done = '<SNAPSHOT><ACTIVE>YES</ACTIVE><SNAPSHOT_ID>3</SNAPSHOT_ID><HYPERVISOR_ID>ONESNAP3</HYPERVISOR_ID></SNAPSHOT>';
    await ok('vmm', 'snapshot_revert', ['one-42', 'ONESNAP3', '42', 'localhost'], VMM_MSG_42(done));
    expect((await readAt(disk(0), 4 * MiB, 4096)).toString('latin1', 0, 2)).toBe('CC');
    expect((await readAt(disk(1), at, 4096)).toString('latin1', 0, 2)).toBe('CC');
    let r = await action('vmm', 'snapshot_revert', ['one-42', 'ONESNAP4', '42', 'localhost'], b64(VMM_MSG_42(done)));
    expect(r.stderr).toMatch(/VM snapshot 4 is missing/);
    expect(await readFile(join(tmp, 'virsh.log'), 'utf8').catch(() => '')).not.toMatch(/destroy/);

    // A running domain: destroyed on its host, disks reverted, created again from its newest
    // deployment file (deployment.10 after deployment.9: version order, as the addon's ls -v).
    await writeFile(join(tmp, 'virsh.state'), 'running\n');
    r = await action('vmm', 'snapshot_revert', ['one-42', 'ONESNAP3', '42', 'localhost'], b64(VMM_MSG_42(done)));
    expect(r.stderr).toMatch(/one-42 runs but .*\/42 has no deployment file/);
    expect(await readFile(join(tmp, 'virsh.state'), 'utf8')).toBe('running\n');
    await writePattern(disk(0), 4 * MiB, 'E');
    await writeFile(join(sysDs, '42', 'deployment.9'), '<domain/>');
    await writeFile(join(sysDs, '42', 'deployment.10'), '<domain/>');
    await writeFile(join(tmp, 'virsh.log'), '');
    await ok('vmm', 'snapshot_revert', ['one-42', 'ONESNAP3', '42', 'localhost'], b64(VMM_MSG_42(done)));
    expect((await readFile(join(tmp, 'virsh.log'), 'utf8')).trim().split('\n')).toEqual([
      '-c qemu:///system domstate one-42', '-c qemu:///system destroy one-42', `-c qemu:///system create ${join(sysDs, '42', 'deployment.10')}`,
    ]);
    expect(await readFile(join(tmp, 'virsh.state'), 'utf8')).toBe('running\n');
    expect((await readAt(disk(0), 4 * MiB, 4096)).toString('latin1', 0, 2)).toBe('CC');
    expect(await attachedClients('one-sys-42-0')).toEqual([1]);
    await rm(join(sysDs, '42', 'deployment.9'));
    await rm(join(sysDs, '42', 'deployment.10'));
    await rm(join(tmp, 'virsh.state'));
    await ok('vmm', 'snapshot_delete', ['one-42', 'ONESNAP3', '42', 'localhost'], VM_42());
    expect((await snapshotNames()).filter((s) => s.includes('ONESNAP'))).toEqual([]);
  }, 180_000);

  it('cpds saves a disk (and a disk snapshot) as a new image', async () => {
    await ok('tm', 'cpds', [`localhost:${disk(0)}`, 'frontend:one-img-11', '-1', '42', '100']);
    expect((await api.volumeDescribe('one-img-11')).size).toBe(16 * MiB);
    const data = await withDevice('one-img-11', (dev) => readAt(dev, 4 * MiB, 4096));
    expect(data.toString('latin1', 0, 2)).toBe('CC');
    await ok('tm', 'snap_create', [`localhost:${disk(0)}`, '5', '42', '100']);
    await ok('tm', 'cpds', [`localhost:${disk(0)}`, 'frontend:one-img-12', '5', '42', '100']);
    expect((await api.volumeDescribe('one-img-12')).parentName).toBe('one-sys-42-0-snap5');
  }, 120_000);

  it('live migration to node2: premigrate attaches there too, postmigrate lets the source go; mv brings it back', async () => {
    const vols = ['one-sys-42-0', 'one-img-7', 'one-sys-42-2', 'one-sys-42-3-iso'];
    const dir = join(sysDs, '42');
    await ok('tm', 'premigrate', ['localhost', 'node2', dir, '42', '0', VM_42()]);
    for (const v of vols) expect(await attachedClients(v)).toEqual([1, 2]);
    expect(await readlink(join(node2Ds, '42', 'disk.0'))).toBe(join(devRoot, 'storpool', 'one-sys-42-0'));
    await ok('tm', 'failmigrate', ['localhost', 'node2', dir, '42', '0', VM_42()]);
    for (const v of vols) expect(await attachedClients(v)).toEqual([1]);
    await expect(lstat(join(node2Ds, '42', 'disk.0'))).rejects.toThrow();
    expect((await readdir(dir)).sort()).toEqual(['disk.0', 'disk.1', 'disk.2', 'disk.3']);

    await ok('tm', 'premigrate', ['localhost', 'node2', dir, '42', '0', VM_42()]);
    await ok('tm', 'postmigrate', ['localhost', 'node2', dir, '42', '0', VM_42()]);
    for (const v of vols) expect(await attachedClients(v)).toEqual([2]);
    expect(await readdir(dir)).toEqual([]);
    expect((await readdir(join(node2Ds, '42'))).sort()).toEqual(['disk.0', 'disk.1', 'disk.2', 'disk.3']);

    await ok('tm', 'mv', [`node2:${dir}`, `localhost:${dir}`, '42', '0']);
    for (const v of vols) expect(await attachedClients(v)).toEqual([1]);
    expect((await readdir(dir)).sort()).toEqual(['disk.0', 'disk.1', 'disk.2', 'disk.3']);
    expect(await readdir(join(node2Ds, '42'))).toEqual([]);
    expect((await readAt(disk(0), 4096 * 2, 4096)).toString('latin1', 0, 24)).toBe('block 2 of the test imag');
  }, 240_000);

  it('a shared system datastore directory: migration keeps the links; stop to a front-end without a client id detaches, resume attaches', async () => {
    const vols = ['one-sys-42-0', 'one-img-7', 'one-sys-42-2', 'one-sys-42-3-iso'];
    const dir = join(sysDs, '42');
    const links = ['disk.0', 'disk.1', 'disk.2', 'disk.3'];
    expect((await readdir(dir)).sort()).toEqual(links);
    await ok('tm', 'premigrate', ['localhost', 'node3', dir, '42', '0'], VM_42());
    for (const v of vols) expect(await attachedClients(v)).toEqual([1, 3]);
    expect((await api.attachmentsList()).find((a) => a.volume === 'one-sys-42-3-iso' && a.client === 3)?.rights).toBe('ro');
    await ok('tm', 'postmigrate', ['localhost', 'node3', dir, '42', '0'], VM_42());
    for (const v of vols) expect(await attachedClients(v)).toEqual([3]);
    expect((await readdir(dir)).sort()).toEqual(links); // the same links serve node3; no probe left behind
    // stop: oned moves each disk (image datastore's TM), then the directory, to the front-end
    await ok('tm', 'mv', [`node3:${disk(0)}`, `fe:${disk(0)}`, '42', '100']);
    await ok('tm', 'mv', [`node3:${dir}`, `fe:${dir}`, '42', '0']);
    for (const v of vols) expect(await attachedClients(v)).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(links);
    // resume on this host
    await ok('tm', 'mv', [`fe:${disk(0)}`, `localhost:${disk(0)}`, '42', '100']);
    await ok('tm', 'mv', [`fe:${dir}`, `localhost:${dir}`, '42', '0']);
    for (const v of vols) expect(await attachedClients(v)).toEqual([1]);
    expect((await api.attachmentsList()).find((a) => a.volume === 'one-sys-42-3-iso')?.rights).toBe('ro');
    expect((await readdir(dir)).sort()).toEqual(links);
    expect((await readAt(disk(0), 4096 * 2, 4096)).toString('latin1', 0, 24)).toBe('block 2 of the test imag');
  }, 240_000);

  it('mvds returns the persistent disk; delete removes the clone, then the VM directory with the rest', async () => {
    await ok('tm', 'mvds', [`localhost:${disk(1)}`, 'frontend:one-img-7', '42', '100']);
    expect(await attachedClients('one-img-7')).toEqual([]);
    await expect(lstat(disk(1))).rejects.toThrow();
    expect((await api.volumeDescribe('one-img-7')).tags?.['nvm']).toBeUndefined();
    expect(await volumeNames()).toContain('one-img-7');
    await ok('tm', 'delete', [`localhost:${disk(0)}`, '42', '0']);
    expect(await volumeNames()).not.toContain('one-sys-42-0');
    expect(await snapshotNames()).not.toContain('one-sys-42-0-snap5');
    await ok('tm', 'delete', [`localhost:${join(sysDs, '42')}`, '42', '0']);
    const left = await volumeNames();
    expect(left.filter((v) => v.startsWith('one-sys-42'))).toEqual([]);
    await expect(lstat(join(sysDs, '42'))).rejects.toThrow();
    expect((await api.attachmentsList()).length).toBe(0);
  }, 180_000);
});

describe('OpenNebula datastore driver: export and rm', () => {
  it('export attaches a snapshot read-only and prints IMPORT_INFO with its MD5; DISPOSE_CMD removes it', async () => {
    const out = await ok('datastore', 'export', ['5'], dsData(image({ id: 5, source: 'one-img-5' })));
    const src = /<IMPORT_SOURCE><!\[CDATA\[(.*?)\]\]><\/IMPORT_SOURCE>/.exec(out)?.[1];
    const md5 = /<MD5><!\[CDATA\[(.*?)\]\]><\/MD5>/.exec(out)?.[1];
    expect(/<SIZE><!\[CDATA\[8\]\]><\/SIZE>/.test(out), out).toBe(true);
    expect(md5).toBe(createHash('md5').update(rawImage()).digest('hex'));
    expect(src).toMatch(new RegExp(`^${devRoot}/storpool/one-img-5-export\\d+$`));
    const dispose = /<DISPOSE_CMD><!\[CDATA\[storpool-one (.*?)\]\]><\/DISPOSE_CMD>/.exec(out)![1]!.split(' ');
    const r = await sh(process.execPath, [BIN, ...dispose], { env: driverEnv });
    expect(r.code, r.stderr).toBe(0);
    expect((await snapshotNames()).filter((s) => s.includes('export'))).toEqual([]);
  }, 120_000);

  it('rm deletes images with their snapshots; a missing image is an error', async () => {
    for (const id of [12, 11, 8, 5, 7, 10]) await ok('datastore', 'rm', [String(id)], dsData(image({ id, source: `one-img-${id}` })));
    expect((await volumeNames()).filter((v) => v.startsWith('one-'))).toEqual([]);
    expect((await snapshotNames()).filter((v) => v.startsWith('one-'))).toEqual([]);
    const r = await action('datastore', 'rm', ['5'], dsData(image({ id: 5, source: 'one-img-5' })));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/image one-img-5 does not exist/);
  }, 120_000);
});
