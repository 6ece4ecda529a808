import { StorpoolError } from '@storpool/errors';
import type { PeerRole, ReplyFrame } from '@storpool/protocol';
import type { Logger } from 'pino';
import type { ShardMapView } from './map-source.js';
import { WireConnection, type WireRequest } from './wire-connection.js';

export interface ConnectionPoolOptions {
  view: ShardMapView;
  clusterId: string;
  role: PeerRole;
  senderId: number;
  log: Logger;
}

/**
 * One connection to each disk of the shard map, made on first use; a lost or failed connection is
 * forgotten so that the next request reconnects (to the address of the current map).
 */
/** A disk's connection: being made, then (once open) also at hand without a promise hop. */
interface PoolEntry {
  pending: Promise<WireConnection>;
  open: WireConnection | undefined;
}

export class ConnectionPool {
  readonly #entries = new Map<number, PoolEntry>();
  readonly #o: ConnectionPoolOptions;
  #closed = false;

  constructor(options: ConnectionPoolOptions) {
    this.#o = options;
  }

  get(diskId: number): Promise<WireConnection> {
    if (this.#closed) return Promise.reject(new StorpoolError('CLIENT_ERR_CLOSED', 'connection pool closed'));
    const existing = this.#entries.get(diskId);
    if (existing !== undefined) return existing.pending;
    const entry: PoolEntry = { pending: this.#connect(diskId), open: undefined };
    this.#entries.set(diskId, entry);
    const forget = (): void => {
      if (this.#entries.get(diskId) === entry) this.#entries.delete(diskId);
    };
    entry.pending.then((conn) => {
      entry.open = conn;
      conn.onClose(forget);
    }, forget);
    return entry.pending;
  }

  /**
   * One request to a disk: straight on its open connection (no promise hop: this is every
   * client I/O and every replica write), else once get() has connected.
   */
  request(diskId: number, fields: WireRequest, payload: readonly Uint8Array[], timeoutMs: number): Promise<ReplyFrame> {
    const open = this.#entries.get(diskId)?.open;
    if (open !== undefined && !open.closed) return open.request(fields, payload, timeoutMs);
    return this.get(diskId).then((conn) => conn.request(fields, payload, timeoutMs));
  }

  async #connect(diskId: number): Promise<WireConnection> {
    const disk = this.#o.view.router.disk(diskId);
    if (disk === undefined) throw new StorpoolError('MAP_ERR_INVALID', `disk ${diskId} is not in shard map epoch ${this.#o.view.router.epoch}`);
    const conn = await WireConnection.open({ address: disk.address, clusterId: this.#o.clusterId, role: this.#o.role, senderId: this.#o.senderId, expectDiskId: diskId });
    this.#o.log.debug({ diskId, address: disk.address }, 'connected');
    conn.onClose((err) => {
      if (!this.#closed) this.#o.log.info({ diskId, reason: err.message }, 'connection lost');
    });
    return conn;
  }

  /**
   * Drops the connection to a disk that stopped answering (a partition, a stopped process): its
   * requests in flight fail now instead of at their deadlines, and the next request reconnects.
   */
  drop(diskId: number, reason: string): void {
    const entry = this.#entries.get(diskId);
    if (entry === undefined) return;
    this.#entries.delete(diskId);
    entry.pending.then((c) => c.abort(reason), () => undefined);
  }

  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) entry.pending.then((c) => c.close(), () => undefined);
    this.#entries.clear();
  }
}
