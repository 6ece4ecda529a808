/**
 * storpool-mgmt as a library: opens the metadata store, initializes the cluster record, serves the
 * API, keeps the shard-map file published, and — on the elected leader only — runs the background
 * work (purging freed data, scheduled snapshot deletion).
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { openMetaStore, type Election, type Lease, type MetaConfig, type MetaStore, type MetaWatch } from '@storpool/meta';
import { pino, type Logger } from 'pino';
import { ClusterModel } from './cluster-model.js';
import { createApiServer } from './http.js';
import { BACKGROUND_INTERVAL_MS, DOWN_AFTER_MS, MGMT_LEASE_TTL_MS, PROBE_INTERVAL_MS, RE_REPLICATE_AFTER_MS, SHARDS_PER_GROUP } from './limits.js';
import { LiveView } from './live.js';
import { ShardMapPublisher } from './map-source.js';
import { Recovery, type RecoveryTask } from './recovery.js';
import { initCluster, registerClient, registerDisk, type ClusterInit, type DiskRegistration } from './model-cluster.js';
import { deleteSnapshot, dueSnapshots } from './model-volumes.js';
import { createDispatch, type ServiceInfo } from './routes.js';
import { SHARD_MAP_KEY, type ClusterRecord, type TaskRecord } from './state.js';

export interface ManagementServiceOptions {
  /** Store config (opened and closed by the service) or an open store (left open). */
  meta: MetaConfig | MetaStore;
  /** Default 127.0.0.1, port 0 (any free port). */
  host?: string;
  port?: number;
  /** SP_AUTH_TOKEN: every call must carry `Authorization: Storpool v1:<token>`. */
  token: string;
  /** Where to publish the shard map for storage servers and clients (FileShardMapSource). */
  mapFile?: string;
  /** Used on first start only (the cluster record is kept in the store). */
  cluster?: ClusterInit;
  shardCount?: number;
  log?: Logger;
  backgroundIntervalMs?: number;
  /** Failure detection and recovery (leader): see recovery.ts. */
  probeIntervalMs?: number;
  downAfterMs?: number;
  reReplicateAfterMs?: number;
  /** Catch-up copy throttle, bytes/s per copy (0 = unthrottled). */
  syncBytesPerSec?: number;
  /** Writes need this many in-sync copies (default: a majority of the replication). Stored in the cluster record. */
  minReplicas?: number;
}

export interface ManagementService {
  url: string;
  host: string;
  port: number;
  model: ClusterModel;
  meta: MetaStore;
  cluster: ClusterRecord;
  instanceId: number;
  /** True while this instance leads (runs the background work). */
  readonly isLeader: boolean;
  /** Registers (or re-addresses) a storage server's disk; rebuilds and publishes the shard map. */
  registerDisk(disk: DiskRegistration): Promise<void>;
  /** Registers a client host id (SP_OURID) so that volumes can be attached to it. */
  registerClient(id: number): Promise<void>;
  /** Resolves once the shard map file holds at least the store's current epoch. */
  publishShardMap(): Promise<void>;
  /** Runs one background pass now (leader only); for tests. */
  runBackground(): Promise<void>;
  /** Failure detection and catch-up (leader only). */
  recovery: Recovery;
  close(): Promise<void>;
}

