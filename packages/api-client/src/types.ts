/**
 * Request and response types of the StorPool-compatible management API (API.md §1.5, §1.6, §5).
 * Field names and optionality follow API.md: "R" fields are required, "O"/"I" optional.
 * Sizes are bytes; integer map keys arrive as JSON strings.
 */

// ---------------------------------------------------------------------------------------------
// Envelopes (§1.5, §1.6)

export interface ApiEnvelope<T> {
  generation: number;
  data: T;
}

export interface ApiErrorBody {
  name: string;
  descr: string;
  transient: boolean;
}

export interface ApiErrorEnvelope {
  error: ApiErrorBody;
}

export interface ApiOk {
  ok: true;
  generation: number;
  info?: string;
}

export interface ApiOkVolumeCreate extends ApiOk {
  autoName?: string;
  name?: string;
  globalId?: string;
}

export interface ApiOkSnapshotCreate extends ApiOk {
  autoName?: string;
  snapshotGlobalId?: string;
  snapshotVisibleVolumeId?: number;
}

export interface ApiOkVolumeBackup extends ApiOk {
  remoteId?: string;
}

// ---------------------------------------------------------------------------------------------
// Scalars (§3)

/** `"-"` means unlimited / none. */
export type Unlimited = '-';
export type LimitType = 'total' | 'perGiB';
export type AttachmentRights = 'rw' | 'ro';
export type OnAttached = 'fail' | 'detach' | 'detachForce' | 'export';
export type McMode = 'move' | 'export';
/** Client ids may be sent as numeric strings (§1.7 rule 1). */
export type ClientIdInput = number | string;
export type DetachClientsList = ClientIdInput[] | 'all';
export type Tags = Record<string, string>;

// ---------------------------------------------------------------------------------------------
// Volumes and snapshots (§5.1 - §5.6, §5.13, §5.14)

export interface VolumeLimits {
  bw: number | Unlimited;
  iops: number | Unlimited;
  limitType?: LimitType;
}

export interface VolumeSummaryBase extends VolumeLimits {
  globalId: string;
  size: number;
  replication: number;
  placeAll: string;
  placeTail: string;
  placeHead: string;
  parentName: string;
  templateName: string;
  visibleVolumeId: number;
  objectsCount: number;
  creationTimestamp: number;
  tags?: Tags;
  reuseServer?: boolean;
  clusterName?: string;
  clusterId?: string;
  id?: number;
  parentVolumeId?: number;
  originalParentVolumeId?: number;
  templateId?: number;
  flags?: number;
  firstNotParentObjectId?: number;
}

export interface VolumeSummary extends VolumeSummaryBase {
  name: string;
}

export interface DiskSetCount {
  disks: number[];
  count: number;
}

export interface ObjectPlacement {
  targetDiskSets: number[][];
  objects: number[][];
}

export interface ObjectStats {
  disksCount: number;
  objectsPerDisk: Record<string, number>;
  objectsPerChain: DiskSetCount[];
  objectsPerDiskSet: DiskSetCount[];
}

export type Volume = VolumeSummary & ObjectPlacement;
export type VolumeInfo = VolumeSummary & ObjectStats;

export type DematerializationStatus =
  | 'pending' | 'allObjectsUsed' | 'complete' | 'blockedRelocate' | 'blockedParentRelocate'
  | 'blockedParentRemoving' | 'blockedParentDifferentVag' | 'destroyed';

export type DeleteBlocked =
  | 'not blocked' | 'pending' | 'rebasing' | 'flushing' | 'volume not found' | 'generation mismatch'
  | 'disk down' | 'multiple children' | 'peer down' | 'write not completed' | 'recovering from remote'
  | 'parent recovering from remote' | 'moving to remote' | 'unknown';

export type McState =
  | 'owner' | 'ownerExported' | 'slaveCopy' | 'clusterLocal' | 'clusterLocalExported'
  | 'clusterLocalAutoReconcile' | 'clusterLocalAutoReconcileExported';

export interface SnapshotSummary extends VolumeSummaryBase {
  name: string;
  /** Volume this snapshot is the parent of, or `"-"`. */
  onVolume: string;
  autoName: boolean;
  bound: boolean;
  deleted: boolean;
  transient: boolean;
  recoveringFromRemote: boolean;
  targetDeleteDate?: number;
  backup?: boolean;
  backupOfVisibleVolumeId?: number;
  backupOfGlobalId?: string;
  createdFromVisibleVolumeId?: number;
  createdFromGlobalId?: string;
  dematerializationStatus?: DematerializationStatus;
  deleteBlocked?: DeleteBlocked;
  destroyed?: boolean;
  volumeMoveSource?: boolean;
  mcState?: McState;
  mcStateVal?: number;
}

