/**
 * Templates, placement groups, disks, clients, attachments and key/value buckets: pure operations
 * on the cluster state. Each validates everything before it changes anything.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ApiError, exists, invalid, notFound } from './api-error.js';
import { ATTACHMENT_POS_MAX, SERVER_ID_MAX } from './limits.js';
import { attachmentsOf, checkPlaceable, findObject, findSnapshot, objectName, type ModelContext } from './model-helpers.js';
import { resolvePolicy, type PolicyInput } from './model-volumes.js';
import { CLUSTER_ID, checkClientId, checkDiskId, checkPlacementGroupName, checkReplication, checkSize, checkTemplateName } from './names.js';
import { placementOf } from './shard-map.js';
import { attachmentKey, type ClusterRecord, type DiskRecord, type ObjectRecord, type State, type TemplateRecord } from './state.js';

export interface ClusterInit {
  clusterId?: string;
  spClusterId?: string;
  name?: string;
}

/** Creates the cluster record on first start; later starts keep it. */
export function initCluster(state: State, ctx: ModelContext, init: ClusterInit): ClusterRecord {
  if (state.cluster !== undefined) return state.cluster;
  const spClusterId = init.spClusterId ?? `${randomBytes(4).readUInt32LE(0).toString(36)}.a`;
  if (!CLUSTER_ID.test(spClusterId)) throw invalid(`cluster id ${spClusterId} must look like <location>.<subcluster> ([a-z0-9]+.[a-z0-9]+)`);
  state.cluster = { clusterId: init.clusterId ?? randomUUID(), spClusterId, name: init.name ?? 'storpool', createdAt: ctx.now };
  return state.cluster;
}

// ---- templates -----------------------------------------------------------------------------

export interface TemplateInput extends PolicyInput {
  name?: string;
  rename?: string;
  parent?: string;
  size?: number | '-';
  replication?: number;
  propagate?: boolean;
}

function checkTemplatePolicy(state: State, ctx: ModelContext, t: TemplateRecord): void {
  for (const pg of new Set([t.placeAll, t.placeTail, t.placeHead])) if (!state.pgs.has(pg)) throw notFound(`placement group ${pg}`);
  if (t.replication !== '-') checkPlaceable(state, ctx, { replication: t.replication, placeAll: t.placeAll, placeHead: t.placeHead, placeTail: t.placeTail });
}

function applyTemplateInput(state: State, t: TemplateRecord, input: TemplateInput): void {
  if (input.replication !== undefined) t.replication = checkReplication(input.replication);
  if (input.size !== undefined) t.size = input.size === '-' ? '-' : checkSize(input.size);
  if (input.placeAll !== undefined) t.placeAll = checkPlacementGroupName(input.placeAll, 'placeAll');
  if (input.placeTail !== undefined) t.placeTail = checkPlacementGroupName(input.placeTail, 'placeTail');
  if (input.placeHead !== undefined) t.placeHead = checkPlacementGroupName(input.placeHead, 'placeHead');
  if (input.bw !== undefined) t.bw = input.bw;
  if (input.iops !== undefined) t.iops = input.iops;
  if (input.limitType !== undefined) t.limitType = input.limitType;
  if (input.reuseServer !== undefined) t.reuseServer = input.reuseServer;
  if (input.parent !== undefined) {
    if (input.parent === '') delete t.parentGlobalId;
    else t.parentGlobalId = findSnapshot(state, input.parent).globalId;
  }
}

export function createTemplate(state: State, ctx: ModelContext, input: TemplateInput): void {
  if (input.name === undefined) throw invalid('name is required');
  const name = checkTemplateName(input.name);
  if (state.templates.has(name)) throw exists(`template ${name}`);
  const placeAll = input.placeAll ?? (state.pgs.has('default') ? 'default' : undefined);
  if (placeAll === undefined) throw invalid('placeAll is required (there is no placement group named "default")');
  const t: TemplateRecord = {
    id: state.counters.nextTemplateId++, name, replication: '-', placeAll, placeTail: input.placeTail ?? placeAll, placeHead: input.placeHead ?? placeAll,
    size: '-', bw: '-', iops: '-',
  };
  applyTemplateInput(state, t, input);
  checkTemplatePolicy(state, ctx, t);
  state.templates.set(name, t);
}

