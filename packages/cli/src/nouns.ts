/**
 * The grammar tables: for each noun its list words, keywords and verbs, and what each turns into
 * (API.md Appendix A). Values are parsed here, at parse time, so a bad value is a usage error
 * before any request is sent.
 */
import { StorpoolApiError, StorpoolConfigError, type StorpoolApi } from '@storpool/api-client';
import type * as T from '@storpool/api-client';
import { all, objectOf, one, type Action, type Format, type KeywordSpec, type ListSpec, type NounSpec, type ParsedWords } from './grammar.js';
import { keyValues, mapRows, table, timestamp, type Column } from './render.js';
import {
  UsageError, parseChoice, parseDiskIds, parseDuration, parseIntIn, parseLimit, parseSize, parseTags, parseYesNo,
} from './values.js';

// ---- helpers ----------------------------------------------------------------------------------

function change(run: (api: StorpoolApi) => Promise<unknown>): Action {
  return { run };
}

function show<D>(run: (api: StorpoolApi) => Promise<D>, render: (data: D, format: Format) => string): Action {
  return { run, render: (data, format) => render(data as D, format) };
}

function showKeyValues(run: (api: StorpoolApi) => Promise<unknown>): Action {
  return show(run, (data, format) => keyValues(data, format));
}

/** `delete V` must repeat the object's name (StorPool's confirmation). */
function confirmed(p: ParsedWords): string {
  const name = objectOf(p);
  if (p.arg !== name) {
    throw new UsageError(`storpool ${p.noun} ${name} ${p.verb}: confirm by repeating the name: storpool ${p.noun} ${name} ${p.verb} ${name}`);
  }
  return name;
}

/** This host's client id (`here`), from SP_OURID. */
function here(api: StorpoolApi): number {
  if (api.ourId === undefined) {
    throw new StorpoolConfigError("'here' needs this host's SP_OURID (in /etc/storpool.conf, its [hostname] section or the environment)");
  }
  return api.ourId;
}

/** Copies the parsed keyword values that exist onto `target` (exactOptionalPropertyTypes-safe). */
function assign<O extends object>(target: O, values: { [K in keyof O]?: O[K] | undefined }): O {
  for (const [k, v] of Object.entries(values)) if (v !== undefined) (target as Record<string, unknown>)[k] = v;
  return target;
}

function maybe<R>(p: ParsedWords, keyword: string, parse: (text: string, keyword: string) => R): R | undefined {
  const text = one(p, keyword);
  return text === undefined ? undefined : parse(text, keyword);
}

const REPLICATION = (text: string, keyword: string): number => parseIntIn(text, keyword, 1, 3);

function tagsOf(p: ParsedWords): Record<string, string> | undefined {
  const pairs = all(p, 'tag');
  return pairs.length === 0 ? undefined : parseTags(pairs);
}

function policyOf(p: ParsedWords): T.VolumePolicyDesc {
  return assign<T.VolumePolicyDesc>({}, {
    replication: maybe(p, 'replication', REPLICATION),
    placeAll: one(p, 'placeAll'),
    placeTail: one(p, 'placeTail'),
    placeHead: one(p, 'placeHead'),
    iops: maybe(p, 'iops', parseLimit),
    bw: maybe(p, 'bw', parseLimit),
    limitType: maybe(p, 'limitType', (t, k) => parseChoice(t, k, ['total', 'perGiB'] as const)),
    reuseServer: p.flags.has('reuseServer') ? true : undefined,
    tags: tagsOf(p),
  });
}

const POLICY_KEYWORDS: Record<string, KeywordSpec> = {
  replication: { kind: 'value', value: '1..3', help: 'number of copies' },
  placeAll: { kind: 'value', value: 'PG', help: 'placement group of all copies but the last' },
  placeTail: { kind: 'value', value: 'PG', help: 'placement group of the last copy (reads are served from it)' },
  placeHead: { kind: 'value', value: 'PG', help: 'placement group of the first copy' },
  iops: { kind: 'value', value: 'N|-', help: 'IOPS limit, - for unlimited' },
  bw: { kind: 'value', value: 'KB/s|-', help: 'bandwidth limit in KB/s, - for unlimited' },
  limitType: { kind: 'value', value: 'total|perGiB', help: 'how iops/bw are counted' },
  reuseServer: { kind: 'flag', help: 'allow two copies on one server' },
  tag: { kind: 'value', repeat: true, value: 'NAME=VALUE', help: 'set a tag (repeatable; NAME= removes it on update)' },
};
const POLICY = Object.keys(POLICY_KEYWORDS);

// ---- columns ----------------------------------------------------------------------------------

const VOLUME_COLUMNS: Column<T.VolumeSummary>[] = [
  { header: 'volume', get: (v) => v.name },
  { header: 'size', get: (v) => v.size, size: true },
  { header: 'rdnd.', get: (v) => v.replication },
  { header: 'placeHead', get: (v) => v.placeHead },
  { header: 'placeAll', get: (v) => v.placeAll },
  { header: 'placeTail', get: (v) => v.placeTail },
  { header: 'iops', get: (v) => v.iops },
  { header: 'bw', get: (v) => v.bw },
  { header: 'parent', get: (v) => v.parentName },
  { header: 'template', get: (v) => v.templateName },
  { header: 'globalId', get: (v) => v.globalId },
  { header: 'tags', get: (v) => v.tags },
];

function snapshotFlags(s: T.SnapshotSummary): string {
  return [s.deleted ? 'deleted' : '', s.transient ? 'transient' : '', s.bound ? 'bound' : '', s.autoName ? 'auto' : ''].filter((f) => f !== '').join(',');
}

