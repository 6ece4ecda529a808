/**
 * The Block Storage API v3 over node:http: version documents, `/v3/{project_id}/...` and
 * `/v3/...`, the `OpenStack-API-Version: volume X.Y` microversion (negotiated and echoed),
 * Keystone or noauth, request bodies checked with zod, errors in Cinder's JSON format.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CinderError, badRequest, notFound } from './errors.js';
import type { KeystoneAuth } from './keystone.js';
import type { Records } from './records.js';
import { typeId, type CinderService, type Connector, type RequestContext } from './service.js';
import * as V from './views.js';

/** Cinder's own limit on request bodies (osapi_max_request_body_size default 114688 bytes). */
export const REQUEST_BODY_BYTES_MAX = 114_688;
const GiB = 1024 ** 3;

/** Top-level collections: a first path segment that is none of these is a project id. */
const COLLECTIONS = new Set([
  'volumes', 'snapshots', 'attachments', 'types', 'limits', 'extensions', 'os-availability-zone', 'os-quota-sets', 'backups', 'messages',
  'groups', 'group_snapshots', 'group_types', 'os-services', 'scheduler-stats', 'os-volume-transfer', 'volume-transfers', 'os-hosts',
  'qos-specs', 'workers', 'resource_filters', 'clusters', 'manageable_volumes', 'manageable_snapshots', 'os-quota-class-sets', 'capabilities', 'default-types',
]);

export interface ShimOptions {
  service: CinderService;
  log: Logger;
  /** Keystone validation; undefined = noauth (any token; `user:project` tokens name the caller). */
  keystone?: KeystoneAuth;
  /** noauth caller when the request names none. */
  defaultProjectId?: string;
  defaultUserId?: string;
}

interface Req {
  method: string;
  segs: string[];
  query: URLSearchParams;
  body: unknown;
  ctx: RequestContext;
  view: V.ViewContext;
}

type Reply = { status: number; body?: unknown; headers?: Record<string, string> };

const str = z.string().max(255);
const nullableStr = z.union([z.string().max(65535), z.null()]);
const metadata = z.record(z.string().max(255), z.string().max(255));
const connector = z.record(z.string(), z.unknown());
const sizeInt = z.union([z.number().int(), z.string().regex(/^\d+$/).transform(Number)]);

const S = {
  volumeCreate: z.object({
    volume: z.object({
      size: sizeInt.optional(), name: nullableStr.optional(), description: nullableStr.optional(), display_name: nullableStr.optional(),
      display_description: nullableStr.optional(), volume_type: z.union([str, z.null()]).optional(), metadata: metadata.optional(),
      snapshot_id: z.union([str, z.null()]).optional(), source_volid: z.union([str, z.null()]).optional(), multiattach: z.boolean().optional(),
      availability_zone: z.union([str, z.null()]).optional(), imageRef: z.union([str, z.null()]).optional(),
    }).passthrough(),
  }),
  volumeUpdate: z.object({
    volume: z.object({ name: nullableStr.optional(), description: nullableStr.optional(), display_name: nullableStr.optional(), display_description: nullableStr.optional(), metadata: metadata.optional() }).passthrough(),
  }),
  metadata: z.object({ metadata: metadata }),
  meta: z.object({ meta: metadata }),
  snapshotCreate: z.object({
    snapshot: z.object({
      volume_id: str, name: nullableStr.optional(), description: nullableStr.optional(), display_name: nullableStr.optional(),
      display_description: nullableStr.optional(), metadata: metadata.optional(), force: z.union([z.boolean(), z.string()]).optional(),
    }).passthrough(),
  }),
  snapshotUpdate: z.object({ snapshot: z.object({ name: nullableStr.optional(), description: nullableStr.optional(), display_name: nullableStr.optional(), display_description: nullableStr.optional() }).passthrough() }),
  attachmentCreate: z.object({
    attachment: z.object({ volume_uuid: str, instance_uuid: z.union([str, z.null()]).optional(), connector: z.union([connector, z.null()]).optional(), mode: z.enum(['rw', 'ro']).optional() }).passthrough(),
  }),
  attachmentUpdate: z.object({ attachment: z.object({ connector }).passthrough() }),
};

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw badRequest(`Invalid input for field/attribute ${issue?.path.join('.') ?? ''}. ${issue?.message ?? 'invalid body'}`);
  }
  return r.data;
}

