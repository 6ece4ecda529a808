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

/** Disks as the data path sees them: ejected, soft-ejected and gone disks get no new placement. */
export function mapDisks(state: State): DiskEntry[] {
  const out: DiskEntry[] = [];
  for (const d of [...state.disks.values()].sort((a, b) => a.id - b.id)) {
    const placementGroups = d.ejected || d.softEject === 'on' || d.gone === true ? [] : [...state.pgs.values()].filter((pg) => pg.disks.includes(d.id)).map((pg) => pg.name).sort();
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
 * epoch if anything changed. Returns true when the map changed.
 *
 * Each shard has a *target* placement (rendezvous hashing over the disks that may hold data: not
 * ejected, not soft-ejected, not gone for good) and a current one: the in-sync disks (`shards`) and
 * the disks being filled (`joining`). A down or ejected disk leaves the in-sync list at once (I/O
 * goes on with the others), unless it is the last copy; a target disk that is up and not in sync
 * joins, and the recovery task promotes it once its catch-up copy is done (promoteJoined). A disk
 * that is in sync but no longer in the target (rebalancing, soft ejection) stays until every target
 * disk is in sync. The
 * primary is the first in-sync disk in target order; a new primary starts a new term.
 * A group whose placement groups cannot hold its replicas keeps its previous target and is marked
 * not placeable.
 */
export function reconcileShardMap(state: State, shardCount: number): boolean {
  if (state.cluster === undefined) return false;
  const disks = mapDisks(state);
  const exists = new Set(state.disks.keys());
  const down = new Set([...state.disks.values()].filter((d) => d.down === true).map((d) => d.id));
  // DiskEject means "stop using the disk now, even if it holds data" (StorPool): it leaves the
  // in-sync lists like a down disk instead of staying until its replacements are in sync, which is
  // DiskSoftEject's job.
  const ejected = new Set([...state.disks.values()].filter((d) => d.ejected).map((d) => d.id));
  const used = groupsInUse(state, shardCount);
  const previous = new Map((state.shardMap?.groups ?? []).map((g) => [g.id, g]));
  const epoch = state.shardMap?.epoch ?? 0;
  const groups: ShardGroup[] = [];
  for (const id of [...used].sort((a, b) => a - b)) {
    const record = state.groups.get(id);
    if (record === undefined) continue;
    const spec = { id, name: groupName(record), replication: record.replication, placeAll: record.placeAll, placeHead: record.placeHead, placeTail: record.placeTail, shardCount: record.shardCount };
    const old = previous.get(id);
    let target: ShardGroup | undefined;
    try {
      target = buildShardGroup(spec, disks);
      record.placeable = true;
    } catch (err) {
      if (!(err instanceof StorpoolError) || err.code !== 'MAP_ERR_INVALID') throw err;
      record.placeable = false;
    }
    const minReplicas = minReplicasOf(state, record.replication);
    if (old === undefined) {
      // A new group holds no data yet: its target placement is in sync from the start.
      if (target !== undefined) {
        const terms = target.shards.map(() => epoch + 1);
        groups.push({ ...target, joining: target.shards.map(() => []), terms, minReplicas });
        // Nothing to compare in a group without data.
        record.peered = [...terms];
      }
      continue;
    }
    const wanted = target?.shards ?? old.shards.map((inSync, i) => [...inSync, ...(old.joining?.[i] ?? [])]);
    if (!wanted.every((replicas) => replicas.every((d) => exists.has(d)))) continue;
    const shards: number[][] = [];
    const joining: number[][] = [];
    const terms: number[] = [];
    old.shards.forEach((oldInSync, i) => {
      const want = wanted[i]!;
      let inSync = oldInSync.filter((d) => exists.has(d) && !down.has(d) && !ejected.has(d));
      // The last copies stay listed while down (or ejected): I/O waits for one to return rather than fail over to nothing.
      if (inSync.length === 0) inSync = oldInSync.filter((d) => exists.has(d));
      inSync = want.every((d) => inSync.includes(d)) ? [...want] : [...want.filter((d) => inSync.includes(d)), ...inSync.filter((d) => !want.includes(d))];
      shards.push(inSync);
      joining.push(want.filter((d) => !inSync.includes(d) && !down.has(d)));
      terms.push(inSync[0] === oldInSync[0] ? (old.terms?.[i] ?? 0) : epoch + 1);
    });
    groups.push({ id, name: spec.name, replication: record.replication, placeHead: record.placeHead, placeAll: record.placeAll, placeTail: record.placeTail, shards, joining, terms, minReplicas });
  }
  const next: ShardMap = { clusterId: state.cluster.clusterId, epoch, disks, groups };
  if (state.shardMap !== undefined && JSON.stringify(next) === JSON.stringify(state.shardMap)) return false;
  next.epoch = epoch + 1;
  state.shardMap = next;
  return true;
}

/** Ceph's min_size: the cluster setting, or a majority of the copies (3 -> 2, 2 -> 1). */
export function minReplicasOf(state: State, replication: number): number {
  const configured = state.cluster?.minReplicas;
  return Math.max(1, Math.min(replication, configured ?? replication - Math.floor(replication / 2)));
}

/**
 * Moves `target` from joining to in sync for the given shards of a group, where it still joins and
 * `primary` (which ran the catch-up copy and kept the target current since) is still the primary.
 * The map is reconciled by the caller's mutation.
 */
export function promoteJoined(state: State, groupId: number, shards: readonly number[], target: number, primary: number): number {
  if (state.shardMap === undefined) return 0;
  // A copy with the epoch bumped: a changed map never keeps its epoch.
  const map = structuredClone(state.shardMap);
  const group = map.groups.find((g) => g.id === groupId);
  if (group?.joining === undefined) return 0;
  let promoted = 0;
  for (const i of shards) {
    const joining = group.joining[i];
    // Only the primary that ran the copy kept the target current: after a failover, copy again.
    if (joining === undefined || !joining.includes(target) || group.shards[i]?.[0] !== primary) continue;
    group.joining[i] = joining.filter((d) => d !== target);
    group.shards[i] = [...group.shards[i]!, target];
    promoted++;
  }
  if (promoted > 0) {
    map.epoch++;
    state.shardMap = map;
  }
  return promoted;
}

/** The placement of an object's policy. */
export function placementOf(p: Policy): Placement {
  return { replication: p.replication, placeHead: p.placeHead, placeAll: p.placeAll, placeTail: p.placeTail };
}