const SNAPSHOT_COLUMNS: Column<T.SnapshotSummary>[] = [
  { header: 'snapshot', get: (s) => s.name },
  { header: 'size', get: (s) => s.size, size: true },
  { header: 'rdnd.', get: (s) => s.replication },
  { header: 'placeHead', get: (s) => s.placeHead },
  { header: 'placeAll', get: (s) => s.placeAll },
  { header: 'placeTail', get: (s) => s.placeTail },
  { header: 'onVolume', get: (s) => s.onVolume },
  { header: 'parent', get: (s) => s.parentName },
  { header: 'template', get: (s) => s.templateName },
  { header: 'created', get: (s) => timestamp(s.creationTimestamp) },
  { header: 'flags', get: snapshotFlags },
  { header: 'globalId', get: (s) => s.globalId },
  { header: 'tags', get: (s) => s.tags },
];

const SPACE_COLUMNS: Column<T.VolumeSummary & T.SpaceFields>[] = [
  { header: 'name', get: (v) => v.name },
  { header: 'size', get: (v) => v.size, size: true },
  { header: 'stored', get: (v) => v.storedSize, size: true },
  { header: 'used', get: (v) => v.spaceUsed, size: true },
];

type AnyStatus = (T.VolumeStatus | T.SnapshotStatus) & { name: string };
const STATUS_COLUMNS: Column<AnyStatus>[] = [
  { header: 'name', get: (v) => v.name },
  { header: 'type', get: (v) => (v.snapshot ? 'snapshot' : 'volume') },
  { header: 'size', get: (v) => v.size, size: true },
  { header: 'status', get: (v) => v.status },
  { header: 'migrating', get: (v) => v.migrating },
  { header: 'degraded', get: (v) => v.decreasedRedundancy },
  { header: 'stored', get: (v) => v.storedSize, size: true },
  { header: 'onDisk', get: (v) => v.onDiskSize, size: true },
];

const TEMPLATE_COLUMNS: Column<T.VolumeTemplateDesc>[] = [
  { header: 'template', get: (t) => t.name },
  { header: 'size', get: (t) => t.size, size: true },
  { header: 'rdnd.', get: (t) => t.replication },
  { header: 'placeHead', get: (t) => t.placeHead },
  { header: 'placeAll', get: (t) => t.placeAll },
  { header: 'placeTail', get: (t) => t.placeTail },
  { header: 'iops', get: (t) => t.iops },
  { header: 'bw', get: (t) => t.bw },
  { header: 'parent', get: (t) => t.parentName },
];

const TEMPLATE_STATUS_COLUMNS: Column<T.VolumeTemplateStatusDesc>[] = [
  { header: 'template', get: (t) => t.name },
  { header: 'rdnd.', get: (t) => t.replication },
  { header: 'placeHead', get: (t) => t.placeHead },
  { header: 'placeAll', get: (t) => t.placeAll },
  { header: 'placeTail', get: (t) => t.placeTail },
  { header: 'volumes', get: (t) => t.volumesCount },
  { header: 'snapshots', get: (t) => t.snapshotsCount },
  { header: 'size', get: (t) => t.size, size: true },
  { header: 'stored', get: (t) => t.storedSize, size: true },
  { header: 'capacity', get: (t) => t.stored?.capacity, size: true },
  { header: 'free', get: (t) => t.stored?.free, size: true },
];

const ATTACHMENT_COLUMNS: Column<T.AttachmentDesc>[] = [
  { header: 'client', get: (a) => a.client },
  { header: 'volume', get: (a) => a.volume },
  { header: 'globalId', get: (a) => a.globalId },
  { header: 'mode', get: (a) => a.rights },
  { header: 'snapshot', get: (a) => a.snapshot },
  { header: 'pos', get: (a) => a.pos },
];

const DISK_COLUMNS: Column<T.DiskSummary>[] = [
  { header: 'disk', get: (d) => d.id },
  { header: 'server', get: (d) => d.serverId },
  { header: 'ssd', get: (d) => d.ssd },
  { header: 'status', get: (d) => (d.generationLeft === -1 ? 'up' : 'down') },
  { header: 'size', get: (d) => (d.sectorsCount === undefined ? undefined : d.sectorsCount * 512), size: true },
  { header: 'used', get: (d) => d.objectsOnDiskSize, size: true },
  { header: 'objects', get: (d) => (d.objectsCount === undefined ? '' : `${d.objectsAllocated ?? 0}/${d.objectsCount}`) },
  { header: 'softEject', get: (d) => d.softEject },
  { header: 'device', get: (d) => d.device },
  { header: 'description', get: (d) => d.description },
];

interface ServiceRow { type: string; id: unknown; status: unknown; active?: unknown; nodeId?: unknown; version: unknown; startTime: unknown; missingDisks?: unknown }
function serviceRows(status: T.ClusterStatus, kinds: readonly (keyof T.ClusterStatus)[]): ServiceRow[] {
  return kinds.flatMap((kind) => mapRows<Omit<ServiceRow, 'type'>>(status[kind]).map((s) => ({ type: kind === 'mgmt' ? 'mgmt' : kind.replace(/s$/, ''), ...s })));
}
const SERVICE_COLUMNS: Column<ServiceRow>[] = [
  { header: 'type', get: (s) => s.type },
  { header: 'id', get: (s) => s.id },
  { header: 'status', get: (s) => s.status },
  { header: 'active', get: (s) => s.active },
  { header: 'node', get: (s) => s.nodeId },
  { header: 'version', get: (s) => s.version },
  { header: 'started', get: (s) => timestamp(s.startTime) },
  { header: 'missingDisks', get: (s) => s.missingDisks },
];

function clusterTable(status: T.ClusterStatus, kinds: readonly (keyof T.ClusterStatus)[], format: Format): string {
  const rows = table(serviceRows(status, kinds), SERVICE_COLUMNS, format);
  return format.batch ? rows : `cluster ${status.clusterStatus}\n${rows}`;
}

