/**
 * The call table of API.md §4: one thin handler per call — parse the body, run a model operation
 * or build a view, return `data`. Handlers hold no state.
 */
import { ApiError, invalid, notFound } from './api-error.js';
import type { ClusterModel } from './cluster-model.js';
import type { CallReply, CallRequest, Dispatch } from './http.js';
import type { LiveView } from './live.js';
import type { RecoveryTask } from './recovery.js';
import { attachmentDigest, changedClients, clientAttachments, isConnected, openAttachments, readClientStatuses, waitForClients, writeClientStatus } from './client-status.js';
import * as cluster from './model-cluster.js';
import { changeIscsiConfig, iscsiExports, readIscsiConfig } from './iscsi-config.js';
import { findObject, findSnapshot, findVolume } from './model-helpers.js';
import * as volumes from './model-volumes.js';
import { checkClientId, checkDiskId, checkObjectRef, checkPlacementGroupName, checkSnapshotRef, checkTemplateName, checkVolumeRef, globalIdOfRef, isVolumeName, parseIntId } from './names.js';
import * as s from './schemas.js';
import { scrubFields, scrubStatusOf, scrubTasks, startDiskScrub } from './scrub.js';
import type { State } from './state.js';
import * as views from './views.js';

export interface ServiceInfo {
  instanceId: number;
  version: string;
  startTime: number;
  isLeader(): boolean;
  /** Live management instances: id -> start time. */
  instances(): Promise<Map<number, { startTime: number; leader: boolean }>>;
  /** Catch-up in progress on this instance (the leader), one per joining disk. */
  recoveryTasks?(): RecoveryTask[];
}

interface Ctx {
  req: CallRequest;
  model: ClusterModel;
  live: LiveView;
  info: ServiceInfo;
}

type Handler = (c: Ctx) => Promise<CallReply>;

interface Route {
  method: 'GET' | 'POST';
  /** Number of path arguments. */
  args: number;
  /** Takes JSON: a body that does not parse is an error (calls without JSON ignore the body). */
  json: boolean;
  handler: Handler;
}

const ok = (generation: number, extra: Record<string, unknown> = {}): CallReply => ({ data: { ok: true, generation, ...extra }, generation });

async function read<T>(c: Ctx, fn: (state: State) => T | Promise<T>): Promise<CallReply> {
  const state = await c.model.read();
  return { data: await fn(state), generation: state.counters.generation };
}

async function mutate(c: Ctx, fn: (state: State, ctx: ReturnType<ClusterModel['context']>) => Record<string, unknown> | void): Promise<CallReply> {
  const r = await c.model.mutate(fn);
  return ok(r.generation, r.result ?? {});
}

/**
 * A mutation that changes what attached clients see (attachments, a volume's data identity, size
 * or name): returns once the affected clients' block services applied it (see client-status.ts).
 * `strict` (VolumesReassignWait) fails the call when a client does not apply it; otherwise the
 * change stands and a client that is late only gets logged.
 */
async function mutateAndSync(c: Ctx, fn: (state: State, ctx: ReturnType<ClusterModel['context']>) => Record<string, unknown> | void, o: { strict: boolean; attachTimeoutSec?: number }): Promise<CallReply> {
  let before: ReturnType<typeof attachmentDigest> = new Map();
  const r = await c.model.mutate((st, ctx) => {
    before = attachmentDigest(st);
    const result = fn(st, ctx);
    return result;
  });
  const after = attachmentDigest(r.state);
  const changed = changedClients(before, after);
  const describe = (gid: string): string => { const x = r.state.objects.get(gid); return x === undefined ? gid : `'${x.name ?? `~${gid}`}'`; };
  try {
    await waitForClients(c.model.store.meta, { ...changed, generation: r.generation, describe, attachTimeoutSec: o.attachTimeoutSec ?? (o.strict ? undefined : 0) });
  } catch (err) {
    if (o.strict) throw err;
  }
  return ok(r.generation, r.result ?? {});
}

