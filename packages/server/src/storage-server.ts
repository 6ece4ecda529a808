import { StorpoolError } from '@storpool/errors';
import { ConnectionPool, type ShardMapView } from '@storpool/net';
import { PeerRole } from '@storpool/protocol';
import type { Logger } from 'pino';
import { StorageListener } from './listener.js';
import { Scrubber, SCRUB_BANDWIDTH_BYTES_PER_SECOND_DEFAULT, SCRUB_INTERVAL_MS_DEFAULT, scrubPeers } from './scrubber.js';
import { ShardService } from './shard-service.js';
import { DiskStore } from './store/index.js';

export interface StorageServerOptions {
  diskPath: string;
  indexDir?: string;
  view: ShardMapView;
  log: Logger;
  /** Default: the disk's address in the shard map. */
  listen?: { host: string; port: number };
  replicaTimeoutMs?: number;
  /** How often to re-read the shard map on our own (requests with a newer epoch also trigger it). */
  mapRefreshMs?: number;
  /** Scrubber throttle, bytes/s (0 = unthrottled); default SCRUB_BANDWIDTH_BYTES_PER_SECOND_DEFAULT. */
  scrubBandwidthBytesPerSecond?: number;
  /** A scrub pass this long after the previous one (0 = only on demand); default SCRUB_INTERVAL_MS_DEFAULT. */
  scrubIntervalMs?: number;
}

export interface StorageServer {
  diskId: number;
  address: { host: string; port: number };
  service: ShardService;
  store: DiskStore;
  scrubber: Scrubber;
  close(): Promise<void>;
}

/** Opens the disk, checks it against the shard map, and serves it. */
export async function startStorageServer(o: StorageServerOptions): Promise<StorageServer> {
  const store = await DiskStore.open(o.diskPath, { logger: o.log, ...(o.indexDir !== undefined ? { indexDir: o.indexDir } : {}) });
  try {
    const { diskId, clusterId } = store.superblock;
    const router = o.view.router;
    if (router.map.clusterId !== clusterId) {
      throw new StorpoolError('WIRE_ERR_CLUSTER_MISMATCH', `disk ${o.diskPath} belongs to cluster ${clusterId}, the shard map to ${router.map.clusterId}`);
    }
    const entry = router.disk(diskId);
    if (entry === undefined) throw new StorpoolError('MAP_ERR_INVALID', `disk ${diskId} (${o.diskPath}) is not in the shard map (epoch ${router.epoch}): add it first`);
    const log = o.log.child({ diskId });
    const peers = new ConnectionPool({ view: o.view, clusterId, role: PeerRole.PEER, senderId: diskId, log });
    let listener: StorageListener | undefined;
    let scrubber: Scrubber | undefined;
    const service = new ShardService({
      diskId, store, view: o.view, peers, log, replicaTimeoutMs: o.replicaTimeoutMs ?? 10_000,
      statsExtra: () => ({ listener: listener?.counters, scrub: scrubber?.status() }),
      scrub: (command) => scrubber!.command(command),
    });
    scrubber = new Scrubber({
      diskId, store, log: log.child({ scrub: true }),
      repair: (key, blocks) => service.repairFromPeers(key, blocks, scrubPeers(o.view.router, diskId)),
      bandwidthBytesPerSecond: o.scrubBandwidthBytesPerSecond ?? SCRUB_BANDWIDTH_BYTES_PER_SECOND_DEFAULT,
      intervalMs: o.scrubIntervalMs ?? SCRUB_INTERVAL_MS_DEFAULT,
    });
    listener = new StorageListener({ service, clusterId, diskId, log });
    const address = await listener.listen(o.listen?.host ?? entry.address.host, o.listen?.port ?? entry.address.port);
    log.info({ address, epoch: router.epoch, disk: o.diskPath }, 'listening');
    // Pick up map changes without waiting for a request that carries the new epoch, so that a
    // client still on the old map is told so (MAP_ERR_STALE_EPOCH) instead of being served by an
    // old primary.
    let lastEpoch = router.epoch;
    const refresher = setInterval(() => {
      o.view.refresh().then(
        (r) => {
          if (r.epoch !== lastEpoch) log.info({ from: lastEpoch, to: r.epoch }, 'shard map changed');
          lastEpoch = r.epoch;
        },
        (err: unknown) => log.warn({ err: (err as Error).message }, 'cannot re-read the shard map; keeping epoch ' + lastEpoch),
      );
    }, o.mapRefreshMs ?? 1000);
    refresher.unref();
    return {
      diskId,
      address,
      service,
      store,
      scrubber,
      async close() {
        clearInterval(refresher);
        await scrubber.close();
        await listener.close();
        peers.close();
        await store.close();
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}
