/**
 * Failure detection and recovery, run by the leader:
 *
 * - Liveness: every disk is probed over the data path (PING) every `probeIntervalMs`. A disk that
 *   has not answered for `downAfterMs` is marked down: the shard map drops it from every in-sync
 *   list (epoch bump; a new primary where it was one) and I/O goes on with the other copies. One
 *   that stays down for `reReplicateAfterMs` is marked gone: placement leaves it out, so other disks
 *   join its shards and its copies are rebuilt there. A disk that answers again is marked up.
 *   Probing from the leader checks what matters, the data port, and works with both metadata
 *   backends (the embedded store is one process's; see docs/resilience.md).
 * - Catch-up: for every shard with joining disks, the leader asks the shard's primary to copy the
 *   shard to the joining disk (SHARD_SYNC: only objects whose version differs are copied) and then
 *   promotes the disk to in sync. Progress per target disk is reported as a recovery task.
 * - Peering: when a shard gets a new primary (a new term), the other in-sync copies may hold an
 *   unacknowledged write of the old primary that the new one lacks (or the reverse). The leader has
 *   the new primary compare its copy with each of them and copy over what differs (SHARD_SYNC to an
 *   in-sync target, objects replaced whole), so all copies agree again — like Ceph's peering, but
 *   after the failover instead of before it: I/O never waits for it. Which terms are peered is kept
 *   in the metadata store (the group record's `peered`), so a leader that takes over finishes what
 *   its predecessor left.
 * - Release: once no shard of a group is joining any more, a disk that still has copies of shards
 *   it neither holds nor joins (they moved away: rebalancing, soft-eject, a rebuild while it was
 *   gone) is asked to forget them (SHARD_RELEASE; the disk checks the map itself), so moving data
 *   frees space where it came from. Once per disk and map epoch.
 */
import type { StorpoolClient } from '@storpool/client';
import type { ShardMap, ShardSyncResult } from '@storpool/protocol';
import type { Logger } from 'pino';
import type { ClusterModel } from './cluster-model.js';
import { promoteJoined } from './shard-map.js';
import type { State } from './state.js';

export interface RecoveryOptions {
  model: ClusterModel;
  client: () => Promise<StorpoolClient | undefined>;
  isLeader: () => boolean;
  log: Logger;
  probeIntervalMs: number;
  downAfterMs: number;
  reReplicateAfterMs: number;
  /** Catch-up copy throttle per SHARD_SYNC (bytes/s); 0 = unthrottled. */
  syncBytesPerSec: number;
  /** Shards per SHARD_SYNC request. */
  shardsPerSync?: number;
  /** Deadline of one SHARD_SYNC request. */
  syncTimeoutMs?: number;
}

/** A recovery task: one joining disk being filled. */
export interface RecoveryTask {
  diskId: number;
  /** Shards to copy to it (as last planned) and shards done since the task began. */
  allShards: number;
  completedShards: number;
  objectsCompared: number;
  objectsCopied: number;
  bytesCopied: number;
  startedAt: number;
  lastError?: string;
}

export interface RecoveryCounters {
  probes: number;
  probeFailures: number;
  disksMarkedDown: number;
  disksMarkedUp: number;
  disksMarkedGone: number;
  syncs: number;
  syncFailures: number;
  shardsPromoted: number;
  bytesCopied: number;
  /** Shards whose in-sync copies were compared with a new primary, and objects that differed. */
  shardsPeered: number;
  objectsPeered: number;
  releases: number;
  releaseFailures: number;
  objectsReleased: number;
  bytesReleased: number;
}

/** Extra silence allowed, after a leader starts, to a disk it has not heard from yet. */
const STARTUP_GRACE_MS = 15_000;
/** A disk is marked down only after this many consecutive failed probes (and downAfterMs of silence). */
const MISSES_MIN = 3;
/** Marking a disk down never leaves fewer than this fraction of the disks up. */
const UP_FRACTION_MIN = 0.5;

/** Per disk since this instance started: times marked down, catch-up bytes copied to it, bytes it released. */
export interface PerDiskCounters {
  markedDown: number;
  bytesCopied: number;
  objectsCopied: number;
  bytesReleased: number;
}

interface SyncJob {
  primary: number;
  target: number;
  group: number;
  shards: number[];
}

