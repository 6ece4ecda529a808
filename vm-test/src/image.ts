/**
 * Builds a Linux guest from Debian packages only: the kernel from `linux-image-amd64` (downloaded
 * with `apt-get download` and unpacked with `dpkg-deb -x`, never installed), a busybox-static
 * initramfs with the kernel modules the tests need and tools unpacked from .debs together with
 * their shared libraries (nbd-client, e2fsprogs). The result is cached under a directory keyed by
 * the exact package versions, so it is rebuilt when any input package changes.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { newcArchive, type CpioEntry } from './cpio.js';
import { elfNeeded } from './elf.js';

const exec = promisify(execFile);

/** Bump when the image layout or init changes, to invalidate cached images. */
const IMAGE_FORMAT = 7;

/** Debian packages unpacked into the guest, besides the kernel. */
export const GUEST_PACKAGES = [
  'busybox-static',
  'nbd-client',
  'e2fsprogs',
  // shared libraries of nbd-client and e2fsprogs (checked against the binaries' DT_NEEDED at build)
  'libc6',
  'libgnutls30',
  'libgmp10',
  'libhogweed6',
  'libidn2-0',
  'libnettle8',
  'libp11-kit0',
  'libtasn1-6',
  'libunistring2',
  'libffi8',
  'libnl-3-200',
  'libnl-genl-3-200',
  'libext2fs2',
  'libcom-err2',
  'libblkid1',
  'libuuid1',
  'libss2',
  // xfsprogs: mkfs.xfs, xfs_repair
  'xfsprogs',
  'libinih1',
  'liburcu8',
  // open-iscsi: iscsistart (login from an initramfs, no iscsid), for iSCSI guests
  'open-iscsi',
  'libopeniscsiusr',
  'libssl3',
  'libkmod2',
  'liblzma5',
  'libzstd1',
  // iproute2: tc (busybox's cannot set up netem)
  'iproute2',
  'libbpf1',
  'libelf1',
  'zlib1g',
  'libmnl0',
  'libbsd0',
  'libmd0',
  'libcap2',
  'libxtables12',
  // dmsetup: a dm-multipath device over two iSCSI sessions (no multipathd: the table is set by hand)
  'dmsetup',
  'libdevmapper1.02.1',
  'libselinux1',
  'libpcre2-8-0',
  'libudev1',
  // C++ runtime: lets the host's own `node` binary (shared in over 9p) run in the guest
  'libstdc++6',
  'libgcc-s1',
] as const;

/** The kernel metapackage; its versioned dependency `linux-image-<abi>-amd64` holds the kernel. */
export const KERNEL_METAPACKAGE = 'linux-image-amd64';

/** Modules loaded at boot (dependencies are added and ordered from the modules' own modinfo). */
export const GUEST_MODULES = [
  'virtio_pci', 'virtio_net', 'virtio_blk', 'nbd', 'crc32c_generic', 'ext4', 'xfs',
  // tc qdisc netem: latency/loss on the guest's link
  'sch_netem',
  // iSCSI initiator (iscsistart) and SCSI disks
  'iscsi_tcp', 'sd_mod',
  // 9p shares from the host (RunVmOptions.shares)
  '9pnet_virtio', '9p',
  // dm-multipath over two iSCSI paths (dmsetup; dm_mod comes as their dependency)
  'dm_multipath', 'dm_round_robin',
] as const;

/** Binaries copied into the guest: [path in the package tree, path in the guest]. */
const GUEST_BINARIES: [string, string][] = [
  ['sbin/nbd-client', 'sbin/nbd-client'],
  ['sbin/mke2fs', 'sbin/mke2fs'],
  ['sbin/e2fsck', 'sbin/e2fsck'],
  ['sbin/dumpe2fs', 'sbin/dumpe2fs'],
  ['sbin/mkfs.xfs', 'sbin/mkfs.xfs'],
  ['sbin/xfs_repair', 'sbin/xfs_repair'],
  ['sbin/iscsistart', 'sbin/iscsistart'],
  ['sbin/tc', 'sbin/tc'],
  ['sbin/dmsetup', 'sbin/dmsetup'],
];

