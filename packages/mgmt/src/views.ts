/**
 * Records -> the API's response types (API.md §5). Data-path identity (dataId, parents, group)
 * never appears here.
 */
import { shardOf } from '@storpool/protocol';
import { ALLOCATION_GROUP_BYTES, DESCRIBE_OBJECTS_MAX, VOLUME_OBJECT_BYTES } from './limits.js';
import { attachmentsOf, childrenOf, objectName, objectsCount } from './model-helpers.js';
import type { RecoveryTask } from './recovery.js';
import type { DiskRecord, ObjectRecord, State, TaskRecord, TemplateRecord } from './state.js';

export type Json = Record<string, unknown>;

function parentName(state: State, o: ObjectRecord): string {
  if (o.parentGlobalId === undefined) return '';
  const p = state.objects.get(o.parentGlobalId);
  return p === undefined ? '' : objectName(p);
}

function summaryBase(state: State, o: ObjectRecord): Json {
  const out: Json = {
    name: objectName(o), globalId: o.globalId, id: o.visibleVolumeId, size: o.size, replication: o.replication, placeAll: o.placeAll,
    placeTail: o.placeTail, placeHead: o.placeHead, parentName: parentName(state, o), templateName: o.templateName, bw: o.bw, iops: o.iops,
    visibleVolumeId: o.visibleVolumeId, objectsCount: objectsCount(o.size), creationTimestamp: o.creationTimestamp, tags: { ...o.tags },
  };
  if (o.limitType !== undefined) out['limitType'] = o.limitType;
  if (o.reuseServer !== undefined) out['reuseServer'] = o.reuseServer;
  const template = state.templates.get(o.templateName);
  if (template !== undefined) out['templateId'] = template.id;
  if (o.parentGlobalId !== undefined) {
    const p = state.objects.get(o.parentGlobalId);
    if (p !== undefined) out['parentVolumeId'] = p.visibleVolumeId;
  }
  return out;
}

export function volumeSummary(state: State, o: ObjectRecord): Json {
  return summaryBase(state, o);
}

export function snapshotSummary(state: State, o: ObjectRecord): Json {
  const children = childrenOf(state, o);
  const onVolume = children.find((c) => c.kind === 'volume');
  const out: Json = {
    ...summaryBase(state, o), onVolume: onVolume === undefined ? '-' : objectName(onVolume), autoName: o.autoName === true, bound: o.bound === true,
    deleted: o.deleted === true, transient: o.transient === true, recoveringFromRemote: false,
  };
  if (o.targetDeleteDate !== undefined) out['targetDeleteDate'] = o.targetDeleteDate;
  if (o.createdFromGlobalId !== undefined) out['createdFromGlobalId'] = o.createdFromGlobalId;
  if (o.createdFromVisibleVolumeId !== undefined) out['createdFromVisibleVolumeId'] = o.createdFromVisibleVolumeId;
  if (o.deleted === true) out['deleteBlocked'] = children.length > 1 ? 'multiple children' : 'pending';
  return out;
}

export function objectSummary(state: State, o: ObjectRecord): Json {
  return o.kind === 'volume' ? volumeSummary(state, o) : snapshotSummary(state, o);
}

/** Replica disks of each object index, as the shard map places them. */
function objectDisks(state: State, o: ObjectRecord): number[][] {
  const group = state.shardMap?.groups.find((g) => g.id === o.group);
  const count = Math.min(objectsCount(o.size), DESCRIBE_OBJECTS_MAX);
  const out: number[][] = [];
  for (let i = 0; i < count; i++) out.push(group === undefined ? [] : [...(group.shards[shardOf(o.placementId, i, group.shards.length)] ?? [])]);
  return out;
}

/** VolumeDescribe / SnapshotDescribe: the summary + targetDiskSets + objects. */
export function describe(state: State, o: ObjectRecord): Json {
  const objects = objectDisks(state, o);
  const sets = new Map(objects.map((d) => [d.join(','), d]));
  return { ...objectSummary(state, o), targetDiskSets: [...sets.values()], objects };
}