export type Snapshot = SnapshotSummary & ObjectPlacement;
export type SnapshotInfo = SnapshotSummary & ObjectStats;

export interface VolumePolicyDesc {
  placeAll?: string;
  placeTail?: string;
  placeHead?: string;
  replication?: number;
  bw?: number | Unlimited;
  iops?: number | Unlimited;
  limitType?: LimitType;
  reuseServer?: boolean;
  tags?: Tags;
}

export interface VolumeCreateDesc extends VolumePolicyDesc {
  name?: string;
  size?: number;
  parent?: string;
  baseOn?: string;
  template?: string;
}

export interface VolumeUpdateDesc extends VolumePolicyDesc {
  rename?: string;
  size?: number;
  sizeAdd?: number;
  template?: string;
  shrinkOk?: boolean;
}

export interface VolumeDeleteDesc {
  onAttached?: OnAttached;
}

export interface VolumeSnapshotDesc {
  name?: string;
  bind?: boolean;
  targetDeleteDate?: number;
  deleteAfter?: number;
  tags?: Tags;
}

export interface SnapshotUpdateDesc extends VolumePolicyDesc {
  rename?: string;
  template?: string;
  bind?: boolean;
  targetDeleteDate?: number;
  deleteAfter?: number;
}

export interface VolumeRevertDesc {
  toSnapshot: string;
  revertSize?: boolean;
}

export interface VolumeFreezeDesc {
  targetDeleteDate?: number;
  deleteAfter?: number;
}

export interface VolumeBackupDesc {
  volume: string;
  location: string;
  tags?: Tags;
}

export interface VolumeAcquireDesc {
  onRemoteAttached?: OnAttached;
}

export type VolumeHealth = 'up' | 'up soon' | 'data lost' | 'down';

export interface StatusFields {
  status: VolumeHealth;
  snapshot: boolean;
  migrating: boolean;
  decreasedRedundancy: boolean;
  balancerBlocked: boolean;
  syncingDataBytes: number;
  syncingMetaObjects: number;
  downBytes: number;
  objectsCount: number;
  upSoonChainsCount: number;
  downDrives: number[];
  missingDrives: number[];
  missingTargetDrives: number[];
  softEjectingDrives: number[];
  storedSize: number;
  onDiskSize: number;
}

export type VolumeStatus = VolumeSummary & StatusFields;
export type SnapshotStatus = SnapshotSummary & StatusFields;

export interface SpaceFields {
  storedSize: number;
  spaceUsed: number;
}

export type VolumeSpace = VolumeSummary & SpaceFields;
export type SnapshotSpace = SnapshotSummary & SpaceFields;

export interface VolumesAndSnapshots {
  volumes: VolumeSummary[];
  snapshots: SnapshotSummary[];
}

// ---------------------------------------------------------------------------------------------
// Group snapshots (§5.19)

export interface GroupSnapshotVolume {
  volume: string;
  name?: string;
  tags?: Tags;
}

export interface GroupSnapshotsSpec {
  volumes: GroupSnapshotVolume[];
  tags?: Tags;
}

export interface GroupSnapshotResult {
  volume: string;
  volumeGlobalId: string;
  snapshot?: string;
  remoteId: string;
  snapshotGlobalId: string;
}

export interface GroupSnapshotsResult extends ApiOk {
  snapshots: GroupSnapshotResult[];
}

// ---------------------------------------------------------------------------------------------
// Attachments (§5.10, §5.11)

export interface AttachmentDesc {
  /** Name of the attached volume or snapshot. */
  volume: string;
  snapshot: boolean;
  client: number;
  rights: AttachmentRights;
  pos: number;
  globalId?: string;
  cluster?: string;
  clusterId?: string;
}

export interface VolumeReassignDesc {
  volume: string;
  detach?: DetachClientsList;
  ro?: ClientIdInput[];
  rw?: ClientIdInput[];
  force?: boolean;
  allowRemoteExported?: boolean;
  onRemoteAttached?: OnAttached;
  mcMode?: McMode;
}

export interface SnapshotReassignDesc {
  snapshot: string;
  detach?: DetachClientsList;
  ro?: ClientIdInput[];
  force?: boolean;
}

export type ReassignDesc = VolumeReassignDesc | SnapshotReassignDesc;

export interface VolumesReassignWaitDesc {
  reassign: ReassignDesc[];
  /** Seconds to wait for clients that are not connected; 0 = do not wait; absent = forever. */
  attachTimeout?: number;
}

// ---------------------------------------------------------------------------------------------
// Templates (§5.7 - §5.9)