const CLIENT_COLUMNS: Column<T.ClientConfigStatus>[] = [
  { header: 'client', get: (c) => c.id },
  { header: 'status', get: (c) => c.configStatus },
  { header: 'generation', get: (c) => c.generation },
  { header: 'clientGeneration', get: (c) => c.clientGeneration },
  { header: 'delay', get: (c) => c.delay },
];

const TASK_COLUMNS: Column<T.Task>[] = [
  { header: 'disk', get: (t) => t.diskId },
  { header: 'transaction', get: (t) => t.transactionId },
  { header: 'objects', get: (t) => t.allObjects },
  { header: 'completed', get: (t) => t.completedObjects },
  { header: 'dispatched', get: (t) => t.dispatchedObjects },
];

// ---- volume -----------------------------------------------------------------------------------

const volume: NounSpec = {
  name: 'volume',
  summary: 'Volumes: create, update, snapshot, delete, list, info',
  object: 'VOLUME',
  lists: {
    list: { summary: 'all volumes (VolumesList)', build: () => show((api) => api.volumesList(), (d, f) => table(d, VOLUME_COLUMNS, f)) },
    status: {
      summary: 'health of every volume and snapshot (VolumesGetStatus)',
      build: () => show((api) => api.volumesGetStatus(), (d, f) => table(Object.entries(d).map(([name, s]) => ({ ...s, name })), STATUS_COLUMNS, f)),
    },
    usedSpace: { summary: 'stored and used bytes per volume (VolumesSpace)', build: () => show((api) => api.volumesSpace(), (d, f) => table(d, SPACE_COLUMNS, f)) },
  },
  keywords: {
    size: { kind: 'value', value: 'SIZE', help: 'size: bytes or with a unit K, M, G, T (powers of 1024), e.g. 10G' },
    sizeAdd: { kind: 'value', value: 'SIZE', help: 'grow by this much' },
    shrinkOk: { kind: 'flag', help: 'allow update to a smaller size' },
    template: { kind: 'value', value: 'TEMPLATE', help: 'take defaults from (or move to) this template' },
    parent: { kind: 'value', value: 'SNAPSHOT', help: 'create as a thin clone of this snapshot' },
    baseOn: { kind: 'value', value: 'VOLUME', help: 'create as a copy of this volume' },
    rename: { kind: 'value', value: 'NAME', help: 'new name' },
    deleteAfter: { kind: 'value', value: 'N[s|m|h|d]', help: 'delete the snapshot after this long' },
    bind: { kind: 'flag', help: 'bound snapshot: deleted when it has no children and is not attached' },
    revertSize: { kind: 'flag', help: "also restore the snapshot's size" },
    ...POLICY_KEYWORDS,
  },
  verbs: {
    create: {
      summary: 'create the volume (VolumeCreate)',
      keywords: ['size', 'template', 'parent', 'baseOn', ...POLICY],
      build: (p) => {
        if (p.values.has('parent') && p.values.has('baseOn')) throw new UsageError(`storpool volume ${objectOf(p)} create: give parent or baseOn, not both`);
        const desc = assign<T.VolumeCreateDesc>({ name: objectOf(p) }, {
          size: maybe(p, 'size', parseSize),
          template: one(p, 'template'),
          parent: one(p, 'parent'),
          baseOn: one(p, 'baseOn'),
          ...policyOf(p),
        });
        return change((api) => api.volumeCreate(desc));
      },
    },
    update: {
      summary: 'change size, template, name, policy or tags (VolumeUpdate)',
      keywords: ['size', 'sizeAdd', 'shrinkOk', 'template', 'rename', ...POLICY],
      needsOneOf: ['size', 'sizeAdd', 'template', 'rename', ...POLICY],
      build: (p) => {
        const desc = assign<T.VolumeUpdateDesc>({}, {
          size: maybe(p, 'size', parseSize),
          sizeAdd: maybe(p, 'sizeAdd', parseSize),
          shrinkOk: p.flags.has('shrinkOk') ? true : undefined,
          template: one(p, 'template'),
          rename: one(p, 'rename'),
          ...policyOf(p),
        });
        return change((api) => api.volumeUpdate(objectOf(p), desc));
      },
    },
    snapshot: {
      summary: 'take a snapshot, named or automatically named (VolumeSnapshot)',
      arg: 'optional',
      argName: 'SNAPSHOT',
      keywords: ['deleteAfter', 'bind', 'tag'],
      build: (p) => {
        const desc = assign<T.VolumeSnapshotDesc>({}, {
          name: p.arg,
          deleteAfter: maybe(p, 'deleteAfter', parseDuration),
          bind: p.flags.has('bind') ? true : undefined,
          tags: tagsOf(p),
        });
        return change((api) => api.volumeSnapshot(objectOf(p), desc));
      },
    },
    delete: { summary: 'delete the volume; repeat its name to confirm (VolumeDelete)', arg: 'required', argName: 'VOLUME', build: (p) => { const n = confirmed(p); return change((api) => api.volumeDelete(n)); } },
    freeze: {
      summary: 'turn the volume into a snapshot of the same name (VolumeFreeze)',
      keywords: ['deleteAfter'],
      build: (p) => {
        const after = maybe(p, 'deleteAfter', parseDuration);
        return change((api) => api.volumeFreeze(objectOf(p), after === undefined ? undefined : { deleteAfter: after }));
      },
    },
    revertToSnapshot: {
      summary: 'discard the current data and revert to a snapshot (VolumeRevert)',
      arg: 'required',
      argName: 'SNAPSHOT',
      keywords: ['revertSize'],
      build: (p) => {
        const desc = assign<T.VolumeRevertDesc>({ toSnapshot: p.arg ?? '' }, { revertSize: p.flags.has('revertSize') ? true : undefined });
        return change((api) => api.volumeRevert(objectOf(p), desc));
      },
    },
    backup: {
      summary: 'back the volume up to a remote location (VolumeBackup)',
      arg: 'required',
      argName: 'LOCATION',
      keywords: ['tag'],
      build: (p) => {
        const desc = assign<T.VolumeBackupDesc>({ volume: objectOf(p), location: p.arg ?? '' }, { tags: tagsOf(p) });
        return change((api) => api.volumeBackup(desc));
      },
    },
    list: { summary: 'this volume as a table row (Volume)', build: (p) => show((api) => api.volume(objectOf(p)), (d, f) => table(d, VOLUME_COLUMNS, f)) },
    info: { summary: 'size, placement and object counts (VolumeGetInfo)', build: (p) => showKeyValues((api) => api.volumeGetInfo(objectOf(p))) },
    describe: { summary: 'the volume with its disk sets (VolumeDescribe)', build: (p) => showKeyValues((api) => api.volumeDescribe(objectOf(p))) },
    listSnapshots: { summary: "the volume's parent snapshots (VolumeListSnapshots)", build: (p) => show((api) => api.volumeListSnapshots(objectOf(p)), (d, f) => table(d, SNAPSHOT_COLUMNS, f)) },
  },
  examples: [
    'storpool volume vol1 size 10G template hdd create',
    'storpool volume clone1 parent snap1 create',
    'storpool volume vol1 size 20G update',
    'storpool volume vol1 snapshot snap1',
    'storpool volume vol1 tag owner=alice update',
    'storpool volume list',
    'storpool -j volume vol1 info',
    'storpool volume vol1 delete vol1',
  ],
};