/** VolumeGetInfo / SnapshotGetInfo. */
export function info(state: State, o: ObjectRecord): Json {
  const objects = objectDisks(state, o);
  const perDisk: Record<string, number> = {};
  const perChain = new Map<string, { disks: number[]; count: number }>();
  for (const disks of objects) {
    for (const d of disks) perDisk[String(d)] = (perDisk[String(d)] ?? 0) + 1;
    const key = disks.join(',');
    const chain = perChain.get(key) ?? { disks, count: 0 };
    chain.count++;
    perChain.set(key, chain);
  }
  const chains = [...perChain.values()];
  return { ...objectSummary(state, o), disksCount: Object.keys(perDisk).length, objectsPerDisk: perDisk, objectsPerChain: chains, objectsPerDiskSet: chains };
}

export function templateDesc(state: State, t: TemplateRecord): Json {
  const out: Json = {
    id: t.id, name: t.name, parentName: t.parentGlobalId === undefined ? '' : objectName(state.objects.get(t.parentGlobalId) ?? ({ globalId: t.parentGlobalId } as ObjectRecord)),
    placeAll: t.placeAll, placeTail: t.placeTail, placeHead: t.placeHead, size: t.size, replication: t.replication, bw: t.bw, iops: t.iops,
  };
  if (t.limitType !== undefined) out['limitType'] = t.limitType;
  if (t.reuseServer !== undefined) out['reuseServer'] = t.reuseServer;
  return out;
}

/** Live numbers of a disk (from its storage server), or undefined while it is down. */
export interface DiskLive {
  blocksTotal: number;
  blocksUsed: number;
  blocksFree: number;
  blockBytes: number;
}

function pgCapacity(state: State, pgName: string, live: Map<number, DiskLive>): { capacity: number; free: number } {
  let capacity = 0;
  let free = 0;
  for (const id of state.pgs.get(pgName)?.disks ?? []) {
    const l = live.get(id);
    if (l === undefined) continue;
    capacity += l.blocksTotal * l.blockBytes;
    free += l.blocksFree * l.blockBytes;
  }
  return { capacity, free };
}

export function templateStatus(state: State, t: TemplateRecord, live: Map<number, DiskLive>, storedBytes: Map<number, number>): Json {
  const users = [...state.objects.values()].filter((o) => o.templateName === t.name);
  const volumes = users.filter((o) => o.kind === 'volume');
  const snapshots = users.filter((o) => o.kind === 'snapshot');
  const replication = t.replication === '-' ? 1 : t.replication;
  const volumesSize = volumes.reduce((n, o) => n + o.size, 0);
  const withChildren = snapshots.filter((s) => childrenOf(state, s).length > 0);
  const capacities = new Map<string, { capacity: number; free: number }>();
  for (const pg of [t.placeAll, t.placeTail, t.placeHead]) if (!capacities.has(pg)) capacities.set(pg, pgCapacity(state, pg, live));
  const roles = { placeAll: capacities.get(t.placeAll)!, placeTail: capacities.get(t.placeTail)!, placeHead: capacities.get(t.placeHead)! };
  // Client-data estimate: every replica slot draws from its group; a group serving k slots holds
  // 1/k of its bytes per copy, and the scarcest slot bounds the whole.
  const slots = replication === 1 ? [t.placeHead] : [t.placeHead, ...Array<string>(replication - 2).fill(t.placeAll), t.placeTail];
  const perSlot = (field: 'capacity' | 'free'): number => Math.min(...slots.map((pg) => Math.floor(capacities.get(pg)![field] / slots.filter((x) => x === pg).length)));
  const stored = (c: { capacity: number; free: number }): Json => ({ capacity: c.capacity, free: c.free, internal: { u1: 0, u2: 0, u3: 0 } });
  return {
    id: t.id, name: t.name, placeAll: t.placeAll, placeTail: t.placeTail, placeHead: t.placeHead, replication: t.replication,
    volumesCount: volumes.length, snapshotsCount: snapshots.length, removingSnapshotsCount: snapshots.filter((s) => s.deleted === true).length,
    size: volumesSize, totalSize: volumesSize * replication, volumesSize,
    snapshotsWithoutChildrenSize: snapshots.filter((s) => !withChildren.includes(s)).reduce((n, o) => n + o.size, 0),
    snapshotsWithChildrenSize: withChildren.reduce((n, o) => n + o.size, 0),
    storedSize: users.reduce((n, o) => n + (storedBytes.get(o.dataId) ?? 0), 0),
    onDiskSize: users.reduce((n, o) => n + (storedBytes.get(o.dataId) ?? 0) * o.replication, 0),
    availablePlaceAll: roles.placeAll.free, availablePlaceTail: roles.placeTail.free, availablePlaceHead: roles.placeHead.free,
    capacityPlaceAll: roles.placeAll.capacity, capacityPlaceTail: roles.placeTail.capacity, capacityPlaceHead: roles.placeHead.capacity,
    stored: {
      capacity: perSlot('capacity'), free: perSlot('free'), internal: { u1: 0, u2: 0, u3: 0 },
      placeAll: stored(roles.placeAll), placeTail: stored(roles.placeTail), placeHead: stored(roles.placeHead),
    },
  };
}

