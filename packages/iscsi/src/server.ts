/**
 * The socket side of the target: TCP listeners (portals), one IscsiConnection per accepted socket,
 * the I_T nexus registry (session reinstatement) and the per-LUN state shared by the sessions of
 * this process. The catalog (targets, initiators, portal groups) is swapped as a whole.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { BatchedWriter } from '@storpool/net';
import { pino, type Logger } from 'pino';
import { IscsiConnection } from './connection.js';
import { MemoryReservationStore } from './reservations.js';
import { Mutex, type LunContext } from './scsi.js';
import type { ReservationStore, TargetCatalog } from './types.js';

export const ISCSI_PORT_DEFAULT = 3260;
/** Output queued on a socket beyond this pauses reading from it (flow control). */
const SEND_QUEUE_BYTES_MAX = 64 * 1024 * 1024;

export interface IscsiServerOptions {
  catalog: TargetCatalog;
  reservations?: ReservationStore;
  log?: Logger;
}

export interface IscsiServerCounters {
  connections: number;
  protocolErrors: number;
}

export class IscsiServer {
  #catalog: TargetCatalog;
  readonly reservations: ReservationStore;
  readonly log: Logger;
  readonly counters: IscsiServerCounters = { connections: 0, protocolErrors: 0 };
  readonly #servers: Server[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Map<string, IscsiConnection>();
  readonly #lunShared = new Map<string, Pick<LunContext, 'mode' | 'cawLock' | 'prevent'>>();
  #tsih = 0;

  constructor(o: IscsiServerOptions) {
    this.#catalog = o.catalog;
    this.reservations = o.reservations ?? new MemoryReservationStore();
    this.log = o.log ?? pino({ level: 'silent' });
  }

  get catalog(): TargetCatalog {
    return this.#catalog;
  }

  /** Replaces what is served. Sessions of targets (or LUNs) that went away are dropped. */
  setCatalog(c: TargetCatalog): void {
    this.#catalog = c;
    for (const conn of [...this.#sessions.values()]) {
      const name = conn.targetName;
      if (name !== undefined && !c.targets.has(name)) conn.drop(`target ${name} is no longer exported`);
    }
  }

  /** Listens on a portal; `portalGroupTag` is what initiators see as TargetPortalGroupTag. */
  async listen(o: { host: string; port: number; portalGroupTag?: number }): Promise<{ host: string; port: number }> {
    const server = createServer({ noDelay: true }, (socket) => this.#accept(socket, o.portalGroupTag ?? 1));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err }, 'iSCSI listener error'));
    this.#servers.push(server);
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('listener has no TCP address');
    return { host: o.host, port: addr.port };
  }

  #accept(socket: Socket, tag: number): void {
    this.counters.connections++;
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    const local = { host: socket.localAddress?.replace(/^::ffff:/, '') ?? '127.0.0.1', port: socket.localPort ?? ISCSI_PORT_DEFAULT };
    let closed = false;
    const out = new BatchedWriter(socket);
    const conn: IscsiConnection = new IscsiConnection({
      catalog: () => this.#catalog,
      portalGroupTag: tag,
      localPortal: local,
      remoteAddress: socket.remoteAddress ?? '',
      reservations: this.reservations,
      lunShared: (id) => {
        let s = this.#lunShared.get(id);
        if (s === undefined) this.#lunShared.set(id, (s = { mode: { dSense: false, swp: false }, cawLock: new Mutex(), prevent: new Set() }));
        return s;
      },
      allocTsih: () => {
        this.#tsih = this.#tsih >= 0xffff ? 1 : this.#tsih + 1;
        return this.#tsih;
      },
      registerSession: (key, c) => {
        const old = this.#sessions.get(key);
        if (old !== undefined && old !== c) old.drop('session reinstated by a new login of the same I_T nexus');
        this.#sessions.set(key, c);
      },
      unregisterSession: (key, c) => {
        if (this.#sessions.get(key) === c) this.#sessions.delete(key);
      },
      log: this.log,
    }, {
      send: (bufs) => {
        if (closed) return;
        out.write(bufs);
        if (socket.writableLength > SEND_QUEUE_BYTES_MAX && !socket.isPaused()) {
          socket.pause();
          socket.once('drain', () => socket.resume());
        }
      },
      close: (reason, error) => {
        if (closed) return;
        closed = true;
        if (error) this.counters.protocolErrors++;
        this.log.debug({ reason, remote: socket.remoteAddress }, 'closing connection');
        out.end();
        // A peer that never reads must not keep the socket forever.
        setTimeout(() => socket.destroy(), 5_000).unref();
      },
    });
    socket.on('data', (chunk: Buffer) => conn.onBytes(chunk));
    socket.on('error', (err) => this.log.debug({ err: err.message, remote: socket.remoteAddress }, 'socket error'));
    socket.on('close', () => {
      closed = true;
      this.#sockets.delete(socket);
      conn.onClosed();
    });
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.#servers.length = 0;
  }
}
