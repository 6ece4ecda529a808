/**
 * The Cinder model over storpool: volumes, snapshots, attachments and volume types (= templates).
 * Storpool objects carry the names Cinder's own StorPool driver gives them (`<prefix>--volume-<id>`,
 * `<prefix>--snap--none--snapshot-<id>`), so a cluster can move between this shim and a real
 * Cinder; what storpool has no field for lives in RecordStore. Every storpool call is synchronous,
 * so volumes are `available` as soon as the create call returns.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { StorpoolApiError, loadConfig, type StorpoolApi, type IscsiConfigData, type VolumeTemplateDesc, type VolumeSummary } from '@storpool/api-client';
import { CinderError, badRequest, conflict, notFound } from './errors.js';
import { RecordStore, type AttachmentRecord, type Change, type Records, type SnapshotRecord, type VolumeRecord, type VolumeStatus } from './records.js';

const GiB = 1024 ** 3;

export interface CinderServiceOptions {
  api: StorpoolApi;
  /** Key/value bucket of the Cinder records. */
  bucket?: string;
  /** `SP_OPENSTACK_VOLUME_PREFIX`. */
  prefix?: string;
  /** Template used when a volume gives no type. Default: `default` if it exists, else the first. */
  defaultType?: string;
  availabilityZone?: string;
  /** `os-vol-host-attr:host` (`host@backend#pool`). */
  backendHost?: string;
  /** storpool.conf whose `[host]` sections give each connector host's SP_OURID. */
  storpoolConf?: string;
  /** Connectors attached over iSCSI instead of the native block service: host names or IQN patterns; `*` = all. */
  iscsiExportTo?: string[];
  iscsiPortalGroup?: string;
  /** Create iSCSI initiators with a CHAP user and secret (returned in the connection info). */
  iscsiChap?: boolean;
}

export interface RequestContext {
  projectId: string;
  userId: string;
  isAdmin: boolean;
}

export interface Connector {
  host?: string;
  initiator?: string;
  ip?: string;
  [key: string]: unknown;
}

export type ConnectionInfo = { driver_volume_type: string; data: Record<string, unknown> };

const now = (): string => new Date().toISOString().replace('Z', '').padEnd(26, '0');