function parseVersion(header: string | undefined): V.Microversion {
  if (header === undefined) return V.MIN_VERSION;
  // `volume 3.59`, possibly among other services' versions: `compute 2.1, volume 3.59`.
  const part = header.split(',').map((p) => p.trim().split(/\s+/)).find((p) => p[0]?.toLowerCase() === 'volume');
  if (part === undefined || part[1] === undefined) return V.MIN_VERSION;
  if (part[1] === 'latest') return V.MAX_VERSION;
  const m = /^(\d+)\.(\d+)$/.exec(part[1]);
  if (m === null) throw badRequest(`Invalid API version request: ${header}`);
  const v: V.Microversion = [Number(m[1]), Number(m[2])];
  const cmp = (a: V.Microversion, b: V.Microversion): number => a[0] - b[0] || a[1] - b[1];
  if (cmp(v, V.MIN_VERSION) < 0 || cmp(v, V.MAX_VERSION) > 0) {
    throw new CinderError(406, `Version ${part[1]} is not supported by the API. Minimum is ${V.MIN_VERSION.join('.')} and maximum is ${V.MAX_VERSION.join('.')}.`);
  }
  return v;
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > REQUEST_BODY_BYTES_MAX) throw new CinderError(413, `Request is too large (more than ${REQUEST_BODY_BYTES_MAX} bytes).`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw badRequest('Malformed request body: not JSON.');
  }
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

export class CinderShim {
  readonly #o: ShimOptions;
  readonly #svc: CinderService;

  constructor(o: ShimOptions) {
    this.#o = o;
    this.#svc = o.service;
  }