const arg = (c: Ctx, i = 0): string => c.req.args[i]!;
const volumeArg = (c: Ctx): string => checkVolumeRef(arg(c));
const snapshotArg = (c: Ctx): string => checkSnapshotRef(arg(c));
const diskArg = (c: Ctx): number => checkDiskId(parseIntId(arg(c), 'diskId'));

function volumesOf(state: State): State['objects'] extends Map<string, infer O> ? O[] : never {
  return [...state.objects.values()].filter((o) => o.kind === 'volume').sort((a, b) => a.visibleVolumeId - b.visibleVolumeId);
}

function snapshotsOf(state: State): ReturnType<typeof volumesOf> {
  return [...state.objects.values()].filter((o) => o.kind === 'snapshot').sort((a, b) => a.visibleVolumeId - b.visibleVolumeId);
}

async function disksView(c: Ctx, state: State): Promise<Record<string, views.Json>> {
  const disks = [...state.disks.values()].sort((a, b) => a.id - b.id);
  const live = await c.live.diskStats(disks.map((d) => d.id));
  const out: Record<string, views.Json> = {};
  for (const d of disks) out[String(d.id)] = views.diskSummary(state, d, live.get(d.id)?.live, scrubFields(scrubStatusOf(live.get(d.id)?.raw)));
  return out;
}

async function clusterStatus(c: Ctx, state: State, withClients: boolean): Promise<views.Json> {
  const live = await c.live.diskStats([...state.disks.keys()]);
  const servers: Record<string, views.Json> = {};
  for (const d of [...state.disks.values()].sort((a, b) => a.id - b.id)) {
    const server = (servers[String(d.serverId)] ??= { id: d.serverId, status: 'down', version: c.info.version, startTime: null, missingDisks: [], pendingDisks: [] });
    if (live.has(d.id)) server['status'] = 'running';
    else (server['missingDisks'] as number[]).push(d.id);
  }
  const mgmt: Record<string, views.Json> = {};
  for (const [id, m] of await c.info.instances()) mgmt[String(id)] = { id, status: 'running', active: m.leader, prio: 0, version: c.info.version, startTime: m.startTime };
  const clients: Record<string, views.Json> = {};
  if (withClients) for (const cl of state.clients.values()) clients[String(cl.id)] = { id: cl.id, status: 'running', version: c.info.version, startTime: cl.registeredAt };
  return { clusterStatus: 'running', mgmt, clients, servers, bridges: {}, iscsiTargets: {} };
}

async function clientsConfig(c: Ctx, state: State, delay: number): Promise<views.Json[]> {
  const statuses = await readClientStatuses(c.model.store.meta);
  const generation = state.counters.generation;
  return [...state.clients.values()].sort((a, b) => a.id - b.id).map((cl) => {
    const st = statuses.get(cl.id);
    // A client that never ran a block service is reported as caught up (nothing to apply).
    const clientGeneration = st === undefined ? generation : Math.min(st.generation, generation);
    const configStatus = st !== undefined && !isConnected(st) ? 'down' : clientGeneration < generation ? 'updating' : 'ok';
    return { id: cl.id, generation, clientGeneration, configStatus, delay };
  });
}

function reassignEntries(body: unknown, wait: boolean): cluster.ReassignEntry[] {
  const parsed = wait ? s.parse(s.reassignWait, body) : s.parse(s.reassign, body);
  const entries = Array.isArray(parsed) ? parsed : parsed.reassign;
  return entries.map((e, i) => {
    if (e.volume !== undefined) checkVolumeRef(e.volume, `reassign[${i}].volume`);
    if (e.snapshot !== undefined) checkSnapshotRef(e.snapshot, `reassign[${i}].snapshot`);
    for (const id of [...(e.ro ?? []), ...(e.rw ?? []), ...(e.detach === 'all' ? [] : (e.detach ?? []))]) checkClientId(id);
    return s.defined(e);
  });
}

function bodyOrEmpty(c: Ctx): unknown {
  return c.req.body ?? {};
}