/** A peering job: the group's terms when planned (a copy made equal counts for that term only). */
type PeeringJob = SyncJob & { terms: readonly number[] };

/** A shard with a new primary whose other in-sync copies (`targets`) are to be made equal to it. */
interface PeeringNeed {
  group: number;
  shard: number;
  term: number;
  targets: readonly number[];
}

const peeredKey = (group: number, shard: number, target: number, term: number): string => `${group}/${shard}/${target}/${term}`;

export class Recovery {
  readonly counters: RecoveryCounters = { probes: 0, probeFailures: 0, disksMarkedDown: 0, disksMarkedUp: 0, disksMarkedGone: 0, syncs: 0, syncFailures: 0, shardsPromoted: 0, bytesCopied: 0, shardsPeered: 0, objectsPeered: 0, releases: 0, releaseFailures: 0, objectsReleased: 0, bytesReleased: 0 };
  readonly perDisk = new Map<number, PerDiskCounters>();
  readonly #o: RecoveryOptions;
  /** diskId -> last time it answered this leader (ms). */
  readonly #lastSeen = new Map<number, number>();
  /** When this instance started leading: disks it never heard from get a grace period from then. */
  #leadingSince: number | undefined;
  readonly #tasks = new Map<number, RecoveryTask>();
  /**
   * `${diskId}/${group}` -> shards the disk held or joined, or could not yet release, since its
   * last release in that group: the only ones it may have surplus copies of. Absent: unknown (all).
   */
  readonly #held = new Map<string, Set<number>>();
  /** In-sync copies already made equal to their primary, `${group}/${shard}/${target}/${term}`, until the shard's term is recorded as peered. */
  readonly #peeredCopies = new Set<string>();
  /** Consecutive failed probes per disk. */
  readonly #misses = new Map<number, number>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #syncing: Promise<void> | undefined;
  #stopped = false;

  constructor(options: RecoveryOptions) {
    this.#o = options;
  }

  start(): void {
    this.#timer = setInterval(() => void this.tick(), this.#o.probeIntervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.#running;
    await this.#syncing;
  }