  createServer(): Server {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#o.log.error({ err }, 'request handler failed');
        res.destroy();
      });
    });
    server.keepAliveTimeout = 5_000;
    return server;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://x');
    const base = `http://${req.headers.host ?? 'localhost'}`;
    let version: V.Microversion = V.MIN_VERSION;
    let reply: Reply;
    try {
      version = parseVersion(first(req.headers['openstack-api-version']));
      reply = await this.#route(req, url, base, version);
    } catch (err) {
      const e = err instanceof CinderError ? err : new CinderError(500, `The server has either erred or is incapable of performing the requested operation.`);
      if (!(err instanceof CinderError)) this.#o.log.error({ err, method: req.method, path: url.pathname }, 'internal error');
      reply = { status: e.status, body: e.toJSON() };
      if (e.status === 401) {
        reply.body = { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } };
        if (this.#o.keystone !== undefined) reply.headers = { 'WWW-Authenticate': this.#o.keystone.wwwAuthenticate };
      }
    }
    const headers: Record<string, string> = { 'OpenStack-API-Version': `volume ${version[0]}.${version[1]}`, Vary: 'OpenStack-API-Version', ...(reply.headers ?? {}) };
    if (reply.body === undefined) {
      res.writeHead(reply.status, { ...headers, 'Content-Length': '0' });
      res.end();
    } else {
      const text = JSON.stringify(reply.body);
      res.writeHead(reply.status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)) });
      res.end(text);
    }
    this.#o.log.debug({ method: req.method, path: url.pathname, status: reply.status, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'request');
  }

  async #identity(req: IncomingMessage, urlProject: string | undefined): Promise<RequestContext> {
    const token = first(req.headers['x-auth-token']);
    if (this.#o.keystone !== undefined) {
      if (token === undefined || token === '') throw new CinderError(401, 'authentication required');
      const id = await this.#o.keystone.validate(token);
      if (id === undefined) throw new CinderError(401, 'invalid token');
      if (urlProject !== undefined && urlProject !== id.projectId) throw badRequest('Malformed request url');
      return { projectId: id.projectId, userId: id.userId, isAdmin: id.roles.includes('admin') };
    }
    // noauth: like Cinder's noauth middleware, a `user:project` token names the caller.
    const [tUser, tProject] = token !== undefined && token.includes(':') ? token.split(':', 2) : [undefined, undefined];
    const projectId = urlProject ?? first(req.headers['x-project-id']) ?? tProject ?? this.#o.defaultProjectId ?? 'admin';
    const userId = first(req.headers['x-user-id']) ?? tUser ?? this.#o.defaultUserId ?? 'admin';
    return { projectId, userId, isAdmin: true };
  }

  async #route(req: IncomingMessage, url: URL, base: string, version: V.Microversion): Promise<Reply> {
    const method = req.method ?? 'GET';
    const segs = url.pathname.split('/').filter((s) => s !== '').map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        throw badRequest(`Malformed request url: ${s.slice(0, 100)}`);
      }
    });
    if (segs.length === 0) {
      if (method !== 'GET') throw new CinderError(405, 'Method not allowed');
      return { status: 300, body: { versions: [V.versionDoc(base)] } };
    }
    if (segs[0] !== 'v3') throw notFound(`Resource ${url.pathname}`);
    if (segs.length === 1) return { status: 200, body: { versions: [V.versionDoc(base)] } };
    let rest = segs.slice(1);
    let urlProject: string | undefined;
    if (!COLLECTIONS.has(rest[0]!)) {
      urlProject = rest[0];
      rest = rest.slice(1);
      if (rest.length === 0) return { status: 200, body: { versions: [V.versionDoc(base)] } };
    }
    const ctx = await this.#identity(req, urlProject);
    const body = method === 'POST' || method === 'PUT' ? await readBody(req) : undefined;
    const view: V.ViewContext = { base, projectId: ctx.projectId, version, isAdmin: ctx.isAdmin, availabilityZone: this.#svc.availabilityZone, backendHost: this.#svc.backendHost };
    const r: Req = { method, segs: rest, query: url.searchParams, body, ctx, view };
    switch (rest[0]) {
      case 'volumes': return this.#volumes(r);
      case 'snapshots': return this.#snapshots(r);
      case 'attachments':
        if (!V.atLeast(version, 27)) throw notFound('Attachments API (microversion 3.27 or later)');
        return this.#attachments(r);
      case 'types': return this.#types(r);
      case 'extensions': return { status: 200, body: { extensions: [] } };
      case 'os-availability-zone': return { status: 200, body: { availabilityZoneInfo: [{ zoneName: this.#svc.availabilityZone, zoneState: { available: true } }] } };
      case 'limits': return { status: 200, body: { limits: { rate: [], absolute: { maxTotalVolumes: -1, maxTotalSnapshots: -1, maxTotalVolumeGigabytes: -1, maxTotalBackups: -1, maxTotalBackupGigabytes: -1, totalVolumesUsed: 0, totalGigabytesUsed: 0, totalSnapshotsUsed: 0, totalBackupsUsed: 0, totalBackupGigabytesUsed: 0 } } } };
      default: throw notFound(`Resource ${url.pathname}`);
    }
  }

  // ---- volumes ------------------------------------------------------------------------------
  async #volumeList(r: Req, detail: boolean): Promise<Reply> {
    const [recs, sizes] = await Promise.all([this.#svc.store.load(), this.#svc.volumeSizes()]);
    const allTenants = ['1', 'true', 'True'].includes(r.query.get('all_tenants') ?? '');
    const name = r.query.get('name') ?? r.query.get('display_name');
    const status = r.query.get('status');
    let list = [...recs.volumes.values()].filter((v) => this.#svc.visible(r.ctx, v, allTenants)).filter((v) => (name === null || v.name === name) && (status === null || v.status === status));
    list.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id));
    list = page(list, r.query);
    const atts = [...recs.attachments.values()];
    const volumes = list.map((v) => (detail ? V.volumeView(r.view, v, this.#size(sizes, v.id), atts, true) : V.volumeSummaryView(r.view, v)));
    return { status: 200, body: { volumes } };
  }

  #size(sizes: Map<string, { size: number }>, id: string): number {
    return Math.ceil((sizes.get(this.#svc.volumeName(id))?.size ?? 0) / GiB);
  }

  async #showVolume(r: Req, id: string, status = 200, full = true): Promise<Reply> {
    const recs = await this.#svc.store.load();
    const v = await this.#svc.getVolume(r.ctx, id, recs);
    const [sv] = await this.#svc.api.volume(this.#svc.volumeName(id)).catch(() => [undefined]);
    return { status, body: { volume: V.volumeView(r.view, v, Math.ceil((sv?.size ?? 0) / GiB), [...recs.attachments.values()], full) } };
  }

  async #volumes(r: Req): Promise<Reply> {
    const [, id, sub, key] = r.segs;
    const m = r.method;
    if (id === undefined) {
      if (m === 'GET') return this.#volumeList(r, false);
      if (m === 'POST') {
        const b = parse(S.volumeCreate, r.body).volume;
        if (b.imageRef !== undefined && b.imageRef !== null) throw badRequest('Invalid input received: creating volumes from images needs Glance, which this endpoint does not have.');
        const v = await this.#svc.createVolume(r.ctx, {
          size: b.size, name: b.name ?? b.display_name, description: b.description ?? b.display_description, volume_type: b.volume_type,
          metadata: b.metadata, snapshot_id: b.snapshot_id, source_volid: b.source_volid, multiattach: b.multiattach,
        });
        return this.#showVolume(r, v.id, 202, false);
      }
      throw new CinderError(405, 'Method not allowed');
    }
    if (id === 'detail' && sub === undefined && m === 'GET') return this.#volumeList(r, true);
    if (id === 'summary' && sub === undefined && m === 'GET') {
      const [recs, sizes] = await Promise.all([this.#svc.store.load(), this.#svc.volumeSizes()]);
      const mine = [...recs.volumes.values()].filter((v) => this.#svc.visible(r.ctx, v, r.query.get('all_tenants') === '1'));
      return { status: 200, body: { 'volume-summary': { total_size: mine.reduce((t, v) => t + this.#size(sizes, v.id), 0), total_count: mine.length, ...(V.atLeast(r.view.version, 36) ? { metadata: {} } : {}) } } };
    }
    if (sub === undefined) {
      if (m === 'GET') return this.#showVolume(r, id);
      if (m === 'PUT') {
        const b = parse(S.volumeUpdate, r.body).volume;
        await this.#svc.updateVolume(r.ctx, id, { name: b.name ?? b.display_name, description: b.description ?? b.display_description, metadata: b.metadata });
        return this.#showVolume(r, id, 200, false);
      }
      if (m === 'DELETE') {
        await this.#svc.deleteVolume(r.ctx, id, r.query.get('cascade') === 'true' || r.query.get('cascade') === 'True', false);
        return { status: 202 };
      }
    }
    if (sub === 'action' && m === 'POST') return this.#volumeAction(r, id);
    if (sub === 'metadata') return this.#volumeMetadata(r, id, key);
    throw notFound(`Resource /volumes/${r.segs.slice(1).join('/')}`);
  }

  async #volumeMetadata(r: Req, id: string, key: string | undefined): Promise<Reply> {
    const m = r.method;
    if (key === undefined) {
      if (m === 'GET') return { status: 200, body: { metadata: (await this.#svc.getVolume(r.ctx, id)).metadata } };
      if (m === 'POST' || m === 'PUT') {
        const v = await this.#svc.setVolumeMetadata(r.ctx, id, parse(S.metadata, r.body).metadata, m === 'PUT');
        return { status: 200, body: { metadata: v.metadata } };
      }
    } else {
      if (m === 'GET') {
        const md = (await this.#svc.getVolume(r.ctx, id)).metadata;
        if (!Object.hasOwn(md, key)) throw notFound(`Volume metadata key ${key}`);
        return { status: 200, body: { meta: { [key]: md[key] } } };
      }
      if (m === 'PUT') {
        const meta = parse(S.meta, r.body).meta;
        if (Object.keys(meta).length !== 1 || !Object.hasOwn(meta, key)) throw badRequest('Request body and URI mismatch');
        await this.#svc.setVolumeMetadata(r.ctx, id, meta, false);
        return { status: 200, body: { meta } };
      }
      if (m === 'DELETE') {
        await this.#svc.deleteVolumeMetadataKey(r.ctx, id, key);
        return { status: 200 };
      }
    }
    throw new CinderError(405, 'Method not allowed');
  }

  async #volumeAction(r: Req, id: string): Promise<Reply> {
    const body = r.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length !== 1) throw badRequest('Invalid request body: an action object with exactly one key is required.');
    const [action, arg] = Object.entries(body)[0]!;
    const a = (typeof arg === 'object' && arg !== null ? arg : {}) as Record<string, unknown>;
    const s = this.#svc;
    const ctx = r.ctx;
    switch (action) {
      case 'os-extend': {
        const size = Number(a['new_size']);
        await s.extendVolume(ctx, id, size);
        return { status: 202 };
      }
      case 'os-reserve': await s.setStatus(ctx, id, ['available'], 'attaching', 'reserve'); return { status: 202 };
      case 'os-unreserve': await s.setStatus(ctx, id, ['attaching', 'reserved'], 'available', 'unreserve'); return { status: 202 };
      case 'os-begin_detaching': await s.setStatus(ctx, id, ['in-use'], 'detaching', 'begin_detaching'); return { status: 202 };
      case 'os-roll_detaching': await s.setStatus(ctx, id, ['detaching'], 'in-use', 'roll_detaching'); return { status: 202 };
      case 'os-reset_status': {
        const status = String(a['status'] ?? '');
        if (!['available', 'in-use', 'attaching', 'detaching', 'reserved', 'error', 'maintenance'].includes(status)) throw badRequest(`Invalid input received: status ${status}`);
        await s.setStatus(ctx, id, undefined, status as 'available', 'reset_status');
        return { status: 202 };
      }
      case 'os-initialize_connection': {
        const c = a['connector'];
        if (typeof c !== 'object' || c === null) throw badRequest('Invalid input received: connector is required.');
        return { status: 200, body: { connection_info: await s.initializeConnection(ctx, id, c as Connector) } };
      }
      case 'os-terminate_connection': {
        const c = a['connector'];
        await s.terminateConnection(ctx, id, typeof c === 'object' && c !== null ? (c as Connector) : null);
        return { status: 202 };
      }
      case 'os-attach': {
        const mode = a['mode'] === 'ro' ? 'ro' : 'rw';
        await s.attachLegacy(ctx, id, { instance_uuid: a['instance_uuid'] as string | undefined, host_name: a['host_name'] as string | undefined, mountpoint: a['mountpoint'] as string | undefined, mode });
        return { status: 202 };
      }
      case 'os-detach': await s.detachLegacy(ctx, id, typeof a['attachment_id'] === 'string' ? a['attachment_id'] : undefined); return { status: 202 };
      case 'os-force_detach': await s.detachLegacy(ctx, id, typeof a['attachment_id'] === 'string' ? a['attachment_id'] : undefined); return { status: 202 };
      case 'os-set_bootable': await s.setFlags(ctx, id, { bootable: a['bootable'] === true || a['bootable'] === 'true' || a['bootable'] === 'True' }); return { status: 200 };
      case 'os-update_readonly_flag': await s.setFlags(ctx, id, { readonly: a['readonly'] === true || a['readonly'] === 'true' || a['readonly'] === 'True' }); return { status: 202 };
      case 'os-retype': await s.retypeVolume(ctx, id, String(a['new_type'] ?? '')); return { status: 202 };
      case 'os-force_delete': await s.deleteVolume(ctx, id, true, true); return { status: 202 };
      default: throw badRequest(`There is no such action: ${action}`);
    }
  }

  // ---- snapshots ------------------------------------------------------------------------------
  async #snapshots(r: Req): Promise<Reply> {
    const [, id, sub] = r.segs;
    const m = r.method;
    const s = this.#svc;
    if (id === undefined || (id === 'detail' && m === 'GET' && sub === undefined)) {
      if (m === 'GET') {
        const recs = await s.store.load();
        const allTenants = ['1', 'true', 'True'].includes(r.query.get('all_tenants') ?? '');
        const name = r.query.get('name') ?? r.query.get('display_name');
        const volumeId = r.query.get('volume_id');
        const status = r.query.get('status');
        let list = [...recs.snapshots.values()].filter((x) => s.visible(r.ctx, x, allTenants))
          .filter((x) => (name === null || x.name === name) && (volumeId === null || x.volumeId === volumeId) && (status === null || x.status === status));
        list.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id));
        list = page(list, r.query);
        return { status: 200, body: { snapshots: list.map((x) => V.snapshotView(r.view, x, id === 'detail')) } };
      }
      if (m === 'POST') {
        const b = parse(S.snapshotCreate, r.body).snapshot;
        const snap = await s.createSnapshot(r.ctx, { volume_id: b.volume_id, name: b.name ?? b.display_name, description: b.description ?? b.display_description, metadata: b.metadata, force: b.force });
        return { status: 202, body: { snapshot: V.snapshotView(r.view, snap, false) } };
      }
      throw new CinderError(405, 'Method not allowed');
    }
    if (sub === undefined) {
      if (m === 'GET') return { status: 200, body: { snapshot: V.snapshotView(r.view, await s.getSnapshot(r.ctx, id), true) } };
      if (m === 'PUT') {
        const b = parse(S.snapshotUpdate, r.body).snapshot;
        const name = b.name ?? b.display_name;
        const description = b.description ?? b.display_description;
        const snap = await s.changeSnapshot(r.ctx, id, (x) => {
          if (name !== undefined) x.name = name;
          if (description !== undefined) x.description = description;
        });
        return { status: 200, body: { snapshot: V.snapshotView(r.view, snap, false) } };
      }
      if (m === 'DELETE') {
        await s.deleteSnapshot(r.ctx, id);
        return { status: 202 };
      }
    }
    if (sub === 'metadata') {
      if (m === 'GET') return { status: 200, body: { metadata: (await s.getSnapshot(r.ctx, id)).metadata } };
      if (m === 'POST' || m === 'PUT') {
        const md = parse(S.metadata, r.body).metadata;
        const snap = await s.changeSnapshot(r.ctx, id, (x) => { x.metadata = m === 'PUT' ? { ...md } : { ...x.metadata, ...md }; });
        return { status: 200, body: { metadata: snap.metadata } };
      }
    }
    if (sub === 'action' && m === 'POST') {
      const b = (r.body ?? {}) as Record<string, { status?: string } | undefined>;
      if (b['os-reset_status'] !== undefined || b['os-update_snapshot_status'] !== undefined) {
        const status = (b['os-reset_status'] ?? b['os-update_snapshot_status'])?.status;
        if (status !== 'available' && status !== 'error') throw badRequest(`Invalid input received: status ${String(status)}`);
        await s.changeSnapshot(r.ctx, id, (x) => { x.status = status; });
        return { status: 202 };
      }
      if (b['os-force_delete'] !== undefined) {
        await s.deleteSnapshot(r.ctx, id);
        return { status: 202 };
      }
      throw badRequest(`There is no such action: ${Object.keys(b)[0] ?? ''}`);
    }
    throw notFound(`Resource /snapshots/${r.segs.slice(1).join('/')}`);
  }

  // ---- attachments ----------------------------------------------------------------------------
  async #attachments(r: Req): Promise<Reply> {
    const [, id, sub] = r.segs;
    const m = r.method;
    const s = this.#svc;
    if (id === undefined || (id === 'detail' && sub === undefined && m === 'GET')) {
      if (m === 'GET') {
        const recs: Records = await s.store.load();
        const volumeId = r.query.get('volume_id');
        const instance = r.query.get('instance_id');
        const allTenants = ['1', 'true', 'True'].includes(r.query.get('all_tenants') ?? '');
        const list = [...recs.attachments.values()].filter((a) => s.visible(r.ctx, a, allTenants)).filter((a) => (volumeId === null || a.volumeId === volumeId) && (instance === null || a.instance === instance));
        return { status: 200, body: { attachments: list.map((a) => V.attachmentView(a, id === 'detail')) } };
      }
      if (m === 'POST') {
        const b = parse(S.attachmentCreate, r.body).attachment;
        const a = await s.createAttachment(r.ctx, { volume_uuid: b.volume_uuid, instance_uuid: b.instance_uuid, connector: b.connector as Connector | null | undefined, mode: b.mode });
        return { status: 200, body: { attachment: V.attachmentView(a, true) } };
      }
      throw new CinderError(405, 'Method not allowed');
    }
    if (sub === undefined) {
      if (m === 'GET') return { status: 200, body: { attachment: V.attachmentView(await s.getAttachment(r.ctx, id), true) } };
      if (m === 'PUT') {
        const b = parse(S.attachmentUpdate, r.body).attachment;
        return { status: 200, body: { attachment: V.attachmentView(await s.updateAttachment(r.ctx, id, b.connector as Connector), true) } };
      }
      if (m === 'DELETE') {
        await s.deleteAttachment(r.ctx, id);
        return { status: 200, body: { attachments: [] } };
      }
    }
    if (sub === 'action' && m === 'POST') {
      const b = (r.body ?? {}) as Record<string, unknown>;
      if (!Object.hasOwn(b, 'os-complete')) throw badRequest(`There is no such action: ${Object.keys(b)[0] ?? ''}`);
      if (!V.atLeast(r.view.version, 44)) throw notFound('os-complete (microversion 3.44 or later)');
      await s.completeAttachment(r.ctx, id);
      return { status: 204 };
    }
    throw notFound(`Resource /attachments/${r.segs.slice(1).join('/')}`);
  }

  // ---- types ------------------------------------------------------------------------------
  async #types(r: Req): Promise<Reply> {
    const [, id, sub] = r.segs;
    if (r.method !== 'GET') throw new CinderError(403, 'Volume types are storpool templates: manage them with storpool (storpool template ...).');
    const templates = await this.#svc.templates();
    const def = await this.#svc.defaultTemplate(templates).catch(() => undefined);
    if (id === undefined) return { status: 200, body: { volume_types: templates.map((t) => V.typeView(t, t.name === def)) } };
    const t = id === 'default' ? templates.find((x) => x.name === def) : templates.find((x) => x.name === id || typeId(x.name) === id);
    if (t === undefined) throw notFound(`Volume type ${id}`);
    if (sub === undefined) return { status: 200, body: { volume_type: V.typeView(t, t.name === def) } };
    if (sub === 'extra_specs') return { status: 200, body: { extra_specs: V.typeView(t, false)['extra_specs'] } };
    throw notFound(`Resource /types/${r.segs.slice(1).join('/')}`);
  }
}

/** `limit` and `marker` (an id) paging, as Cinder's common.paginate does. */
function page<T extends { id: string }>(list: T[], q: URLSearchParams): T[] {
  let out = list;
  const marker = q.get('marker');
  if (marker !== null) {
    const i = out.findIndex((x) => x.id === marker);
    if (i === -1) throw badRequest(`marker [${marker}] not found`);
    out = out.slice(i + 1);
  }
  const limit = q.get('limit');
  if (limit !== null) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 0) throw badRequest(`limit param must be an integer`);
    out = out.slice(0, n);
  }
  return out;
}