/** Libraries copied besides the binaries' closure: what the host's `node` needs beyond libc. */
const EXTRA_LIBS = ['libstdc++.so.6', 'libgcc_s.so.1', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1'];

const GUEST_SYMLINKS: [string, string][] = [
  ['sbin/mkfs.ext4', 'mke2fs'],
  ['sbin/fsck.ext4', 'e2fsck'],
  ['lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'],
];

const LIB_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib', 'usr/lib'];

export interface GuestImage {
  /** Directory holding the image files. */
  dir: string;
  kernel: string;
  /** gzip'd newc initramfs; append a per-test archive with `initrdWithScript`. */
  initrd: string;
  kernelVersion: string;
  packages: Record<string, string>;
  modules: string[];
}

export interface BuildImageOptions {
  cacheDir?: string;
  /** Run `apt-get update` when package versions cannot be resolved (default: when root). */
  aptUpdate?: boolean;
  log?: (line: string) => void;
}

export function defaultCacheDir(): string {
  return process.env.STORPOOL_VM_CACHE ?? join(homedir(), '.cache', 'storpool-vm');
}

async function aptCandidates(packages: readonly string[]): Promise<Map<string, string>> {
  const { stdout } = await exec('apt-cache', ['policy', ...packages], { env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 16 << 20 });
  const out = new Map<string, string>();
  let current: string | undefined;
  for (const line of stdout.split('\n')) {
    const head = /^(\S+):$/.exec(line);
    if (head) current = head[1];
    const cand = /^\s+Candidate:\s+(\S+)/.exec(line);
    if (cand && current !== undefined && cand[1] !== '(none)') out.set(current, cand[1]!);
  }
  return out;
}

async function kernelPackage(): Promise<string | undefined> {
  const { stdout } = await exec('apt-cache', ['depends', KERNEL_METAPACKAGE], { env: { ...process.env, LC_ALL: 'C' } });
  return /Depends:\s+(linux-image-[0-9][^\s]*-amd64)/.exec(stdout)?.[1];
}

/** Resolves the exact input versions, running `apt-get update` once if the lists are missing. */
async function resolveInputs(options: BuildImageOptions): Promise<{ kernelPkg: string; versions: Map<string, string> }> {
  for (let attempt = 0; ; attempt++) {
    const kernelPkg = await kernelPackage().catch(() => undefined);
    const wanted = [KERNEL_METAPACKAGE, ...(kernelPkg ? [kernelPkg] : []), ...GUEST_PACKAGES];
    const versions = await aptCandidates(wanted);
    const missing = wanted.filter((p) => !versions.has(p));
    if (kernelPkg !== undefined && missing.length === 0) return { kernelPkg, versions };
    const mayUpdate = options.aptUpdate ?? process.getuid?.() === 0;
    if (attempt > 0 || !mayUpdate) {
      throw new Error(`vm-test image: cannot resolve Debian packages ${kernelPkg === undefined ? KERNEL_METAPACKAGE + ' dependency, ' : ''}${missing.join(', ')}; run \`apt-get update\``);
    }
    options.log?.('apt-get update (package lists missing)');
    await exec('apt-get', ['update', '-qq'], { maxBuffer: 16 << 20 });
  }
}

/** The image for the current package versions: from the cache, or built now. */
export async function ensureImage(options: BuildImageOptions = {}): Promise<GuestImage> {
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const { kernelPkg, versions } = await resolveInputs(options);
  const packages = Object.fromEntries([...versions].sort(([a], [b]) => a.localeCompare(b)));
  const key = createHash('sha256').update(JSON.stringify({ IMAGE_FORMAT, packages, modules: GUEST_MODULES, binaries: GUEST_BINARIES, extraLibs: EXTRA_LIBS })).digest('hex').slice(0, 16);
  const dir = join(cacheDir, 'images', key);
  const manifestPath = join(dir, 'manifest.json');
  if (existsSync(manifestPath)) return JSON.parse(await readFile(manifestPath, 'utf8')) as GuestImage;

  const t0 = Date.now();
  options.log?.(`building guest image ${key} (kernel ${kernelPkg})`);
  const debDir = join(cacheDir, 'debs');
  await mkdir(debDir, { recursive: true });
  await mkdir(join(cacheDir, 'images'), { recursive: true });
  const toDownload = [kernelPkg, ...GUEST_PACKAGES];
  // apt-get download names files <package>_<version with ':' as %3a>_<arch>.deb
  const debPrefix = (p: string): string => `${p}_${versions.get(p)!.replace(/:/g, '%3a')}_`;
  const have = await readdir(debDir);
  const absent = toDownload.filter((p) => !have.some((f) => f.startsWith(debPrefix(p)) && f.endsWith('.deb')));
  if (absent.length > 0) {
    options.log?.(`apt-get download ${absent.join(' ')}`);
    await exec('apt-get', ['download', '-o', 'APT::Sandbox::User=root', ...absent.map((p) => `${p}=${versions.get(p)!}`)], { cwd: debDir, maxBuffer: 16 << 20 });
  }
  const debs = await readdir(debDir);
  const work = await mkdtemp(join(cacheDir, 'images', `.build-${key}-`));
  try {
    const stage = join(work, 'stage');
    await mkdir(stage);
    for (const p of toDownload) {
      const file = debs.find((f) => f.startsWith(debPrefix(p)) && f.endsWith('.deb'));
      if (file === undefined) throw new Error(`vm-test image: ${p} ${versions.get(p)} was not downloaded into ${debDir}`);
      await exec('dpkg-deb', ['-x', join(debDir, file), stage]);
    }
    const moduleRoot = join(stage, 'lib', 'modules');
    const kernelVersion = (await readdir(moduleRoot))[0]!;
    const modules = await resolveModules(join(moduleRoot, kernelVersion), GUEST_MODULES);
    const entries = await initramfsEntries(stage, modules);
    const initrd = gzipSync(newcArchive(entries), { level: 6 });
    const out = join(work, 'out');
    await mkdir(out);
    await writeFile(join(out, 'vmlinuz'), await readFile(join(stage, 'boot', `vmlinuz-${kernelVersion}`)));
    await writeFile(join(out, 'initrd.cpio.gz'), initrd);
    const image: GuestImage = { dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.cpio.gz'), kernelVersion, packages, modules: modules.map((m) => m.name) };
    await writeFile(join(out, 'manifest.json'), JSON.stringify(image, null, 2));
    try {
      await rename(out, dir);
    } catch (err) {
      if (!existsSync(manifestPath)) throw err; // another process built it concurrently: use theirs
    }
    options.log?.(`built guest image in ${Date.now() - t0} ms: initrd ${(initrd.length / 1024 / 1024).toFixed(1)} MiB, modules ${image.modules.join(' ')}`);
    return image;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

interface ModuleFile {
  name: string;
  path: string;
}

const normalize = (name: string): string => name.replace(/-/g, '_');

/** The modules and their `depends=` closure (from each .ko's .modinfo), dependencies first. */
async function resolveModules(moduleDir: string, wanted: readonly string[]): Promise<ModuleFile[]> {
  const index = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (e.name.endsWith('.ko')) index.set(normalize(e.name.slice(0, -3)), join(d, e.name));
    }
  };
  await walk(join(moduleDir, 'kernel'));
  const ordered: ModuleFile[] = [];
  const seen = new Set<string>();
  const visit = async (raw: string): Promise<void> => {
    const name = normalize(raw);
    if (seen.has(name)) return;
    seen.add(name);
    const path = index.get(name);
    if (path === undefined) throw new Error(`vm-test image: kernel module ${name} not found under ${moduleDir} (built in?)`);
    const data = await readFile(path);
    const depends = /\0depends=([^\0]*)\0/.exec(data.toString('latin1'))?.[1] ?? '';
    for (const dep of depends.split(',').filter(Boolean)) await visit(dep);
    ordered.push({ name, path });
  };
  for (const m of wanted) await visit(m);
  return ordered;
}

/** Resolves `rel` inside the unpacked tree `root`, following symlinks (absolute ones within root). */
async function resolveInRoot(root: string, rel: string, depth = 0): Promise<string | undefined> {
  if (depth > 20) return undefined;
  const parts = rel.split('/').filter(Boolean);
  let at = '';
  for (let i = 0; i < parts.length; i++) {
    const next = posix.join(at, parts[i]!);
    const st = await lstat(join(root, next)).catch(() => undefined);
    if (st === undefined) return undefined;
    if (st.isSymbolicLink()) {
      const target = await readlink(join(root, next));
      const base = target.startsWith('/') ? target : posix.join(at, target);
      return resolveInRoot(root, posix.join(base, ...parts.slice(i + 1)), depth + 1);
    }
    at = next;
  }
  return join(root, at);
}

async function initramfsEntries(stage: string, modules: ModuleFile[]): Promise<CpioEntry[]> {
  const entries: CpioEntry[] = [];
  for (const d of ['bin', 'sbin', 'etc', 'lib', 'lib/modules', 'lib/x86_64-linux-gnu', 'lib64', 'usr', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'run', 'root']) {
    entries.push({ type: 'dir', path: d });
  }
  entries.push({ type: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ type: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  const busybox = await resolveInRoot(stage, 'bin/busybox');
  if (busybox === undefined) throw new Error('vm-test image: busybox-static did not provide bin/busybox');
  entries.push({ type: 'file', path: 'bin/busybox', data: await readFile(busybox), mode: 0o755 });
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });

  // Binaries and the closure of their shared libraries.
  const libs = new Map<string, Buffer>();
  const pending: Buffer[] = [];
  for (const [from, to] of GUEST_BINARIES) {
    const path = await resolveInRoot(stage, from);
    if (path === undefined) throw new Error(`vm-test image: ${from} not found in the unpacked packages`);
    const data = await readFile(path);
    entries.push({ type: 'file', path: to, data, mode: 0o755 });
    pending.push(data);
  }
  const ld = await findLib(stage, 'ld-linux-x86-64.so.2');
  libs.set('ld-linux-x86-64.so.2', ld);
  for (const name of EXTRA_LIBS) {
    const data = await findLib(stage, name);
    libs.set(name, data);
    pending.push(data);
  }
  while (pending.length > 0) {
    for (const name of elfNeeded(pending.pop()!) ?? []) {
      if (libs.has(name)) continue;
      const data = await findLib(stage, name);
      libs.set(name, data);
      pending.push(data);
    }
  }
  for (const [name, data] of libs) entries.push({ type: 'file', path: `lib/x86_64-linux-gnu/${name}`, data, mode: 0o755 });
  for (const [path, target] of GUEST_SYMLINKS) entries.push({ type: 'symlink', path, target });
  const mke2fsConf = await resolveInRoot(stage, 'etc/mke2fs.conf');
  if (mke2fsConf !== undefined) entries.push({ type: 'file', path: 'etc/mke2fs.conf', data: await readFile(mke2fsConf) });

  for (const m of modules) entries.push({ type: 'file', path: `lib/modules/${m.name}.ko`, data: await readFile(m.path) });
  entries.push({ type: 'file', path: 'etc/modules', data: Buffer.from(modules.map((m) => m.name).join('\n') + '\n') });
  // libuv's os.userInfo() (used by the CLI) needs root in the passwd database
  entries.push({ type: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') });
  entries.push({ type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\n') });
  entries.push({ type: 'file', path: 'init', data: Buffer.from(INIT_SCRIPT), mode: 0o755 });
  entries.push({ type: 'file', path: 'lib/vmtest.sh', data: Buffer.from(HELPERS_SCRIPT), mode: 0o644 });
  return entries;
}

async function findLib(stage: string, name: string): Promise<Buffer> {
  for (const d of LIB_DIRS) {
    const path = await resolveInRoot(stage, `${d}/${name}`);
    if (path !== undefined && (await stat(path)).isFile()) return readFile(path);
  }
  throw new Error(`vm-test image: shared library ${name} is in none of the unpacked packages; add its Debian package to GUEST_PACKAGES`);
}

/**
 * PID 1: mounts, loads modules, configures slirp networking (guest 10.0.2.15, host 10.0.2.2), runs
 * /test.sh (appended per test) and prints `@@RESULT ok` or `@@RESULT fail <reason>`, then powers off.
 */
const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
echo "@@STAGE modules"
for m in $(cat /etc/modules); do
  insmod /lib/modules/$m.ko 2>/tmp/insmod.err || { grep -q 'File exists' /tmp/insmod.err || echo "@@WARN insmod $m: $(cat /tmp/insmod.err)"; }
done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "@@WARN network setup failed"
echo "@@BOOTED $(cut -d' ' -f1 /proc/uptime)"
if [ -f /test.sh ]; then
  sh /test.sh
  rc=$?
  if [ $rc -eq 0 ]; then echo "@@RESULT ok"; else echo "@@RESULT fail test.sh exited with $rc"; fi
else
  echo "@@RESULT ok"
fi
sync
poweroff -f
`;

/** Sourced by test scripts: `. /lib/vmtest.sh`. */
const HELPERS_SCRIPT = `# vm-test helpers
fail() { echo "@@RESULT fail $*"; sync; poweroff -f; sleep 10; }
step() { echo "@@STEP $*"; }
run() { "$@" || fail "command failed ($?): $*"; }
# share TAG DIR [CACHE]: mount a host directory shared with RunVmOptions.shares; CACHE=none
# (default loose) when the host changes files while the guest runs
share() { mkdir -p "$2" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=\${3:-loose} "$1" "$2" || fail "cannot mount 9p share $1 on $2"; }
`;

/**
 * A second newc archive holding /test.sh, appended to the base initramfs into `out`
 * (the kernel unpacks concatenated archives, compressed or not).
 */
export async function initrdWithScript(image: GuestImage, script: string, out: string, extraFiles: Record<string, string | Uint8Array> = {}): Promise<string> {
  const entries: CpioEntry[] = [{ type: 'file', path: 'test.sh', data: Buffer.from(script), mode: 0o755 }];
  // The kernel does not create missing parent directories: list each one before its files.
  const dirs = new Set<string>();
  for (const path of Object.keys(extraFiles)) {
    const parts = path.replace(/^\/+/, '').split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ type: 'dir', path: d });
      }
    }
  }
  for (const [path, data] of Object.entries(extraFiles)) entries.push({ type: 'file', path, data: typeof data === 'string' ? Buffer.from(data) : data, mode: 0o644 });
  await mkdir(dirname(out), { recursive: true });
  // The kernel only recognises an archive that starts at a 4-byte aligned offset of the initrd.
  const base = await readFile(image.initrd);
  await writeFile(out, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), newcArchive(entries)]));
  return out;
}