  /** Recovery tasks in progress (one per joining disk). */
  tasks(): RecoveryTask[] {
    return [...this.#tasks.values()].map((t) => ({ ...t }));
  }

  /** One probe round and, if shards are joining, a catch-up round in the background. */
  tick(): Promise<void> {
    this.#running ??= this.#round().catch((err: unknown) => this.#o.log.error({ err }, 'recovery round failed')).finally(() => { this.#running = undefined; });
    return this.#running;
  }

  /** Resolves when no catch-up copy is running (tests). */
  async idle(): Promise<void> {
    await this.#running;
    await this.#syncing;
  }

  async #round(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#o.isLeader()) {
      this.#lastSeen.clear();
      this.#held.clear();
      this.#peeredCopies.clear();
      this.#leadingSince = undefined;
      return;
    }
    this.#leadingSince ??= Date.now();
    const state = await this.#o.model.read();
    const client = await this.#o.client();
    if (client === undefined) return;
    await this.#probe(state, client);
    this.#syncing ??= this.#catchUp(client).catch((err: unknown) => this.#o.log.error({ err }, 'catch-up round failed')).finally(() => { this.#syncing = undefined; });
  }

  async #probe(state: State, client: StorpoolClient): Promise<void> {
    const now = Date.now();
    const disks = [...state.disks.values()].filter((d) => d.id >= 1 && client.router.disk(d.id) !== undefined);
    const answered = new Map<number, boolean>();
    await Promise.all(disks.map(async (d) => {
      this.counters.probes++;
      try {
        await client.ping(d.id, Math.max(200, Math.min(this.#o.downAfterMs / 2, 2_000)));
        answered.set(d.id, true);
        this.#lastSeen.set(d.id, Date.now());
      } catch {
        this.counters.probeFailures++;
        answered.set(d.id, false);
        // Never heard from since this leader took over (a cluster starting, a new leader): give
        // servers time to start before calling them down.
        if (!this.#lastSeen.has(d.id)) this.#lastSeen.set(d.id, (this.#leadingSince ?? now) + Math.max(0, STARTUP_GRACE_MS - this.#o.downAfterMs));
      }
    }));
    const changes: { id: number; to: 'up' | 'down' | 'gone' }[] = [];
    let up = disks.filter((d) => d.down !== true).length;
    for (const d of disks) {
      const ok = answered.get(d.id) === true;
      const silentFor = now - (this.#lastSeen.get(d.id) ?? now);
      this.#misses.set(d.id, ok ? 0 : (this.#misses.get(d.id) ?? 0) + 1);
      // A connection that let MISSES_MIN pings in a row go unanswered is hung (a partition, a
      // stopped process): dropping it fails what else waits on it — a SHARD_SYNC that would
      // otherwise hold the whole catch-up round until its 10-minute deadline — and the next
      // request reconnects.
      if (!ok && (this.#misses.get(d.id) ?? 0) >= MISSES_MIN) client.dropConnection(d.id, `${this.#misses.get(d.id)} pings in a row went unanswered`);
      if (ok && (d.down === true || d.gone === true)) changes.push({ id: d.id, to: 'up' });
      else if (!ok && d.down !== true && silentFor >= this.#o.downAfterMs && (this.#misses.get(d.id) ?? 0) >= MISSES_MIN) {
        // Like Ceph's mon_osd_min_up_ratio: when most disks fall silent at once, the leader itself is
        // the likelier one cut off (or stalled); it marks none rather than fail the cluster over to nothing.
        if (up - 1 < disks.length * UP_FRACTION_MIN) {
          this.#o.log.warn({ diskId: d.id, up, disks: disks.length }, 'disk is silent, but too few disks answer to mark it down');
          continue;
        }
        up--;
        changes.push({ id: d.id, to: 'down' });
      } else if (!ok && d.down === true && d.gone !== true && now - (d.downSince ?? now) >= this.#o.reReplicateAfterMs) changes.push({ id: d.id, to: 'gone' });
    }
    if (changes.length === 0) return;
    await this.#o.model.mutate((st) => {
      for (const c of changes) {
        const d = st.disks.get(c.id);
        if (d === undefined) continue;
        if (c.to === 'up') {
          delete d.down;
          delete d.downSince;
          delete d.gone;
        } else if (c.to === 'down') {
          d.down = true;
          d.downSince = now;
        } else {
          d.gone = true;
        }
      }
    });
    for (const c of changes) {
      if (c.to === 'down') this.#disk(c.id).markedDown++;
      this.counters[c.to === 'up' ? 'disksMarkedUp' : c.to === 'down' ? 'disksMarkedDown' : 'disksMarkedGone']++;
      this.#o.log.warn({ diskId: c.id, state: c.to }, c.to === 'up' ? 'disk is back' : c.to === 'down' ? 'disk is down: its shards go on with the other copies' : 'disk is gone: rebuilding its copies elsewhere');
    }
  }

  /** Plans SHARD_SYNC jobs from the map (one per primary, target and group) and runs them. */
  async #catchUp(client: StorpoolClient): Promise<void> {
    const state = await this.#o.model.read();
    const map = state.shardMap;
    if (map === undefined) return;
    const jobs = new Map<string, SyncJob>();
    const perTarget = new Map<number, number>();
    for (const g of map.groups) {
      g.joining?.forEach((joining, shard) => {
        const primary = g.shards[shard]![0]!;
        for (const target of joining) {
          const key = `${primary}/${target}/${g.id}`;
          const job = jobs.get(key) ?? { primary, target, group: g.id, shards: [] };
          job.shards.push(shard);
          jobs.set(key, job);
          perTarget.set(target, (perTarget.get(target) ?? 0) + 1);
        }
      });
    }
    for (const id of this.#tasks.keys()) if (!perTarget.has(id)) this.#tasks.delete(id);
    const { jobs: peers, needs } = await this.#planPeering(state, map);
    const dataIds = new Map<number, [number, number][]>();
    for (const o of state.objects.values()) {
      const list = dataIds.get(o.group) ?? [];
      list.push([o.dataId, o.placementId]);
      dataIds.set(o.group, list);
    }
    // Peering goes on beside catch-up and release (it only touches in-sync copies), all pairs at once.
    const peering = Promise.all([...peers.values()].map(async (job) => {
      if (this.#stopped || !this.#o.isLeader()) return;
      const ok = await this.#sync(client, job, job.shards, dataIds.get(job.group) ?? [], true);
      if (ok) for (const shard of job.shards) this.#peeredCopies.add(peeredKey(job.group, shard, job.target, job.terms[shard]!));
    })).then(() => this.#recordPeered(needs));
    if (jobs.size === 0) {
      await Promise.all([peering, this.#releaseSurplus(client, state, map, dataIds)]);
      return;
    }
    for (const [target, count] of perTarget) {
      const task = this.#tasks.get(target);
      if (task === undefined) this.#tasks.set(target, { diskId: target, allShards: count, completedShards: 0, objectsCompared: 0, objectsCopied: 0, bytesCopied: 0, startedAt: Date.now() });
      else task.allShards = task.completedShards + count;
    }
    const batch = this.#o.shardsPerSync ?? 64;
    // One job per target at a time, different targets in parallel.
    const byTarget = new Map<number, SyncJob[]>();
    for (const job of jobs.values()) byTarget.set(job.target, [...(byTarget.get(job.target) ?? []), job]);
    await Promise.all([peering, ...[...byTarget.values()].map(async (list) => {
      for (const job of list) {
        for (let i = 0; i < job.shards.length; i += batch) {
          if (this.#stopped || !this.#o.isLeader()) return;
          const shards = job.shards.slice(i, i + batch);
          const ok = await this.#sync(client, job, shards, dataIds.get(job.group) ?? []);
          if (!ok) break;
        }
      }
    })]);
  }

  /**
   * Shards whose term is not yet recorded as peered (`needs`), and one job per primary, target and
   * group for their in-sync copies not yet made equal at that term. A group record without
   * `peered` (written before this was kept) takes the current terms as peered.
   */
  async #planPeering(state: State, map: ShardMap): Promise<{ jobs: Map<string, PeeringJob>; needs: PeeringNeed[] }> {
    const jobs = new Map<string, PeeringJob>();
    const needs: PeeringNeed[] = [];
    const unknown = new Map<number, number[]>();
    for (const g of map.groups) {
      const terms = g.shards.map((_, i) => g.terms?.[i] ?? 0);
      const peered = state.groups.get(g.id)?.peered;
      if (peered === undefined || peered.length !== terms.length) {
        unknown.set(g.id, terms);
        continue;
      }
      g.shards.forEach((inSync, shard) => {
        const term = terms[shard]!;
        if (peered[shard] === term) return;
        const targets = inSync.slice(1);
        needs.push({ group: g.id, shard, term, targets });
        for (const target of targets) {
          if (this.#peeredCopies.has(peeredKey(g.id, shard, target, term))) continue;
          const key = `${inSync[0]}/${target}/${g.id}`;
          const job = jobs.get(key) ?? { primary: inSync[0]!, target, group: g.id, shards: [], terms };
          job.shards.push(shard);
          jobs.set(key, job);
        }
      });
    }
    if (unknown.size > 0) {
      await this.#o.model.mutate((st) => {
        for (const [id, terms] of unknown) {
          const record = st.groups.get(id);
          if (record !== undefined && record.peered?.length !== terms.length) record.peered = terms;
        }
      });
    }
    return { jobs, needs };
  }

  /** Records each shard whose in-sync copies were all made equal to its primary as peered at its term (if it still has that term). */
  async #recordPeered(needs: readonly PeeringNeed[]): Promise<void> {
    const done = needs.filter((n) => n.targets.every((t) => this.#peeredCopies.has(peeredKey(n.group, n.shard, t, n.term))));
    if (done.length === 0 || this.#stopped || !this.#o.isLeader()) return;
    await this.#o.model.mutate((st) => {
      for (const { group, shard, term } of done) {
        const record = st.groups.get(group);
        const now = st.shardMap?.groups.find((g) => g.id === group)?.terms?.[shard] ?? 0;
        if (record?.peered !== undefined && now === term) record.peered[shard] = term;
      }
    });
    for (const n of done) for (const t of n.targets) this.#peeredCopies.delete(peeredKey(n.group, n.shard, t, n.term));
  }

  #disk(id: number): PerDiskCounters {
    let d = this.perDisk.get(id);
    if (d === undefined) this.perDisk.set(id, (d = { markedDown: 0, bytesCopied: 0, objectsCopied: 0, bytesReleased: 0 }));
    return d;
  }

  /**
   * Asks disks to forget their copies of shards they neither hold nor join any more, in groups
   * where nothing joins (a settled placement) and the shard is in sync on `replication` disks. Only
   * shards the disk was listed in since its last release are asked about (all, for a new leader),
   * and only disks that answer probes; a failed request is retried next round.
   */
  async #releaseSurplus(client: StorpoolClient, state: State, map: ShardMap, dataIds: Map<number, [number, number][]>): Promise<void> {
    await Promise.all(map.disks.map(async ({ id }) => {
      const up = state.disks.get(id)?.down !== true && this.#misses.get(id) === 0;
      for (const g of map.groups) {
        const key = `${id}/${g.id}`;
        const prior = this.#held.get(key);
        const held = new Set<number>();
        const candidates: number[] = [];
        const waiting = new Set<number>();
        const settled = (g.joining ?? []).every((j) => j.length === 0);
        g.shards.forEach((inSync, shard) => {
          if (inSync.includes(id) || g.joining?.[shard]?.includes(id) === true) held.add(shard);
          else if (prior !== undefined && !prior.has(shard)) return;
          else if (up && settled && inSync.length >= g.replication) candidates.push(shard);
          else waiting.add(shard);
        });
        // What was not released (waiting, or the request failed) stays to be asked about later.
        const remember = (released: boolean): void => void this.#held.set(key, new Set([...held, ...waiting, ...(released ? [] : candidates)]));
        if (candidates.length === 0 || this.#stopped || !this.#o.isLeader()) {
          remember(false);
          continue;
        }
        this.counters.releases++;
        try {
          await client.refreshMap();
          const r = await client.shardRelease(id, { group: g.id, shards: candidates, dataIds: dataIds.get(g.id) ?? [] }, this.#o.syncTimeoutMs ?? 600_000);
          this.counters.objectsReleased += r.objectsReleased;
          this.counters.bytesReleased += r.bytesReleased;
          this.#disk(id).bytesReleased += r.bytesReleased;
          remember(true);
        } catch (err) {
          this.counters.releaseFailures++;
          remember(false);
          this.#o.log.warn({ diskId: id, group: g.id, err: (err as Error).message }, 'release of surplus copies failed; retried next round');
        }
      }
    }));
  }


  /** One SHARD_SYNC: a joining target's catch-up (a recovery task, then promotion) or a peering. */
  async #sync(client: StorpoolClient, job: SyncJob, shards: number[], dataIds: [number, number][], peering = false): Promise<boolean> {
    const task = peering ? undefined : this.#tasks.get(job.target);
    this.counters.syncs++;
    let result: ShardSyncResult;
    try {
      await client.refreshMap();
      result = await client.shardSync(job.primary, { target: job.target, group: job.group, shards, dataIds, ...(this.#o.syncBytesPerSec > 0 ? { maxBytesPerSec: this.#o.syncBytesPerSec } : {}) }, this.#o.syncTimeoutMs ?? 600_000);
    } catch (err) {
      this.counters.syncFailures++;
      if (task !== undefined) task.lastError = (err as Error).message;
      this.#o.log.warn({ err: (err as Error).message, ...job, shards: shards.length }, peering ? 'peering failed; retried next round' : 'catch-up copy failed; retried next round');
      return false;
    }
    if (peering) {
      this.counters.shardsPeered += shards.length;
      this.counters.objectsPeered += result.objectsPushed + result.objectsReleased;
      if (result.objectsPushed + result.objectsReleased > 0) this.#o.log.warn({ ...job, shards: shards.length, ...result }, 'copies disagreed with their new primary: made equal');
      return true;
    }
    const r = await this.#o.model.mutate((st) => promoteJoined(st, job.group, shards, job.target, job.primary));
    this.counters.shardsPromoted += r.result;
    this.counters.bytesCopied += result.bytesPushed;
    this.#disk(job.target).bytesCopied += result.bytesPushed;
    this.#disk(job.target).objectsCopied += result.objectsPushed;
    if (task === undefined) return true;
    task.completedShards += shards.length;
    task.objectsCompared += result.objectsCompared;
    task.objectsCopied += result.objectsPushed;
    task.bytesCopied += result.bytesPushed;
    delete task.lastError;
    this.#o.log.info({ ...job, shards: shards.length, promoted: r.result, ...result }, 'shards caught up');
    return true;
  }
}
