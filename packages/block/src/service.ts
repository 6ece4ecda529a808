/**
 * storpool-block as a library: one per client host (SP_OURID). It registers the client, polls the
 * management API for what is attached here (`ClientAttachments/<id>`, with data identities), and
 * makes the host match it:
 *
 * - every attachment is an NBD export on the shared TCP listener (export name = volume name) and
 *   on its own unix socket `<runtimeDir>/nbd/<name>.sock` (whose default export is the volume);
 * - a block device (kernel nbd, or nbdfuse + loop) linked as `<devRoot>/storpool/<name>` and
 *   `<devRoot>/storpool-byid/<globalId>`;
 * - snapshots and read-only attachments are exported read-only; nothing else is exported;
 * - a new data identity (after a snapshot or revert) is switched to for new requests, and the
 *   switch is confirmed only when requests on the old identity have finished.
 *
 * After applying a configuration it reports (`ClientStatus/<id>`) the generation applied, the
 * devices that are open (mounted or opened: mgmt refuses to detach them without force) and the
 * attachments it could not apply; VolumesReassignWait waits for that report.
 */
import { lstat, mkdir, readdir, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StorpoolApi } from '@storpool/api-client';
import { StorpoolClient, type ShardMapSource } from '@storpool/client';
import { NbdServer, NBD_PORT_DEFAULT, type NbdExport } from '@storpool/nbd';
import { pino, type Logger } from 'pino';
import { createDevice, detectMethod, openDevices, sweepStale, type AttachMethod, type Device } from './devices.js';
import { SwitchableVolume } from './export.js';

export const POLL_INTERVAL_MS = 200;
export const OPEN_CHECK_INTERVAL_MS = 500;
/** A report is sent at least this often (mgmt considers a client gone after 10 s of silence). */
export const HEARTBEAT_MS = 2_000;
/** An attachment that keeps failing this long is reported as failed (before: retried silently). */
export const FAILURE_GRACE_MS = 3_000;

export interface BlockServiceOptions {
  clientId: number;
  api: StorpoolApi;
  mapSource: ShardMapSource;
  /** TCP listener for NBD; default 127.0.0.1:10809. `port: 0` picks a free port; `false` disables TCP. */
  nbd?: { host?: string; port?: number } | false;
  /** Unix sockets and nbdfuse mounts live here; default /run/storpool. */
  runtimeDir?: string;
  /** Device links go under `<devRoot>/storpool` and `<devRoot>/storpool-byid`; default /dev. */
  devRoot?: string;
  attachMethod?: AttachMethod | 'auto';
  pollIntervalMs?: number;
  /**
   * How long one I/O keeps retrying while the cluster cannot serve it (disks down, a shard below
   * its minimum copies) before the device gets an error; default Infinity: it waits, as a local
   * disk under a slow controller would, rather than hand the file system an I/O error.
   */
  ioTimeoutMs?: number;
  log?: Logger;
}

/** One element of `ClientAttachments/<id>` (mgmt). */
export interface AttachmentView {
  globalId: string;
  name: string;
  snapshot: boolean;
  rights: 'rw' | 'ro';
  pos: number;
  size: number;
  dataId: number;
  placementId: number;
  parents: number[];
  group: number;
}

interface Attached {
  view: AttachmentView;
  readOnly: boolean;
  volume: SwitchableVolume;
  tcpExport: NbdExport | undefined;
  unix: NbdServer;
  socketPath: string;
  device: Device | undefined;
  links: string[];
}