export interface VolumeTemplateDesc {
  name: string;
  parentName: string;
  placeAll: string;
  placeTail: string;
  placeHead: string;
  size: number | Unlimited;
  replication: number | Unlimited;
  bw: number | Unlimited;
  iops: number | Unlimited;
  limitType?: LimitType;
  reuseServer?: boolean;
  id?: number;
}

export interface StoredInternal {
  u1: number;
  u2: number;
  u3: number;
}

export interface StoredEstimate {
  capacity: number;
  free: number;
  internal: StoredInternal;
}

export interface TemplateStored extends StoredEstimate {
  placeAll: StoredEstimate;
  placeTail: StoredEstimate;
  placeHead: StoredEstimate;
}

export interface VolumeTemplateStatusDesc {
  name: string;
  placeAll: string;
  placeTail: string;
  placeHead: string;
  replication: number | Unlimited;
  volumesCount: number;
  snapshotsCount: number;
  removingSnapshotsCount: number;
  size: number;
  totalSize: number;
  volumesSize?: number;
  snapshotsWithoutChildrenSize?: number;
  snapshotsWithChildrenSize?: number;
  storedSize: number;
  onDiskSize: number;
  availablePlaceAll: number;
  availablePlaceTail: number;
  availablePlaceHead: number;
  capacityPlaceAll: number;
  capacityPlaceTail: number;
  capacityPlaceHead: number;
  stored: TemplateStored;
}

export interface VolumeTemplateCreateDesc extends VolumePolicyDesc {
  name: string;
  parent?: string;
  size?: number | Unlimited;
}

