/**
 * storpool-iscsi as a library: one per iSCSI controller host (an iSCSIId, API.md §4.9). It polls
 * the management API (`iSCSIExports`: iSCSIConfig plus each target volume's data identity), listens
 * on the portals whose `controller` is this host, and serves every exported volume through the
 * client library — every controller serves every target, so initiators use all portals at once.
 *
 * Persistent reservations live in the API's KV bucket `iscsi-pr` (one key per volume globalId,
 * changed with runIfVersionIs compare-and-swap): every portal of the cluster sees one state,
 * whatever the metadata backend (the embedded store admits one process only, mgmt).
 */
import type { StorpoolApi } from '@storpool/api-client';
import { StorpoolClient, type ShardMapSource, type Volume } from '@storpool/client';
import { pino, type Logger } from 'pino';
import { volumeBackend } from './backends.js';
import { emptyPr } from './reservations.js';
import { IscsiServer } from './server.js';
import type { InitiatorAccess, IscsiTarget, PortalGroup, PrState, ReservationStore, TargetCatalog } from './types.js';

export const PR_BUCKET = 'iscsi-pr';
export const CONFIG_POLL_MS = 1_000;
/** How stale the reservation state used to check ordinary I/O may be (PR commands read it fresh). */
export const PR_REFRESH_MS = 200;
/**
 * How long a change that other nexuses must obey (PR OUT, RESERVE/RELEASE, LU reset) waits after it
 * is stored before it is answered: longer than any portal may use a copy requested before it
 * (PR_REFRESH_MS on a monotonic clock), so once the initiator has the answer every portal enforces
 * the change — a lease, with a margin for timer lateness.
 */
export const PR_FENCE_MS = PR_REFRESH_MS + 25;

interface ExportsView {
  iscsi: {
    baseName: string;
    portalGroups: Record<string, { name: string; portals: { controller: number; ip: string; port: string }[] }>;
    targets: Record<string, { name: string; volume: string }>;
    initiators: Record<string, { name: string; username: string; secret: string; nets: string[]; exports: { portalGroup: string; target: string }[] }>;
  };
  volumes: Record<string, { globalId: string; size: number; dataId: number; placementId: number; parents: number[]; group: number }>;
}

export interface IscsiServiceOptions {
  controllerId: number;
  api: StorpoolApi;
  mapSource: ShardMapSource;
  /** Listen here instead of the configured portals of this controller (tests, one-host setups). */
  listen?: { host: string; port: number }[];
  mutualChap?: { username: string; secret: string };
  pollIntervalMs?: number;
  log?: Logger;
}

export interface IscsiService {
  readonly server: IscsiServer;
  readonly addresses: { host: string; port: number }[];
  /** Re-reads the configuration now. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Reservations through the API's KV calls (compare-and-swap on the bucket version).
 *
 * I/O checks use a copy of the bucket requested at most PR_REFRESH_MS ago. Once the copy is half
 * that old a refresh starts in the background, so commands keep running on the copy instead of all
 * waiting for the API round trip (they used to, every PR_REFRESH_MS); only when no copy young
 * enough is there (idle, or the API slower than PR_REFRESH_MS / 2) does a command wait.
 * A change other portals must obey is answered only after PR_FENCE_MS (see there).
 */
export class ApiReservationStore implements ReservationStore {
  readonly #api: StorpoolApi;
  #cache = new Map<string, PrState>();
  /** When the request behind #cache was sent: its age bounds how stale the copy may be. */
  #requestedAt = -Infinity;
  #refreshing: Promise<void> | undefined;
  #created = false;
  /** The clock (tests drive it by hand). */
  readonly #now: () => number;

  readonly #sleep: (ms: number) => Promise<void>;

  constructor(api: StorpoolApi, o: { now?: () => number; sleep?: (ms: number) => Promise<void> } = {}) {
    this.#api = api;
    // Monotonic: a wall-clock step must not make an old copy look young (the fence relies on ages).
    this.#now = o.now ?? (() => performance.now());
    this.#sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  async #ensureBucket(): Promise<void> {
    if (this.#created) return;
    await this.#api.request('POST', 'KV/Create', [PR_BUCKET]).catch((err: unknown) => {
      if ((err as { name?: string }).name !== 'objectExists') throw err;
    });
    this.#created = true;
  }

  async #list(): Promise<{ version: number; pairs: Record<string, string> }> {
    await this.#ensureBucket();
    return (await this.#api.request<{ version: number; pairs: Record<string, string> }>('GET', 'KV/List', [PR_BUCKET])).data;
  }

  /** One refresh at a time; callers that need a newer copy wait for it and start another. */
  #refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      const requestedAt = this.#now();
      const b = await this.#list();
      const next = new Map<string, PrState>();
      for (const [k, v] of Object.entries(b.pairs)) next.set(k, JSON.parse(v) as PrState);
      this.#cache = next;
      this.#requestedAt = requestedAt;
    })().finally(() => { this.#refreshing = undefined; });
    return this.#refreshing;
  }

  cached(lunId: string): PrState | undefined {
    const age = this.#now() - this.#requestedAt;
    if (age > PR_REFRESH_MS) return undefined;
    // A failed background refresh is retried by the next command; one that must wait sees the error.
    if (age > PR_REFRESH_MS / 2) this.#refresh().catch(() => undefined);
    return this.#cache.get(lunId) ?? emptyPr();
  }

  async get(lunId: string, fresh: boolean): Promise<PrState> {
    if (fresh) {
      // PR IN/OUT: a copy requested after this call, not one already on its way.
      await this.#refreshing?.catch(() => undefined);
      await this.#refresh();
    } else {
      while (this.#now() - this.#requestedAt > PR_REFRESH_MS) await this.#refresh();
    }
    return this.#cache.get(lunId) ?? emptyPr();
  }

  async update<T>(lunId: string, fn: (s: PrState) => { state: PrState | undefined; result: T }): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const b = await this.#list();
      const cur = b.pairs[lunId];
      const r = fn(cur === undefined ? emptyPr() : (JSON.parse(cur) as PrState));
      if (r.state === undefined) return r.result;
      try {
        await this.#api.request('POST', 'KV/Set', [PR_BUCKET], { runIfVersionIs: b.version, set: { [lunId]: JSON.stringify(r.state) } });
        this.#cache.set(lunId, r.state);
        // A unit attention taken by its own nexus concerns no other: no fence.
        if (withoutUa(r.state) !== withoutUa(cur === undefined ? emptyPr() : (JSON.parse(cur) as PrState))) await this.#sleep(PR_FENCE_MS);
        return r.result;
      } catch (err) {
        if ((err as { name?: string }).name !== 'runIfVersionIsMismatch' || attempt > 50) throw err;
      }
    }
  }
}

