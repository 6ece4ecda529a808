/**
 * The shard map is owned here: one shard group per distinct placement combination
 * (replication, placeHead, placeAll, placeTail) that a template or an object uses, with ids that
 * never change; disks from the disk records, placement groups from the placement-group records.
 * `reconcileShardMap` runs inside every mutation: when the map it computes differs from the stored
 * one, it stores it with the epoch bumped.
 */
import { StorpoolError } from '@storpool/errors';
import { buildShardGroup, type DiskEntry, type ShardGroup, type ShardMap } from '@storpool/protocol';
import type { Policy, ShardGroupRecord, State } from './state.js';

export interface Placement {
  replication: number;
  placeHead: string;
  placeAll: string;
  placeTail: string;
}

export function groupName(p: Placement): string {
  return `r${p.replication}:${p.placeHead}:${p.placeAll}:${p.placeTail}`;
}

export function samePlacement(a: Placement, b: Placement): boolean {
  return a.replication === b.replication && a.placeHead === b.placeHead && a.placeAll === b.placeAll && a.placeTail === b.placeTail;
}

/** The group record for a placement, allocating an id for a new combination. */
export function groupFor(state: State, p: Placement, shardCount: number): ShardGroupRecord {
  for (const g of state.groups.values()) if (samePlacement(g, p)) return g;
  const id = state.counters.nextGroupId++;
  if (id > 0xffff) throw new StorpoolError('MAP_ERR_INVALID', 'out of shard group ids');
  const record: ShardGroupRecord = { id, replication: p.replication, placeHead: p.placeHead, placeAll: p.placeAll, placeTail: p.placeTail, shardCount, placeable: false };
  state.groups.set(id, record);
  return record;
}

/** Disks as the data path sees them: ejected and soft-ejected disks get no new placement. */
export function mapDisks(state: State): DiskEntry[] {
  const out: DiskEntry[] = [];
  for (const d of [...state.disks.values()].sort((a, b) => a.id - b.id)) {
    const placementGroups = d.ejected || d.softEject === 'on' ? [] : [...state.pgs.values()].filter((pg) => pg.disks.includes(d.id)).map((pg) => pg.name).sort();
    // The wire protocol numbers disks from 1; disk 0 can be registered but never placed.
    if (d.id < 1) continue;
    out.push({ id: d.id, serverId: d.serverId, faultSet: d.faultSet, address: { ...d.address }, weight: d.weight, placementGroups });
  }
  return out;
}

/** Group ids in use: by templates, by objects' data and by objects' policies. */
function groupsInUse(state: State, shardCount: number): Set<number> {
  const used = new Set<number>();
  for (const t of state.templates.values()) {
    if (t.replication === '-') continue;
    used.add(groupFor(state, { replication: t.replication, placeHead: t.placeHead, placeAll: t.placeAll, placeTail: t.placeTail }, shardCount).id);
  }
  for (const o of state.objects.values()) {
    used.add(o.group);
    used.add(groupFor(state, o, shardCount).id);
  }
  return used;
}

/**
 * Recomputes the shard map from the records and stores it in `state.shardMap` with a bumped
 * epoch if anything changed. A group whose placement groups cannot hold its replicas keeps its
 * previous placement (if every disk of it still exists) and is marked not placeable.
 * Returns true when the map changed.
 */
export function reconcileShardMap(state: State, shardCount: number): boolean {
  if (state.cluster === undefined) return false;
  const disks = mapDisks(state);
  const diskIds = new Set(disks.map((d) => d.id));
  const used = groupsInUse(state, shardCount);
  const previous = new Map((state.shardMap?.groups ?? []).map((g) => [g.id, g]));
  const groups: ShardGroup[] = [];
  for (const id of [...used].sort((a, b) => a - b)) {
    const record = state.groups.get(id);
    if (record === undefined) continue;
    const spec = { id, name: groupName(record), replication: record.replication, placeAll: record.placeAll, placeHead: record.placeHead, placeTail: record.placeTail, shardCount: record.shardCount };
    try {
      groups.push(buildShardGroup(spec, disks));
      record.placeable = true;
    } catch (err) {
      if (!(err instanceof StorpoolError) || err.code !== 'MAP_ERR_INVALID') throw err;
      record.placeable = false;
      const old = previous.get(id);
      if (old !== undefined && old.shards.every((replicas) => replicas.every((d) => diskIds.has(d)))) groups.push(old);
    }
  }
  const epoch = state.shardMap?.epoch ?? 0;
  const next: ShardMap = { clusterId: state.cluster.clusterId, epoch, disks, groups };
  if (state.shardMap !== undefined && JSON.stringify(next) === JSON.stringify(state.shardMap)) return false;
  next.epoch = epoch + 1;
  state.shardMap = next;
  return true;
}

/** The placement of an object's policy. */
export function placementOf(p: Policy): Placement {
  return { replication: p.replication, placeHead: p.placeHead, placeAll: p.placeAll, placeTail: p.placeTail };
}
