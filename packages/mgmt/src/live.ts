/**
 * Live numbers from the storage servers (capacity, use) through the client library, with a short
 * deadline per disk: a disk that does not answer in time is reported down.
 */
import { StorpoolClient } from '@storpool/client';
import type { MetaStore } from '@storpool/meta';
import { BLOCK_BYTES } from '@storpool/protocol';
import type { Logger } from 'pino';
import { DISK_STATS_TIMEOUT_MS, STORED_SCAN_CACHE_MS } from './limits.js';
import { MetaShardMapSource } from './map-source.js';
import type { State } from './state.js';
import type { DiskLive } from './views.js';

/** The client id the management service uses on the wire (it attaches nothing). */
const MGMT_CLIENT_ID = 0;
/** Objects per OBJECT_LIST request of the stored-size scan. */
const OBJECT_LIST_PAGE = 4096;

export interface DiskStatus {
  live: DiskLive;
  raw: Record<string, unknown>;
}

export class LiveView {
  readonly #meta: MetaStore;
  readonly #log: Logger;
  #client: Promise<StorpoolClient> | undefined;
  #closed = false;
  #stored: { at: number; bytes: Promise<Map<number, number>> } | undefined;

  constructor(meta: MetaStore, log: Logger) {
    this.#meta = meta;
    this.#log = log;
  }

  /** The client, connected on first use (the map must exist by then); undefined if there is none. */
  async client(): Promise<StorpoolClient | undefined> {
    if (this.#closed) return undefined;
    this.#client ??= StorpoolClient.connect({ mapSource: new MetaShardMapSource(this.#meta), clientId: MGMT_CLIENT_ID, log: this.#log, requestTimeoutMs: DISK_STATS_TIMEOUT_MS, retryDeadlineMs: 10_000 });
    try {
      const client = await this.#client;
      await client.refreshMap();
      return client;
    } catch (err) {
      this.#client = undefined;
      this.#log.debug({ err }, 'no client for live statistics');
      return undefined;
    }
  }

  /** Stats of every given disk that answers within the deadline. */
  async diskStats(diskIds: readonly number[]): Promise<Map<number, DiskStatus>> {
    const out = new Map<number, DiskStatus>();
    const client = await this.client();
    if (client === undefined) return out;
    await Promise.all(diskIds.map(async (id) => {
      if (client.router.disk(id) === undefined) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), DISK_STATS_TIMEOUT_MS); });
      const stats = client.diskStats(id).catch((err: unknown) => {
        this.#log.debug({ err, diskId: id }, 'disk stats failed');
        return undefined;
      });
      const raw = await Promise.race([stats, timeout]);
      clearTimeout(timer);
      const store = raw?.['store'] as { blocksTotal?: unknown; blocksUsed?: unknown; blocksFree?: unknown } | undefined;
      if (raw === undefined || typeof store?.blocksTotal !== 'number' || typeof store.blocksUsed !== 'number' || typeof store.blocksFree !== 'number') return;
      out.set(id, { live: { blocksTotal: store.blocksTotal, blocksUsed: store.blocksUsed, blocksFree: store.blocksFree, blockBytes: BLOCK_BYTES }, raw });
    }));
    return out;
  }

  /**
   * Client bytes each data id holds (no replication), from the disks' object lists: every object
   * counted once, as its shard's primary holds it (another in-sync copy when the primary does not
   * answer). A scan of every disk's index, so the answer is kept for STORED_SCAN_CACHE_MS.
   */
  storedBytes(state: State): Promise<Map<number, number>> {
    const now = Date.now();
    if (this.#stored === undefined || now - this.#stored.at > STORED_SCAN_CACHE_MS) this.#stored = { at: now, bytes: this.#scanStored(state) };
    return this.#stored.bytes;
  }

  async #scanStored(state: State): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const client = await this.client();
    if (client === undefined) return out;
    const lineage = new Map([...state.objects.values()].map((o) => [o.dataId, o]));
    // `${dataId}/${objectIndex}` -> allocated blocks on the primary, else the most any in-sync copy has.
    const primary = new Map<string, number>();
    const others = new Map<string, number>();
    await Promise.all(client.router.map.disks.map(async ({ id }) => {
      let after: { volumeId: number; objectIndex: number } | undefined;
      try {
        for (;;) {
          const page = await client.listObjects(id, after, OBJECT_LIST_PAGE);
          for (const e of page) {
            const o = lineage.get(e.volumeId);
            if (o === undefined) continue; // deleted, its purge still running
            const replicas = client.router.locate(o.group, o.placementId, e.objectIndex).replicas;
            const key = `${e.volumeId}/${e.objectIndex}`;
            if (replicas[0] === id) primary.set(key, e.allocatedBlocks);
            else if (replicas.includes(id)) others.set(key, Math.max(others.get(key) ?? 0, e.allocatedBlocks));
          }
          if (page.length < OBJECT_LIST_PAGE) break;
          after = page[page.length - 1]!;
        }
      } catch (err) {
        this.#log.debug({ err, diskId: id }, 'object list for stored sizes failed');
      }
    }));
    for (const [key, blocks] of others) if (!primary.has(key)) primary.set(key, blocks);
    for (const [key, blocks] of primary) {
      const dataId = Number(key.slice(0, key.indexOf('/')));
      out.set(dataId, (out.get(dataId) ?? 0) + blocks * BLOCK_BYTES);
    }
    return out;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#client;
    this.#client = undefined;
    if (pending !== undefined) (await pending.catch(() => undefined))?.close();
  }
}
