/**
 * Lookups and allocators shared by the model's operations. Everything here works on a State
 * (a private copy inside a mutation, or a read snapshot) and has no I/O.
 */
import { buildShardGroup } from '@storpool/protocol';
import { ApiError, notFound } from './api-error.js';
import { LINEAGE_DEPTH_MAX, VOLUME_OBJECT_BYTES } from './limits.js';
import { globalIdOfRef } from './names.js';
import { groupName, mapDisks, samePlacement, type Placement } from './shard-map.js';
import type { AttachmentRecord, ObjectRecord, State, TaskRecord } from './state.js';

export interface ModelContext {
  /** UNIX seconds. */
  now: number;
  shardCount: number;
}

/** The name an object is listed under: its name, or `~<globalId>` when anonymous. */
export function objectName(o: ObjectRecord): string {
  return o.name ?? `~${o.globalId}`;
}

export function findObject(state: State, ref: string): ObjectRecord | undefined {
  const gid = globalIdOfRef(ref);
  if (gid !== undefined) return state.objects.get(gid);
  for (const o of state.objects.values()) if (o.name === ref) return o;
  return undefined;
}

export function findVolume(state: State, ref: string): ObjectRecord {
  const o = findObject(state, ref);
  if (o === undefined || o.kind !== 'volume') throw notFound(`volume ${ref}`);
  return o;
}

/** A snapshot; ones pending deletion count as missing unless `includeDeleted`. */
export function findSnapshot(state: State, ref: string, includeDeleted = false): ObjectRecord {
  const o = findObject(state, ref);
  if (o === undefined || o.kind !== 'snapshot' || (o.deleted === true && !includeDeleted)) throw notFound(`snapshot ${ref}`);
  return o;
}

export function nameTaken(state: State, name: string, except?: ObjectRecord): boolean {
  for (const o of state.objects.values()) if (o.name === name && o !== except) return true;
  return false;
}

export function allocObjectId(state: State): { globalId: string; visibleVolumeId: number } {
  const cluster = state.cluster;
  if (cluster === undefined) throw new ApiError('notReady', 'the cluster is not initialized yet', true);
  const id = state.counters.nextObjectId++;
  return { globalId: `${cluster.spClusterId}.${id.toString(36)}`, visibleVolumeId: id };
}

export function allocDataId(state: State): number {
  return state.counters.nextDataId++;
}

export function childrenOf(state: State, snapshot: ObjectRecord): ObjectRecord[] {
  return [...state.objects.values()].filter((o) => o.parentGlobalId === snapshot.globalId);
}

export function attachmentsOf(state: State, o: ObjectRecord): AttachmentRecord[] {
  return [...state.attachments.values()].filter((a) => a.globalId === o.globalId).sort((a, b) => a.client - b.client);
}

export function objectsCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / VOLUME_OBJECT_BYTES);
}

/** Records that the data of `o` must be freed on the disks (the leader runs it). */
export function addPurgeTask(state: State, ctx: ModelContext, o: ObjectRecord): TaskRecord {
  const id = state.counters.nextTaskId++;
  const task: TaskRecord = {
    id, kind: 'purge', dataId: o.dataId, placementId: o.placementId, group: o.group, sizeBytes: o.size, globalId: o.globalId,
    transactionId: id, allObjects: objectsCount(o.size), completedObjects: 0, dispatchedObjects: 0, createdAt: ctx.now, state: 'pending',
  };
  state.tasks.set(id, task);
  return task;
}

function collectable(state: State, o: ObjectRecord): boolean {
  if (o.kind !== 'snapshot') return false;
  if (o.deleted !== true && o.bound !== true && o.transient !== true) return false;
  return childrenOf(state, o).length === 0 && attachmentsOf(state, o).length === 0;
}

/**
 * Removes an object whose data nobody needs any more, queues the purge of its data, then walks up
 * its parents: a snapshot that is deleted (or bound/transient) and now has no child goes too.
 */
export function removeObject(state: State, ctx: ModelContext, o: ObjectRecord): void {
  let current: ObjectRecord | undefined = o;
  for (let depth = 0; current !== undefined && depth < LINEAGE_DEPTH_MAX; depth++) {
    state.objects.delete(current.globalId);
    for (const a of attachmentsOf(state, current)) state.attachments.delete(`${a.globalId}:${a.client}`);
    addPurgeTask(state, ctx, current);
    const parent: ObjectRecord | undefined = current.parentGlobalId === undefined ? undefined : state.objects.get(current.parentGlobalId);
    current = parent !== undefined && collectable(state, parent) ? parent : undefined;
  }
}

/** After an object dropped its parent link: collect the old parent if nothing needs it. */
export function collectParent(state: State, ctx: ModelContext, parentGlobalId: string | undefined): void {
  if (parentGlobalId === undefined) return;
  const parent = state.objects.get(parentGlobalId);
  if (parent !== undefined && collectable(state, parent)) removeObject(state, ctx, parent);
}

/** Throws insufficientResources unless the placement groups can hold the replicas. */
export function checkPlaceable(state: State, ctx: ModelContext, p: Placement): void {
  for (const g of state.groups.values()) if (samePlacement(g, p) && g.placeable) return;
  try {
    buildShardGroup({ id: 0, name: groupName(p), replication: p.replication, placeAll: p.placeAll, placeHead: p.placeHead, placeTail: p.placeTail, shardCount: ctx.shardCount }, mapDisks(state));
  } catch (err) {
    throw new ApiError('insufficientResources', `cannot place ${p.replication} replicas: ${(err as Error).message}`);
  }
}

export function checkPlacementGroupsExist(state: State, p: Placement): void {
  for (const name of new Set([p.placeAll, p.placeHead, p.placeTail])) if (!state.pgs.has(name)) throw notFound(`placement group ${name}`);
}