export function updateTemplate(state: State, ctx: ModelContext, name: string, input: TemplateInput): void {
  const current = state.templates.get(name);
  if (current === undefined) throw notFound(`template ${name}`);
  const t: TemplateRecord = { ...current };
  if (input.rename !== undefined && input.rename !== name) {
    checkTemplateName(input.rename, 'rename');
    if (state.templates.has(input.rename)) throw exists(`template ${input.rename}`);
    t.name = input.rename;
  }
  applyTemplateInput(state, t, input);
  checkTemplatePolicy(state, ctx, t);
  const users = [...state.objects.values()].filter((o) => o.templateName === name);
  if (input.propagate === true) {
    // The template's whole policy (after this update) reaches every volume and snapshot using it.
    const given: PolicyInput = { placeAll: t.placeAll, placeTail: t.placeTail, placeHead: t.placeHead, bw: t.bw, iops: t.iops };
    if (t.replication !== '-') given.replication = t.replication;
    if (t.limitType !== undefined) given.limitType = t.limitType;
    if (t.reuseServer !== undefined) given.reuseServer = t.reuseServer;
    for (const o of users) {
      const policy = resolvePolicy(state, given, undefined, o);
      checkPlaceable(state, ctx, placementOf(policy));
      Object.assign(o, policy);
    }
  }
  for (const o of users) o.templateName = t.name;
  state.templates.delete(name);
  state.templates.set(t.name, t);
}

export function deleteTemplate(state: State, name: string): void {
  if (!state.templates.has(name)) throw notFound(`template ${name}`);
  const users = [...state.objects.values()].filter((o) => o.templateName === name);
  if (users.length > 0) throw new ApiError('busy', `template ${name} is used by ${users.length} volumes/snapshots (e.g. ${objectName(users[0]!)})`);
  state.templates.delete(name);
}

// ---- placement groups ----------------------------------------------------------------------

export interface PlacementGroupInput {
  rename?: string;
  addDisks: number[];
  rmDisks: number[];
}

function placementGroupUsers(state: State, name: string): string[] {
  const users: string[] = [];
  for (const t of state.templates.values()) if ([t.placeAll, t.placeHead, t.placeTail].includes(name)) users.push(`template ${t.name}`);
  for (const o of state.objects.values()) if ([o.placeAll, o.placeHead, o.placeTail].includes(name)) users.push(`${o.kind} ${objectName(o)}`);
  return users;
}

/** Creates the group if absent, then renames it and adds/removes disks. */
export function updatePlacementGroup(state: State, name: string, input: PlacementGroupInput): void {
  checkPlacementGroupName(name);
  for (const id of [...input.addDisks, ...input.rmDisks]) {
    checkDiskId(id);
    if (!state.disks.has(id)) throw notFound(`disk ${id}`);
  }
  if (input.rename !== undefined && input.rename !== name) {
    checkPlacementGroupName(input.rename, 'rename');
    if (state.pgs.has(input.rename)) throw exists(`placement group ${input.rename}`);
  }
  const pg = state.pgs.get(name) ?? { id: state.counters.nextPlacementGroupId++, name, disks: [] };
  const disks = new Set(pg.disks);
  for (const id of input.addDisks) disks.add(id);
  for (const id of input.rmDisks) disks.delete(id);
  pg.disks = [...disks].sort((a, b) => a - b);
  state.pgs.delete(name);
  if (input.rename !== undefined && input.rename !== name) {
    const to = input.rename;
    pg.name = to;
    const rename = (r: { placeAll: string; placeHead: string; placeTail: string }): void => {
      if (r.placeAll === name) r.placeAll = to;
      if (r.placeHead === name) r.placeHead = to;
      if (r.placeTail === name) r.placeTail = to;
    };
    for (const t of state.templates.values()) rename(t);
    for (const o of state.objects.values()) rename(o);
    for (const g of state.groups.values()) rename(g);
  }
  state.pgs.set(pg.name, pg);
}