// ---- snapshot ---------------------------------------------------------------------------------

const snapshot: NounSpec = {
  name: 'snapshot',
  summary: 'Snapshots: list, tag, rename, delete',
  object: 'SNAPSHOT',
  lists: {
    list: { summary: 'all snapshots (SnapshotsList)', build: () => show((api) => api.snapshotsList(), (d, f) => table(d, SNAPSHOT_COLUMNS, f)) },
    space: { summary: 'stored and used bytes per snapshot (SnapshotsSpace)', build: () => show((api) => api.snapshotsSpace(), (d, f) => table(d, SPACE_COLUMNS, f)) },
  },
  keywords: {
    rename: { kind: 'value', value: 'NAME', help: 'new name' },
    template: { kind: 'value', value: 'TEMPLATE', help: 'move to this template' },
    bind: { kind: 'flag', help: 'make it a bound snapshot' },
    unbind: { kind: 'flag', help: 'make it a normal snapshot' },
    deleteAfter: { kind: 'value', value: 'N[s|m|h|d]', help: 'delete after this long (0 clears)' },
    ...POLICY_KEYWORDS,
  },
  verbs: {
    update: {
      summary: 'change tags, name, template or deletion time (SnapshotUpdate); the default verb',
      keywords: ['rename', 'template', 'bind', 'unbind', 'deleteAfter', ...POLICY],
      needsOneOf: ['rename', 'template', 'bind', 'unbind', 'deleteAfter', ...POLICY],
      build: (p) => {
        if (p.flags.has('bind') && p.flags.has('unbind')) throw new UsageError(`storpool snapshot ${objectOf(p)}: give bind or unbind, not both`);
        const desc = assign<T.SnapshotUpdateDesc>({}, {
          rename: one(p, 'rename'),
          template: one(p, 'template'),
          bind: p.flags.has('bind') ? true : p.flags.has('unbind') ? false : undefined,
          deleteAfter: maybe(p, 'deleteAfter', parseDuration),
          ...policyOf(p),
        });
        return change((api) => api.snapshotUpdate(objectOf(p), desc));
      },
    },
    delete: { summary: 'delete the snapshot; repeat its name to confirm (SnapshotDelete)', arg: 'required', argName: 'SNAPSHOT', build: (p) => { const n = confirmed(p); return change((api) => api.snapshotDelete(n)); } },
    list: { summary: 'this snapshot as a table row (Snapshot)', build: (p) => show((api) => api.snapshot(objectOf(p)), (d, f) => table(d, SNAPSHOT_COLUMNS, f)) },
    info: { summary: 'size, placement and object counts (SnapshotGetInfo)', build: (p) => showKeyValues((api) => api.snapshotGetInfo(objectOf(p))) },
    describe: { summary: 'the snapshot with its disk sets (SnapshotDescribe)', build: (p) => showKeyValues((api) => api.snapshotDescribe(objectOf(p))) },
  },
  implicitVerb: 'update',
  examples: ['storpool snapshot list', 'storpool snapshot snap1 tag keep=yes', 'storpool snapshot snap1 delete snap1'],
};

// ---- attach / detach --------------------------------------------------------------------------

const TARGET_KEYWORDS: Record<string, KeywordSpec> = {
  volume: { kind: 'value', value: 'VOLUME', help: 'the volume' },
  snapshot: { kind: 'value', value: 'SNAPSHOT', help: 'the snapshot (always read-only)' },
  client: { kind: 'value', value: 'ID', help: 'client id (SP_OURID of the host)' },
  here: { kind: 'flag', help: "this host (SP_OURID from the configuration)" },
};

function target(p: ParsedWords): { key: 'volume' | 'snapshot'; name: string } {
  const v = one(p, 'volume');
  const s = one(p, 'snapshot');
  if ((v === undefined) === (s === undefined)) throw new UsageError(`storpool ${p.noun}: give exactly one of 'volume NAME' or 'snapshot NAME'`);
  return v !== undefined ? { key: 'volume', name: v } : { key: 'snapshot', name: s as string };
}

function clientOf(p: ParsedWords, extra: readonly string[]): number | 'here' | undefined {
  const c = maybe(p, 'client', (t, k) => parseIntIn(t, k, 1, 4095));
  const given = [c !== undefined, p.flags.has('here'), ...extra.map((e) => p.flags.has(e))].filter(Boolean).length;
  if (given !== 1) throw new UsageError(`storpool ${p.noun}: give exactly one of ${['client ID', 'here', ...extra].join(', ')}`);
  return c ?? (p.flags.has('here') ? 'here' : undefined);
}