/** The state as other nexuses see it: everything but the per-nexus unit attentions. */
function withoutUa(s: PrState): string {
  return JSON.stringify({ ...s, ua: undefined });
}

export async function startIscsiService(o: IscsiServiceOptions): Promise<IscsiService> {
  const log = o.log ?? pino({ name: 'storpool-iscsi', level: 'silent' });
  const api = o.api;
  const client = await StorpoolClient.connect({ mapSource: o.mapSource, clientId: o.controllerId, log: log.child({ component: 'client' }) });
  const reservations = new ApiReservationStore(api);
  const empty: TargetCatalog = { targets: new Map(), initiators: new Map(), portalGroups: new Map(), ...(o.mutualChap !== undefined ? { mutualChap: o.mutualChap } : {}) };
  const server = new IscsiServer({ catalog: empty, reservations, log: log.child({ component: 'iscsi' }) });
  /** Volumes by target, kept while their identity is unchanged so that sessions keep them. */
  const volumes = new Map<string, { key: string; volume: Volume; target: IscsiTarget }>();
  const addresses: { host: string; port: number }[] = [];
  const listening = new Set<string>();
  let stopping = false;

  async function sync(): Promise<void> {
    const view = (await api.request<ExportsView>('GET', 'iSCSIExports')).data;
    const cfg = view.iscsi;
    const portalGroups = new Map<string, PortalGroup>();
    for (const [id, g] of Object.entries(cfg.portalGroups)) {
      portalGroups.set(g.name, { name: g.name, tag: Number(id), portals: g.portals.map((p) => ({ host: p.ip, port: Number(p.port) })) });
    }
    const targets = new Map<string, IscsiTarget>();
    for (const t of Object.values(cfg.targets)) {
      const v = view.volumes[t.name];
      if (v === undefined) continue;
      const key = `${v.globalId}/${v.dataId}/${v.placementId}/${v.parents.join('.')}/${v.group}/${v.size}`;
      let entry = volumes.get(t.name);
      if (entry === undefined || entry.key !== key) {
        // A volume of a shard group newer than our map (a new replication or placement): refresh first.
        if (client.router.group(v.group) === undefined) await client.refreshMap();
        const volume = client.volume({ volumeId: v.dataId, placementId: v.placementId, parents: v.parents, sizeBytes: v.size, group: v.group });
        const target: IscsiTarget = { name: t.name, alias: t.volume, luns: [{ lun: 0, backend: volumeBackend(volume, { id: v.globalId }) }] };
        entry = { key, volume, target };
        volumes.set(t.name, entry);
        log.info({ target: t.name, volume: t.volume, globalId: v.globalId, size: v.size }, 'serving target');
      }
      targets.set(t.name, entry.target);
    }
    for (const name of [...volumes.keys()]) if (!targets.has(name)) volumes.delete(name);
    const initiators = new Map<string, InitiatorAccess>();
    for (const i of Object.values(cfg.initiators)) {
      initiators.set(i.name, { name: i.name, username: i.username, secret: i.secret, nets: i.nets, targets: i.exports.map((e) => ({ target: e.target, portalGroup: e.portalGroup })) });
    }
    server.setCatalog({ ...empty, targets, initiators, portalGroups });
    // Portals of this controller (unless told where to listen): new ones are opened as they appear.
    if (o.listen === undefined) {
      for (const g of portalGroups.values()) {
        const tag = g.tag;
        for (const [id, raw] of Object.entries(cfg.portalGroups)) {
          if (Number(id) !== tag) continue;
          for (const p of raw.portals) {
            if (p.controller !== o.controllerId) continue;
            const k = `${p.ip}:${p.port}`;
            if (listening.has(k)) continue;
            listening.add(k);
            try {
              addresses.push(await server.listen({ host: p.ip, port: Number(p.port), portalGroupTag: tag }));
              log.info({ portal: k, portalGroup: g.name, tag }, 'listening');
            } catch (err) {
              listening.delete(k);
              log.error({ err, portal: k }, 'cannot listen on portal');
            }
          }
        }
      }
    }
  }

  if (o.listen !== undefined) {
    for (const l of o.listen) addresses.push(await server.listen({ ...l, portalGroupTag: 1 }));
  }
  await sync();
  const interval = o.pollIntervalMs ?? CONFIG_POLL_MS;
  let timer: NodeJS.Timeout | undefined;
  const loop = (): void => {
    timer = setTimeout(() => {
      sync().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'iSCSI configuration poll failed')).finally(() => { if (!stopping) loop(); });
    }, interval);
  };
  loop();
  return {
    server,
    addresses,
    sync,
    async close() {
      stopping = true;
      if (timer !== undefined) clearTimeout(timer);
      await server.close();
      client.close();
    },
  };
}