export function deletePlacementGroup(state: State, name: string): void {
  if (!state.pgs.has(name)) throw notFound(`placement group ${name}`);
  const users = placementGroupUsers(state, name);
  if (users.length > 0) throw new ApiError('busy', `placement group ${name} is used by ${users.length} templates/volumes/snapshots (e.g. ${users[0]!})`);
  state.pgs.delete(name);
}

// ---- disks -----------------------------------------------------------------------------------

export interface DiskRegistration {
  id: number;
  serverId: number;
  faultSet?: string;
  address: { host: string; port: number };
  weight?: number;
  placementGroups?: string[];
  ssd?: boolean;
  model?: string;
  serial?: string;
  description?: string;
}

/** Adds a disk, or updates the address/server of a known one (a server started on another port). */
export function registerDisk(state: State, input: DiskRegistration): void {
  if (!Number.isInteger(input.id) || input.id < 1) throw invalid(`disk id ${input.id} must be 1..4095`);
  checkDiskId(input.id);
  if (!Number.isInteger(input.serverId) || input.serverId < 1 || input.serverId > SERVER_ID_MAX) throw invalid(`server id ${input.serverId} must be 1..${SERVER_ID_MAX}`);
  for (const pg of input.placementGroups ?? []) checkPlacementGroupName(pg, 'placementGroups');
  const current = state.disks.get(input.id);
  const disk: DiskRecord = {
    id: input.id, serverId: input.serverId, faultSet: input.faultSet ?? current?.faultSet ?? '', address: { ...input.address },
    weight: input.weight ?? current?.weight ?? 1, ssd: input.ssd ?? current?.ssd ?? false, model: input.model ?? current?.model ?? 'file',
    serial: input.serial ?? current?.serial ?? `sp-disk-${input.id}`, description: input.description ?? current?.description ?? '',
    softEject: current?.softEject ?? 'off', ejected: false, generation: state.counters.generation + 1,
  };
  state.disks.set(input.id, disk);
  for (const name of input.placementGroups ?? []) {
    const pg = state.pgs.get(name) ?? { id: state.counters.nextPlacementGroupId++, name, disks: [] };
    if (!pg.disks.includes(input.id)) pg.disks = [...pg.disks, input.id].sort((a, b) => a - b);
    state.pgs.set(name, pg);
  }
}

function disk(state: State, id: number): DiskRecord {
  const d = state.disks.get(id);
  if (d === undefined) throw notFound(`disk ${id}`);
  return d;
}

export function ejectDisk(state: State, id: number): void {
  disk(state, id).ejected = true;
}

export function softEjectDisk(state: State, id: number): void {
  disk(state, id).softEject = 'on';
}

export function forgetDisk(state: State, id: number): void {
  disk(state, id);
  state.disks.delete(id);
  for (const pg of state.pgs.values()) pg.disks = pg.disks.filter((d) => d !== id);
}

export function startScrub(state: State, ctx: ModelContext, id: number): void {
  disk(state, id).scrubStartedAt = ctx.now;
}

// ---- clients and attachments ---------------------------------------------------------------

export function registerClient(state: State, ctx: ModelContext, id: number): void {
  checkClientId(id);
  if (!state.clients.has(id)) state.clients.set(id, { id, registeredAt: ctx.now, clientGeneration: 0 });
}

export interface ReassignEntry {
  volume?: string;
  snapshot?: string;
  detach?: number[] | 'all';
  ro?: number[];
  rw?: number[];
  force?: boolean;
}