const attach: NounSpec = {
  name: 'attach',
  summary: 'Attach a volume or snapshot to a client, and list attachments',
  lists: { list: { summary: 'all attachments (AttachmentsList)', build: () => show((api) => api.attachmentsList(), (d, f) => table(d, ATTACHMENT_COLUMNS, f)) } },
  keywords: {
    ...TARGET_KEYWORDS,
    mode: { kind: 'value', value: 'rw|ro', help: 'access mode (default rw for volumes, ro for snapshots)' },
    timeout: { kind: 'value', value: 'SECONDS', help: 'how long to wait for the client (attachTimeout)' },
    onRemoteAttached: { kind: 'value', value: 'fail|detach|detachForce|export', help: 'multicluster only' },
  },
  verbs: {
    '<attach>': {
      summary: 'attach (VolumesReassignWait)',
      keywords: ['volume', 'snapshot', 'client', 'here', 'mode', 'timeout', 'onRemoteAttached'],
      build: (p) => {
        const t = target(p);
        const client = clientOf(p, []);
        const mode = maybe(p, 'mode', (x, k) => parseChoice(x, k, ['rw', 'ro'] as const)) ?? (t.key === 'volume' ? 'rw' : 'ro');
        if (t.key === 'snapshot' && mode === 'rw') throw new UsageError('storpool attach: snapshots attach read-only (mode ro)');
        const timeout = maybe(p, 'timeout', (x, k) => parseIntIn(x, k, 0, 86400 * 365));
        const onRemote = maybe(p, 'onRemoteAttached', (x, k) => parseChoice(x, k, ['fail', 'detach', 'detachForce', 'export'] as const));
        if (onRemote !== undefined && t.key === 'snapshot') throw new UsageError("storpool attach: 'onRemoteAttached' applies to volumes only");
        return change((api) => {
          const id = client === 'here' ? here(api) : (client as number);
          const entry: T.ReassignDesc = t.key === 'volume'
            ? assign<T.VolumeReassignDesc>({ volume: t.name, [mode]: [id] }, { onRemoteAttached: onRemote })
            : { snapshot: t.name, ro: [id] };
          return api.volumesReassignWait(assign<T.VolumesReassignWaitDesc>({ reassign: [entry] }, { attachTimeout: timeout }));
        });
      },
    },
  },
  implicitVerb: '<attach>',
  examples: ['storpool attach volume vol1 here', 'storpool attach volume vol1 client 12 mode ro timeout 30', 'storpool attach snapshot snap1 here', 'storpool attach list'],
};

const detach: NounSpec = {
  name: 'detach',
  summary: 'Detach a volume or snapshot from one client or from all',
  lists: {},
  keywords: {
    ...TARGET_KEYWORDS,
    all: { kind: 'flag', help: 'every client' },
    force: { kind: 'value', value: 'yes|no', help: 'detach even if the device is open' },
  },
  verbs: {
    '<detach>': {
      summary: 'detach (VolumesReassignWait)',
      keywords: ['volume', 'snapshot', 'client', 'here', 'all', 'force'],
      build: (p) => {
        const t = target(p);
        const client = clientOf(p, ['all']);
        const force = maybe(p, 'force', parseYesNo) ?? false;
        return change((api) => {
          const detachList: T.DetachClientsList = client === undefined ? 'all' : [client === 'here' ? here(api) : client];
          const entry: T.ReassignDesc = t.key === 'volume' ? { volume: t.name, detach: detachList, force } : { snapshot: t.name, detach: detachList, force };
          return api.volumesReassignWait({ reassign: [entry] });
        });
      },
    },
  },
  implicitVerb: '<detach>',
  examples: ['storpool detach volume vol1 here', 'storpool detach volume vol1 all force yes', 'storpool detach snapshot snap1 client 12'],
};

// ---- template ---------------------------------------------------------------------------------

function templatePolicy(p: ParsedWords): T.VolumeTemplateUpdateDesc {
  return assign<T.VolumeTemplateUpdateDesc>({}, {
    ...policyOf(p),
    replication: maybe(p, 'replication', (t, k) => (t === '-' ? undefined : REPLICATION(t, k))),
    size: maybe(p, 'size', (t, k) => (t === '-' ? '-' : parseSize(t, k))),
    parent: one(p, 'parent'),
  });
}

const TEMPLATE_KEYWORDS = ['size', 'parent', ...POLICY];