const R = (method: 'GET' | 'POST', args: number, handler: Handler, json = method === 'POST'): Route => ({ method, args, json, handler });

const routes: Record<string, Route | Route[]> = {
  // ---- volumes
  VolumesList: R('GET', 0, (c) => read(c, (st) => volumesOf(st).map((o) => views.volumeSummary(st, o)))),
  Volume: R('GET', 1, (c) => read(c, (st) => [views.volumeSummary(st, findVolume(st, volumeArg(c)))])),
  VolumeDescribe: R('GET', 1, (c) => read(c, (st) => views.describe(st, findVolume(st, volumeArg(c))))),
  VolumeGetInfo: R('GET', 1, (c) => read(c, (st) => views.info(st, findVolume(st, volumeArg(c))))),
  VolumeCreate: R('POST', 0, (c) => {
    const body = s.defined(s.parse(s.volumeCreate, c.req.body));
    return mutate(c, (st, ctx) => ({ ...volumes.createVolume(st, ctx, body) }));
  }),
  VolumeUpdate: R('POST', 1, (c) => {
    const ref = volumeArg(c);
    const body = s.defined(s.parse(s.volumeUpdate, bodyOrEmpty(c)));
    return mutateAndSync(c, (st, ctx) => volumes.updateVolume(st, ctx, ref, body), { strict: false });
  }),
  VolumeDelete: R('POST', 1, (c) => {
    const ref = volumeArg(c);
    const body = c.req.bodyInvalid === undefined ? s.parse(s.volumeDelete, bodyOrEmpty(c)) : {};
    return mutate(c, (st, ctx) => volumes.deleteVolume(st, ctx, ref, body.onAttached));
  }, false),
  VolumeRevert: R('POST', 1, (c) => {
    const ref = volumeArg(c);
    const body = s.parse(s.volumeRevert, c.req.body);
    checkSnapshotRef(body.toSnapshot, 'toSnapshot');
    return mutateAndSync(c, (st, ctx) => volumes.revertVolume(st, ctx, ref, body.toSnapshot, body.revertSize === true), { strict: false });
  }),
  VolumeFreeze: R('POST', 1, (c) => {
    const ref = volumeArg(c);
    const body = c.req.bodyInvalid === undefined ? s.parse(s.volumeFreeze, bodyOrEmpty(c)) : {};
    return mutate(c, (st, ctx) => volumes.freezeVolume(st, ctx, ref, body.targetDeleteDate, body.deleteAfter));
  }, false),
  VolumeListSnapshots: R('GET', 1, (c) => read(c, (st) => {
    const v = findVolume(st, volumeArg(c));
    const out: views.Json[] = [];
    let p = v.parentGlobalId === undefined ? undefined : st.objects.get(v.parentGlobalId);
    for (let i = 0; p !== undefined && i < 4096; i++) {
      out.push(views.snapshotSummary(st, p));
      p = p.parentGlobalId === undefined ? undefined : st.objects.get(p.parentGlobalId);
    }
    return out;
  })),
  VolumesGetStatus: R('GET', 0, (c) => read(c, async (st) => {
    const live = await c.live.diskStats([...st.disks.keys()]);
    const down = new Set([...st.disks.keys()].filter((id) => !live.has(id)));
    const stored = await c.live.storedBytes(st);
    return Object.fromEntries([...volumesOf(st), ...snapshotsOf(st)].map((o) => [views.objectSummary(st, o)['name'] as string, views.objectStatus(st, o, stored, down)]));
  })),
  VolumesSpace: R('GET', 0, (c) => read(c, async (st) => {
    const stored = await c.live.storedBytes(st);
    return volumesOf(st).map((o) => views.space(st, o, stored));
  })),
  VolumesAndSnapshotsList: R('GET', 0, (c) => read(c, (st) => ({
    volumes: volumesOf(st).map((o) => views.volumeSummary(st, o)),
    snapshots: snapshotsOf(st).map((o) => views.snapshotSummary(st, o)),
  }))),
  VolumeAcquire: R('POST', 1, (c) => read(c, (st) => {
    findVolume(st, volumeArg(c));
    return { ok: true, generation: st.counters.generation };
  }), false),
  VolumeBackup: R('POST', 0, () => Promise.reject(new ApiError('notImplemented', 'VolumeBackup: this cluster has no remote backup locations'))),
  // ---- snapshots
  VolumeSnapshot: R('POST', 1, (c) => {
    const ref = volumeArg(c);
    const body = s.defined(s.parse(s.volumeSnapshot, bodyOrEmpty(c)));
    return mutateAndSync(c, (st, ctx) => {
      const r = volumes.snapshotVolume(st, ctx, ref, body);
      return { autoName: r.name, snapshotGlobalId: r.globalId, snapshotVisibleVolumeId: r.visibleVolumeId };
    }, { strict: false });
  }),
  SnapshotsList: R('GET', 0, (c) => read(c, (st) => snapshotsOf(st).map((o) => views.snapshotSummary(st, o)))),
  Snapshot: R('GET', 1, (c) => read(c, (st) => [views.snapshotSummary(st, findSnapshot(st, snapshotArg(c), true))])),
  SnapshotDescribe: R('GET', 1, (c) => read(c, (st) => views.describe(st, findSnapshot(st, snapshotArg(c), true)))),
  SnapshotGetInfo: R('GET', 1, (c) => read(c, (st) => views.info(st, findSnapshot(st, snapshotArg(c), true)))),
  SnapshotsSpace: R('GET', 0, (c) => read(c, async (st) => {
    const stored = await c.live.storedBytes(st);
    return snapshotsOf(st).map((o) => views.space(st, o, stored));
  })),
  SnapshotUpdate: R('POST', 1, (c) => {
    const ref = snapshotArg(c);
    const body = s.defined(s.parse(s.snapshotUpdate, bodyOrEmpty(c)));
    return mutate(c, (st, ctx) => volumes.updateSnapshot(st, ctx, ref, body));
  }),
  SnapshotDelete: R('POST', 1, (c) => {
    const ref = snapshotArg(c);
    return mutate(c, (st, ctx) => volumes.deleteSnapshot(st, ctx, ref));
  }, false),
  SnapshotDeleteById: R('POST', 1, (c) => {
    const gid = arg(c);
    if (globalIdOfRef(`~${gid}`) === undefined) throw invalid(`${JSON.stringify(gid)} is not a global id`);
    return mutate(c, (st, ctx) => volumes.deleteSnapshot(st, ctx, `~${gid}`));
  }, false),
  VolumesGroupSnapshot: R('POST', 0, (c) => {
    const body = s.parse(s.groupSnapshot, c.req.body);
    const entries = body.volumes.map((e, i) => {
      checkVolumeRef(e.volume, `volumes[${i}].volume`);
      return s.defined(e);
    });
    return mutateAndSync(c, (st, ctx) => ({ snapshots: volumes.groupSnapshot(st, ctx, entries, body.tags) }), { strict: false });
  }),
  // ---- attachments
  AttachmentsList: R('GET', 0, (c) => read(c, (st) => views.attachmentsList(st))),
  VolumesReassign: R('POST', 0, async (c) => {
    const entries = reassignEntries(c.req.body, false);
    const open = openAttachments(await readClientStatuses(c.model.store.meta));
    return mutate(c, (st) => { cluster.reassign(st, entries, open); });
  }),
  VolumesReassignWait: R('POST', 0, async (c) => {
    const entries = reassignEntries(c.req.body, true);
    const parsed = s.parse(s.reassignWait, c.req.body);
    const attachTimeout = Array.isArray(parsed) ? undefined : parsed.attachTimeout;
    const open = openAttachments(await readClientStatuses(c.model.store.meta));
    return mutateAndSync(c, (st) => { cluster.reassign(st, entries, open); }, { strict: true, ...(attachTimeout !== undefined ? { attachTimeoutSec: attachTimeout } : {}) });
  }),
  // ---- templates
  VolumeTemplatesList: R('GET', 0, (c) => read(c, (st) => [...st.templates.values()].sort((a, b) => a.id - b.id).map((t) => views.templateDesc(st, t)))),
  VolumeTemplatesStatus: R('GET', 0, (c) => read(c, async (st) => {
    const [live, stored] = await Promise.all([c.live.diskStats([...st.disks.keys()]), c.live.storedBytes(st)]);
    const byDisk = new Map([...live].map(([id, d]) => [id, d.live]));
    return [...st.templates.values()].sort((a, b) => a.id - b.id).map((t) => views.templateStatus(st, t, byDisk, stored));
  })),
  VolumeTemplateDescribe: R('GET', 1, (c) => read(c, (st) => {
    const name = checkTemplateName(arg(c));
    const t = st.templates.get(name);
    if (t === undefined) throw notFound(`template ${name}`);
    return views.templateDesc(st, t);
  })),
  VolumeTemplateCreate: R('POST', 0, (c) => {
    const body = s.defined(s.parse(s.templateCreate, c.req.body));
    return mutate(c, (st, ctx) => cluster.createTemplate(st, ctx, body));
  }),
  VolumeTemplateUpdate: R('POST', 1, (c) => {
    const name = checkTemplateName(arg(c));
    const body = s.defined(s.parse(s.templateUpdate, bodyOrEmpty(c)));
    return mutate(c, (st, ctx) => cluster.updateTemplate(st, ctx, name, body));
  }),
  VolumeTemplateDelete: R('POST', 1, (c) => {
    const name = checkTemplateName(arg(c));
    return mutate(c, (st) => cluster.deleteTemplate(st, name));
  }, false),
  // ---- placement groups, fault sets
  PlacementGroupsList: R('GET', 0, (c) => read(c, (st) => Object.fromEntries([...st.pgs.keys()].sort().map((n) => [n, views.placementGroup(st, n)])))),
  PlacementGroupDescribe: R('GET', 1, (c) => read(c, (st) => {
    const name = checkPlacementGroupName(arg(c));
    if (!st.pgs.has(name)) throw notFound(`placement group ${name}`);
    return views.placementGroup(st, name);
  })),
  PlacementGroupUpdate: R('POST', 1, (c) => {
    const name = checkPlacementGroupName(arg(c));
    const body = s.defined(s.parse(s.placementGroupUpdate, bodyOrEmpty(c)));
    return mutate(c, (st) => cluster.updatePlacementGroup(st, name, body));
  }),
  PlacementGroupDelete: R('POST', 1, (c) => {
    const name = checkPlacementGroupName(arg(c));
    return mutate(c, (st) => cluster.deletePlacementGroup(st, name));
  }, false),
  FaultSetsList: R('GET', 0, (c) => read(c, (st) => {
    const out: Record<string, { name: string; servers: number[] }> = {};
    for (const d of st.disks.values()) {
      if (d.faultSet === '') continue;
      const fs = (out[d.faultSet] ??= { name: d.faultSet, servers: [] });
      if (!fs.servers.includes(d.serverId)) fs.servers.push(d.serverId);
    }
    return out;
  })),
  // ---- disks, servers, services, clients, tasks
  DisksList: R('GET', 0, (c) => read(c, (st) => disksView(c, st))),
  DiskDescribe: R('GET', 1, (c) => read(c, async (st) => {
    const id = diskArg(c);
    const d = st.disks.get(id);
    if (d === undefined) throw notFound(`disk ${id}`);
    const live = (await c.live.diskStats([id])).get(id);
    return { ...views.diskSummary(st, d, live?.live, scrubFields(scrubStatusOf(live?.raw))), objects: {} };
  })),
  DiskEject: R('POST', 1, (c) => { const id = diskArg(c); return mutate(c, (st) => cluster.ejectDisk(st, id)); }, false),
  DiskForget: R('POST', 1, (c) => { const id = diskArg(c); return mutate(c, (st) => cluster.forgetDisk(st, id)); }, false),
  DiskSoftEject: R('POST', 1, (c) => { const id = diskArg(c); return mutate(c, (st) => cluster.softEjectDisk(st, id)); }, false),
  DiskScrubStart: R('POST', 1, async (c) => {
    const id = diskArg(c);
    if (!(await c.model.read()).disks.has(id)) throw notFound(`disk ${id}`);
    await startDiskScrub(c.live, id); // the disk's server runs the pass (scrub.ts)
    return mutate(c, (st, ctx) => cluster.startScrub(st, ctx, id));
  }, false),
  /** storpool extension: a storage server (or its launcher) registers its disk. */
  DiskRegister: R('POST', 1, (c) => {
    const id = diskArg(c);
    const body = s.defined(s.parse(s.diskRegister, c.req.body));
    return mutate(c, (st) => cluster.registerDisk(st, { ...body, id }));
  }),
  ServersList: R('GET', 0, (c) => read(c, (st) => clusterStatus(c, st, false))),
  ServicesList: R('GET', 0, (c) => read(c, (st) => clusterStatus(c, st, true))),
  ClientsConfigDump: R('GET', 0, (c) => read(c, (st) => clientsConfig(c, st, 0))),
  ClientConfigWait: R('GET', 1, (c) => read(c, async (st) => {
    const id = checkClientId(parseIntId(arg(c), 'clientId'));
    if (!st.clients.has(id)) throw notFound(`client ${id}`);
    const started = Date.now();
    await waitForClients(c.model.store.meta, { attached: [id], detached: [], objects: new Set(), generation: st.counters.generation, attachTimeoutSec: 0 }).catch(() => undefined);
    return (await clientsConfig(c, st, Math.round((Date.now() - started) / 1000))).filter((x) => x['id'] === id);
  })),
  /** storpool extension: the block service's view of its host's attachments, with data identities. */
  ClientAttachments: R('GET', 1, (c) => read(c, (st) => {
    const id = checkClientId(parseIntId(arg(c), 'clientId'));
    if (!st.clients.has(id)) throw notFound(`client ${id}`);
    return { generation: st.counters.generation, attachments: clientAttachments(st, id) };
  })),
  /** storpool extension: the block service reports the generation it applied and its open devices. */
  ClientStatus: R('POST', 1, async (c) => {
    const id = checkClientId(parseIntId(arg(c), 'clientId'));
    const body = s.parse(s.clientStatus, c.req.body);
    const st = await c.model.read();
    if (!st.clients.has(id)) throw notFound(`client ${id}`);
    await writeClientStatus(c.model.store.meta, id, { generation: body.generation, open: body.open ?? [], errors: body.errors ?? {} });
    return ok(st.counters.generation);
  }),
  /** storpool extension: the block service registers its host's client id (SP_OURID). */
  ClientRegister: R('POST', 1, (c) => {
    const id = checkClientId(parseIntId(arg(c), 'clientId'));
    return mutate(c, (st, ctx) => cluster.registerClient(st, ctx, id));
  }, false),
  TasksList: R('GET', 0, (c) => read(c, async (st) => [...views.tasks(st, [...st.tasks.values()].sort((a, b) => a.id - b.id)), ...scrubTasks(await c.live.diskStats([...st.disks.keys()])), ...views.recoveryTasks(c.info.recoveryTasks?.() ?? [])])),
  VolumeBalancerStatus: [
    R('GET', 0, (c) => read(c, (st) => views.balancerStatus(st))),
    R('POST', 0, async (c) => {
      const { cmd } = s.parse(s.balancerCommand, c.req.body);
      // Placement changes apply as soon as they are computed: nothing waits for start or commit.
      if (cmd === 'stop') throw new ApiError('notImplemented', 'the balancer is automatic and cannot be stopped: data moves as soon as placement changes; cap its copy rate with storpool-mgmt --sync-mbps');
      const st = await c.model.read();
      return ok(st.counters.generation);
    }),
  ],
  // ---- iSCSI (iscsi-config.ts)
  iSCSIConfig: [
    R('GET', 0, (c) => read(c, async () => ({ iscsi: await readIscsiConfig(c.model.store.meta) }))),
    R('POST', 0, async (c) => {
      const st = await c.model.read();
      await changeIscsiConfig(c.model.store.meta, st, c.req.body);
      return ok(st.counters.generation);
    }),
  ],
  /** storpool extension: iSCSIConfig plus the data identity of every target's volume (storpool-iscsi). */
  iSCSIExports: R('GET', 0, (c) => read(c, async (st) => iscsiExports(await readIscsiConfig(c.model.store.meta), st))),
  // ---- key/value buckets
  KV: R('GET', 0, (c) => read(c, (st) => ({ buckets: Object.fromEntries([...st.kv.values()].map((b) => [b.name, b.version])) }))),
  'KV/List': R('GET', 1, (c) => read(c, (st) => kvBucket(st, kvName(c)))),
  'KV/Get': R('GET', 2, (c) => read(c, (st) => {
    const b = kvBucket(st, kvName(c));
    const key = arg(c, 1);
    return { ...b, pairs: Object.hasOwn(b.pairs, key) ? { [key]: b.pairs[key]! } : {} };
  })),
  'KV/Create': R('POST', 1, (c) => { const b = kvName(c); return mutate(c, (st) => cluster.kvCreate(st, b)); }, false),
  'KV/Delete': R('POST', 1, (c) => { const b = kvName(c); return mutate(c, (st) => cluster.kvDelete(st, b)); }, false),
  'KV/Set': R('POST', 1, (c) => {
    const b = kvName(c);
    const body = s.parse(s.kvSet, c.req.body);
    return mutate(c, (st) => cluster.kvSet(st, b, body.set, body.runIfVersionIs));
  }),
};