function freePos(state: State, client: number): number {
  const used = new Set([...state.attachments.values()].filter((a) => a.client === client).map((a) => a.pos));
  for (let pos = 0; pos <= ATTACHMENT_POS_MAX; pos++) if (!used.has(pos)) return pos;
  throw invalid(`client ${client} has no free attachment slot (at most ${ATTACHMENT_POS_MAX + 1} attachments)`);
}

function checkClients(state: State, ids: number[]): void {
  for (const id of ids) {
    checkClientId(id);
    if (!state.clients.has(id)) throw invalid('No such client registered');
  }
}

function reassignOne(state: State, entry: ReassignEntry, index: number, open: ReadonlySet<string>): void {
  const isSnapshot = entry.snapshot !== undefined;
  if ((entry.volume === undefined) === (entry.snapshot === undefined)) throw invalid(`reassign[${index}]: exactly one of volume and snapshot is required`);
  let o: ObjectRecord | undefined;
  if (isSnapshot) o = findSnapshot(state, entry.snapshot!);
  else {
    o = findObject(state, entry.volume!);
    if (o === undefined || o.kind !== 'volume') throw notFound(`volume ${entry.volume!}`);
  }
  if (isSnapshot && entry.rw !== undefined && entry.rw.length > 0) throw invalid(`reassign[${index}]: a snapshot can be attached read-only only`);
  const ro = entry.ro ?? [];
  const rw = entry.rw ?? [];
  checkClients(state, [...ro, ...rw]);
  for (const id of ro) if (rw.includes(id)) throw invalid(`reassign[${index}]: client ${id} is both in ro and rw`);
  const current = attachmentsOf(state, o);
  const detach = entry.detach === 'all' ? current.map((a) => a.client).filter((c) => !ro.includes(c) && !rw.includes(c)) : (entry.detach ?? []);
  if (entry.detach !== 'all') for (const id of detach) checkClientId(id, 'detach');
  for (const client of detach) {
    const a = current.find((x) => x.client === client);
    if (a === undefined) continue;
    if ((a.open === true || open.has(attachmentKey(a.globalId, client))) && entry.force !== true) throw new ApiError('busy', `'${objectName(o)}' is open at client ${client}`);
    state.attachments.delete(attachmentKey(a.globalId, client));
  }
  for (const [clients, rights] of [[ro, 'ro'], [rw, 'rw']] as const) {
    for (const client of clients) {
      const key = attachmentKey(o.globalId, client);
      const existing = state.attachments.get(key);
      if (existing !== undefined) existing.rights = rights;
      else state.attachments.set(key, { globalId: o.globalId, client, rights, pos: freePos(state, client) });
    }
  }
}

/** Applies every entry in order; any invalid entry fails the whole request (nothing changes). */
export function reassign(state: State, entries: ReassignEntry[], open: ReadonlySet<string> = new Set()): string[] {
  entries.forEach((entry, index) => reassignOne(state, entry, index, open));
  return entries.map((e) => findObject(state, e.volume ?? e.snapshot ?? '')?.globalId ?? '');
}

// ---- key/value buckets ---------------------------------------------------------------------

const KV_VERSION_BASE = 1;

export function kvCreate(state: State, bucket: string): void {
  if (state.kv.has(bucket)) throw exists(`bucket ${bucket}`);
  state.kv.set(bucket, { name: bucket, version: KV_VERSION_BASE, pairs: {} });
}

export function kvDelete(state: State, bucket: string): void {
  if (!state.kv.delete(bucket)) throw notFound(`bucket ${bucket}`);
}

export function kvSet(state: State, bucket: string, set: Record<string, string>, runIfVersionIs: number | undefined): void {
  const b = state.kv.get(bucket);
  if (b === undefined) throw notFound(`bucket ${bucket}`);
  if (runIfVersionIs !== undefined && runIfVersionIs !== b.version) throw new ApiError('runIfVersionIsMismatch', `bucket ${bucket} is at version ${b.version}, not ${runIfVersionIs}`);
  for (const [k, v] of Object.entries(set)) {
    if (v === '') delete b.pairs[k];
    else b.pairs[k] = v;
  }
  b.version++;
}