const template: NounSpec = {
  name: 'template',
  summary: 'Volume templates: replication, placement groups, default size and limits',
  object: 'TEMPLATE',
  lists: {
    list: { summary: 'all templates (VolumeTemplatesList)', build: () => show((api) => api.volumeTemplatesList(), (d, f) => table(d, TEMPLATE_COLUMNS, f)) },
    status: { summary: 'usage and free space per template (VolumeTemplatesStatus)', build: () => show((api) => api.volumeTemplatesStatus(), (d, f) => table(d, TEMPLATE_STATUS_COLUMNS, f)) },
  },
  keywords: {
    size: { kind: 'value', value: 'SIZE|-', help: 'default size of new volumes' },
    parent: { kind: 'value', value: 'SNAPSHOT', help: 'snapshot new volumes are based on' },
    rename: { kind: 'value', value: 'NAME', help: 'new name' },
    propagate: { kind: 'value', value: 'yes|no', help: 'apply the change to existing volumes and snapshots' },
    ...POLICY_KEYWORDS,
  },
  verbs: {
    '<set>': {
      summary: 'create the template if absent, else update it',
      keywords: [...TEMPLATE_KEYWORDS, 'rename', 'propagate'],
      needsOneOf: [...TEMPLATE_KEYWORDS, 'rename', 'propagate'],
      build: (p) => {
        const name = objectOf(p);
        const policy = templatePolicy(p);
        const update = assign<T.VolumeTemplateUpdateDesc>({ ...policy }, { rename: one(p, 'rename'), propagate: maybe(p, 'propagate', parseYesNo) });
        return change(async (api) => {
          try {
            await api.volumeTemplateDescribe(name);
          } catch (err) {
            if (err instanceof StorpoolApiError && err.name === 'objectDoesNotExist') return api.volumeTemplateCreate({ name, ...policy });
            throw err;
          }
          return api.volumeTemplateUpdate(name, update);
        });
      },
    },
    create: {
      summary: 'create the template (VolumeTemplateCreate)',
      keywords: TEMPLATE_KEYWORDS,
      build: (p) => {
        const desc: T.VolumeTemplateCreateDesc = { name: objectOf(p), ...templatePolicy(p) };
        return change((api) => api.volumeTemplateCreate(desc));
      },
    },
    update: {
      summary: 'change the template (VolumeTemplateUpdate)',
      keywords: [...TEMPLATE_KEYWORDS, 'rename', 'propagate'],
      needsOneOf: [...TEMPLATE_KEYWORDS, 'rename', 'propagate'],
      build: (p) => {
        const desc = assign<T.VolumeTemplateUpdateDesc>(templatePolicy(p), { rename: one(p, 'rename'), propagate: maybe(p, 'propagate', parseYesNo) });
        return change((api) => api.volumeTemplateUpdate(objectOf(p), desc));
      },
    },
    delete: { summary: 'delete the template; repeat its name to confirm (VolumeTemplateDelete)', arg: 'required', argName: 'TEMPLATE', build: (p) => { const n = confirmed(p); return change((api) => api.volumeTemplateDelete(n)); } },
    describe: { summary: 'the template (VolumeTemplateDescribe)', build: (p) => showKeyValues((api) => api.volumeTemplateDescribe(objectOf(p))) },
  },
  implicitVerb: '<set>',
  examples: ['storpool template hdd replication 3 placeAll hdd placeTail ssd create', 'storpool template hdd iops 1000 propagate yes', 'storpool template list', 'storpool template status'],
};

// ---- placement groups, fault sets, disks ------------------------------------------------------

const placementGroup: NounSpec = {
  name: 'placementGroup',
  summary: 'Placement groups: named sets of disks',
  object: 'PG',
  lists: {
    list: {
      summary: 'all placement groups (PlacementGroupsList)',
      build: () => show((api) => api.placementGroupsList(), (d, f) => table(mapRows<T.PlacementGroup>(d), [{ header: 'placementGroup', get: (g) => g.name }, { header: 'disks', get: (g) => g.disks }], f)),
    },
  },
  keywords: {
    addDisk: { kind: 'value', repeat: true, value: 'DISK', help: 'add a disk (repeatable, or a comma list)' },
    rmDisk: { kind: 'value', repeat: true, value: 'DISK', help: 'remove a disk (repeatable, or a comma list)' },
    rename: { kind: 'value', value: 'NAME', help: 'new name' },
  },
  verbs: {
    update: {
      summary: 'add or remove disks, rename; creates the group if absent (PlacementGroupUpdate); the default verb',
      keywords: ['addDisk', 'rmDisk', 'rename'],
      build: (p) => {
        const desc = assign<T.PlacementGroupUpdateDesc>(
          { addDisks: parseDiskIds(all(p, 'addDisk'), 'addDisk'), rmDisks: parseDiskIds(all(p, 'rmDisk'), 'rmDisk') },
          { rename: one(p, 'rename') },
        );
        return change((api) => api.placementGroupUpdate(objectOf(p), desc));
      },
    },
    delete: { summary: 'delete the group; repeat its name to confirm (PlacementGroupDelete)', arg: 'required', argName: 'PG', build: (p) => { const n = confirmed(p); return change((api) => api.placementGroupDelete(n)); } },
    describe: { summary: 'the group (PlacementGroupDescribe)', build: (p) => showKeyValues((api) => api.placementGroupDescribe(objectOf(p))) },
  },
  implicitVerb: 'update',
  examples: ['storpool placementGroup hdd addDisk 1 addDisk 2 addDisk 3', 'storpool placementGroup hdd rmDisk 3', 'storpool placementGroup list'],
};

const faultSet: NounSpec = {
  name: 'faultSet',
  summary: 'Fault sets: servers that fail together',
  lists: {
    list: {
      summary: 'all fault sets (FaultSetsList)',
      build: () => show((api) => api.faultSetsList(), (d, f) => table(mapRows<T.FaultSet>(d), [{ header: 'faultSet', get: (s) => s.name }, { header: 'servers', get: (s) => s.servers }], f)),
    },
  },
  keywords: {},
  verbs: {},
  examples: ['storpool faultSet list'],
};

function diskId(p: ParsedWords): number {
  return parseIntIn(objectOf(p), 'disk', 0, 4095);
}

