/**
 * The volume driver behind the Docker plugin protocol: one storpool volume per Docker volume (same
 * name), attached to this host's client id through the management API on the first mount, with a
 * file system made on first use and mounted under `<root>/<name>`. Mounts are reference-counted per
 * Docker mount ID (`docker run -v` mounts twice: once to copy image content, once for the
 * container); the last Unmount unmounts and detaches. The mount IDs are kept in
 * `<root>/.mounts.json` so that a restart of the plugin keeps the counts (Docker does not replay
 * Mounts after a plugin restart).
 */
import { mkdir, readFile, rename, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolApiError, type StorpoolApi, type VolumeSummary } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import type { Logger } from 'pino';
import { isMounted, makeFilesystem, mountDevice, probeFilesystem, unmount, waitForDevice } from './host.js';
import { FILESYSTEMS, FS_TAG, checkVolumeName, planCreate, type CreateDefaults, type Filesystem } from './options.js';

/** Seconds VolumesReassignWait waits for this host's block service when it is not connected. */
export const ATTACH_TIMEOUT_S = 30;
/** How long a detach refused because the device is still open (stale open state) is retried. */
export const DETACH_BUSY_RETRY_MS = 15_000;
const DETACH_RETRY_DELAY_MS = 250;
const STATE_FILE = '.mounts.json';

export interface DriverOptions {
  api: StorpoolApi;
  /** This host's SP_OURID: the block service of this id makes the devices. */
  clientId: number;
  /** Mount points are `<root>/<name>` (default /var/lib/storpool/docker). */
  root: string;
  /** Where the block service makes `storpool/<name>` (default /dev). */
  devRoot: string;
  defaults: CreateDefaults;
  log: Logger;
}

export interface DockerVolume { Name: string; Mountpoint?: string; CreatedAt?: string; Status?: Record<string, unknown> }

export class DockerVolumeDriver {
  readonly #o: DriverOptions;
  /** name → mount IDs holding it mounted here. */
  readonly #mounts = new Map<string, Set<string>>();
  /** Per-name operation chain: Mount/Unmount/Remove of one volume never interleave. */
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(options: DriverOptions) {
    this.#o = options;
  }

