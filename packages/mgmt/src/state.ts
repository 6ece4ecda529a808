/**
 * The cluster state as kept in the metadata store: one JSON record per key under `mgmt/`.
 *
 *   mgmt/cluster              ClusterRecord (ids of this cluster; written once)
 *   mgmt/counters             Counters: generation and every id allocator. Every mutation bumps
 *                             `generation`, so every mutation writes this key: comparing its revision
 *                             makes mutations serializable (see store.ts).
 *   mgmt/disks/<id>           DiskRecord
 *   mgmt/pgs/<name>           PlacementGroupRecord
 *   mgmt/templates/<name>     TemplateRecord
 *   mgmt/objects/<globalId>   ObjectRecord (volumes and snapshots)
 *   mgmt/attachments/<gid>:<client>  AttachmentRecord
 *   mgmt/clients/<id>         ClientRecord
 *   mgmt/groups/<id>          ShardGroupRecord (one per placement combination; ids never change)
 *   mgmt/tasks/<id>           TaskRecord
 *   mgmt/kv/<bucket>          KvBucketRecord
 *   mgmt/shardmap             the ShardMap (protocol format), with its epoch
 */
import type { ShardMap } from '@storpool/protocol';

export const STATE_PREFIX = 'mgmt/';
export const COUNTERS_KEY = `${STATE_PREFIX}counters`;
export const SHARD_MAP_KEY = `${STATE_PREFIX}shardmap`;

export type Limit = number | '-';

export interface ClusterRecord {
  /** The data path's cluster id (a UUID, in every disk's superblock and the shard map). */
  clusterId: string;
  /** SP_CLUSTER_ID: `<location>.<subcluster>`, the first two parts of every globalId. */
  spClusterId: string;
  /** Human name (RemoteCommand/<name>/...). */
  name: string;
  createdAt: number;
  /** Writes need this many in-sync copies (Ceph's min_size); default a majority of the replication. */
  minReplicas?: number;
}

export interface Counters {
  generation: number;
  nextDataId: number;
  nextObjectId: number;
  nextTemplateId: number;
  nextPlacementGroupId: number;
  nextGroupId: number;
  nextTaskId: number;
}

export interface DiskRecord {
  id: number;
  serverId: number;
  faultSet: string;
  address: { host: string; port: number };
  weight: number;
  ssd: boolean;
  model: string;
  serial: string;
  description: string;
  /** 'on' once soft-ejected: no new placement on it. */
  softEject: 'on' | 'off' | 'paused';
  /** Ejected: left out of every placement. */
  ejected: boolean;
  /** Generation at registration (reported as generationLeft while down). */
  generation: number;
  scrubStartedAt?: number;
  /** Not answering the leader's probes (since downSince, ms): out of every in-sync list. */
  down?: boolean;
  downSince?: number;
  /** Down for longer than the re-replication timeout: its copies are rebuilt elsewhere; no placement. */
  gone?: boolean;
}

export interface PlacementGroupRecord {
  id: number;
  name: string;
  disks: number[];
}

export interface Policy {
  replication: number;
  placeAll: string;
  placeTail: string;
  placeHead: string;
  bw: Limit;
  iops: Limit;
  limitType?: 'total' | 'perGiB';
  reuseServer?: boolean;
}

export interface TemplateRecord {
  id: number;
  name: string;
  replication: number | '-';
  placeAll: string;
  placeTail: string;
  placeHead: string;
  size: number | '-';
  bw: Limit;
  iops: Limit;
  limitType?: 'total' | 'perGiB';
  reuseServer?: boolean;
  /** Global id of the snapshot new volumes are based on. */
  parentGlobalId?: string;
}

export interface ObjectRecord extends Policy {
  kind: 'volume' | 'snapshot';
  /** `<spClusterId>.<base36 objectId>`. */
  globalId: string;
  visibleVolumeId: number;
  /** Undefined for anonymous volumes (listed as `~<globalId>`). */
  name?: string;
  size: number;
  templateName: string;
  tags: Record<string, string>;
  creationTimestamp: number;
  /** Direct parent snapshot. */
  parentGlobalId?: string;
  // Data-path identity (never in the API output).
  /** Unique, never reused: the ids of this object's own data. */
  dataId: number;
  /** dataId of the lineage root: objects hash by it, so a lineage shares disks. */
  placementId: number;
  /** dataIds of the ancestor snapshots, nearest first. */
  parents: number[];
  /** Shard group holding the lineage's data (fixed while data exists). */
  group: number;
  /** Serial of the next auto-named snapshot of this volume. */
  snapshotSerial: number;
  // Snapshot fields.
  autoName?: boolean;
  bound?: boolean;
  deleted?: boolean;
  transient?: boolean;
  targetDeleteDate?: number;
  createdFromGlobalId?: string;
  createdFromVisibleVolumeId?: number;
}