const disk: NounSpec = {
  name: 'disk',
  summary: 'Disks: list, describe, eject, forget, scrub',
  object: 'DISK',
  lists: { list: { summary: 'all disks (DisksList)', build: () => show((api) => api.disksList(), (d, f) => table(mapRows<T.DiskSummary>(d), DISK_COLUMNS, f)) } },
  keywords: {},
  verbs: {
    describe: {
      summary: 'the disk and its objects (DiskDescribe)',
      build: (p) => { const id = diskId(p); return showKeyValues((api) => api.diskDescribe(id)); },
    },
    eject: { summary: 'stop using the disk now (DiskEject)', build: (p) => { const id = diskId(p); return change((api) => api.diskEject(id)); } },
    softEject: { summary: 'move all data off the disk, then stop using it (DiskSoftEject)', build: (p) => { const id = diskId(p); return change((api) => api.diskSoftEject(id)); } },
    forget: {
      summary: 'remove an ejected disk everywhere; repeat its id to confirm (DiskForget)',
      arg: 'required',
      argName: 'DISK',
      build: (p) => { const id = diskId(confirmedParsed(p)); return change((api) => api.diskForget(id)); },
    },
    scrub: {
      summary: 'start a read-verify pass (DiskScrubStart), or show its status (DiskDescribe)',
      arg: 'optional',
      argName: 'start|status',
      build: (p) => {
        const id = diskId(p);
        if (p.arg === undefined || p.arg === 'start') return change((api) => api.diskScrubStart(id));
        if (p.arg !== 'status') throw new UsageError(`storpool disk ${id} scrub: expected start or status, got ${p.arg}`);
        return showKeyValues(async (api) => scrubView(await api.diskDescribe(id)));
      },
    },
  },
  examples: ['storpool disk list', 'storpool disk 3 softEject', 'storpool disk 3 scrub', 'storpool disk 3 scrub status', 'storpool disk 3 forget 3'],
};

/** `disk D scrub status`: StorPool's scrubbing fields and the server's counters (docs/scrubbing.md). */
function scrubView(d: T.Disk): Record<string, unknown> {
  const s = d.scrubStatus;
  return {
    disk: d.id, running: s?.running, progress: s?.pass.progress, scrubbedBytes: d.scrubbedBytes, scrubbingBW: d.scrubbingBW, scrubbingFinishAfter: d.scrubbingFinishAfter,
    lastScrubCompleted: d.lastScrubCompleted, errorsFound: s?.pass.errorsFound, repaired: s?.pass.repaired, unrepairable: s?.pass.unrepairable,
    totalErrorsFound: s?.total.errorsFound, totalRepaired: s?.total.repaired, totalUnrepairable: s?.total.unrepairable, unrepairableBlocks: s?.unrepairableBlocks,
  };
}

function confirmedParsed(p: ParsedWords): ParsedWords {
  confirmed(p);
  return p;
}

// ---- services, clients, tasks, balancer -------------------------------------------------------

const server: NounSpec = {
  name: 'server',
  summary: 'Storage servers',
  lists: { list: { summary: 'storage servers and management instances (ServersList)', build: () => show((api) => api.serversList(), (d, f) => clusterTable(d, ['mgmt', 'servers'], f)) } },
  keywords: {},
  verbs: {},
  examples: ['storpool server list'],
};

const service: NounSpec = {
  name: 'service',
  summary: 'All services of the cluster',
  lists: { list: { summary: 'every service (ServicesList)', build: () => show((api) => api.servicesList(), (d, f) => clusterTable(d, ['mgmt', 'servers', 'clients', 'bridges', 'iscsiTargets'], f)) } },
  keywords: {},
  verbs: {},
  examples: ['storpool service list'],
};

const clientsList = {
  summary: 'configuration state of every client (ClientsConfigDump)',
  build: () => show((api) => api.clientsConfigDump(), (d, f) => table(d, CLIENT_COLUMNS, f)),
};

const client: NounSpec = {
  name: 'client',
  summary: 'Block clients (hosts that attach volumes)',
  object: 'ID',
  lists: { list: clientsList, status: clientsList },
  keywords: {},
  verbs: {
    wait: {
      summary: 'wait until the client applied the current configuration (ClientConfigWait)',
      build: (p) => {
        const id = parseIntIn(objectOf(p), 'client', 1, 4095);
        return show((api) => api.clientConfigWait(id), (d, f) => table(d, CLIENT_COLUMNS, f));
      },
    },
  },
  examples: ['storpool client status', 'storpool client 12 wait'],
};

const task: NounSpec = {
  name: 'task',
  summary: 'Running recovery and relocation tasks',
  lists: { list: { summary: 'all tasks (TasksList)', build: () => show((api) => api.tasksList(), (d, f) => table(d, TASK_COLUMNS, f)) } },
  keywords: {},
  verbs: {},
  examples: ['storpool task list'],
};

function balancerCommand(cmd: T.VolumeBalancerCommand['cmd']): { summary: string; build: () => Action } {
  return { summary: `${cmd} the balancer (VolumeBalancerStatus)`, build: () => change((api) => api.volumeBalancerCommand({ cmd })) };
}

const balancer: NounSpec = {
  name: 'balancer',
  summary: 'The volume balancer: status, start, stop, commit',
  lists: {
    status: { summary: 'balancer state (VolumeBalancerStatus)', build: () => showKeyValues((api) => api.volumeBalancerStatus()) },
    start: balancerCommand('start'),
    stop: balancerCommand('stop'),
    commit: balancerCommand('commit'),
  },
  keywords: {},
  verbs: {},
  examples: ['storpool balancer status', 'storpool balancer start'],
};

// ---- iSCSI (API.md §4.9) -------------------------------------------------------------------------

/**
 * `storpool iscsi config ...`: StorPool's iSCSI configuration words on this grammar's
 * noun/object/keywords/verb shape; each line is one `iSCSIConfig` command.
 */
