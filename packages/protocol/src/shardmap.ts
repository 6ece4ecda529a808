/**
 * The shard map: which disks hold each shard of each shard group, in replica order (the first is
 * the primary). Objects hash to shards; shards are placed on disks by weighted rendezvous hashing
 * (highest random weight), so adding a disk moves only about weight/total of the shards, and no two
 * replicas of a shard share a server or a fault set. Every change bumps `epoch`.
 */
import { StorpoolError } from '@storpool/errors';
import { z } from 'zod';
import { isClusterId } from './handshake.js';

export interface DiskAddress {
  host: string;
  port: number;
}

export interface DiskEntry {
  /** Disk id: one storage-server process serves one disk. */
  id: number;
  /** Host-level server id: no two replicas of a shard on the same server. */
  serverId: number;
  /** Failure domain (rack, PDU...): no two replicas of a shard in the same fault set. */
  faultSet: string;
  address: DiskAddress;
  /** Relative capacity (e.g. GiB); shards land in proportion. */
  weight: number;
  placementGroups: string[];
}

export interface ShardGroup {
  /** Carried in every request header (u16). */
  id: number;
  name: string;
  replication: number;
  /** Placement group of the first replica (the primary), as StorPool templates' placeHead. */
  placeHead: string;
  /** Placement group of the middle replicas. */
  placeAll: string;
  /** Placement group of the last replica (replication >= 2). */
  placeTail: string;
  /** shards[i] = the in-sync disks of shard i, primary first: they take writes and serve reads. */
  shards: number[][];
  /**
   * joining[i] = disks being filled with shard i (a returning disk catching up, a new disk taking
   * over): the primary's sync session copies the shard to them and keeps them current; they serve
   * no reads and do not count towards minReplicas. Absent = none anywhere.
   */
  joining?: number[][];
  /**
   * terms[i] = the epoch at which shard i's current primary took over. Object versions written by a
   * primary start at term * VERSION_TERM_SCALE, so that writes of two primaries never share a
   * version (an old primary's unacknowledged write is told apart on catch-up). Absent = all 0.
   */
  terms?: number[];
  /** Writes are refused while a shard has fewer in-sync disks than this (Ceph's min_size). Default 1. */
  minReplicas?: number;
}

/** Versions of a primary's term t start at t * VERSION_TERM_SCALE (< 2^53 for any u32 epoch below 2^31). */
export const VERSION_TERM_SCALE = 0x40_0000;

export interface ShardMap {
  clusterId: string;
  epoch: number;
  disks: DiskEntry[];
  groups: ShardGroup[];
}

export const SHARDS_PER_GROUP_DEFAULT = 1024;
export const REPLICATION_MAX = 3;

const diskSchema = z.object({
  id: z.number().int().min(1).max(0xffffffff),
  serverId: z.number().int().min(0).max(0xffffffff),
  faultSet: z.string().max(128),
  address: z.object({ host: z.string().min(1).max(255), port: z.number().int().min(1).max(65535) }),
  weight: z.number().positive().finite(),
  placementGroups: z.array(z.string().min(1).max(128)),
});

const groupSchema = z.object({
  id: z.number().int().min(0).max(0xffff),
  name: z.string().min(1).max(128),
  replication: z.number().int().min(1).max(REPLICATION_MAX),
  placeHead: z.string().min(1).max(128),
  placeAll: z.string().min(1).max(128),
  placeTail: z.string().min(1).max(128),
  shards: z.array(z.array(z.number().int().min(1))).min(1).max(1 << 20),
  joining: z.array(z.array(z.number().int().min(1))).optional(),
  terms: z.array(z.number().int().min(0).max(0x7fffffff)).optional(),
  minReplicas: z.number().int().min(1).max(REPLICATION_MAX).optional(),
});

const mapSchema = z.object({
  clusterId: z.string().refine(isClusterId, 'must be a lowercase UUID'),
  epoch: z.number().int().min(1).max(0xffffffff),
  disks: z.array(diskSchema),
  groups: z.array(groupSchema),
});