export interface BlockService {
  readonly clientId: number;
  readonly method: AttachMethod;
  /** Where the TCP listener is (undefined when disabled). */
  readonly nbdAddress: { host: string; port: number } | undefined;
  readonly runtimeDir: string;
  readonly devRoot: string;
  /** Attachments currently served, by globalId. */
  attachments(): Map<string, { name: string; readOnly: boolean; device: string | undefined; socketPath: string }>;
  /** Runs one poll/apply/report pass now. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

const identityOf = (v: AttachmentView): string => `${v.dataId}/${v.placementId}/${v.parents.join('.')}/${v.group}`;

export async function startBlockService(o: BlockServiceOptions): Promise<BlockService> {
  const log = o.log ?? pino({ name: 'storpool-block', level: 'silent' });
  const runtimeDir = o.runtimeDir ?? '/run/storpool';
  const devRoot = o.devRoot ?? '/dev';
  const socketDir = join(runtimeDir, 'nbd');
  const nameDir = join(devRoot, 'storpool');
  const idDir = join(devRoot, 'storpool-byid');
  const api = o.api;
  const id = o.clientId;
  await Promise.all([socketDir, join(runtimeDir, 'fuse'), nameDir, idDir].map((d) => mkdir(d, { recursive: true })));
  const method = await detectMethod(o.attachMethod ?? 'auto', log);
  log.info({ method, clientId: id, runtimeDir, devRoot }, 'attach method');
  await sweepStale(runtimeDir, log);
  for (const dir of [nameDir, idDir]) {
    for (const entry of await readdir(dir)) {
      const p = join(dir, entry);
      if ((await lstat(p)).isSymbolicLink()) await unlink(p);
    }
  }
  await api.request('POST', 'ClientRegister', [String(id)]);
  const client = await StorpoolClient.connect({ mapSource: o.mapSource, clientId: id, log: log.child({ component: 'client' }), retryDeadlineMs: o.ioTimeoutMs ?? Infinity });
  const tcp = new NbdServer({ log: log.child({ component: 'nbd' }) });
  let nbdAddress: { host: string; port: number } | undefined;
  if (o.nbd !== false) nbdAddress = await tcp.listenTcp({ host: o.nbd?.host ?? '127.0.0.1', port: o.nbd?.port ?? NBD_PORT_DEFAULT });

  const attached = new Map<string, Attached>();
  const failingSince = new Map<string, number>();
  const errors = new Map<string, string>();
  let open = new Set<string>();
  let reported: { generation: number; open: string; errors: string; at: number } | undefined;
  let lastOpenCheck = 0;
  let stopping = false;

  const makeVolume = async (v: AttachmentView, readOnly: boolean): Promise<ReturnType<StorpoolClient['volume']>> => {
    // A volume of a new shard group (a replication or placement no volume used before): the map we hold predates it.
    if (client.router.group(v.group) === undefined) await client.refreshMap();
    return client.volume({ volumeId: v.dataId, placementId: v.placementId, parents: v.parents, sizeBytes: v.size, group: v.group, readOnly });
  };

  async function link(target: string, path: string): Promise<void> {
    const tmp = `${path}.tmp-${process.pid}`;
    await rm(tmp, { force: true });
    await symlink(target, tmp);
    await rename(tmp, path);
  }

  async function linksFor(v: AttachmentView, device: Device | undefined): Promise<string[]> {
    if (device === undefined) return [];
    const links = [join(idDir, v.globalId)];
    if (!v.name.startsWith('~')) links.push(join(nameDir, v.name));
    for (const l of links) await link(device.path, l);
    return links;
  }

  async function add(v: AttachmentView): Promise<void> {
    const readOnly = v.snapshot || v.rights === 'ro';
    const volume = new SwitchableVolume(await makeVolume(v, readOnly), v.name, readOnly);
    const socketPath = join(socketDir, `${v.name}.sock`);
    const unix = new NbdServer({ log: log.child({ component: 'nbd', export: v.name }), exports: [volume.export(v.name, v.size, readOnly)], defaultExportName: v.name });
    const a: Attached = { view: v, readOnly, volume, tcpExport: undefined, unix, socketPath, device: undefined, links: [] };
    try {
      await unix.listenUnix(socketPath);
      if (o.nbd !== false) {
        a.tcpExport = volume.export(v.name, v.size, readOnly);
        tcp.addExport(a.tcpExport);
      }
      if (method !== 'none') a.device = await createDevice(method, runtimeDir, { pos: v.pos, socketPath, exportName: v.name, readOnly }, log);
      a.links = await linksFor(v, a.device);
    } catch (err) {
      await teardown(a);
      throw err;
    }
    attached.set(v.globalId, a);
    log.info({ name: v.name, globalId: v.globalId, readOnly, device: a.device?.path, socket: socketPath }, 'attached');
  }

  async function teardown(a: Attached): Promise<void> {
    for (const l of a.links) await rm(l, { force: true });
    a.links = [];
    if (a.tcpExport !== undefined && tcp.get(a.view.name) === a.tcpExport) tcp.removeExport(a.view.name);
    const { released } = a.device === undefined ? {} : await a.device.remove();
    // The device's own NBD connection (nbdfuse) goes through the unix socket: keep it until released.
    if (released === undefined) await a.unix.close();
    else void released.then(() => a.unix.close()).catch((err: unknown) => log.error({ err, name: a.view.name }, 'closing the export failed'));
  }

  async function remove(a: Attached): Promise<void> {
    attached.delete(a.view.globalId);
    await teardown(a);
    log.info({ name: a.view.name, globalId: a.view.globalId }, 'detached');
  }

  async function update(a: Attached, v: AttachmentView): Promise<void> {
    const old = a.view;
    if (identityOf(old) !== identityOf(v) || old.size !== v.size) {
      await a.volume.switchTo(await makeVolume(v, a.readOnly), v.name, a.readOnly);
      log.info({ name: v.name, dataId: v.dataId, previous: old.dataId, size: v.size }, 'switched to the new data identity');
    }
    if (old.name !== v.name || old.size !== v.size) {
      // Export objects carry name and size: replace them (open connections keep the old ones).
      if (a.tcpExport !== undefined) {
        if (tcp.get(old.name) === a.tcpExport) tcp.removeExport(old.name);
        a.tcpExport = a.volume.export(v.name, v.size, a.readOnly);
        tcp.addExport(a.tcpExport);
      }
      a.unix.removeExport(old.name);
      a.unix.addExport(a.volume.export(v.name, v.size, a.readOnly));
      if (old.name !== v.name) {
        const socketPath = join(socketDir, `${v.name}.sock`);
        await rename(a.socketPath, socketPath).catch(() => undefined);
        a.socketPath = socketPath;
        for (const l of a.links) await rm(l, { force: true });
        a.links = await linksFor(v, a.device);
      }
    }
    a.view = v;
  }

  async function apply(views: AttachmentView[]): Promise<void> {
    const wanted = new Map(views.map((v) => [v.globalId, v]));
    for (const a of [...attached.values()]) {
      const v = wanted.get(a.view.globalId);
      const readOnly = v !== undefined && (v.snapshot || v.rights === 'ro');
      if (v === undefined || readOnly !== a.readOnly) await remove(a);
    }
    for (const v of views) {
      try {
        const a = attached.get(v.globalId);
        if (a === undefined) await add(v);
        else await update(a, v);
        failingSince.delete(v.globalId);
        errors.delete(v.globalId);
      } catch (err) {
        const message = (err as Error).message;
        if (errors.get(v.globalId) !== message) log.error({ name: v.name, globalId: v.globalId, err: message }, 'cannot attach');
        errors.set(v.globalId, message);
        if (!failingSince.has(v.globalId)) failingSince.set(v.globalId, Date.now());
      }
    }
    for (const gid of [...errors.keys()]) if (!wanted.has(gid)) { errors.delete(gid); failingSince.delete(gid); }
  }

  async function checkOpen(): Promise<void> {
    const byDevice = new Map([...attached.values()].filter((a) => a.device !== undefined).map((a) => [a.device!.path, a.view.globalId]));
    const now = await openDevices([...byDevice.keys()]);
    open = new Set([...now].map((d) => byDevice.get(d)!));
    lastOpenCheck = Date.now();
  }

  async function report(generation: number): Promise<void> {
    const openList = [...open].sort();
    const errs = Object.fromEntries(errors);
    const text = { open: JSON.stringify(openList), errors: JSON.stringify(errs) };
    const due = reported === undefined || reported.generation !== generation || reported.open !== text.open || reported.errors !== text.errors || Date.now() - reported.at >= HEARTBEAT_MS;
    if (!due) return;
    await api.request('POST', 'ClientStatus', [String(id)], { generation, open: openList, errors: errs });
    reported = { generation, ...text, at: Date.now() };
  }

  let passing: Promise<void> | undefined;
  async function pass(): Promise<void> {
    const reply = await api.request<{ generation: number; attachments: AttachmentView[] }>('GET', 'ClientAttachments', [String(id)]);
    const { generation, attachments } = reply.data;
    await apply(attachments);
    if (Date.now() - lastOpenCheck >= OPEN_CHECK_INTERVAL_MS) await checkOpen();
    // A failure younger than the grace period may be transient (e.g. the shard map file is being
    // republished): retry before confirming this generation.
    const young = [...failingSince.values()].some((t) => Date.now() - t < FAILURE_GRACE_MS);
    if (young) return;
    await report(generation);
  }
  const sync = (): Promise<void> => {
    passing ??= pass().finally(() => { passing = undefined; });
    return passing;
  };

  const loop = (async () => {
    let lastError = '';
    while (!stopping) {
      try {
        await sync();
        lastError = '';
      } catch (err) {
        const message = (err as Error).message;
        if (message !== lastError) log.warn({ err: message }, 'poll failed; retrying');
        lastError = message;
      }
      await sleep(o.pollIntervalMs ?? POLL_INTERVAL_MS);
    }
  })();

  return {
    clientId: id, method, nbdAddress, runtimeDir, devRoot,
    attachments: () => new Map([...attached].map(([gid, a]) => [gid, { name: a.view.name, readOnly: a.readOnly, device: a.device?.path, socketPath: a.socketPath }])),
    sync,
    async close() {
      if (stopping) return;
      stopping = true;
      await loop;
      await passing?.catch(() => undefined);
      for (const a of [...attached.values()]) await remove(a).catch((err: unknown) => log.error({ err, name: a.view.name }, 'detach on shutdown failed'));
      await tcp.close();
      client.close();
      log.info('block service stopped');
    },
  };
}
