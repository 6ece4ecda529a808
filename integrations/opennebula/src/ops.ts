/** Steps shared by the actions: attach/detach, device links on hosts, templates, deletes. */
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { ReassignDesc } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, devicePath, isNotFound, onHost, q, MiB } from './env.js';
import { text, type XmlNode } from './xml.js';

export async function volumeExists(e: DriverEnv, name: string): Promise<boolean> {
  try {
    await e.api.volume(name);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

export async function requireVolume(e: DriverEnv, name: string, what = 'volume'): Promise<void> {
  if (!(await volumeExists(e, name))) throw new StorpoolError('CONFIG_ERR_INVALID', `${what} ${name} does not exist in storpool`);
}

async function reassign(e: DriverEnv, entries: ReassignDesc[]): Promise<void> {
  if (entries.length === 0) return;
  await e.api.volumesReassignWait({ reassign: entries, attachTimeout: e.attachTimeout });
}

export function attach(e: DriverEnv, name: string, client: number, mode: 'rw' | 'ro' = 'rw', snapshot = false): Promise<void> {
  return reassign(e, [snapshot ? { snapshot: name, ro: [client] } : { volume: name, [mode]: [client] }]);
}

export function detach(e: DriverEnv, name: string, client: number | 'all', force = false, snapshot = false): Promise<void> {
  const detachList = client === 'all' ? 'all' : [client];
  return reassign(e, [snapshot ? { snapshot: name, detach: detachList, force } : { volume: name, detach: detachList, force }]);
}

/** Clients a volume or snapshot is attached to. */
export async function attachedTo(e: DriverEnv, name: string): Promise<number[]> {
  return (await e.api.attachmentsList()).filter((a) => a.volume === name).map((a) => a.client);
}

/**
 * Reverts a volume to a snapshot the way StorPool requires it: detached everywhere first (a
 * host must not keep cached pages of the old data), then attached again as it was.
 */
export async function revertVolume(e: DriverEnv, volume: string, snapshot: string): Promise<void> {
  const was = (await e.api.attachmentsList()).filter((a) => a.volume === volume && !a.snapshot);
  if (was.length > 0) await e.api.volumesReassignWait({ reassign: [{ volume, detach: was.map((a) => a.client), force: false }] });
  try {
    await e.api.volumeRevert(volume, { toSnapshot: snapshot });
  } finally {
    const rw = was.filter((a) => a.rights === 'rw').map((a) => a.client);
    const ro = was.filter((a) => a.rights !== 'rw').map((a) => a.client);
    if (was.length > 0) {
      await e.api.volumesReassignWait({ reassign: [{ volume, ...(rw.length > 0 ? { rw } : {}), ...(ro.length > 0 ? { ro } : {}) }], attachTimeout: e.attachTimeout });
    }
  }
}

/** Points a disk path on a host at the volume's device (/dev/storpool/<name>). */
export async function linkDisk(e: DriverEnv, host: string, path: string, name: string): Promise<void> {
  await onHost(e, host, `mkdir -p ${q(dirname(path))} && ln -sfn ${q(devicePath(e, name))} ${q(path)}`);
}

/** The volume behind a disk path on a host (its link target), or undefined when it is no storpool link. */
export async function linkedVolume(e: DriverEnv, host: string, path: string): Promise<string | undefined> {
  const target = (await onHost(e, host, `readlink ${q(path)} || true`)).trim();
  const prefix = `${e.devRoot}/storpool/`;
  return target.startsWith(prefix) ? target.slice(prefix.length) : undefined;
}

/** The storpool disk links in a VM directory on a host: path -> volume. */
export async function linkedDisks(e: DriverEnv, host: string, dir: string): Promise<Map<string, string>> {
  const out = await onHost(e, host, `cd ${q(dir)} 2>/dev/null || exit 0; for f in disk.*; do [ -L "$f" ] && printf '%s %s\\n' "$f" "$(readlink "$f")"; done; true`);
  const prefix = `${e.devRoot}/storpool/`;
  const disks = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [file, target] = line.split(' ');
    if (file !== undefined && target !== undefined && target.startsWith(prefix)) disks.set(`${dir.replace(/\/+$/, '')}/${file}`, target.slice(prefix.length));
  }
  return disks;
}

/**
 * Whether `dir` on host A and on host B is one directory (a shared system datastore, e.g. on
 * NFS): a probe file made on B is looked for on A. Then a link made "on B" is A's too, and must
 * not be removed "from A".
 */
export async function sharedDir(e: DriverEnv, hostA: string, hostB: string, dir: string): Promise<boolean> {
  if (hostA === hostB) return true;
  const probe = `${dir.replace(/\/+$/, '')}/.storpool-probe-${randomBytes(6).toString('hex')}`;
  await onHost(e, hostB, `mkdir -p ${q(dir)} && : > ${q(probe)}`);
  try {
    return (await onHost(e, hostA, `[ -e ${q(probe)} ] && echo shared || true`)).trim() === 'shared';
  } finally {
    await onHost(e, hostB, `rm -f ${q(probe)}`);
  }
}

/** Context ISOs are attached read-only, everything else read-write. */
export function modeOf(volume: string): 'rw' | 'ro' {
  return volume.endsWith('-iso') ? 'ro' : 'rw';
}

export async function unlink(e: DriverEnv, host: string, path: string): Promise<void> {
  await onHost(e, host, `rm -f ${q(path)}`);
}

/** Snapshots named <volume>-snap<N> / -ONESNAP<N> (the ones this driver made for a volume). */
export async function ownSnapshots(e: DriverEnv, volume: string): Promise<string[]> {
  const re = new RegExp(`^${volume.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(snap|ONESNAP)\\d+$`);
  return (await e.api.snapshotsList()).filter((s) => re.test(s.name)).map((s) => s.name);
}

/** Detaches a volume everywhere, deletes its snapshots (detached too), then the volume. */
export async function deleteVolume(e: DriverEnv, name: string): Promise<void> {
  for (const snap of await ownSnapshots(e, name)) {
    if ((await attachedTo(e, snap)).length > 0) await detach(e, snap, 'all', true, true);
    await e.api.snapshotDelete(snap);
  }
  if ((await attachedTo(e, name)).length > 0) await detach(e, name, 'all', true);
  await e.api.volumeDelete(name);
}

/**
 * The datastore's template `<px>-ds-<id>`: created from SP_REPLICATION / SP_PLACEALL /
 * SP_PLACETAIL / SP_PLACEHEAD in the datastore's template when given and missing, as
 * StorPool's addon does; otherwise it must already exist.
 */
export async function ensureTemplate(e: DriverEnv, name: string, ds: XmlNode | undefined): Promise<void> {
  const attr = (k: string): string => text(ds, `TEMPLATE/${k}`);
  const exists = (await e.api.volumeTemplatesList()).some((t) => t.name === name);
  if (exists) return;
  const replication = attr('SP_REPLICATION');
  const placeAll = attr('SP_PLACEALL');
  if (replication === '' || placeAll === '') {
    throw new StorpoolError('CONFIG_ERR_INVALID', `storpool template ${name} does not exist and the datastore template has no SP_REPLICATION/SP_PLACEALL to create it`);
  }
  if (!/^\d+$/.test(replication)) throw new StorpoolError('CONFIG_ERR_INVALID', `SP_REPLICATION must be an integer, got ${JSON.stringify(replication)}`);
  await e.api.volumeTemplateCreate({
    name,
    replication: Number(replication),
    placeAll,
    ...(attr('SP_PLACETAIL') !== '' ? { placeTail: attr('SP_PLACETAIL') } : {}),
    ...(attr('SP_PLACEHEAD') !== '' ? { placeHead: attr('SP_PLACEHEAD') } : {}),
  });
}

export function mb(bytes: number): number {
  return Math.ceil(bytes / MiB);
}
