/**
 * DS_MAD actions. Each gets the DS_DRIVER_ACTION_DATA document (IMAGE + DATASTORE) and the image
 * id; an image is the volume <px>-img-<id> (its SOURCE), its snapshots <source>-snap<N>.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { mkdtemp, open, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, MiB, clientIdOf, devicePath, names, runLocal, sourceVolume } from './env.js';
import { attach, attachedTo, deleteVolume, detach, ensureTemplate, mb, ownSnapshots, requireVolume, revertVolume, volumeExists } from './ops.js';
import { intField, text, type XmlNode } from './xml.js';

export interface DsRequest {
  image: XmlNode | undefined;
  datastore: XmlNode | undefined;
}

const localClient = (e: DriverEnv): number => clientIdOf(e, 'localhost');

/** Image file behind IMAGE/PATH: local files as they are, http(s) downloaded to a temp file. */
async function fetchSource(path: string): Promise<{ file: string; cleanup: () => Promise<void> }> {
  if (/^https?:\/\//.test(path)) {
    const res = await fetch(path);
    if (!res.ok) throw new StorpoolError('CONFIG_ERR_INVALID', `cannot download ${path}: HTTP ${res.status}`);
    const dir = await mkdtemp(join(tmpdir(), 'storpool-one-'));
    const file = join(dir, 'image');
    try {
      if (res.body === null) throw new StorpoolError('CONFIG_ERR_INVALID', `cannot download ${path}: empty reply`);
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(file));
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return { file, cleanup: () => rm(dir, { recursive: true, force: true }) };
  }
  if (!existsSync(path)) throw new StorpoolError('CONFIG_ERR_INVALID', `image file ${path} does not exist`);
  return { file: path, cleanup: async () => {} };
}

/** Compressed image files that OpenNebula's downloader.sh unpacks: magic bytes -> tool. */
const COMPRESSORS: { magic: Buffer; tool: string }[] = [
  { magic: Buffer.from([0x1f, 0x8b]), tool: 'gzip' },
  { magic: Buffer.from('BZh'), tool: 'bzip2' },
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), tool: 'xz' },
];

/**
 * The image itself: a gzip/bzip2/xz file is unpacked to a temporary file first, as OpenNebula's
 * downloader does unless the datastore says NO_DECOMPRESS=yes.
 */
