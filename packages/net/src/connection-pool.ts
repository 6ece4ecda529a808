import { StorpoolError } from '@storpool/errors';
import type { PeerRole } from '@storpool/protocol';
import type { Logger } from 'pino';
import type { ShardMapView } from './map-source.js';
import { WireConnection } from './wire-connection.js';

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
export class ConnectionPool {
  readonly #connections = new Map<number, Promise<WireConnection>>();
  /** The same connections once open: a request on them needs no promise hop (see connected()). */
  readonly #open = new Map<number, WireConnection>();
  readonly #o: ConnectionPoolOptions;
  #closed = false;

  constructor(options: ConnectionPoolOptions) {
    this.#o = options;
  }

  get(diskId: number): Promise<WireConnection> {
    if (this.#closed) return Promise.reject(new StorpoolError('CLIENT_ERR_CLOSED', 'connection pool closed'));
    const existing = this.#connections.get(diskId);
    if (existing !== undefined) return existing;
    const pending = this.#connect(diskId);
    this.#connections.set(diskId, pending);
    const forget = (): void => {
      if (this.#connections.get(diskId) === pending) this.#connections.delete(diskId);
    };
    pending.then((conn) => {
      if (this.#connections.get(diskId) === pending) this.#open.set(diskId, conn);
      conn.onClose(() => {
        forget();
        if (this.#open.get(diskId) === conn) this.#open.delete(diskId);
      });
    }, forget);
    return pending;
  }

  /** The open connection to a disk, if there is one now (get() connects). */
  connected(diskId: number): WireConnection | undefined {
    const conn = this.#open.get(diskId);
    return conn === undefined || conn.closed ? undefined : conn;
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
    const pending = this.#connections.get(diskId);
    if (pending === undefined) return;
    this.#connections.delete(diskId);
    this.#open.delete(diskId);
    pending.then((c) => c.abort(reason), () => undefined);
  }

  close(): void {
    this.#closed = true;
    for (const conn of this.#connections.values()) conn.then((c) => c.close(), () => undefined);
    this.#connections.clear();
    this.#open.clear();
  }
}