const INSTANCE_PREFIX = 'mgmt-instances/';
const INSTANCE_ID_MAX = 4095;
const VERSION = ((): string => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();

function isMetaStore(value: MetaConfig | MetaStore): value is MetaStore {
  return typeof (value as MetaStore).getPrefix === 'function';
}

/** Claims the lowest free instance id under a lease (the key vanishes with the process). */
async function claimInstanceId(meta: MetaStore, lease: Lease, startTime: number): Promise<number> {
  for (let id = 1; id <= INSTANCE_ID_MAX; id++) {
    const key = `${INSTANCE_PREFIX}${id}`;
    const r = await meta.txn({ compare: [{ key, exists: false }], success: [{ type: 'put', key, value: JSON.stringify({ startTime }), lease: lease.id }] });
    if (r.succeeded) return id;
  }
  throw new Error(`more than ${INSTANCE_ID_MAX} management instances`);
}


export async function startManagementService(options: ManagementServiceOptions): Promise<ManagementService> {
  const log = options.log ?? pino({ name: 'storpool-mgmt', level: 'silent' });
  const ownsMeta = !isMetaStore(options.meta);
  const meta = isMetaStore(options.meta) ? options.meta : await openMetaStore(options.meta);
  const steps: { name: string; fn: () => Promise<void> }[] = [];
  const cleanup = { push: (fn: () => Promise<void>, name = fn.toString().slice(0, 60)): void => { steps.push({ name, fn }); } };
  if (ownsMeta) cleanup.push(() => meta.close(), 'metadata store');
  const close = async (): Promise<void> => {
    for (const step of steps.splice(0).reverse()) {
      try {
        log.debug({ step: step.name }, 'stopping');
        await step.fn();
      } catch (err) {
        log.warn({ err, step: step.name }, 'error while stopping');
      }
    }
  };
  try {
    const publisher = options.mapFile === undefined ? undefined : new ShardMapPublisher(meta, options.mapFile);
    const publish = async (): Promise<void> => {
      await publisher?.publish().catch((err: unknown) => log.error({ err, mapFile: options.mapFile }, 'cannot publish the shard map file'));
    };
    const model = new ClusterModel(meta, options.shardCount ?? SHARDS_PER_GROUP, () => void publish());
    let state = await model.read();
    if (state.cluster === undefined) state = (await model.mutate((st, ctx) => initCluster(st, ctx, options.cluster ?? {}))).state;
    if (options.minReplicas !== undefined && state.cluster?.minReplicas !== options.minReplicas) {
      const minReplicas = options.minReplicas;
      state = (await model.mutate((st) => { st.cluster = { ...st.cluster!, minReplicas }; })).state;
    }
    const clusterRecord = state.cluster!;
    await publish();
    if (publisher !== undefined) {
      const watch: MetaWatch = await meta.watch(SHARD_MAP_KEY, undefined, () => void publish());
      cleanup.push(() => watch.close());
    }
    const startTime = Math.floor(Date.now() / 1000);
    const lease = await meta.grant(MGMT_LEASE_TTL_MS);
    cleanup.push(() => lease.revoke());
    const instanceId = await claimInstanceId(meta, lease, startTime);
    const election: Election = await meta.campaign('storpool-mgmt', String(instanceId), MGMT_LEASE_TTL_MS);
    cleanup.push(() => election.resign());
    election.onChange((leader) => log.info({ instanceId, leader }, leader ? 'leading' : 'standing by'));
    const live = new LiveView(meta, log.child({ component: 'live' }));
    cleanup.push(() => live.close());
    const recovery = new Recovery({
      model, client: () => live.client(), isLeader: () => election.isLeader, log: log.child({ component: 'recovery' }),
      probeIntervalMs: options.probeIntervalMs ?? PROBE_INTERVAL_MS, downAfterMs: options.downAfterMs ?? DOWN_AFTER_MS,
      reReplicateAfterMs: options.reReplicateAfterMs ?? RE_REPLICATE_AFTER_MS, syncBytesPerSec: options.syncBytesPerSec ?? 0,
    });
    recovery.start();
    cleanup.push(() => recovery.stop(), 'recovery');

    const info: ServiceInfo = {
      instanceId, version: VERSION, startTime, isLeader: () => election.isLeader, recoveryTasks: (): RecoveryTask[] => recovery.tasks(),
      async instances() {
        const out = new Map<number, { startTime: number; leader: boolean }>();
        for (const kv of (await meta.getPrefix(INSTANCE_PREFIX)).kvs) {
          const id = Number(kv.key.slice(INSTANCE_PREFIX.length));
          out.set(id, { startTime: (JSON.parse(kv.value.toString('utf8')) as { startTime: number }).startTime, leader: election.leaderId === String(id) });
        }
        return out;
      },
    };

    let stopping = false;
    /** Frees a deleted object's data on every disk; waits (task stays pending) while a disk is down. */
    const runPurge = async (task: TaskRecord, up: Set<number>, diskIds: number[]): Promise<void> => {
      if (diskIds.some((id) => !up.has(id))) return;
      const client = await live.client();
      if (client === undefined || stopping) return;
      try {
        await client.purge(task.dataId);
        await model.mutate((st) => { st.tasks.delete(task.id); });
      } catch (err) {
        log.warn({ err, task: task.id }, 'purge failed; will retry');
        await model.mutate((st) => {
          const t = st.tasks.get(task.id);
          if (t !== undefined) Object.assign(t, { state: 'failed', lastError: (err as Error).message });
        });
      }
    };
    let running: Promise<void> | undefined;
    const background = async (): Promise<void> => {
      if (!election.isLeader || stopping) return;
      const st = await model.read();
      for (const snap of dueSnapshots(st, Math.floor(Date.now() / 1000))) {
        if (stopping) return;
        await model.mutate((s, ctx) => deleteSnapshot(s, ctx, `~${snap.globalId}`)).catch((err: unknown) => log.warn({ err, snapshot: snap.globalId }, 'scheduled deletion failed'));
      }
      const purges = [...st.tasks.values()].filter((t) => t.kind === 'purge');
      if (purges.length === 0) return;
      const diskIds = (st.shardMap?.disks ?? []).map((d) => d.id);
      const up = new Set((await live.diskStats(diskIds)).keys());
      for (const task of purges) {
        if (stopping) return;
        await runPurge(task, up, diskIds);
      }
    };
    const startPass = (): Promise<void> => {
      running ??= background().catch((err: unknown) => log.error({ err }, 'background pass failed')).finally(() => { running = undefined; });
      return running;
    };
    /** A pass that starts after the caller's changes (waits for one already running). */
    const runBackground = async (): Promise<void> => {
      if (running !== undefined) await running;
      await startPass();
    };
    const timer = setInterval(() => void startPass(), options.backgroundIntervalMs ?? BACKGROUND_INTERVAL_MS);
    timer.unref();
    cleanup.push(async () => {
      stopping = true;
      clearInterval(timer);
      await running;
    }, 'background work');

    const server = createApiServer({ token: options.token, log, dispatch: createDispatch(model, live, info) });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
    cleanup.push(() => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }));
    const address = server.address() as AddressInfo;
    const host = options.host ?? '127.0.0.1';
    const urlHost = host.includes(':') ? `[${host}]` : host;
    log.info({ host, port: address.port, instanceId, backend: meta.backend, cluster: clusterRecord.spClusterId }, 'management API listening');
    return {
      url: `http://${urlHost}:${address.port}`, host, port: address.port, model, meta, cluster: clusterRecord, instanceId,
      get isLeader() { return election.isLeader; },
      async registerDisk(disk) {
        await model.mutate((st) => registerDisk(st, disk));
        await publish();
      },
      async registerClient(id) {
        await model.mutate((st, ctx) => registerClient(st, ctx, id));
      },
      publishShardMap: publish,
      runBackground,
      recovery,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