export interface AttachmentRecord {
  globalId: string;
  client: number;
  rights: 'rw' | 'ro';
  pos: number;
  /** Set by the block service while the device is open. */
  open?: boolean;
}

export interface ClientRecord {
  id: number;
  registeredAt: number;
  /** Generation the client applied (the block service reports it). */
  clientGeneration: number;
}

export interface ShardGroupRecord {
  id: number;
  replication: number;
  placeHead: string;
  placeAll: string;
  placeTail: string;
  shardCount: number;
  /** False while the placement groups cannot hold `replication` copies in distinct servers. */
  placeable: boolean;
  /**
   * Per shard, the term (see ShardGroup.terms) whose other in-sync copies were made equal to its
   * primary (peering): a shard whose term differs has a new primary still to be compared with.
   */
  peered?: number[];
}

export interface TaskRecord {
  id: number;
  kind: 'purge';
  /** Data to free. */
  dataId: number;
  placementId: number;
  group: number;
  sizeBytes: number;
  /** What the data belonged to (for the operator). */
  globalId: string;
  transactionId: number;
  allObjects: number;
  completedObjects: number;
  dispatchedObjects: number;
  createdAt: number;
  state: 'pending' | 'running' | 'failed';
  lastError?: string;
}

export interface KvBucketRecord {
  name: string;
  version: number;
  pairs: Record<string, string>;
}

export interface State {
  cluster: ClusterRecord | undefined;
  counters: Counters;
  disks: Map<number, DiskRecord>;
  pgs: Map<string, PlacementGroupRecord>;
  templates: Map<string, TemplateRecord>;
  objects: Map<string, ObjectRecord>;
  attachments: Map<string, AttachmentRecord>;
  clients: Map<number, ClientRecord>;
  groups: Map<number, ShardGroupRecord>;
  tasks: Map<number, TaskRecord>;
  kv: Map<string, KvBucketRecord>;
  shardMap: ShardMap | undefined;
}

export function emptyCounters(): Counters {
  return { generation: 0, nextDataId: 1, nextObjectId: 1, nextTemplateId: 1, nextPlacementGroupId: 1, nextGroupId: 1, nextTaskId: 1 };
}

export function emptyState(): State {
  return {
    cluster: undefined, counters: emptyCounters(), disks: new Map(), pgs: new Map(), templates: new Map(), objects: new Map(),
    attachments: new Map(), clients: new Map(), groups: new Map(), tasks: new Map(), kv: new Map(), shardMap: undefined,
  };
}

export const attachmentKey = (globalId: string, client: number): string => `${globalId}:${client}`;

type Collection = 'disks' | 'pgs' | 'templates' | 'objects' | 'attachments' | 'clients' | 'groups' | 'tasks' | 'kv';
const COLLECTIONS: readonly Collection[] = ['disks', 'pgs', 'templates', 'objects', 'attachments', 'clients', 'groups', 'tasks', 'kv'];

/** The state as key -> JSON text, the unit of storage and of change detection. */
export function serializeState(state: State): Map<string, string> {
  const out = new Map<string, string>();
  if (state.cluster !== undefined) out.set(`${STATE_PREFIX}cluster`, JSON.stringify(state.cluster));
  out.set(COUNTERS_KEY, JSON.stringify(state.counters));
  if (state.shardMap !== undefined) out.set(SHARD_MAP_KEY, JSON.stringify(state.shardMap));
  for (const collection of COLLECTIONS) {
    for (const [id, record] of state[collection] as Map<string | number, unknown>) out.set(`${STATE_PREFIX}${collection}/${String(id)}`, JSON.stringify(record));
  }
  return out;
}

/** Rebuilds the state from its records (the inverse of serializeState). */
export function parseState(records: Iterable<[string, string]>): State {
  const state = emptyState();
  for (const [key, text] of records) {
    if (!key.startsWith(STATE_PREFIX)) continue;
    const rest = key.slice(STATE_PREFIX.length);
    const value: unknown = JSON.parse(text);
    if (rest === 'cluster') state.cluster = value as ClusterRecord;
    else if (rest === 'counters') state.counters = { ...emptyCounters(), ...(value as Counters) };
    else if (rest === 'shardmap') state.shardMap = value as ShardMap;
    else {
      const slash = rest.indexOf('/');
      const collection = rest.slice(0, slash) as Collection;
      const id = rest.slice(slash + 1);
      if (!COLLECTIONS.includes(collection)) continue;
      const numeric = collection === 'disks' || collection === 'clients' || collection === 'groups' || collection === 'tasks';
      (state[collection] as Map<string | number, unknown>).set(numeric ? Number(id) : id, value);
    }
  }
  return state;
}

export function cloneState(state: State): State {
  return parseState(serializeState(state));
}