function kvName(c: Ctx): string {
  const name = arg(c);
  if (!isVolumeName(name) || name.length > 900) throw invalid(`bucket name ${JSON.stringify(name)} is not valid`);
  return name;
}

function kvBucket(state: State, name: string): { name: string; version: number; pairs: Record<string, string> } {
  const b = state.kv.get(name);
  if (b === undefined) throw notFound(`bucket ${name}`);
  return { name: b.name, version: b.version, pairs: { ...b.pairs } };
}

export const CALLS: readonly string[] = Object.keys(routes);

/** RemoteCommand/<target>: this cluster's name or `~<SP_CLUSTER_ID>` run here; others are unknown. */
async function checkRemote(model: ClusterModel, remote: string): Promise<void> {
  const st = await model.read();
  const c = st.cluster;
  if (c === undefined) throw new ApiError('notReady', 'the cluster is not initialized yet', true);
  if (remote === c.name || remote.toLowerCase() === `~${c.spClusterId}`) return;
  throw new ApiError('objectDoesNotExist', `cluster ${remote} does not exist (this is ${c.name}, ~${c.spClusterId}; multicluster forwarding is not supported)`);
}

export function createDispatch(model: ClusterModel, live: LiveView, info: ServiceInfo): Dispatch {
  return async (req) => {
    const entry = Object.hasOwn(routes, req.call) ? routes[req.call] : undefined;
    if (entry === undefined) throw invalid(`unknown call ${JSON.stringify(req.call.slice(0, 100))}`);
    const candidates = Array.isArray(entry) ? entry : [entry];
    const route = candidates.find((r) => r.method === req.method);
    if (route === undefined) throw invalid(`${req.call} must be called with ${candidates.map((r) => r.method).join(' or ')}`);
    if (req.args.length !== route.args) throw invalid(`${req.call} takes ${route.args} path argument(s), got ${req.args.length}`);
    if (route.json && req.bodyInvalid !== undefined) throw invalid(`request body is not JSON: ${req.bodyInvalid}`);
    if (req.remote !== undefined) await checkRemote(model, req.remote);
    return route.handler({ req, model, live, info });
  };
}

export { findObject, checkObjectRef };