function iscsiCommand(p: ParsedWords): T.IscsiCommand {
  if (objectOf(p) !== 'config') throw new UsageError(`storpool iscsi ${objectOf(p)}: expected 'storpool iscsi config ...' or 'storpool iscsi list'`);
  const pg = one(p, 'portalGroup');
  const initiator = one(p, 'initiator');
  const volumeName = one(p, 'volume');
  const need = (v: string | undefined, what: string): string => {
    if (v === undefined) throw new UsageError(`storpool iscsi config ${p.verb}: missing ${what}`);
    return v;
  };
  switch (p.verb) {
    case 'setBaseName': return { setBaseName: { name: need(p.arg, 'IQN') } };
    case 'create':
    case 'delete': {
      const create = p.verb === 'create';
      if (p.flags.has('portal')) {
        const ip = need(one(p, 'address'), 'address IP');
        const port = maybe(p, 'port', (t, k) => parseIntIn(t, k, 1, 65535));
        if (!create) return { deletePortal: { ip, ...(port !== undefined ? { port } : {}) } } as T.IscsiCommand;
        const controller = parseIntIn(need(one(p, 'controller'), 'controller ID'), 'controller', 1, 4095);
        return { createPortal: { portalGroup: need(pg, 'portalGroup NAME'), controller, ip, ...(port !== undefined ? { port } : {}) } } as T.IscsiCommand;
      }
      if (p.flags.has('target')) {
        const v = need(p.arg ?? volumeName, 'VOLUME');
        return create ? { createTarget: { volumeName: v } } : { deleteTarget: { volumeName: v } };
      }
      if (initiator !== undefined) {
        if (!create) return { deleteInitiator: { name: initiator } };
        return { createInitiator: { name: initiator, username: one(p, 'username') ?? '', secret: one(p, 'secret') ?? '' } };
      }
      if (pg !== undefined) return create ? { createPortalGroup: { name: pg } } : { deletePortalGroup: { name: pg } };
      throw new UsageError(`storpool iscsi config ${p.verb}: say what: portalGroup NAME, portal ..., target VOLUME or initiator IQN`);
    }
    case 'addNet': {
      const net = need(p.arg, 'a.b.c.d/n');
      if (initiator !== undefined) return { initiatorAddNetwork: { initiator, net } };
      return { portalGroupAddNetwork: { portalGroup: need(pg, 'portalGroup NAME or initiator IQN'), net } };
    }
    case 'export':
    case 'exportDelete': {
      const body = { initiator: need(initiator, 'initiator IQN'), portalGroup: need(pg, 'portalGroup NAME'), volumeName: need(p.arg ?? volumeName, 'volume VOLUME') };
      return p.verb === 'export' ? { export: body } : { exportDelete: body };
    }
    default:
      throw new UsageError(`storpool iscsi config: unknown verb ${p.verb}`);
  }
}

const ISCSI_KEYWORDS = ['portalGroup', 'initiator', 'volume', 'portal', 'target', 'address', 'port', 'controller', 'username', 'secret'];
const iscsiChange = (p: ParsedWords): Action => { const c = iscsiCommand(p); return change((api) => api.iSCSIConfigChange({ commands: [c] })); };
const iscsiList: ListSpec = { summary: 'the iSCSI configuration (iSCSIConfig)', build: () => show((api) => api.iSCSIConfig(), (d, f) => keyValues(d, f)) };

const iscsi: NounSpec = {
  name: 'iscsi',
  summary: 'iSCSI targets, portals, initiators and exports (iSCSIConfig)',
  object: 'config',
  lists: { list: iscsiList },
  keywords: {
    portalGroup: { kind: 'value', value: 'NAME', help: 'a portal group' },
    initiator: { kind: 'value', value: 'IQN', help: 'an initiator' },
    volume: { kind: 'value', value: 'VOLUME', help: 'the volume of a target' },
    portal: { kind: 'flag', help: 'a portal (with address, port, controller)' },
    target: { kind: 'flag', help: 'the target of a volume' },
    address: { kind: 'value', value: 'IP', help: 'portal address' },
    port: { kind: 'value', value: 'PORT', help: 'portal TCP port (default 3260)' },
    controller: { kind: 'value', value: 'ID', help: 'iSCSI controller (storpool-iscsi --controller-id) serving the portal' },
    username: { kind: 'value', value: 'USER', help: 'CHAP user of the initiator' },
    secret: { kind: 'value', value: 'SECRET', help: 'CHAP secret of the initiator (none: no CHAP)' },
  },
  verbs: {
    list: { summary: 'the iSCSI configuration (iSCSIConfig)', build: () => iscsiList.build() },
    setBaseName: { summary: 'set the cluster IQN prefix', arg: 'required', argName: 'IQN', build: iscsiChange },
    create: { summary: 'create a portal group, portal, target or initiator', arg: 'optional', argName: 'VOLUME', keywords: ISCSI_KEYWORDS, build: iscsiChange },
    delete: { summary: 'delete a portal group, portal, target or initiator', arg: 'optional', argName: 'VOLUME', keywords: ISCSI_KEYWORDS, build: iscsiChange },
    addNet: { summary: 'allow a network to a portal group or an initiator', arg: 'required', argName: 'CIDR', keywords: ['portalGroup', 'initiator'], build: iscsiChange },
    export: { summary: 'export a volume to an initiator through a portal group', arg: 'optional', argName: 'VOLUME', keywords: ['portalGroup', 'initiator', 'volume'], build: iscsiChange },
    exportDelete: { summary: 'remove an export', arg: 'optional', argName: 'VOLUME', keywords: ['portalGroup', 'initiator', 'volume'], build: iscsiChange },
  },
  examples: [
    'storpool iscsi config setBaseName iqn.2026-11.com.example:cl1',
    'storpool iscsi config portalGroup pg1 create',
    'storpool iscsi config portalGroup pg1 addNet 10.0.0.0/24',
    'storpool iscsi config portal create portalGroup pg1 address 10.0.0.1 port 3260 controller 1',
    'storpool iscsi config target create vol1',
    'storpool iscsi config initiator iqn.1998-01.com.vmware:esx1 create username esx1 secret 0123456789ab',
    'storpool iscsi config initiator iqn.1998-01.com.vmware:esx1 export volume vol1 portalGroup pg1',
    'storpool iscsi list',
  ],
};

/** Every noun, by the word that selects it. */
export const NOUNS: Readonly<Record<string, NounSpec>> = {
  volume, snapshot, attach, detach, template, placementGroup, faultSet, disk, server, service, client, task, balancer, iscsi,
};