async function decompressed(file: string, ds: XmlNode | undefined): Promise<{ file: string; cleanup: () => Promise<void> }> {
  if (/^yes$/i.test(text(ds, 'TEMPLATE/NO_DECOMPRESS'))) return { file, cleanup: async () => {} };
  const head = Buffer.alloc(6);
  const fh = await open(file, 'r');
  try {
    await fh.read(head, 0, head.length, 0);
  } finally {
    await fh.close();
  }
  const c = COMPRESSORS.find((x) => head.subarray(0, x.magic.length).equals(x.magic));
  if (c === undefined) return { file, cleanup: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), 'storpool-one-unpack-'));
  const out = join(dir, 'image');
  try {
    await runLocal('sh', ['-c', `${c.tool} -dc -- "$0" > "$1"`, file, out]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { file: out, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

async function imageInfo(file: string): Promise<{ size: number; format: string }> {
  const info = JSON.parse(await runLocal('qemu-img', ['info', '--output=json', file])) as { 'virtual-size': number; format: string; 'backing-filename'?: string };
  // A user's image must not pull in another file of this host through its backing chain.
  if (info['backing-filename'] !== undefined) throw new StorpoolError('CONFIG_ERR_INVALID', `image ${file} has a backing file (${info['backing-filename']}); register a self-contained image`);
  return { size: info['virtual-size'], format: info.format };
}

/** Writes an image file (raw or qcow2...) into a volume through a device attached here. */
async function writeImage(e: DriverEnv, volume: string, file: string, format: string): Promise<void> {
  const client = localClient(e);
  await attach(e, volume, client, 'rw');
  try {
    await runLocal('qemu-img', ['convert', '-n', '-f', format, '-O', 'raw', file, devicePath(e, volume)]);
  } finally {
    await detach(e, volume, client, true);
  }
}

function dsIds(r: DsRequest): { imageId: number; dsId: number } {
  return { imageId: intField(r.image, 'ID'), dsId: intField(r.datastore, 'ID') };
}

function imageSource(r: DsRequest): string {
  const s = text(r.image, 'SOURCE');
  if (s === '') throw new StorpoolError('CONFIG_ERR_INVALID', 'driver action data: IMAGE/SOURCE is missing');
  return sourceVolume(s);
}

function snapshotId(r: DsRequest): number {
  return intField(r.image, 'TARGET_SNAPSHOT');
}

/**
 * The datastore's RESTRICTED_DIRS / SAFE_DIRS (blank-separated directories), as OpenNebula's
 * drivers check them (libfs.sh check_restricted): a local file under a restricted directory may
 * only be registered when it is also under a safe one; the real path counts, not a symlink's.
 */
async function checkRestricted(path: string, ds: XmlNode | undefined): Promise<void> {
  if (/^https?:\/\//.test(path)) return;
  const list = (k: string): string[] => text(ds, `TEMPLATE/${k}`).split(/\s+/).filter(Boolean);
  const restricted = list('RESTRICTED_DIRS');
  if (restricted.length === 0) return;
  const real = await realpath(path).catch(() => path);
  const under = (dir: string): boolean => {
    const d = dir.replace(/\/+$/, '');
    return d === '' || real === d || real.startsWith(`${d}/`);
  };
  if (list('SAFE_DIRS').some(under)) return;
  if (restricted.some(under)) throw new StorpoolError('CONFIG_ERR_INVALID', `Not allowed to copy image file ${path} (under RESTRICTED_DIRS of the datastore)`);
}

const imageTags = (r: DsRequest): Record<string, string> => ({ virt: 'one', type: 'image', nimg: text(r.image, 'ID') });

export const dsActions: Record<string, (e: DriverEnv, r: DsRequest) => Promise<string>> = {
  /** Registers an image: a new volume with the file's data (gzip/bzip2/xz unpacked). Prints "<source> raw". */
  async cp(e, r) {
    const { imageId, dsId } = dsIds(r);
    const path = text(r.image, 'PATH');
    if (path === '') throw new StorpoolError('CONFIG_ERR_INVALID', 'driver action data: IMAGE/PATH is missing');
    const name = names.image(e, imageId);
    const template = names.template(e, dsId);
    await checkRestricted(path, r.datastore);
    await ensureTemplate(e, template, r.datastore);
    const src = await fetchSource(path);
    let unpacked: { file: string; cleanup: () => Promise<void> } | undefined;
    try {
      unpacked = await decompressed(src.file, r.datastore);
      const file = unpacked.file;
      const info = await imageInfo(file);
      if (await volumeExists(e, name)) throw new StorpoolError('CONFIG_ERR_INVALID', `volume ${name} already exists`);
      await e.api.volumeCreate({ name, size: mb(info.size) * MiB, template, tags: imageTags(r) });
      try {
        await writeImage(e, name, file, info.format);
      } catch (err) {
        await deleteVolume(e, name).catch(() => {});
        throw err;
      }
    } finally {
      await unpacked?.cleanup();
      await src.cleanup();
    }
    return `${name} raw`;
  },

  /**
   * A new empty datablock of IMAGE/SIZE MB, with a file system when IMAGE/FS (or FSTYPE) names
   * one. Prints the source only. For a disk save-as (IMAGE/FORMAT, or FSTYPE in older releases,
   * is `save_as`) nothing is created: the source is printed and TM cpds makes the volume.
   */
  async mkfs(e, r) {
    const { imageId, dsId } = dsIds(r);
    const name = names.image(e, imageId);
    if (text(r.image, 'FORMAT') === 'save_as' || text(r.image, 'FSTYPE') === 'save_as') return name;
    const size = intField(r.image, 'SIZE');
    const fs = text(r.image, 'FS') || text(r.image, 'FSTYPE');
    const template = names.template(e, dsId);
    await ensureTemplate(e, template, r.datastore);
    if (await volumeExists(e, name)) throw new StorpoolError('CONFIG_ERR_INVALID', `volume ${name} already exists`);
    await e.api.volumeCreate({ name, size: size * MiB, template, tags: imageTags(r) });
    if (fs !== '' && fs !== 'raw' && fs !== 'save_as') {
      const client = localClient(e);
      try {
        await attach(e, name, client, 'rw');
        try {
          await runLocal(`mkfs.${fs}`, fs.startsWith('ext') ? ['-F', '-q', devicePath(e, name)] : [devicePath(e, name)]);
        } finally {
          await detach(e, name, client, true);
        }
      } catch (err) {
        await deleteVolume(e, name).catch(() => {});
        throw err;
      }
    }
    return name;
  },

  /** Deletes the image's volume and its snapshots. */
  async rm(e, r) {
    const name = imageSource(r);
    await requireVolume(e, name, 'image');
    await deleteVolume(e, name);
    return '';
  },

  /** Size in MB of the file to register (IMAGE/PATH), or of an existing image. */
  async stat(e, r) {
    const path = text(r.image, 'PATH');
    if (path === '') {
      const name = imageSource(r);
      await requireVolume(e, name, 'image');
      return String(mb((await e.api.volumeDescribe(name)).size));
    }
    if (/^https?:\/\//.test(path)) {
      const res = await fetch(path, { method: 'HEAD' });
      const len = Number(res.headers.get('content-length') ?? NaN);
      if (!res.ok || !Number.isFinite(len)) throw new StorpoolError('CONFIG_ERR_INVALID', `cannot size ${path}: HTTP ${res.status}`);
      return String(mb(len));
    }
    if (!existsSync(path)) throw new StorpoolError('CONFIG_ERR_INVALID', `image file ${path} does not exist`);
    const unpacked = await decompressed(path, r.datastore);
    try {
      return String(mb((await imageInfo(unpacked.file)).size));
    } finally {
      await unpacked.cleanup();
    }
  },

  /** A copy of image CLONING_ID (copy-on-write, baseOn) as this image; prints "<new source> raw". */
  async clone(e, r) {
    const { imageId, dsId } = dsIds(r);
    const from = text(r.image, 'PATH') !== '' ? sourceVolume(text(r.image, 'PATH')) : names.image(e, intField(r.image, 'CLONING_ID'));
    await requireVolume(e, from, 'image');
    const name = names.image(e, imageId);
    const template = names.template(e, dsId);
    await ensureTemplate(e, template, r.datastore);
    await e.api.volumeCreate({ name, baseOn: from, template, tags: imageTags(r) });
    const want = Number(text(r.image, 'SIZE') || 0) * MiB;
    if (want > (await e.api.volumeDescribe(name)).size) await e.api.volumeUpdate(name, { size: want });
    return `${name} raw`;
  },

  /** USED_MB / TOTAL_MB / FREE_MB of the datastore's template. */
  async monitor(e, r) {
    const dsId = intField(r.datastore, 'ID');
    return datastoreUsage(e, dsId, r.datastore);
  },

  async snap_delete(e, r) {
    const snap = names.snapshot(imageSource(r), snapshotId(r));
    if ((await attachedTo(e, snap)).length > 0) await detach(e, snap, 'all', true, true);
    await e.api.snapshotDelete(snap);
    return '';
  },

  async snap_revert(e, r) {
    const name = imageSource(r);
    await requireVolume(e, name, 'image');
    await revertVolume(e, name, names.snapshot(name, snapshotId(r)));
    return '';
  },

  /** The image becomes the snapshot's data; every snapshot of it is dropped. */
  async snap_flatten(e, r) {
    const name = imageSource(r);
    await requireVolume(e, name, 'image');
    await revertVolume(e, name, names.snapshot(name, snapshotId(r)));
    for (const snap of await ownSnapshots(e, name)) await e.api.snapshotDelete(snap);
    return '';
  },

  /**
   * For the marketplace: a snapshot of the image attached read-only here; IMPORT_SOURCE is its
   * device, DISPOSE_CMD detaches and deletes it.
   */
  async export(e, r) {
    const name = imageSource(r);
    await requireVolume(e, name, 'image');
    const snap = `${name}-export${Date.now()}`;
    await e.api.volumeSnapshot(name, { name: snap, tags: { virt: 'one', type: 'export' } });
    await attach(e, snap, localClient(e), 'ro', true);
    const dev = devicePath(e, snap);
    const size = (await e.api.snapshotDescribe(snap)).size;
    const md5 = createHash('md5');
    for await (const chunk of createReadStream(dev)) md5.update(chunk as Buffer);
    return [
      '<IMPORT_INFO>',
      `<IMPORT_SOURCE><![CDATA[${dev}]]></IMPORT_SOURCE>`,
      `<MD5><![CDATA[${md5.digest('hex')}]]></MD5>`,
      `<SIZE><![CDATA[${mb(size)}]]></SIZE>`,
      '<FORMAT><![CDATA[raw]]></FORMAT>',
      '<DISPOSE>YES</DISPOSE>',
      `<DISPOSE_CMD><![CDATA[storpool-one datastore export_dispose ${snap}]]></DISPOSE_CMD>`,
      '</IMPORT_INFO>',
    ].join('');
  },
};

/** DISPOSE_CMD of export: `storpool-one datastore export_dispose <snapshot>`. */
export async function exportDispose(e: DriverEnv, snap: string): Promise<void> {
  if (!/-export\d+$/.test(snap)) throw new StorpoolError('CONFIG_ERR_INVALID', `${snap} is not an export snapshot`);
  if ((await attachedTo(e, snap)).length > 0) await detach(e, snap, 'all', true, true);
  await e.api.snapshotDelete(snap);
}

export async function datastoreUsage(e: DriverEnv, dsId: number, ds: XmlNode | undefined): Promise<string> {
  const template = names.template(e, dsId);
  await ensureTemplate(e, template, ds);
  const st = (await e.api.volumeTemplatesStatus()).find((t) => t.name === template);
  if (st === undefined) throw new StorpoolError('CONFIG_ERR_INVALID', `no status for template ${template}`);
  const total = Math.floor(st.stored.capacity / MiB);
  const free = Math.floor(st.stored.free / MiB);
  return `USED_MB=${total - free}\nTOTAL_MB=${total}\nFREE_MB=${free}`;
}