export function placementGroup(state: State, name: string): Json {
  const pg = state.pgs.get(name)!;
  return { id: pg.id, name: pg.name, disks: [...pg.disks] };
}

export function attachmentsList(state: State): Json[] {
  return [...state.attachments.values()]
    .sort((a, b) => a.client - b.client || a.pos - b.pos)
    .flatMap((a) => {
      const o = state.objects.get(a.globalId);
      if (o === undefined) return [];
      return [{ volume: objectName(o), snapshot: o.kind === 'snapshot', client: a.client, rights: a.rights, pos: a.pos, globalId: o.globalId }];
    });
}

export function diskSummary(state: State, d: DiskRecord, live: DiskLive | undefined, extra: Json | undefined): Json {
  const base: Json = {
    id: d.id, serverId: d.serverId, ssd: d.ssd, generationLeft: live === undefined || d.ejected ? d.generation : -1, model: d.model, serial: d.serial,
    description: d.description, softEject: d.softEject,
  };
  if (live === undefined || d.ejected) return base;
  const bytesTotal = live.blocksTotal * live.blockBytes;
  const bytesUsed = live.blocksUsed * live.blockBytes;
  const agCount = Math.floor(bytesTotal / ALLOCATION_GROUP_BYTES);
  const agAllocated = Math.min(agCount, Math.ceil(bytesUsed / ALLOCATION_GROUP_BYTES));
  const objectSlots = Math.floor(bytesTotal / VOLUME_OBJECT_BYTES);
  const objectsAllocated = Math.min(objectSlots, Math.ceil(bytesUsed / VOLUME_OBJECT_BYTES));
  const scrubbing = d.scrubStartedAt !== undefined;
  return {
    ...base, sectorsCount: Math.floor(bytesTotal / 512), empty: live.blocksUsed === 0, noFua: false, noFlush: false, noTrim: false, isWbc: false,
    journaled: false, device: `disk-${d.id}`, entriesCount: live.blocksTotal, entriesAllocated: live.blocksUsed, entriesFree: live.blocksFree,
    objectsCount: objectSlots, objectsAllocated, objectsFree: objectSlots - objectsAllocated, objectsOnDiskSize: bytesUsed,
    scrubbingStartedBefore: scrubbing ? Math.max(0, Math.floor(Date.now() / 1000) - d.scrubStartedAt!) : 0, scrubbedBytes: 0, scrubbingBW: 0,
    scrubbingFinishAfter: 0, scrubbingPausedFor: 0, scrubbingPaused: false, lastScrubCompleted: 0,
    agCount, agAllocated, agFree: agCount - agAllocated, agFull: agAllocated, agPartial: 0, agFreeing: 0, agMaxSizeFull: 0, agMaxSizePartial: 0,
    wbc: null, aggregateScore: { entries: 0, space: 0, total: 0 }, ...(extra ?? {}),
  };
}