export interface VolumeTemplateUpdateDesc extends VolumePolicyDesc {
  rename?: string;
  parent?: string;
  size?: number | Unlimited;
  propagate?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Placement groups and fault sets (§5.12)

export interface PlacementGroup {
  name: string;
  disks: number[];
  id?: number;
}

export interface PlacementGroupUpdateDesc {
  rename?: string;
  /** Disk ids; numeric strings are accepted (§1.7 rule 2). */
  addDisks?: (number | string)[];
  rmDisks?: (number | string)[];
}

export interface FaultSet {
  name: string;
  servers: number[];
}

// ---------------------------------------------------------------------------------------------
// Disks (§5.15)

export type SoftEjectState = 'on' | 'off' | 'paused';

export interface DiskSummaryBase {
  id: number;
  serverId: number;
  ssd: boolean;
  /** -1 while the disk is up. */
  generationLeft: number;
  model: string;
  serial: string;
  description: string;
  softEject: SoftEjectState;
}

export interface DiskUpFields {
  sectorsCount: number;
  empty: boolean;
  noFua: boolean;
  noFlush: boolean;
  noTrim: boolean;
  isWbc: boolean;
  journaled: boolean;
  device: string;
  entriesCount: number;
  entriesAllocated: number;
  entriesFree: number;
  objectsCount: number;
  objectsAllocated: number;
  objectsFree: number;
  objectsOnDiskSize: number;
  scrubbingStartedBefore: number;
  scrubbedBytes: number;
  scrubbingBW: number;
  scrubbingFinishAfter: number;
  scrubbingPausedFor: number;
  scrubbingPaused: boolean;
  lastScrubCompleted: number;
  /** storpool extension: the disk server's scrub status (docs/scrubbing.md). */
  scrubStatus?: DiskScrubStatus;
  agCount?: number;
  agAllocated?: number;
  agFree?: number;
  agFull?: number;
  agPartial?: number;
  agFreeing?: number;
  agMaxSizeFull?: number;
  agMaxSizePartial?: number;
  wbc?: { pages: number; pagesPending: number; maxPages: number } | null;
  aggregateScore?: { entries: number; space: number; total: number };
}

/** An up disk carries every DiskUpFields field; a down disk only the base fields. */
export type DiskSummary = DiskSummaryBase & Partial<DiskUpFields>;

export interface DiskObject {
  generation: number;
  version: number;
  volume: string;
  parentVolume: string;
  onDiskSize: number;
  storedSize: number;
  /** 0 undefined, 1 ok, 2 outdated, 3 in recovery, 4 waiting for version, 5 waiting for disk, 6 data not present, 7 data lost, 8 waiting for chain, 9 wait idle. */
  state: number;
  objectId?: number;
  volumeId?: number;
}

export type Disk = DiskSummary & { objects: Record<string, DiskObject> };

// ---------------------------------------------------------------------------------------------
// Services, clients, tasks, balancer (§5.16 - §5.18, §4.8)

export interface ServiceBase {
  nodeId?: number;
  version: string;
  startTime: number | null;
}

export interface ServerService extends ServiceBase {
  id: number;
  status: 'running' | 'waiting' | 'booting' | 'down';
  missingDisks: number[];
  pendingDisks: number[];
}

export interface ClientService extends ServiceBase {
  id: number;
  status: 'running' | 'down';
}

export interface MgmtService extends ServiceBase {
  id: number;
  status: 'running' | 'down';
  active: boolean;
  prio?: number;
}

export interface BridgeService extends ServiceBase {
  id: number;
  status: 'running' | 'joining' | 'down';
}

export type IscsiTargetService = BridgeService;

export interface ClusterStatus {
  clusterStatus: 'running' | 'waiting' | 'down';
  mgmt: Record<string, MgmtService>;
  clients: Record<string, ClientService>;
  servers: Record<string, ServerService>;
  bridges: Record<string, BridgeService>;
  iscsiTargets: Record<string, IscsiTargetService>;
}

export interface ClientConfigStatus {
  id: number;
  generation: number;
  clientGeneration: number;
  configStatus: 'ok' | 'updating' | 'down';
  delay: number;
}

export interface Task {
  diskId: number;
  transactionId: number;
  allObjects: number;
  completedObjects: number;
  dispatchedObjects: number;
  unresolvedObjects?: number;
  /** storpool extensions: what the task does (e.g. `purge`, `scrub`) and, for a scrub, its progress (0..1) and findings. */
  kind?: string;
  state?: string;
  progress?: number;
  errorsFound?: number;
  repaired?: number;
  unrepairable?: number;
}

/** Counters of a scrub pass (or of all passes since the server started). */
export interface DiskScrubCounters {
  objects: number;
  bytes: number;
  errorsFound: number;
  repaired: number;
  unrepairable: number;
}

/** A disk server's scrub status (storpool extension of DiskSummary; times in UNIX ms). */
export interface DiskScrubStatus {
  diskId: number;
  running: boolean;
  bandwidthBytesPerSecond: number;
  intervalMs: number;
  passesCompleted: number;
  pass: DiskScrubCounters & { startedAt: number | null; finishedAt: number | null; objectsTotal: number; bytesTotal: number; progress: number; rateBytesPerSecond: number; aborted: boolean };
  total: DiskScrubCounters;
  lastCompletedAt: number | null;
  nextScheduledAt: number | null;
  unrepairableBlocks: { volumeId: number; objectIndex: number; block: number; at: number }[];
}

export type BalancerState = 'nothing to do' | 'blocked' | 'waiting' | 'working' | 'ready' | 'commiting';

export interface VolumeBalancerStatus {
  status: BalancerState;
  auto: boolean;
}

export interface VolumeBalancerCommand {
  cmd: 'start' | 'stop' | 'commit';
}

// ---------------------------------------------------------------------------------------------
// iSCSI (§4.9)

export interface IscsiPortalGroup {
  name: string;
  networks: { address: string; prefix: number }[];
  portals: { controller: number; ip: string; port: string }[];
}

export interface IscsiTarget {
  currentControllerId: number;
  name: string;
  volume: string;
}

export interface IscsiInitiator {
  name: string;
  username: string;
  secret: string;
  nets: string[];
  exports: { portalGroup: string; target: string }[];
}

export interface IscsiConfigData {
  baseName: string;
  portalGroups: Record<string, IscsiPortalGroup>;
  targets: Record<string, IscsiTarget>;
  initiators: Record<string, IscsiInitiator>;
}

export interface IscsiConfig {
  iscsi: IscsiConfigData;
}

/** One command object with exactly one key, e.g. `{ createTarget: { volumeName: 'v' } }`. */
export type IscsiCommand =
  | { setBaseName: { name: string } }
  | { createPortalGroup: { name: string } }
  | { deletePortalGroup: { name: string } }
  | { portalGroupAddNetwork: { portalGroup: string; net: string } }
  | { createPortal: { portalGroup: string; controller: number; ip: string; port?: number } }
  | { deletePortal: { ip: string; port?: number } }
  | { createTarget: { volumeName: string } }
  | { deleteTarget: { volumeName: string } }
  | { createInitiator: { name: string; username: string; secret: string } }
  | { deleteInitiator: { name: string } }
  | { initiatorAddNetwork: { initiator: string; net: string } }
  | { export: { initiator: string; portalGroup: string; volumeName: string } }
  | { exportDelete: { initiator: string; portalGroup: string; volumeName: string } };

export interface IscsiConfigChange {
  commands: IscsiCommand[];
}

// ---------------------------------------------------------------------------------------------
// Key/value buckets (§4.10)

export interface KeyValueBucketsList {
  buckets: Record<string, number>;
}

export interface KeyValueBucket {
  name: string;
  version: number;
  pairs?: Record<string, string>;
}

export interface KeyValueBucketSetDesc {
  runIfVersionIs?: number;
  set: Record<string, string>;
}
