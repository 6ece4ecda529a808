/**
 * Volumes and snapshots: pure operations on the cluster state (copy-on-write lineage, see
 * docs/api.md "Data identity"). Each validates everything before it changes anything.
 */
import { ApiError, exists, invalid, notFound } from './api-error.js';
import { LINEAGE_DEPTH_MAX } from './limits.js';
import {
  addPurgeTask, allocDataId, allocObjectId, attachmentsOf, checkPlaceable, checkPlacementGroupsExist, childrenOf, collectParent, findSnapshot,
  findVolume, nameTaken, objectName, removeObject, type ModelContext,
} from './model-helpers.js';
import { checkReplication, checkSize, checkSnapshotName, checkTags, checkVolumeName } from './names.js';
import { PARENTS_MAX } from '@storpool/protocol';
import { groupFor, placementOf } from './shard-map.js';
import type { Limit, ObjectRecord, Policy, State, TemplateRecord } from './state.js';

export interface PolicyInput {
  placeAll?: string;
  placeTail?: string;
  placeHead?: string;
  replication?: number;
  bw?: Limit;
  iops?: Limit;
  limitType?: 'total' | 'perGiB';
  reuseServer?: boolean;
}

export interface VolumeCreateInput extends PolicyInput {
  name?: string;
  size?: number;
  parent?: string;
  baseOn?: string;
  template?: string;
  tags?: Record<string, string>;
}

export interface VolumeCreateResult {
  globalId: string;
  name: string;
  autoName?: string;
}

function defaultPlacementGroup(state: State): string {
  if (state.pgs.has('default')) return 'default';
  if (state.pgs.size === 1) return [...state.pgs.keys()][0]!;
  throw invalid('no placement given (placeAll or a template) and there is no placement group named "default"');
}

/** Explicit fields, then the template, then the object inherited from, then defaults. */
export function resolvePolicy(state: State, explicit: PolicyInput, template: TemplateRecord | undefined, inherit: Policy | undefined): Policy {
  if (explicit.replication !== undefined) checkReplication(explicit.replication);
  const placeAll = explicit.placeAll ?? template?.placeAll ?? inherit?.placeAll ?? defaultPlacementGroup(state);
  const templateReplication = template?.replication === '-' ? undefined : template?.replication;
  const policy: Policy = {
    replication: explicit.replication ?? templateReplication ?? inherit?.replication ?? 3,
    placeAll,
    placeTail: explicit.placeTail ?? template?.placeTail ?? inherit?.placeTail ?? placeAll,
    placeHead: explicit.placeHead ?? template?.placeHead ?? inherit?.placeHead ?? placeAll,
    bw: explicit.bw ?? template?.bw ?? inherit?.bw ?? '-',
    iops: explicit.iops ?? template?.iops ?? inherit?.iops ?? '-',
  };
  const limitType = explicit.limitType ?? template?.limitType ?? inherit?.limitType;
  if (limitType !== undefined) policy.limitType = limitType;
  const reuseServer = explicit.reuseServer ?? template?.reuseServer ?? inherit?.reuseServer;
  if (reuseServer !== undefined) policy.reuseServer = reuseServer;
  checkPlacementGroupsExist(state, policy);
  return policy;
}

export function policyOf(o: Policy): Policy {
  const p: Policy = { replication: o.replication, placeAll: o.placeAll, placeTail: o.placeTail, placeHead: o.placeHead, bw: o.bw, iops: o.iops };
  if (o.limitType !== undefined) p.limitType = o.limitType;
  if (o.reuseServer !== undefined) p.reuseServer = o.reuseServer;
  return p;
}

function template(state: State, name: string | undefined): TemplateRecord | undefined {
  if (name === undefined) return undefined;
  const t = state.templates.get(name);
  if (t === undefined) throw notFound(`template ${name}`);
  return t;
}