/** Validates an untrusted shard map (a file, the metadata store) and its cross references. */
export function parseShardMap(value: unknown): ShardMap {
  const parsed = mapSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StorpoolError('MAP_ERR_INVALID', `shard map: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  const map = parsed.data as ShardMap;
  const disks = new Map(map.disks.map((d) => [d.id, d]));
  if (disks.size !== map.disks.length) throw new StorpoolError('MAP_ERR_INVALID', 'shard map: duplicate disk id');
  const groupIds = new Set<number>();
  for (const g of map.groups) {
    if (groupIds.has(g.id)) throw new StorpoolError('MAP_ERR_INVALID', `shard map: duplicate group id ${g.id}`);
    groupIds.add(g.id);
    g.shards.forEach((replicas, shard) => {
      if (replicas.length === 0 || replicas.length > g.replication) {
        throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard} has ${replicas.length} replicas`);
      }
      if (new Set(replicas).size !== replicas.length) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard} repeats a disk`);
      for (const id of replicas) {
        if (!disks.has(id)) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard} names unknown disk ${id}`);
      }
    });
    if (g.joining !== undefined) {
      if (g.joining.length !== g.shards.length) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} has ${g.joining.length} joining lists for ${g.shards.length} shards`);
      g.joining.forEach((joining, shard) => {
        for (const id of joining) {
          if (!disks.has(id)) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard} joins unknown disk ${id}`);
          if (g.shards[shard]!.includes(id)) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard}: disk ${id} is both in sync and joining`);
        }
        if (new Set(joining).size !== joining.length) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} shard ${shard} repeats a joining disk`);
      });
    }
    if (g.terms !== undefined && g.terms.length !== g.shards.length) throw new StorpoolError('MAP_ERR_INVALID', `shard map: group ${g.name} has ${g.terms.length} terms for ${g.shards.length} shards`);
  }
  return map;
}

/** 32-bit avalanche mix (murmur3 fmix32). */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hash3(a: number, b: number, c: number): number {
  let h = fmix32(a ^ 0x9e3779b9);
  h = fmix32(h ^ b);
  h = fmix32(h ^ Math.imul(c, 0x27d4eb2f));
  return h;
}

/** The shard an object belongs to. Stable for a given shard count. */
export function shardOf(volumeId: number, objectIndex: number, shardCount: number): number {
  const low = volumeId >>> 0;
  const high = Math.floor(volumeId / 0x1_0000_0000) >>> 0;
  return hash3(low ^ fmix32(high), objectIndex, 0x5bd1e995) % shardCount;
}

/** The placement group each replica slot draws from: head, then all, ..., then tail. */
export function slotPlacementGroups(replication: number, roles: { placeHead: string; placeAll: string; placeTail: string }): string[] {
  if (replication === 1) return [roles.placeHead];
  return [roles.placeHead, ...Array<string>(replication - 2).fill(roles.placeAll), roles.placeTail];
}

/**
 * Replica order for one shard by rendezvous hashing: every disk gets a score
 * weight / -ln(u), u a hash of (group, shard, disk) in (0,1); each replica slot takes the
 * best-scored disk of its placement group whose server and fault set hold no replica yet.
 * Returns fewer disks than slots when the domains run out.
 */
export function placeReplicas(groupId: number, shard: number, disks: readonly DiskEntry[], slots: readonly string[]): number[] {
  const scored = disks.map((d) => {
    const u = (hash3(groupId, shard, d.id) + 0.5) / 0x1_0000_0000;
    return { d, score: d.weight / -Math.log(u) };
  });
  scored.sort((x, y) => y.score - x.score || x.d.id - y.d.id);
  const out: number[] = [];
  const servers = new Set<number>();
  const faultSets = new Set<string>();
  for (const placementGroup of slots) {
    const pick = scored.find(({ d }) => d.placementGroups.includes(placementGroup) && !servers.has(d.serverId) && !(d.faultSet !== '' && faultSets.has(d.faultSet)) && !out.includes(d.id));
    if (pick === undefined) break;
    out.push(pick.d.id);
    servers.add(pick.d.serverId);
    if (pick.d.faultSet !== '') faultSets.add(pick.d.faultSet);
  }
  return out;
}

