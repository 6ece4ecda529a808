/**
 * TM_MAD actions (arguments as OpenNebula passes them). A VM disk is a link
 * <system ds>/<vmid>/disk.<n> on the host to /dev/storpool/<volume>; the link tells which volume a
 * disk is, so no VM document is needed. Non-persistent disks are clones <px>-sys-<vm>-<disk> of the
 * image, persistent ones the image's volume itself.
 */
import { copyFile, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, MiB, clientIdIfAny, clientIdOf, devicePath, diskIds, names, onHost, q, runLocal, sourceVolume, splitHostPath } from './env.js';
import { attach, attachedTo, deleteVolume, detach, linkDisk, linkedDisks, linkedVolume, modeOf, requireVolume, revertVolume, sharedDir, unlink, volumeExists } from './ops.js';
import { datastoreUsage } from './ds.js';
import { parseDocument, intField, text } from './xml.js';

function need(args: string[], n: number, usage: string): void {
  if (args.length < n) throw new StorpoolError('CONFIG_ERR_INVALID', `usage: ${usage}`);
}

function int(v: string | undefined, what: string): number {
  if (v === undefined || !/^-?\d+$/.test(v)) throw new StorpoolError('CONFIG_ERR_INVALID', `${what} must be an integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** The volume behind host:path: the link's target, else the conventional name of the disk. */
async function diskVolume(e: DriverEnv, arg: string): Promise<{ host: string; path: string; volume: string }> {
  const { host, path } = splitHostPath(arg);
  const linked = await linkedVolume(e, host, path);
  if (linked !== undefined) return { host, path, volume: linked };
  const { vmId, diskId } = diskIds(path);
  const volume = names.disk(e, vmId, diskId);
  if (!(await volumeExists(e, volume))) throw new StorpoolError('CONFIG_ERR_INVALID', `no volume ${volume} for disk ${path}`);
  return { host, path, volume };
}

/** Drops one disk from a host: detach, unlink; system volumes (clones, volatile, context) are deleted. */
async function dropDisk(e: DriverEnv, host: string, path: string, volume: string): Promise<void> {
  if (await volumeExists(e, volume)) {
    const id = clientIdIfAny(e, host);
    if (id !== undefined) await detach(e, volume, id);
    if (volume.startsWith(`${e.prefix}-sys-`)) await deleteVolume(e, volume);
    else await e.api.volumeUpdate(volume, { tags: { nvm: '', ndisk: '' } });
  }
  await unlink(e, host, path);
}

async function buildIso(files: string): Promise<{ iso: string; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'storpool-one-ctx-'));
  try {
    const root = join(dir, 'root');
    await mkdir(root);
    for (const item of files.split(/\s+/).filter(Boolean)) {
      // OpenNebula passes "path" or "path:'name'" (FILES_DS entries renamed in the ISO).
      const m = /^(.*?):'([^']+)'$/.exec(item);
      const src = m === null ? item : m[1]!;
      const name = m === null ? basename(item) : m[2]!;
      if (!(await stat(src).then((s) => s.isFile(), () => false))) throw new StorpoolError('CONFIG_ERR_INVALID', `context file ${src} does not exist`);
      await copyFile(src, join(root, name));
    }
    const iso = join(dir, 'context.iso');
    await runLocal('genisoimage', ['-quiet', '-o', iso, '-V', 'CONTEXT', '-J', '-R', root]);
    return { iso, dir };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export const tmActions: Record<string, (e: DriverEnv, args: string[], stdin: () => Promise<string>) => Promise<string>> = {
  /** clone fe:SOURCE host:remote_system_ds/disk.i vmid dsid — a copy-on-write clone for a non-persistent disk. */
  async clone(e, args) {
    need(args, 3, 'clone fe:SOURCE host:remote_system_ds/disk.i vmid dsid');
    const image = sourceVolume(args[0]!);
    const { host, path } = splitHostPath(args[1]!);
    const { vmId, diskId } = diskIds(path);
    await requireVolume(e, image, 'image');
    const name = names.disk(e, vmId, diskId);
    if (await volumeExists(e, name)) throw new StorpoolError('CONFIG_ERR_INVALID', `volume ${name} already exists`);
    await e.api.volumeCreate({ name, baseOn: image, tags: { virt: 'one', nvm: String(vmId) } });
    try {
      await attach(e, name, clientIdOf(e, host));
      await linkDisk(e, host, path, name);
    } catch (err) {
      await deleteVolume(e, name).catch(() => {});
      throw err;
    }
    return '';
  },

  /** ln fe:SOURCE host:remote_system_ds/disk.i vmid dsid — a persistent image used in place. */
  async ln(e, args) {
    need(args, 3, 'ln fe:SOURCE host:remote_system_ds/disk.i vmid dsid');
    const image = sourceVolume(args[0]!);
    const { host, path } = splitHostPath(args[1]!);
    const { vmId, diskId } = diskIds(path);
    await requireVolume(e, image, 'image');
    await attach(e, image, clientIdOf(e, host));
    await linkDisk(e, host, path, image);
    // Which VM disk it is now, for the system datastore monitor (cleared by mvds).
    await e.api.volumeUpdate(image, { tags: { nvm: String(vmId), ndisk: String(diskId) } });
    return '';
  },

  /** mvds host:remote_system_ds/disk.i fe:SOURCE vmid dsid — a persistent disk goes back to its datastore. */
  async mvds(e, args) {
    need(args, 2, 'mvds host:remote_system_ds/disk.i fe:SOURCE vmid dsid');
    const { host, path } = splitHostPath(args[0]!);
    const image = (await linkedVolume(e, host, path)) ?? sourceVolume(args[1]!);
    await requireVolume(e, image, 'image');
    const id = clientIdIfAny(e, host);
    if (id !== undefined) await detach(e, image, id);
    await unlink(e, host, path);
    await e.api.volumeUpdate(image, { tags: { nvm: '', ndisk: '' } });
    return '';
  },

  /** cpds host:remote_system_ds/disk.i fe:SOURCE snapid vmid dsid — save a disk (or one of its snapshots) as an image. */
  async cpds(e, args) {
    need(args, 3, 'cpds host:remote_system_ds/disk.i fe:SOURCE snapid vmid dsid');
    const { volume } = await diskVolume(e, args[0]!);
    const target = sourceVolume(args[1]!);
    const snapId = int(args[2], 'snapid');
    if (await volumeExists(e, target)) {
      if ((await attachedTo(e, target)).length > 0) throw new StorpoolError('CONFIG_ERR_INVALID', `target image ${target} exists and is attached`);
      await deleteVolume(e, target);
    }
    const tags = { virt: 'one', type: 'image' };
    if (snapId < 0) await e.api.volumeCreate({ name: target, baseOn: volume, tags });
    else await e.api.volumeCreate({ name: target, parent: names.snapshot(volume, snapId), tags });
    return '';
  },

  /**
   * mv hostA:dir[/disk.i] hostB:dir[/disk.i] vmid dsid — move a stopped VM's disks between hosts.
   * A side without a storpool client id (the front-end, for stop/undeploy and resume) is only
   * detached from / attached to on the other side; on a shared system datastore directory the
   * links stay where they are.
   */
  async mv(e, args) {
    need(args, 2, 'mv hostA:system_ds/vmid[/disk.i] hostB:system_ds/vmid[/disk.i] vmid dsid');
    const src = splitHostPath(args[0]!);
    const dst = splitHostPath(args[1]!);
    if (src.host === dst.host && src.path === dst.path) return '';
    const isDisk = /\/disk\.\d+$/.test(src.path);
    const disks = isDisk
      ? new Map([[src.path, await linkedVolume(e, src.host, src.path)]].filter((d): d is [string, string] => d[1] !== undefined))
      : await linkedDisks(e, src.host, src.path);
    const from = clientIdIfAny(e, src.host);
    const to = clientIdIfAny(e, dst.host);
    let shared: boolean | undefined;
    for (const [path, volume] of disks) {
      const target = isDisk ? dst.path : `${dst.path.replace(/\/+$/, '')}/${basename(path)}`;
      if (to !== undefined && from !== to) await attach(e, volume, to, modeOf(volume));
      await linkDisk(e, dst.host, target, volume);
      if (from !== undefined && from !== to) await detach(e, volume, from);
      if (src.host === dst.host && path === target) continue;
      if (path === target) shared ??= await sharedDir(e, src.host, dst.host, dirname(path));
      if (!(path === target && shared === true)) await unlink(e, src.host, path);
    }
    return '';
  },

  /** delete host:remote_system_ds/disk.i|host:remote_system_ds/vmid vmid dsid */
  async delete(e, args) {
    need(args, 1, 'delete host:remote_system_ds/disk.i|host:remote_system_ds/vmid vmid dsid');
    const { host, path } = splitHostPath(args[0]!);
    if (/\/disk\.\d+$/.test(path)) {
      const linked = await linkedVolume(e, host, path);
      let volume = linked;
      if (volume === undefined) {
        const { vmId, diskId } = diskIds(path);
        volume = names.disk(e, vmId, diskId);
      }
      await dropDisk(e, host, path, volume);
      return '';
    }
    for (const [disk, volume] of await linkedDisks(e, host, path)) await dropDisk(e, host, disk, volume);
    await onHost(e, host, `rm -rf ${q(path)}`);
    return '';
  },

  /** mkimage size format host:remote_system_ds/disk.i vmid dsid — a volatile disk; format `swap` gets mkswap. */
  async mkimage(e, args) {
    need(args, 5, 'mkimage size format host:remote_system_ds/disk.i vmid dsid');
    const size = int(args[0], 'size');
    const { host, path } = splitHostPath(args[2]!);
    const { vmId, diskId } = diskIds(path);
    const dsId = int(args[4], 'dsid');
    const name = names.disk(e, vmId, diskId);
    const template = names.template(e, dsId);
    if (!(await e.api.volumeTemplatesList()).some((t) => t.name === template)) {
      throw new StorpoolError('CONFIG_ERR_INVALID', `storpool template ${template} of system datastore ${dsId} does not exist (monitor the datastore first)`);
    }
    const format = args[1] ?? 'raw';
    await e.api.volumeCreate({ name, size: size * MiB, template, tags: { virt: 'one', nvm: String(vmId), type: 'volatile' } });
    try {
      if (format === 'swap') {
        const here = clientIdOf(e, 'localhost');
        await attach(e, name, here, 'rw');
        try {
          await runLocal('mkswap', [devicePath(e, name)]);
        } finally {
          await detach(e, name, here, true);
        }
      }
      await attach(e, name, clientIdOf(e, host));
      await linkDisk(e, host, path, name);
    } catch (err) {
      await deleteVolume(e, name).catch(() => {});
      throw err;
    }
    return '';
  },

  /** mkswap size host:remote_system_ds/disk.i vmid dsid — older cores' swap disk: mkimage with format swap. */
  async mkswap(e, args, stdin) {
    need(args, 4, 'mkswap size host:remote_system_ds/disk.i vmid dsid');
    return tmActions['mkimage']!(e, [args[0]!, 'swap', ...args.slice(1)], stdin);
  },

  /** resize host:remote_system_ds/disk.i size vmid dsid — size in MB. */
  async resize(e, args) {
    need(args, 2, 'resize host:remote_system_ds/disk.i size vmid dsid');
    const { volume } = await diskVolume(e, args[0]!);
    await e.api.volumeUpdate(volume, { size: int(args[1], 'size') * MiB });
    return '';
  },

  /**
   * context file1 [file2 ...] host:remote_system_ds/disk.i vmid dsid — an ISO volume, attached
   * read-only. oned writes `CONTEXT <tm> <context.sh> <files...> host:path vmid dsid` and one_tm
   * splits that line on blanks, so every file is its own argument: the last three are fixed.
   */
  async context(e, args) {
    need(args, 4, 'context file1 [file2 ...] host:remote_system_ds/disk.i vmid dsid');
    const n = args.length;
    const { host, path } = splitHostPath(args[n - 3]!);
    const { vmId, diskId } = diskIds(path);
    const dsId = int(args[n - 1], 'dsid');
    const name = names.contextDisk(e, vmId, diskId);
    const template = names.template(e, dsId);
    const { iso, dir } = await buildIso(args.slice(0, n - 3).join(' '));
    try {
      if (await volumeExists(e, name)) await deleteVolume(e, name);
      const size = Math.ceil((await stat(iso)).size / MiB) * MiB;
      await e.api.volumeCreate({ name, size, template, tags: { virt: 'one', nvm: String(vmId), type: 'context' } });
      const here = clientIdOf(e, 'localhost');
      await attach(e, name, here, 'rw');
      try {
        await runLocal('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', iso, devicePath(e, name)]);
      } finally {
        await detach(e, name, here, true);
      }
      await attach(e, name, clientIdOf(e, host), 'ro');
      await linkDisk(e, host, path, name);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    return '';
  },

  /** snap_create host:remote_system_ds/disk.i snapid vmid dsid */
  async snap_create(e, args) {
    need(args, 2, 'snap_create host:remote_system_ds/disk.i snapid vmid dsid');
    const { volume } = await diskVolume(e, args[0]!);
    const snapId = int(args[1], 'snapid');
    await e.api.volumeSnapshot(volume, { name: names.snapshot(volume, snapId), tags: { virt: 'one', ...(args[2] !== undefined ? { nvm: args[2] } : {}) } });
    return '';
  },

  /**
   * snap_create_live — the same for a running VM (oned runs it when LIVE_DISK_SNAPSHOTS in
   * vmm_execrc lists kvm-storpool): a storpool snapshot is crash-consistent as it is.
   */
  async snap_create_live(e, args, stdin) {
    return tmActions['snap_create']!(e, args, stdin);
  },

  async snap_delete(e, args) {
    need(args, 2, 'snap_delete host:remote_system_ds/disk.i snapid vmid dsid');
    const { volume } = await diskVolume(e, args[0]!);
    await e.api.snapshotDelete(names.snapshot(volume, int(args[1], 'snapid')));
    return '';
  },

  async snap_revert(e, args) {
    need(args, 2, 'snap_revert host:remote_system_ds/disk.i snapid vmid dsid');
    const { volume } = await diskVolume(e, args[0]!);
    await revertVolume(e, volume, names.snapshot(volume, int(args[1], 'snapid')));
    return '';
  },

  /** premigrate src_host dst_host remote_system_dir vmid dsid [template] — attach on the destination too. */
  async premigrate(e, args) {
    need(args, 3, 'premigrate src_host dst_host remote_system_dir vmid dsid template');
    const [srcHost, dstHost, dir] = args as [string, string, string];
    const disks = await linkedDisks(e, srcHost, dir);
    const to = clientIdOf(e, dstHost);
    for (const [path, volume] of disks) {
      await attach(e, volume, to, modeOf(volume));
      if (srcHost !== dstHost) await linkDisk(e, dstHost, path, volume);
    }
    return '';
  },

  /** postmigrate src_host dst_host remote_system_dir vmid dsid [template] — the source lets go. */
  async postmigrate(e, args) {
    need(args, 3, 'postmigrate src_host dst_host remote_system_dir vmid dsid template');
    const [srcHost, dstHost, dir] = args as [string, string, string];
    const from = clientIdOf(e, srcHost);
    if (from === clientIdOf(e, dstHost)) return '';
    const shared = await sharedDir(e, srcHost, dstHost, dir);
    for (const [path, volume] of await linkedDisks(e, srcHost, dir)) {
      await detach(e, volume, from, true);
      if (!shared) await unlink(e, srcHost, path);
    }
    return '';
  },

  /** failmigrate src_host dst_host remote_system_dir vmid dsid [template] — undo premigrate. */
  async failmigrate(e, args) {
    need(args, 3, 'failmigrate src_host dst_host remote_system_dir vmid dsid template');
    const [srcHost, dstHost, dir] = args as [string, string, string];
    const to = clientIdOf(e, dstHost);
    if (to === clientIdOf(e, srcHost)) return '';
    const shared = await sharedDir(e, srcHost, dstHost, dir);
    for (const [path, volume] of await linkedDisks(e, srcHost, dir)) {
      await detach(e, volume, to, true);
      if (!shared) await unlink(e, dstHost, path);
    }
    return '';
  },

  /**
   * monitor dsid (document on stdin; older releases: monitor <document> dsid) — system datastore:
   * usage, then per VM the sizes of its disks and their snapshots
   * (`VM = [ ID = n, MONITOR = "<base64 of DISK_SIZE=[ID=d,SIZE=mb] ... SNAPSHOT_SIZE=[ID=s,DISK_ID=d,SIZE=mb] ...>" ]`:
   * clones and volatile disks by their names, persistent disks by the nvm/ndisk tags ln set),
   * unless oned says this round is not a VM-disk round (<MONITOR_VM_DISKS>0</MONITOR_VM_DISKS>).
   */
  async monitor(e, args, stdin) {
    const numeric = args.length > 0 && /^\d+$/.test(args[0]!);
    const data = !numeric && args[0] !== undefined ? args[0] : await stdin();
    const doc = parseDocument(data, 'DS_DRIVER_ACTION_DATA');
    const ds = doc['DATASTORE'];
    const dsNode = typeof ds === 'object' && !Array.isArray(ds) ? ds : undefined;
    const dsId = intField(dsNode, 'ID');
    const lines = [await datastoreUsage(e, dsId, dsNode)];
    if (text(doc, 'MONITOR_VM_DISKS') === '0') return lines.join('\n');
    const re = new RegExp(`^${e.prefix}-sys-(\\d+)-(\\d+)$`);
    const snapsOf = new Map<string, { id: number; size: number }[]>();
    for (const sn of await e.api.snapshotsList()) {
      const m = /^(.*)-snap(\d+)$/.exec(sn.name);
      if (m !== null) snapsOf.set(m[1]!, [...(snapsOf.get(m[1]!) ?? []), { id: Number(m[2]), size: sn.size }]);
    }
    const perVm = new Map<number, string[]>();
    for (const v of await e.api.volumesList()) {
      if (v.tags?.['virt'] !== 'one') continue;
      const m = re.exec(v.name);
      const vmTag = v.tags['nvm'] ?? '';
      const diskTag = v.tags['ndisk'] ?? '';
      const [vmId, diskId] = m !== null ? [m[1]!, m[2]!] : /^\d+$/.test(vmTag) && /^\d+$/.test(diskTag) ? [vmTag, diskTag] : [undefined, undefined];
      if (vmId === undefined) continue;
      const vm = Number(vmId);
      const items = [`DISK_SIZE=[ID=${diskId},SIZE=${Math.ceil(v.size / MiB)}]`];
      for (const sn of (snapsOf.get(v.name) ?? []).sort((a, b) => a.id - b.id)) items.push(`SNAPSHOT_SIZE=[ID=${sn.id},DISK_ID=${diskId},SIZE=${Math.ceil(sn.size / MiB)}]`);
      perVm.set(vm, [...(perVm.get(vm) ?? []), ...items]);
    }
    for (const [vm, disks] of [...perVm].sort((a, b) => a[0] - b[0])) {
      lines.push(`VM = [ ID = ${vm}, MONITOR = "${Buffer.from(disks.join('\n')).toString('base64')}" ]`);
    }
    return lines.join('\n');
  },
};