  /** Loads the persisted mount IDs, keeping only volumes still mounted. */
  async init(): Promise<void> {
    await mkdir(this.#o.root, { recursive: true });
    const text = await readFile(join(this.#o.root, STATE_FILE), 'utf8').catch(() => '{}');
    let saved: Record<string, string[]> = {};
    try { saved = JSON.parse(text) as Record<string, string[]>; } catch { this.#o.log.warn('ignoring an unreadable mount state file'); }
    for (const [name, ids] of Object.entries(saved)) {
      if (Array.isArray(ids) && ids.length > 0 && await isMounted(this.mountpoint(name))) this.#mounts.set(name, new Set(ids));
    }
    this.#o.log.info({ mounted: [...this.#mounts.keys()] }, 'mount state loaded');
  }

  mountpoint(name: string): string {
    return join(this.#o.root, name);
  }

  device(name: string): string {
    return join(this.#o.devRoot, 'storpool', name);
  }

  /** Mount IDs of a volume on this host (for tests and logs). */
  mountIds(name: string): string[] {
    return [...(this.#mounts.get(name) ?? [])];
  }

  activate(): { Implements: string[] } {
    return { Implements: ['VolumeDriver'] };
  }

  /** `global`: every host sees the same volumes, so Docker does not keep its own per-host list. */
  capabilities(): { Capabilities: { Scope: 'global' } } {
    return { Capabilities: { Scope: 'global' } };
  }

  async create(name: string, opts: Record<string, unknown> | null | undefined): Promise<void> {
    const plan = planCreate(name, opts, this.#o.defaults);
    try {
      await this.#o.api.volumeCreate(plan.request);
      this.#o.log.info({ name, request: plan.request }, 'volume created');
    } catch (err) {
      // Scope global: a volume made on another host may be "created" again here; without
      // options that is the same volume, with options it is a conflict to report.
      if (err instanceof StorpoolApiError && err.name === 'objectExists' && Object.keys(opts ?? {}).length === 0) return;
      throw err;
    }
  }

  async get(name: string): Promise<{ Volume: DockerVolume }> {
    checkVolumeName(name);
    const v = await this.#describe(name);
    const mounted = this.#mounts.has(name);
    return {
      Volume: {
        Name: name,
        Mountpoint: mounted ? this.mountpoint(name) : '',
        CreatedAt: new Date(v.creationTimestamp * 1000).toISOString(),
        Status: {
          size: v.size, template: v.templateName, replication: v.replication, globalId: v.globalId,
          parent: v.parentName, fs: v.tags?.[FS_TAG] ?? this.#o.defaults.fs, mountedHere: this.mountIds(name).length,
        },
      },
    };
  }

  async list(): Promise<{ Volumes: DockerVolume[] }> {
    const all = await this.#o.api.volumesList();
    const volumes = all
      .filter((v) => v.tags?.[FS_TAG] !== undefined || this.#mounts.has(v.name))
      .map((v) => ({ Name: v.name, Mountpoint: this.#mounts.has(v.name) ? this.mountpoint(v.name) : '' }));
    return { Volumes: volumes };
  }

  async path(name: string): Promise<{ Mountpoint: string }> {
    checkVolumeName(name);
    if (this.#mounts.has(name)) return { Mountpoint: this.mountpoint(name) };
    await this.#describe(name);
    return { Mountpoint: '' };
  }

  mount(name: string, id: string): Promise<{ Mountpoint: string }> {
    checkVolumeName(name);
    return this.#locked(name, async () => {
      const ids = this.#mounts.get(name);
      if (ids !== undefined) {
        ids.add(id);
        await this.#save();
        this.#o.log.info({ name, id, count: ids.size }, 'mount (already mounted)');
        return { Mountpoint: this.mountpoint(name) };
      }
      const v = await this.#describe(name);
      await this.#refuseForeignRw(name);
      const fs = (FILESYSTEMS as readonly string[]).includes(v.tags?.[FS_TAG] ?? '') ? v.tags![FS_TAG] as Filesystem : this.#o.defaults.fs;
      await this.#attach(name);
      try {
        await this.#mountAttached(name, fs);
      } catch (err) {
        await this.#detach(name).catch((e: unknown) => this.#o.log.error({ name, err: e }, 'detach after a failed mount failed'));
        throw err;
      }
      this.#mounts.set(name, new Set([id]));
      await this.#save();
      this.#o.log.info({ name, id }, 'mounted');
      return { Mountpoint: this.mountpoint(name) };
    });
  }

  unmount(name: string, id: string): Promise<void> {
    checkVolumeName(name);
    return this.#locked(name, async () => {
      const ids = this.#mounts.get(name);
      if (ids === undefined || !ids.delete(id)) {
        this.#o.log.warn({ name, id }, 'unmount of an unknown mount id ignored');
        return;
      }
      if (ids.size > 0) {
        await this.#save();
        this.#o.log.info({ name, id, count: ids.size }, 'unmount (still mounted)');
        return;
      }
      const mp = this.mountpoint(name);
      try {
        if (await isMounted(mp)) await unmount(mp);
      } catch (err) {
        ids.add(id);
        throw err;
      }
      this.#mounts.delete(name);
      await this.#save();
      await rmdir(mp).catch(() => undefined);
      await this.#detach(name);
      this.#o.log.info({ name, id }, 'unmounted and detached');
    });
  }

  remove(name: string): Promise<void> {
    checkVolumeName(name);
    return this.#locked(name, async () => {
      const ids = this.#mounts.get(name);
      if (ids !== undefined && ids.size > 0) {
        throw new StorpoolError('DOCKER_ERR_IN_USE', `volume '${name}' is in use: mounted on this host by ${ids.size} container mount(s)`);
      }
      await this.#describe(name);
      // Left attached here by an interrupted Unmount: nothing of ours uses it, let it go first.
      const here = (await this.#o.api.attachmentsList()).some((a) => a.volume === name && a.client === this.#o.clientId);
      if (here) await this.#detach(name);
      await this.#o.api.volumeDelete(name);
      this.#o.log.info({ name }, 'volume deleted');
    });
  }

  async #describe(name: string): Promise<VolumeSummary> {
    try {
      const found = await this.#o.api.volume(name);
      if (found[0] !== undefined) return found[0];
    } catch (err) {
      if (!(err instanceof StorpoolApiError && err.name === 'objectDoesNotExist')) throw err;
    }
    throw new StorpoolApiError({ name: 'objectDoesNotExist', descr: `volume '${name}' does not exist`, transient: false, status: 404, method: 'GET', path: '', body: '' });
  }

  /** A rw attachment elsewhere means another host may have the file system mounted. */
  async #refuseForeignRw(name: string): Promise<void> {
    const other = (await this.#o.api.attachmentsList()).find((a) => a.volume === name && !a.snapshot && a.rights === 'rw' && a.client !== this.#o.clientId);
    if (other !== undefined) throw new StorpoolError('DOCKER_ERR_IN_USE', `volume '${name}' is attached read-write at client ${other.client} (another host); detach it there first`);
  }

  async #attach(name: string): Promise<void> {
    await this.#o.api.volumesReassignWait({ reassign: [{ volume: name, rw: [this.#o.clientId] }], attachTimeout: ATTACH_TIMEOUT_S });
  }

  /**
   * The block service reports a device's open state every ~0.5 s, so right after our umount mgmt
   * may still see it open and answer `busy`: retry that for a while (never with force, which
   * would pull the device from under a real user).
   */
  async #detach(name: string): Promise<void> {
    const deadline = Date.now() + DETACH_BUSY_RETRY_MS;
    for (;;) {
      try {
        await this.#o.api.volumesReassignWait({ reassign: [{ volume: name, detach: [this.#o.clientId] }] });
        return;
      } catch (err) {
        const open = err instanceof StorpoolApiError && err.name === 'busy' && /is open/.test(err.descr);
        if (!open || Date.now() > deadline) throw err;
        await sleep(DETACH_RETRY_DELAY_MS);
      }
    }
  }

  async #mountAttached(name: string, fs: Filesystem): Promise<void> {
    const device = this.device(name);
    await waitForDevice(device);
    const existing = await probeFilesystem(device);
    if (existing === undefined) {
      this.#o.log.info({ name, fs }, 'first mount: making a file system');
      await makeFilesystem(device, fs, name);
    }
    const mp = this.mountpoint(name);
    await mkdir(mp, { recursive: true });
    await mountDevice(device, mp);
  }

  async #save(): Promise<void> {
    const data: Record<string, string[]> = {};
    for (const [name, ids] of this.#mounts) data[name] = [...ids];
    // Write-then-rename: a crash leaves either the old or the new state, never half of one.
    const path = join(this.#o.root, STATE_FILE);
    await writeFile(`${path}.tmp`, JSON.stringify(data));
    await rename(`${path}.tmp`, path);
  }

  #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#locks.set(name, tail);
    void tail.then(() => { if (this.#locks.get(name) === tail) this.#locks.delete(name); });
    return next;
  }
}