function checkDeleteDate(ctx: ModelContext, targetDeleteDate: number | undefined, deleteAfter: number | undefined): number | undefined {
  if (deleteAfter !== undefined && deleteAfter !== 0) {
    if (!Number.isSafeInteger(deleteAfter) || deleteAfter < 0) throw invalid(`deleteAfter: ${deleteAfter} must be a positive number of seconds`);
    return ctx.now + deleteAfter;
  }
  if (targetDeleteDate !== undefined && targetDeleteDate !== 0) {
    if (!Number.isSafeInteger(targetDeleteDate) || targetDeleteDate < ctx.now) throw invalid(`targetDeleteDate: ${targetDeleteDate} is in the past`);
    return targetDeleteDate;
  }
  return undefined;
}

export interface SnapshotOptions {
  name?: string;
  tags?: Record<string, string>;
  bind?: boolean;
  targetDeleteDate?: number;
  deleteAfter?: number;
  transient?: boolean;
}

/** Checks a snapshot request without changing anything; returns the name to use, if given. */
function checkSnapshotRequest(state: State, ctx: ModelContext, options: SnapshotOptions, taken: Set<string>): string | undefined {
  if (options.tags !== undefined) checkTags(options.tags);
  checkDeleteDate(ctx, options.targetDeleteDate, options.deleteAfter);
  if (options.name === undefined || options.name === '') return undefined;
  checkSnapshotName(options.name);
  if (nameTaken(state, options.name) || taken.has(options.name)) throw exists(`${options.name}`);
  taken.add(options.name);
  return options.name;
}

/**
 * Freezes the volume's current data into a new snapshot (which takes the volume's dataId) and
 * gives the volume a new dataId whose first parent is the snapshot.
 */