export interface ShardGroupSpec {
  id: number;
  name: string;
  replication: number;
  placeAll: string;
  /** Default: placeAll. */
  placeHead?: string;
  /** Default: placeAll. */
  placeTail?: string;
  shardCount?: number;
}

/** Places every shard of a group over the disks of its placement groups. */
export function buildShardGroup(spec: ShardGroupSpec, disks: readonly DiskEntry[]): ShardGroup {
  const roles = { placeHead: spec.placeHead ?? spec.placeAll, placeAll: spec.placeAll, placeTail: spec.placeTail ?? spec.placeAll };
  const slots = slotPlacementGroups(spec.replication, roles);
  const shardCount = spec.shardCount ?? SHARDS_PER_GROUP_DEFAULT;
  const shards: number[][] = [];
  for (let s = 0; s < shardCount; s++) {
    const replicas = placeReplicas(spec.id, s, disks, slots);
    if (replicas.length < spec.replication) {
      throw new StorpoolError(
        'MAP_ERR_INVALID',
        `placement groups ${[...new Set(slots)].join(', ')} have too few disks in distinct servers and fault sets for replication ${spec.replication}: add disks or lower the replication`,
      );
    }
    shards.push(replicas);
  }
  return { id: spec.id, name: spec.name, replication: spec.replication, ...roles, shards };
}

export interface ShardPlacement {
  /** In-sync disks, primary first. */
  replicas: readonly number[];
  /** Disks catching up (see ShardGroup.joining). */
  joining: readonly number[];
  term: number;
  minReplicas: number;
}

const NONE: readonly number[] = Object.freeze([]);

/** Read-only lookups over a validated map. */
export class ShardRouter {
  readonly map: ShardMap;
  readonly #disks: Map<number, DiskEntry>;
  readonly #groups: Map<number, ShardGroup>;

  constructor(map: ShardMap) {
    this.map = map;
    this.#disks = new Map(map.disks.map((d) => [d.id, d]));
    this.#groups = new Map(map.groups.map((g) => [g.id, g]));
  }

  get epoch(): number {
    return this.map.epoch;
  }

  disk(id: number): DiskEntry | undefined {
    return this.#disks.get(id);
  }

  group(id: number): ShardGroup | undefined {
    return this.#groups.get(id);
  }

  groupByName(name: string): ShardGroup | undefined {
    return this.map.groups.find((g) => g.name === name);
  }

  /** Shard and its in-sync replica disks (primary first) for an object. */
  locate(groupId: number, volumeId: number, objectIndex: number): { shard: number; replicas: readonly number[] } {
    const group = this.#groups.get(groupId);
    if (group === undefined) throw new StorpoolError('MAP_ERR_INVALID', `shard group ${groupId} is not in map epoch ${this.map.epoch}`);
    const shard = shardOf(volumeId, objectIndex, group.shards.length);
    return { shard, replicas: group.shards[shard]! };
  }

  /** Everything the data path needs about one shard of a group. */
  shard(groupId: number, shard: number): ShardPlacement {
    const group = this.#groups.get(groupId);
    if (group === undefined) throw new StorpoolError('MAP_ERR_INVALID', `shard group ${groupId} is not in map epoch ${this.map.epoch}`);
    const replicas = group.shards[shard];
    if (replicas === undefined) throw new StorpoolError('MAP_ERR_INVALID', `shard group ${groupId} has no shard ${shard}`);
    return { replicas, joining: group.joining?.[shard] ?? NONE, term: group.terms?.[shard] ?? 0, minReplicas: group.minReplicas ?? 1 };
  }
}