/** A stable UUID for a template name (volume type ids must be UUIDs). */
export function typeId(template: string): string {
  const h = createHash('sha1').update(`storpool-volume-type:${template}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function mapError(err: unknown): never {
  if (err instanceof StorpoolApiError) {
    const status = { objectDoesNotExist: 404, objectExists: 409, busy: 409, invalidParam: 400, insufficientResources: 413 }[err.name] ?? 500;
    throw new CinderError(status, `storpool: ${err.descr}`);
  }
  throw err;
}

function sp<T>(p: Promise<T>): Promise<T> {
  return p.catch(mapError);
}

export class CinderService {
  readonly api: StorpoolApi;
  readonly store: RecordStore;
  readonly prefix: string;
  readonly availabilityZone: string;
  readonly backendHost: string;
  readonly #o: CinderServiceOptions;

  constructor(o: CinderServiceOptions) {
    this.api = o.api;
    this.#o = o;
    this.store = new RecordStore(o.api, o.bucket ?? 'cinder');
    this.prefix = o.prefix ?? 'os';
    this.availabilityZone = o.availabilityZone ?? 'nova';
    this.backendHost = o.backendHost ?? 'storpool@storpool#storpool';
  }

  async init(): Promise<void> {
    await sp(this.store.init());
  }

  volumeName(id: string): string { return `${this.prefix}--volume-${id}`; }
  snapshotName(id: string): string { return `${this.prefix}--snap--none--snapshot-${id}`; }

  // ---- types --------------------------------------------------------------------------------
  async templates(): Promise<VolumeTemplateDesc[]> {
    return sp(this.api.volumeTemplatesList());
  }

  async defaultTemplate(templates?: VolumeTemplateDesc[]): Promise<string> {
    if (this.#o.defaultType !== undefined) return this.#o.defaultType;
    const all = templates ?? (await this.templates());
    const t = all.find((x) => x.name === 'default') ?? all[0];
    if (t === undefined) throw badRequest('storpool has no volume templates: create one (storpool template NAME ... create)');
    return t.name;
  }

  /** A type given by name or by id. */
  async findType(nameOrId: string): Promise<VolumeTemplateDesc> {
    const t = (await this.templates()).find((x) => x.name === nameOrId || typeId(x.name) === nameOrId);
    if (t === undefined) throw notFound(`Volume type ${nameOrId}`);
    return t;
  }

  // ---- volumes ------------------------------------------------------------------------------
  visible(ctx: RequestContext, r: { projectId: string }, allTenants = false): boolean {
    return r.projectId === ctx.projectId || (ctx.isAdmin && allTenants);
  }

  async volumeSizes(): Promise<Map<string, VolumeSummary>> {
    const list = await sp(this.api.volumesList());
    return new Map(list.map((v) => [v.name, v]));
  }

  async getVolume(ctx: RequestContext, id: string, recs?: Records): Promise<VolumeRecord> {
    const r = (recs ?? (await sp(this.store.load()))).volumes.get(id);
    if (r === undefined || !this.visible(ctx, r, true)) throw notFound(`Volume ${id}`);
    return r;
  }

  async createVolume(ctx: RequestContext, b: { size?: number | undefined; name?: string | null | undefined; description?: string | null | undefined; volume_type?: string | null | undefined; metadata?: Record<string, string> | undefined; snapshot_id?: string | null | undefined; source_volid?: string | null | undefined; multiattach?: boolean | undefined }): Promise<VolumeRecord> {
    return this.store.exclusive(async () => {
      const recs = await sp(this.store.load());
      const templates = await this.templates();
      const template = b.volume_type === undefined || b.volume_type === null ? await this.defaultTemplate(templates) : (await this.findType(b.volume_type)).name;
      const id = randomUUID();
      const desc: { name: string; size: number; template: string; parent?: string; baseOn?: string } = { name: this.volumeName(id), size: 0, template };
      let size = b.size;
      if (b.snapshot_id !== undefined && b.snapshot_id !== null) {
        const s = recs.snapshots.get(b.snapshot_id);
        if (s === undefined || !this.visible(ctx, s, true)) throw notFound(`Snapshot ${b.snapshot_id}`);
        size ??= s.size;
        if (size < s.size) throw badRequest(`Volume size ${size}GB cannot be smaller than the snapshot size ${s.size}GB.`);
        desc.parent = this.snapshotName(s.id);
      } else if (b.source_volid !== undefined && b.source_volid !== null) {
        const src = await this.getVolume(ctx, b.source_volid, recs);
        const [v] = await sp(this.api.volume(this.volumeName(src.id)));
        const srcSize = Math.ceil((v?.size ?? 0) / GiB);
        size ??= srcSize;
        if (size < srcSize) throw badRequest(`Volume size ${size}GB cannot be smaller than the source volume size ${srcSize}GB.`);
        desc.baseOn = this.volumeName(src.id);
      }
      if (size === undefined || !Number.isInteger(size) || size < 1) throw badRequest(`Invalid input received: volume size must be a positive integer of GiB, got ${JSON.stringify(b.size)}.`);
      desc.size = size * GiB;
      const rec: VolumeRecord = {
        id, name: b.name ?? null, description: b.description ?? null, projectId: ctx.projectId, userId: ctx.userId,
        createdAt: now(), updatedAt: null, status: 'available', volumeType: template, metadata: b.metadata ?? {},
        bootable: false, readonly: false, multiattach: b.multiattach ?? false, snapshotId: b.snapshot_id ?? null, sourceVolid: b.source_volid ?? null,
      };
      await sp(this.api.volumeCreate(desc));
      await sp(this.store.write([{ kind: 'volume', id, record: rec }]));
      return rec;
    });
  }

  async updateVolume(ctx: RequestContext, id: string, b: { name?: string | null | undefined; description?: string | null | undefined; metadata?: Record<string, string> | undefined }): Promise<VolumeRecord> {
    return this.#changeVolume(ctx, id, (r) => {
      if (b.name !== undefined) r.name = b.name;
      if (b.description !== undefined) r.description = b.description;
      if (b.metadata !== undefined) r.metadata = b.metadata;
    });
  }

  async setVolumeMetadata(ctx: RequestContext, id: string, metadata: Record<string, string>, replace: boolean): Promise<VolumeRecord> {
    return this.#changeVolume(ctx, id, (r) => { r.metadata = replace ? { ...metadata } : { ...r.metadata, ...metadata }; });
  }

  async deleteVolumeMetadataKey(ctx: RequestContext, id: string, key: string): Promise<void> {
    await this.#changeVolume(ctx, id, (r) => {
      if (!Object.hasOwn(r.metadata, key)) throw notFound(`Volume metadata key ${key}`);
      delete r.metadata[key];
    });
  }

  async #changeVolume(ctx: RequestContext, id: string, fn: (r: VolumeRecord, recs: Records) => Promise<void | Change[]> | void | Change[]): Promise<VolumeRecord> {
    return this.store.exclusive(async () => {
      const recs = await sp(this.store.load());
      const r = structuredClone(await this.getVolume(ctx, id, recs));
      const more = (await fn(r, recs)) ?? [];
      r.updatedAt = now();
      await sp(this.store.write([{ kind: 'volume', id, record: r }, ...more], recs.version));
      return r;
    });
  }

  async deleteVolume(ctx: RequestContext, id: string, cascade: boolean, force: boolean): Promise<void> {
    await this.store.exclusive(async () => {
      const recs = await sp(this.store.load());
      const r = await this.getVolume(ctx, id, recs);
      const snaps = [...recs.snapshots.values()].filter((s) => s.volumeId === id);
      const atts = [...recs.attachments.values()].filter((a) => a.volumeId === id);
      if (!force && (r.status === 'in-use' || r.status === 'attaching' || r.status === 'detaching' || r.status === 'reserved' || atts.length > 0)) {
        throw badRequest(`Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.`);
      }
      if (snaps.length > 0 && !cascade) throw badRequest(`Invalid volume: Volume ${id} still has ${snaps.length} dependent snapshots.`);
      const changes: Change[] = [];
      for (const s of snaps) {
        await this.#dropStorpool('snapshot', this.snapshotName(s.id));
        changes.push({ kind: 'snapshot', id: s.id, record: undefined });
      }
      for (const a of atts) {
        await this.#terminateIscsi(this.volumeName(id), a.connector).catch(() => undefined);
        changes.push({ kind: 'attachment', id: a.id, record: undefined });
      }
      await this.#dropStorpool('volume', this.volumeName(id));
      changes.push({ kind: 'volume', id, record: undefined });
      await sp(this.store.write(changes, recs.version));
    });
  }

  /** What Cinder's driver does: detach from every client, then delete; gone already is fine. */
  async #dropStorpool(kind: 'volume' | 'snapshot', name: string): Promise<void> {
    try {
      await this.api.volumesReassign([kind === 'volume' ? { volume: name, detach: 'all', force: true } : { snapshot: name, detach: 'all', force: true }]);
      if (kind === 'volume') await this.api.volumeDelete(name);
      else await this.api.snapshotDelete(name);
    } catch (err) {
      if (err instanceof StorpoolApiError && err.name === 'objectDoesNotExist') return;
      mapError(err);
    }
  }

  // ---- volume actions -------------------------------------------------------------------------
  async extendVolume(ctx: RequestContext, id: string, newSize: number): Promise<void> {
    await this.#changeVolume(ctx, id, async (r) => {
      if (r.status !== 'available' && r.status !== 'in-use') throw badRequest(`Invalid volume: Volume ${id} status must be available or in-use, but current status is: ${r.status}.`);
      const [v] = await sp(this.api.volume(this.volumeName(id)));
      const current = Math.ceil((v?.size ?? 0) / GiB);
      if (!Number.isInteger(newSize) || newSize <= current) throw badRequest(`Invalid input received: New size for extend must be greater than current size. (current: ${current}, extended: ${newSize}).`);
      await sp(this.api.volumeUpdate(this.volumeName(id), { size: newSize * GiB }));
    });
  }

  async retypeVolume(ctx: RequestContext, id: string, newType: string): Promise<void> {
    const t = await this.findType(newType);
    await this.#changeVolume(ctx, id, async (r) => {
      await sp(this.api.volumeUpdate(this.volumeName(id), { template: t.name }));
      r.volumeType = t.name;
    });
  }

  async setStatus(ctx: RequestContext, id: string, from: VolumeStatus[] | undefined, to: VolumeStatus, what: string): Promise<void> {
    await this.#changeVolume(ctx, id, (r) => {
      if (from !== undefined && !from.includes(r.status)) throw badRequest(`Invalid volume: ${what}: volume ${id} status must be ${from.join(' or ')}, but current status is: ${r.status}.`);
      r.status = to;
    });
  }

  async setFlags(ctx: RequestContext, id: string, flags: { bootable?: boolean; readonly?: boolean }): Promise<void> {
    await this.#changeVolume(ctx, id, (r) => {
      if (flags.bootable !== undefined) r.bootable = flags.bootable;
      if (flags.readonly !== undefined) r.readonly = flags.readonly;
    });
  }

  /** os-attach (the pre-3.27 flow): records the attachment and marks the volume in-use. */
  async attachLegacy(ctx: RequestContext, id: string, b: { instance_uuid?: string | null | undefined; host_name?: string | null | undefined; mountpoint?: string | undefined; mode?: string | undefined }): Promise<void> {
    await this.#changeVolume(ctx, id, (r, recs) => {
      if (!['available', 'attaching', 'reserved', 'in-use'].includes(r.status)) throw badRequest(`Invalid volume: volume ${id} status must be available or attaching, but current status is: ${r.status}.`);
      const existing = [...recs.attachments.values()].filter((a) => a.volumeId === id && a.status === 'attached');
      if (existing.length > 0 && !r.multiattach) throw badRequest(`Invalid volume: volume ${id} is already attached and is not multiattach.`);
      r.status = 'in-use';
      const a: AttachmentRecord = {
        id: randomUUID(), volumeId: id, projectId: r.projectId, instance: b.instance_uuid ?? null, hostName: b.host_name ?? null, mountpoint: b.mountpoint ?? null,
        mode: b.mode === 'ro' ? 'ro' : 'rw', status: 'attached', attachedAt: now(), connector: null, connectionInfo: null,
      };
      return [{ kind: 'attachment', id: a.id, record: a }];
    });
  }

  /** os-detach: drops one attachment (or all); the volume is available when none is left. */
  async detachLegacy(ctx: RequestContext, id: string, attachmentId: string | undefined): Promise<void> {
    await this.#changeVolume(ctx, id, (r, recs) => {
      const atts = [...recs.attachments.values()].filter((a) => a.volumeId === id);
      const drop = attachmentId === undefined ? atts : atts.filter((a) => a.id === attachmentId);
      if (attachmentId !== undefined && drop.length === 0) throw notFound(`Attachment ${attachmentId}`);
      r.status = atts.length - drop.length > 0 ? 'in-use' : 'available';
      return drop.map((a) => ({ kind: 'attachment' as const, id: a.id, record: undefined }));
    });
  }

  // ---- connections ------------------------------------------------------------------------------
  /** Like the driver's `iscsi_export_to`: `*`, IQN patterns (`*` wildcards), or host names. */
  #usesIscsi(connector: Connector): boolean {
    const host = typeof connector.host === 'string' ? connector.host : '';
    const iqn = connector.initiator;
    if (typeof iqn !== 'string') return false;
    return (this.#o.iscsiExportTo ?? []).some((p) => p === host || new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(iqn));
  }

  clientIdOf(connector: Connector): number {
    const given = connector['storpool_client_id'];
    if (typeof given === 'number' || (typeof given === 'string' && /^\d+$/.test(given))) return Number(given);
    const host = typeof connector.host === 'string' ? connector.host : '';
    if (host === '') throw badRequest('Invalid input received: connector has no host.');
    const values = loadConfig({ ...(this.#o.storpoolConf !== undefined ? { path: this.#o.storpoolConf } : {}), section: host, useEnv: false }).values;
    const id = Number(values['SP_OURID']);
    if (!Number.isInteger(id) || id < 1 || id > 4095) throw badRequest(`Invalid input received: no SP_OURID for host ${host} in storpool.conf (add a [${host}] section).`);
    return id;
  }

  /** The connection info Cinder's StorPool driver returns (native), or its iSCSI export. */
  async initializeConnection(ctx: RequestContext, id: string, connector: Connector, mode: 'rw' | 'ro' = 'rw'): Promise<ConnectionInfo> {
    const r = await this.getVolume(ctx, id);
    const name = this.volumeName(r.id);
    const access = r.readonly ? 'ro' : mode;
    if (this.#usesIscsi(connector)) return this.#exportIscsi(r.id, name, connector.initiator as string, access);
    const clientId = this.clientIdOf(connector);
    const info = await sp(this.api.volumeGetInfo(name));
    return {
      driver_volume_type: 'storpool',
      data: { client_id: clientId, volume: r.id, access_mode: access, global_id: info.globalId, device_path: `/dev/storpool-byid/${info.globalId}` },
    };
  }

  async terminateConnection(ctx: RequestContext, id: string, connector: Connector | null): Promise<void> {
    const r = await this.getVolume(ctx, id);
    await this.#terminateIscsi(this.volumeName(r.id), connector);
  }

  async #iscsiConfig(): Promise<IscsiConfigData> {
    return (await sp(this.api.iSCSIConfig())).iscsi;
  }

  async #exportIscsi(id: string, name: string, initiator: string, access: 'rw' | 'ro'): Promise<ConnectionInfo> {
    const pgName = this.#o.iscsiPortalGroup;
    if (pgName === undefined) throw new CinderError(500, 'iSCSI export requested but no iSCSI portal group is configured (--iscsi-portal-group)');
    let cfg = await this.#iscsiConfig();
    const pg = Object.values(cfg.portalGroups).find((p) => p.name === pgName);
    if (pg === undefined) throw new CinderError(500, `storpool has no iSCSI portal group ${pgName}`);
    let ini = Object.values(cfg.initiators).find((i) => i.name === initiator);
    if (ini === undefined) {
      const chap = this.#o.iscsiChap === true;
      const username = chap ? `cinder-${randomBytes(4).toString('hex')}` : '';
      const secret = chap ? randomBytes(12).toString('hex') : '';
      await sp(this.api.iSCSIConfigChange({ commands: [{ createInitiator: { name: initiator, username, secret } }, { initiatorAddNetwork: { initiator, net: '0.0.0.0/0' } }] }));
      cfg = await this.#iscsiConfig();
      ini = Object.values(cfg.initiators).find((i) => i.name === initiator);
    }
    let target = Object.values(cfg.targets).find((t) => t.volume === name);
    if (target === undefined) {
      await sp(this.api.iSCSIConfigChange({ commands: [{ createTarget: { volumeName: name } }] }));
      cfg = await this.#iscsiConfig();
      target = Object.values(cfg.targets).find((t) => t.volume === name);
      ini = Object.values(cfg.initiators).find((i) => i.name === initiator);
    }
    if (target === undefined || ini === undefined) throw new CinderError(500, `storpool did not create the iSCSI target of ${name}`);
    const tname = target.name;
    if (!ini.exports.some((e) => e.portalGroup === pgName && e.target === tname)) {
      await sp(this.api.iSCSIConfigChange({ commands: [{ export: { initiator, portalGroup: pgName, volumeName: name } }] }));
    }
    const portals = pg.portals.length > 0 ? pg.portals.map((p) => `${p.ip}:${p.port}`) : pg.networks.map((n) => `${n.address}:3260`);
    if (portals.length === 0) throw new CinderError(500, `iSCSI portal group ${pgName} has no portals`);
    const data: Record<string, unknown> = {
      target_discovered: false, target_portal: portals[0], target_iqn: tname, target_lun: 0, volume_id: id, discard: true, access_mode: access,
      target_portals: portals, target_iqns: portals.map(() => tname), target_luns: portals.map(() => 0),
    };
    if (ini.username !== '') Object.assign(data, { auth_method: 'CHAP', auth_username: ini.username, auth_password: ini.secret });
    return { driver_volume_type: 'iscsi', data };
  }

  async #terminateIscsi(name: string, connector: Connector | null): Promise<void> {
    if (connector === null || !this.#usesIscsi(connector) || this.#o.iscsiPortalGroup === undefined) return;
    const initiator = connector.initiator as string;
    const pgName = this.#o.iscsiPortalGroup;
    const ignore = (names: string[]) => (err: unknown): void => {
      if (!(err instanceof StorpoolApiError && names.includes(err.name))) mapError(err);
    };
    await this.api.iSCSIConfigChange({ commands: [{ exportDelete: { initiator, portalGroup: pgName, volumeName: name } }] }).catch(ignore(['objectExists', 'objectDoesNotExist']));
    const cfg = await this.#iscsiConfig();
    const target = Object.values(cfg.targets).find((t) => t.volume === name);
    if (target === undefined) return;
    if (Object.values(cfg.initiators).some((i) => i.exports.some((e) => e.target === target.name))) return;
    await this.api.iSCSIConfigChange({ commands: [{ deleteTarget: { volumeName: name } }] }).catch(ignore(['objectDoesNotExist', 'invalidParam']));
  }

  // ---- attachments (3.27+) ----------------------------------------------------------------------
  async getAttachment(ctx: RequestContext, id: string, recs?: Records): Promise<AttachmentRecord> {
    const a = (recs ?? (await sp(this.store.load()))).attachments.get(id);
    if (a === undefined || !this.visible(ctx, a, true)) throw notFound(`Attachment ${id}`);
    return a;
  }

  async createAttachment(ctx: RequestContext, b: { volume_uuid: string; instance_uuid?: string | null | undefined; connector?: Connector | null | undefined; mode?: string | undefined }): Promise<AttachmentRecord> {
    const mode = b.mode === 'ro' ? 'ro' : 'rw';
    const connectionInfo = b.connector === undefined || b.connector === null ? null : await this.initializeConnection(ctx, b.volume_uuid, b.connector, mode);
    let att: AttachmentRecord | undefined;
    await this.#changeVolume(ctx, b.volume_uuid, (r, recs) => {
      const live = [...recs.attachments.values()].filter((a) => a.volumeId === r.id);
      if (live.length > 0 && !r.multiattach) throw badRequest(`Invalid volume: volume ${r.id} already has an attachment and is not multiattach.`);
      if (!['available', 'in-use', 'reserved', 'attaching'].includes(r.status)) throw badRequest(`Invalid volume: volume ${r.id} status must be available or in-use, but current status is: ${r.status}.`);
      att = {
        id: randomUUID(), volumeId: r.id, projectId: r.projectId, instance: b.instance_uuid ?? null, hostName: typeof b.connector?.host === 'string' ? b.connector.host : null,
        mountpoint: typeof b.connector?.['mountpoint'] === 'string' ? b.connector['mountpoint'] as string : null, mode, status: connectionInfo === null ? 'reserved' : 'attaching',
        attachedAt: null, connector: b.connector ?? null, connectionInfo,
      };
      if (r.status !== 'in-use') r.status = connectionInfo === null ? 'reserved' : 'attaching';
      return [{ kind: 'attachment', id: att.id, record: att }];
    });
    return att!;
  }

  async updateAttachment(ctx: RequestContext, id: string, connector: Connector): Promise<AttachmentRecord> {
    const a0 = await this.getAttachment(ctx, id);
    const info = await this.initializeConnection(ctx, a0.volumeId, connector, a0.mode);
    return this.#changeAttachment(ctx, id, (a, v) => {
      Object.assign(a, { connector, connectionInfo: info, status: 'attaching', hostName: typeof connector.host === 'string' ? connector.host : a.hostName });
      if (typeof connector['mountpoint'] === 'string') a.mountpoint = connector['mountpoint'] as string;
      if (v.status !== 'in-use') v.status = 'attaching';
    });
  }

  async completeAttachment(ctx: RequestContext, id: string): Promise<void> {
    await this.#changeAttachment(ctx, id, (a, v) => {
      a.status = 'attached';
      a.attachedAt = now();
      v.status = 'in-use';
    });
  }

  async deleteAttachment(ctx: RequestContext, id: string): Promise<void> {
    const a = await this.getAttachment(ctx, id);
    await this.#terminateIscsi(this.volumeName(a.volumeId), a.connector);
    await this.#changeVolume(ctx, a.volumeId, (v, recs) => {
      const rest = [...recs.attachments.values()].filter((x) => x.volumeId === a.volumeId && x.id !== id);
      v.status = rest.some((x) => x.status === 'attached') ? 'in-use' : rest.length > 0 ? 'reserved' : 'available';
      return [{ kind: 'attachment', id, record: undefined }];
    });
  }

  async #changeAttachment(ctx: RequestContext, id: string, fn: (a: AttachmentRecord, v: VolumeRecord) => void): Promise<AttachmentRecord> {
    let out: AttachmentRecord | undefined;
    const a0 = await this.getAttachment(ctx, id);
    await this.#changeVolume(ctx, a0.volumeId, (v, recs) => {
      const a = structuredClone(recs.attachments.get(id));
      if (a === undefined) throw notFound(`Attachment ${id}`);
      fn(a, v);
      out = a;
      return [{ kind: 'attachment', id, record: a }];
    });
    return out!;
  }

  // ---- snapshots --------------------------------------------------------------------------------
  async getSnapshot(ctx: RequestContext, id: string, recs?: Records): Promise<SnapshotRecord> {
    const s = (recs ?? (await sp(this.store.load()))).snapshots.get(id);
    if (s === undefined || !this.visible(ctx, s, true)) throw notFound(`Snapshot ${id}`);
    return s;
  }

  async createSnapshot(ctx: RequestContext, b: { volume_id: string; name?: string | null | undefined; description?: string | null | undefined; metadata?: Record<string, string> | undefined; force?: boolean | string | undefined }): Promise<SnapshotRecord> {
    return this.store.exclusive(async () => {
      const recs = await sp(this.store.load());
      const v = await this.getVolume(ctx, b.volume_id, recs);
      const force = b.force === true || b.force === 'true' || b.force === 'True';
      if (v.status === 'in-use' && !force) throw badRequest(`Invalid volume: Volume ${v.id} status must be available, but current status is: in-use.`);
      const [sv] = await sp(this.api.volume(this.volumeName(v.id)));
      const id = randomUUID();
      await sp(this.api.volumeSnapshot(this.volumeName(v.id), { name: this.snapshotName(id) }));
      const s: SnapshotRecord = {
        id, volumeId: v.id, name: b.name ?? null, description: b.description ?? null, projectId: ctx.projectId, userId: ctx.userId,
        createdAt: now(), updatedAt: null, status: 'available', metadata: b.metadata ?? {}, size: Math.ceil((sv?.size ?? 0) / GiB),
      };
      await sp(this.store.write([{ kind: 'snapshot', id, record: s }]));
      return s;
    });
  }

  async changeSnapshot(ctx: RequestContext, id: string, fn: (s: SnapshotRecord) => void): Promise<SnapshotRecord> {
    return this.store.exclusive(async () => {
      const recs = await sp(this.store.load());
      const s = structuredClone(await this.getSnapshot(ctx, id, recs));
      fn(s);
      s.updatedAt = now();
      await sp(this.store.write([{ kind: 'snapshot', id, record: s }], recs.version));
      return s;
    });
  }

  async deleteSnapshot(ctx: RequestContext, id: string): Promise<void> {
    await this.store.exclusive(async () => {
      const s = await this.getSnapshot(ctx, id);
      await this.#dropStorpool('snapshot', this.snapshotName(s.id));
      await sp(this.store.write([{ kind: 'snapshot', id, record: undefined }]));
    });
  }
}

export { CinderError };