export function takeSnapshot(state: State, ctx: ModelContext, volume: ObjectRecord, options: SnapshotOptions): ObjectRecord {
  const given = checkSnapshotRequest(state, ctx, options, new Set());
  if (volume.parents.length >= PARENTS_MAX) throw new ApiError('insufficientResources', `volume ${objectName(volume)} has ${volume.parents.length} snapshots in its chain, the most the data path supports`);
  let name = given;
  if (name === undefined) {
    const base = (volume.name ?? volume.globalId).replace(/^#/, '');
    for (let i = 0; i < LINEAGE_DEPTH_MAX && name === undefined; i++) {
      const candidate = `${base}@${++volume.snapshotSerial}`;
      if (!nameTaken(state, candidate)) name = candidate;
    }
    if (name === undefined) throw new ApiError('insufficientResources', 'no free automatic snapshot name');
  }
  const { globalId, visibleVolumeId } = allocObjectId(state);
  const targetDeleteDate = checkDeleteDate(ctx, options.targetDeleteDate, options.deleteAfter);
  const snapshot: ObjectRecord = {
    ...policyOf(volume), kind: 'snapshot', globalId, visibleVolumeId, name, size: volume.size, templateName: volume.templateName,
    tags: Object.fromEntries(Object.entries(options.tags ?? {}).filter(([, v]) => v !== '')), creationTimestamp: ctx.now,
    dataId: volume.dataId, placementId: volume.placementId, parents: [...volume.parents], group: volume.group, snapshotSerial: 0,
    autoName: given === undefined, bound: options.bind === true, deleted: false, transient: options.transient === true,
    createdFromGlobalId: volume.globalId, createdFromVisibleVolumeId: volume.visibleVolumeId,
  };
  if (volume.parentGlobalId !== undefined) snapshot.parentGlobalId = volume.parentGlobalId;
  if (targetDeleteDate !== undefined) snapshot.targetDeleteDate = targetDeleteDate;
  state.objects.set(globalId, snapshot);
  volume.parents = [snapshot.dataId, ...volume.parents];
  volume.dataId = allocDataId(state);
  volume.parentGlobalId = globalId;
  return snapshot;
}

export function createVolume(state: State, ctx: ModelContext, input: VolumeCreateInput): VolumeCreateResult {
  const name = input.name === undefined || input.name === '' ? undefined : checkVolumeName(input.name);
  if (name !== undefined && nameTaken(state, name)) throw exists(`${name}`);
  if (input.parent !== undefined && input.baseOn !== undefined) throw invalid('give either parent or baseOn, not both');
  if (input.tags !== undefined) checkTags(input.tags);
  const tpl = template(state, input.template);
  let source: ObjectRecord | undefined;
  let baseOn: ObjectRecord | undefined;
  if (input.parent !== undefined) source = findSnapshot(state, input.parent);
  else if (input.baseOn !== undefined) baseOn = findVolume(state, input.baseOn);
  else if (tpl?.parentGlobalId !== undefined) {
    source = state.objects.get(tpl.parentGlobalId);
    if (source === undefined || source.deleted === true) throw notFound(`snapshot ~${tpl.parentGlobalId} (parent of template ${tpl.name})`);
  }
  const inherit = source ?? baseOn;
  const policy = resolvePolicy(state, input, tpl, inherit);
  const templateSize = tpl?.size === '-' ? undefined : tpl?.size;
  const size = input.size ?? templateSize ?? inherit?.size;
  if (size === undefined) throw invalid('size is required (no template size and no parent to take it from)');
  checkSize(size);
  if (inherit !== undefined && size < inherit.size) throw invalid(`size ${size} is smaller than the size of ${objectName(inherit)} (${inherit.size})`);
  if (inherit === undefined) checkPlaceable(state, ctx, placementOf(policy));
  let autoName: string | undefined;
  if (baseOn !== undefined) {
    source = takeSnapshot(state, ctx, baseOn, { transient: true });
    autoName = source.name;
  }
  const { globalId, visibleVolumeId } = allocObjectId(state);
  const dataId = allocDataId(state);
  const volume: ObjectRecord = {
    ...policy, kind: 'volume', globalId, visibleVolumeId, size, templateName: tpl?.name ?? inherit?.templateName ?? '',
    tags: Object.fromEntries(Object.entries(input.tags ?? {}).filter(([, v]) => v !== '')), creationTimestamp: ctx.now,
    dataId, placementId: source?.placementId ?? dataId, parents: source === undefined ? [] : [source.dataId, ...source.parents],
    group: source?.group ?? groupFor(state, placementOf(policy), ctx.shardCount).id, snapshotSerial: 0,
  };
  if (name !== undefined) volume.name = name;
  if (source !== undefined) volume.parentGlobalId = source.globalId;
  state.objects.set(globalId, volume);
  return { globalId, name: objectName(volume), ...(autoName !== undefined ? { autoName } : {}) };
}

export interface VolumeUpdateInput extends PolicyInput {
  rename?: string;
  size?: number;
  sizeAdd?: number;
  shrinkOk?: boolean;
  template?: string;
  tags?: Record<string, string>;
}

function mergeTags(current: Record<string, string>, update: Record<string, string>): Record<string, string> {
  const out = { ...current };
  for (const [k, v] of Object.entries(update)) {
    if (v === '') delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Applies policy fields (explicit, else the new template's, else unchanged) to a volume or snapshot. */
function applyPolicy(state: State, ctx: ModelContext, o: ObjectRecord, input: PolicyInput, tpl: TemplateRecord | undefined): void {
  const policy = resolvePolicy(state, input, tpl, o);
  checkPlaceable(state, ctx, placementOf(policy));
  Object.assign(o, policy);
  if (tpl !== undefined) o.templateName = tpl.name;
}

export function updateVolume(state: State, ctx: ModelContext, ref: string, input: VolumeUpdateInput): void {
  const volume = findVolume(state, ref);
  if (input.rename !== undefined) {
    checkVolumeName(input.rename, 'rename');
    if (nameTaken(state, input.rename, volume)) throw exists(`${input.rename}`);
  }
  if (input.tags !== undefined) checkTags(input.tags);
  if (input.size !== undefined && input.sizeAdd !== undefined) throw invalid('give either size or sizeAdd, not both');
  let size = volume.size;
  if (input.size !== undefined) size = checkSize(input.size);
  if (input.sizeAdd !== undefined) size = checkSize(volume.size + checkSize(input.sizeAdd, 'sizeAdd'));
  if (size < volume.size && input.shrinkOk !== true) throw invalid(`size ${size} is smaller than the current size ${volume.size} of ${objectName(volume)}; set shrinkOk to shrink`);
  const tpl = template(state, input.template);
  applyPolicy(state, ctx, volume, input, tpl);
  volume.size = size;
  if (input.rename !== undefined) volume.name = input.rename;
  if (input.tags !== undefined) volume.tags = mergeTags(volume.tags, input.tags);
}

function detachForDelete(state: State, o: ObjectRecord, onAttached: string | undefined): void {
  const attachments = attachmentsOf(state, o);
  if (attachments.length === 0) return;
  if (onAttached !== 'detach' && onAttached !== 'detachForce') {
    throw new ApiError('busy', `'${objectName(o)}' is open at client ${attachments[0]!.client}`);
  }
  for (const a of attachments) {
    if (a.open === true && onAttached !== 'detachForce') throw new ApiError('busy', `'${objectName(o)}' is open at client ${a.client}`);
  }
  for (const a of attachments) state.attachments.delete(`${a.globalId}:${a.client}`);
}

export function deleteVolume(state: State, ctx: ModelContext, ref: string, onAttached: string | undefined): void {
  const volume = findVolume(state, ref);
  detachForDelete(state, volume, onAttached);
  removeObject(state, ctx, volume);
}

export function revertVolume(state: State, ctx: ModelContext, ref: string, toSnapshot: string, revertSize: boolean): void {
  const volume = findVolume(state, ref);
  const snapshot = findSnapshot(state, toSnapshot);
  if (snapshot.parents.length >= PARENTS_MAX) throw new ApiError('insufficientResources', `snapshot ${objectName(snapshot)} has ${snapshot.parents.length} ancestors, the most the data path supports`);
  const oldParent = volume.parentGlobalId;
  addPurgeTask(state, ctx, volume);
  volume.dataId = allocDataId(state);
  volume.parents = [snapshot.dataId, ...snapshot.parents];
  volume.parentGlobalId = snapshot.globalId;
  volume.placementId = snapshot.placementId;
  volume.group = snapshot.group;
  if (revertSize) volume.size = snapshot.size;
  if (oldParent !== snapshot.globalId) collectParent(state, ctx, oldParent);
}

export function freezeVolume(state: State, ctx: ModelContext, ref: string, targetDeleteDate: number | undefined, deleteAfter: number | undefined): void {
  const volume = findVolume(state, ref);
  const attached = attachmentsOf(state, volume).find((a) => a.rights === 'rw');
  if (attached !== undefined) throw new ApiError('busy', `'${objectName(volume)}' is attached read-write at client ${attached.client}`);
  const date = checkDeleteDate(ctx, targetDeleteDate, deleteAfter);
  volume.kind = 'snapshot';
  volume.autoName = false;
  volume.bound = false;
  volume.deleted = false;
  volume.transient = false;
  volume.createdFromGlobalId = volume.globalId;
  volume.createdFromVisibleVolumeId = volume.visibleVolumeId;
  if (date !== undefined) volume.targetDeleteDate = date;
}

export interface SnapshotCreateResult {
  name: string;
  globalId: string;
  visibleVolumeId: number;
}

export function snapshotVolume(state: State, ctx: ModelContext, ref: string, options: SnapshotOptions): SnapshotCreateResult {
  const volume = findVolume(state, ref);
  const snapshot = takeSnapshot(state, ctx, volume, options);
  return { name: objectName(snapshot), globalId: snapshot.globalId, visibleVolumeId: snapshot.visibleVolumeId };
}

export interface GroupSnapshotEntry {
  volume: string;
  name?: string;
  tags?: Record<string, string>;
}

export interface GroupSnapshotResult {
  volume: string;
  volumeGlobalId: string;
  snapshot: string;
  remoteId: string;
  snapshotGlobalId: string;
}

/** All-or-nothing: every entry is checked before the first snapshot is taken (one commit = one point in time). */
export function groupSnapshot(state: State, ctx: ModelContext, entries: GroupSnapshotEntry[], tags: Record<string, string> | undefined): GroupSnapshotResult[] {
  if (entries.length === 0) throw invalid('volumes: at least one volume is required');
  if (tags !== undefined) checkTags(tags);
  const seen = new Set<string>();
  const taken = new Set<string>();
  const volumes = entries.map((e, i) => {
    const v = findVolume(state, e.volume);
    if (seen.has(v.globalId)) throw invalid(`volumes[${i}]: volume ${e.volume} is listed twice`);
    seen.add(v.globalId);
    checkSnapshotRequest(state, ctx, { ...(e.name !== undefined ? { name: e.name } : {}), ...(e.tags !== undefined ? { tags: e.tags } : {}) }, taken);
    return v;
  });
  return entries.map((e, i) => {
    const v = volumes[i]!;
    const s = takeSnapshot(state, ctx, v, { ...(e.name !== undefined ? { name: e.name } : {}), tags: { ...tags, ...e.tags } });
    return { volume: e.volume, volumeGlobalId: v.globalId, snapshot: objectName(s), remoteId: s.globalId, snapshotGlobalId: s.globalId };
  });
}

export interface SnapshotUpdateInput extends PolicyInput {
  rename?: string;
  template?: string;
  bind?: boolean;
  targetDeleteDate?: number;
  deleteAfter?: number;
  tags?: Record<string, string>;
}

export function updateSnapshot(state: State, ctx: ModelContext, ref: string, input: SnapshotUpdateInput): void {
  const snapshot = findSnapshot(state, ref);
  if (input.rename !== undefined) {
    checkSnapshotName(input.rename, 'rename');
    if (nameTaken(state, input.rename, snapshot)) throw exists(`${input.rename}`);
  }
  if (input.tags !== undefined) checkTags(input.tags);
  const tpl = template(state, input.template);
  const clearDate = input.targetDeleteDate === 0 || input.deleteAfter === 0;
  const date = checkDeleteDate(ctx, input.targetDeleteDate, input.deleteAfter);
  applyPolicy(state, ctx, snapshot, input, tpl);
  if (input.rename !== undefined) {
    snapshot.name = input.rename;
    snapshot.autoName = false;
  }
  if (input.tags !== undefined) snapshot.tags = mergeTags(snapshot.tags, input.tags);
  if (input.bind !== undefined) snapshot.bound = input.bind;
  if (date !== undefined) snapshot.targetDeleteDate = date;
  else if (clearDate) delete snapshot.targetDeleteDate;
  if (snapshot.bound === true) collectParent(state, ctx, snapshot.globalId);
}

/**
 * Deletes a snapshot. One that still has children keeps its data for them: it is marked deleted
 * (listed as `*<name>`, `deleted: true`) and removed with the last child.
 */
export function deleteSnapshot(state: State, ctx: ModelContext, ref: string): void {
  const snapshot = findSnapshot(state, ref, true);
  if (snapshot.deleted === true) return;
  const attached = attachmentsOf(state, snapshot)[0];
  if (attached !== undefined) throw new ApiError('busy', `snapshot '${objectName(snapshot)}' is attached to client ${attached.client}; detach it first`);
  if (childrenOf(state, snapshot).length === 0) {
    removeObject(state, ctx, snapshot);
    return;
  }
  snapshot.deleted = true;
  if (snapshot.name !== undefined && !snapshot.name.startsWith('*')) {
    let name = `*${snapshot.name}`;
    if (nameTaken(state, name)) name = `*${snapshot.name}.${snapshot.globalId}`;
    snapshot.name = name;
  }
  delete snapshot.targetDeleteDate;
}

/** Snapshots due for deletion (targetDeleteDate reached) or collectable (bound/transient, childless). */
export function dueSnapshots(state: State, now: number): ObjectRecord[] {
  return [...state.objects.values()].filter((o) => o.kind === 'snapshot' && o.deleted !== true && o.targetDeleteDate !== undefined && o.targetDeleteDate <= now);
}