/** TasksList: one entry per disk of the task's shard group (the disks that hold its data). */
export function tasks(state: State, list: TaskRecord[]): Json[] {
  return list.flatMap((t) => {
    const group = state.shardMap?.groups.find((g) => g.id === t.group);
    const disks = group === undefined ? [0] : [...new Set(group.shards.flat())].sort((a, b) => a - b);
    return disks.map((diskId) => ({
      diskId, transactionId: t.transactionId, allObjects: t.allObjects, completedObjects: t.completedObjects, dispatchedObjects: t.dispatchedObjects,
      unresolvedObjects: 0, kind: t.kind, state: t.state, globalId: t.globalId, ...(t.lastError !== undefined ? { lastError: t.lastError } : {}),
    }));
  });
}

/** Catch-up of joining disks, in TasksList's shape (objects = shards here) plus byte counts. */
export function recoveryTasks(list: readonly RecoveryTask[]): Json[] {
  return list.map((t) => ({
    diskId: t.diskId, transactionId: 0, allObjects: t.allShards, completedObjects: t.completedShards, dispatchedObjects: t.allShards - t.completedShards, unresolvedObjects: 0,
    kind: 'recovery', state: t.lastError === undefined ? 'running' : 'retrying', objectsCompared: t.objectsCompared, objectsCopied: t.objectsCopied, bytesCopied: t.bytesCopied,
    startedAt: Math.floor(t.startedAt / 1000), ...(t.lastError !== undefined ? { lastError: t.lastError } : {}),
  }));
}

/**
 * VolumeBalancerStatus: the balancer here is automatic (the leader reconciles placement on every
 * change, see shard-map.ts), so the status reports what it is doing, not a computed plan.
 * `blocked`: a group's placement groups cannot hold its copies; `working`: shards are joining disks.
 */
export function balancerStatus(state: State): Json {
  const groups = state.shardMap?.groups ?? [];
  const joining = groups.reduce((n, g) => n + (g.joining ?? []).reduce((m, j) => m + j.length, 0), 0);
  const shards = groups.reduce((n, g) => n + g.shards.length, 0);
  const blocked = [...state.groups.values()].some((g) => g.placeable === false);
  return { status: blocked ? 'blocked' : joining > 0 ? 'working' : 'nothing to do', auto: true, shards, joiningShards: joining };
}

/** Space of an object: what it holds itself; spaceUsed adds its ancestors' data (bytes, no replication). */
export function space(state: State, o: ObjectRecord, stored: Map<number, number>): Json {
  const own = stored.get(o.dataId) ?? 0;
  const chain = o.parents.reduce((n, id) => n + (stored.get(id) ?? 0), 0);
  const used = o.kind === 'volume' ? own + chain : own;
  return { ...objectSummary(state, o), storedSize: own, spaceUsed: used };
}

export function objectStatus(state: State, o: ObjectRecord, stored: Map<number, number>, downDisks: Set<number>): Json {
  const disks = [...new Set(objectDisks(state, o).flat())];
  const down = disks.filter((d) => downDisks.has(d));
  const own = stored.get(o.dataId) ?? 0;
  const group = state.shardMap?.groups.find((g) => g.id === o.group);
  const migrating = (group?.joining ?? []).some((j) => j.length > 0);
  const softEjecting = disks.filter((d) => state.disks.get(d)?.softEject === 'on');
  return {
    ...objectSummary(state, o), status: down.length === 0 ? 'up' : 'down', snapshot: o.kind === 'snapshot', migrating,
    decreasedRedundancy: down.length > 0 || (group?.shards.some((r) => r.length < o.replication) ?? false), balancerBlocked: state.groups.get(o.group)?.placeable === false,
    syncingDataBytes: 0, syncingMetaObjects: 0, downBytes: 0,
    upSoonChainsCount: 0, downDrives: down, missingDrives: [], missingTargetDrives: [], softEjectingDrives: softEjecting, storedSize: own, onDiskSize: own * o.replication,
  };
}

export { attachmentsOf };
