/**
 * Socket plumbing for NbdSession: TCP and unix-socket listeners, one session per connection,
 * effects run against the export backends, backpressure, logging. All protocol decisions are in
 * session.ts; this file only moves bytes and promises.
 */
import assert from 'node:assert/strict';
import { lstat, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { ERRORS, StorpoolError, toStorpoolError } from '@storpool/errors';
import { BatchedWriter } from '@storpool/net';
import { pino, type Logger } from 'pino';
import { NbdSession, REQUESTS_IN_FLIGHT_MAX } from './session.js';
import type { NbdCatalog, NbdEffect, NbdExport, NbdIo, NbdIoResult } from './types.js';

export const NBD_PORT_DEFAULT = 10809;
/** Stop reading requests while this many reply bytes wait in a socket's send buffer. */
export const SEND_BUFFER_BYTES_MAX = 64 * 1024 * 1024;
/** After we end a connection, how long the peer has to close its side before we destroy it. */
export const CLOSE_GRACE_MS = 2_000;

export interface NbdServerOptions {
  log?: Logger;
  exports?: readonly NbdExport[];
  /** Export served for the empty name (nbd://host:port with no path). */
  defaultExportName?: string;
  minimumBlockBytes?: 1 | 512;
  requestsInFlightMax?: number;
  sendBufferBytesMax?: number;
}

export interface NbdServerCounters {
  connections: number;
  requests: number;
  requestErrors: number;
  protocolErrors: number;
}

export class NbdServer implements NbdCatalog {
  readonly log: Logger;
  readonly counters: NbdServerCounters = { connections: 0, requests: 0, requestErrors: 0, protocolErrors: 0 };
  readonly #o: NbdServerOptions;
  readonly #exports = new Map<string, NbdExport>();
  readonly #listeners: { server: Server; path?: string }[] = [];
  readonly #connections = new Set<Connection>();
  #nextConnectionId = 1;
  #closed = false;

  constructor(options: NbdServerOptions = {}) {
    this.#o = options;
    this.log = options.log ?? pino({ level: 'silent' });
    for (const e of options.exports ?? []) this.addExport(e);
  }

  addExport(e: NbdExport): void {
    if (this.#exports.has(e.name)) throw new StorpoolError('CONFIG_ERR_INVALID', `nbd export ${JSON.stringify(e.name)} already exists`);
    if (!Number.isSafeInteger(e.sizeBytes) || e.sizeBytes < 0) throw new StorpoolError('CONFIG_ERR_INVALID', `nbd export ${e.name}: size ${e.sizeBytes} is invalid`);
    this.#exports.set(e.name, e);
  }

  /** New connections can no longer choose it; connections using it keep it until they close. */
  removeExport(name: string): boolean {
    return this.#exports.delete(name);
  }

  get(name: string): NbdExport | undefined {
    return this.#exports.get(name);
  }

  list(): readonly NbdExport[] {
    return [...this.#exports.values()];
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  async listenTcp(options: { host?: string; port?: number } = {}): Promise<{ host: string; port: number }> {
    const server = this.#newListener();
    await listen(server, () => server.listen(options.port ?? NBD_PORT_DEFAULT, options.host ?? '127.0.0.1'));
    this.#listeners.push({ server });
    const address = server.address();
    assert(address !== null && typeof address === 'object');
    this.log.info({ host: address.address, port: address.port }, 'nbd listening on tcp');
    return { host: address.address, port: address.port };
  }

  /** Listens on a unix socket; a stale socket file at `path` is replaced. */
  async listenUnix(path: string): Promise<void> {
    const stat = await lstat(path).catch(() => undefined);
    if (stat?.isSocket() === true) await unlink(path);
    const server = this.#newListener();
    await listen(server, () => server.listen(path));
    this.#listeners.push({ server, path });
    this.log.info({ path }, 'nbd listening on unix socket');
  }

  /** Stops listening, drops every connection and waits for backend calls in flight. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing = this.#listeners.map(({ server, path }) =>
      new Promise<void>((resolve) => server.close(() => resolve())).then(async () => {
        if (path !== undefined) await unlink(path).catch(() => undefined);
      }),
    );
    for (const c of this.#connections) c.destroy('server closing');
    await Promise.all([...closing, ...[...this.#connections].map((c) => c.settled())]);
    this.log.info('nbd server closed');
  }

  #newListener(): Server {
    assert(!this.#closed);
    const server = createServer({ noDelay: true }, (socket) => this.#accept(socket));
    server.on('error', (err) => this.log.error({ err }, 'nbd listener error'));
    return server;
  }

  #accept(socket: Socket): void {
    if (this.#closed) return void socket.destroy();
    const id = this.#nextConnectionId++;
    this.counters.connections++;
    const remote = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    const log = this.log.child({ connId: id, remote });
    const session = new NbdSession({
      catalog: this,
      ...(this.#o.defaultExportName !== undefined ? { defaultExportName: this.#o.defaultExportName } : {}),
      ...(this.#o.minimumBlockBytes !== undefined ? { minimumBlockBytes: this.#o.minimumBlockBytes } : {}),
      requestsInFlightMax: this.#o.requestsInFlightMax ?? REQUESTS_IN_FLIGHT_MAX,
    });
    const connection = new Connection(socket, session, log, this.counters, this.#o.sendBufferBytesMax ?? SEND_BUFFER_BYTES_MAX, (name) => this.#exports.get(name));
    this.#connections.add(connection);
    socket.once('close', () => this.#connections.delete(connection));
    connection.start();
  }
}

function listen(server: Server, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    start();
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** One client connection: runs its session's effects. */
class Connection {
  readonly #socket: Socket;
  readonly #out: BatchedWriter;
  readonly #session: NbdSession;
  readonly #log: Logger;
  readonly #counters: NbdServerCounters;
  readonly #sendBufferBytesMax: number;
  readonly #lookup: (name: string) => NbdExport | undefined;
  /** Backend calls running, and who waits for none to be. */
  #running = 0;
  readonly #idle: (() => void)[] = [];
  #backend: NbdExport | undefined;
  #paused = false;
  #ended = false;

  constructor(socket: Socket, session: NbdSession, log: Logger, counters: NbdServerCounters, sendBufferBytesMax: number, lookup: (name: string) => NbdExport | undefined) {
    this.#socket = socket;
    this.#out = new BatchedWriter(socket);
    this.#session = session;
    this.#log = log;
    this.#counters = counters;
    this.#sendBufferBytesMax = sendBufferBytesMax;
    this.#lookup = lookup;
  }

  start(): void {
    const socket = this.#socket;
    socket.setNoDelay(true); // Node's default is Nagle on; qemu's client stalls on it.
    socket.on('data', (chunk: Buffer) => this.#guard(() => this.#apply(this.#session.onBytes(chunk))));
    socket.on('end', () => this.#guard(() => this.#apply(this.#session.onEnd())));
    socket.on('drain', () => this.#flow());
    socket.on('error', (err) => this.#log.debug({ err: err.message }, 'socket error'));
    socket.on('close', () => {
      this.#ended = true;
      this.#session.onEnd();
      this.#log.debug('connection closed');
    });
    this.#log.debug('connection accepted');
    this.#guard(() => this.#apply(this.#session.start()));
  }

  destroy(reason: string): void {
    this.#log.info({ reason }, 'closing connection');
    this.#ended = true;
    this.#socket.destroy();
  }

  /** Resolves when no backend call of this connection is running. */
  async settled(): Promise<void> {
    if (this.#running > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
  }

  /** A bug in the session must not take the whole service down: log it, drop this connection. */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err }, 'nbd session failed (bug); dropping the connection');
      this.destroy('internal error');
    }
  }

  #apply(effects: readonly NbdEffect[]): void {
    for (const e of effects) {
      switch (e.type) {
        case 'send':
          if (this.#ended || this.#socket.destroyed) break;
          this.#out.write(e.data);
          break;
        case 'io':
          this.#run(e.io);
          break;
        case 'export':
          this.#backend = this.#lookup(e.export.name);
          this.#log.info({ export: e.export.name, sizeBytes: e.export.sizeBytes, readOnly: e.export.readOnly, structured: this.#session.structuredReplies }, 'transmission phase');
          break;
        case 'close':
          if (e.error) {
            this.#counters.protocolErrors++;
            this.#log.warn({ reason: e.reason }, 'disconnecting client');
          } else this.#log.debug({ reason: e.reason }, 'session ended');
          this.#end();
          break;
      }
    }
    this.#flow();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#out.end();
    setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #run(io: NbdIo): void {
    this.#counters.requests++;
    this.#running++;
    const backend = this.#backend;
    const finish = (result: NbdIoResult): void => {
      this.#guard(() => this.#apply(this.#session.complete(io.id, result)));
      if (--this.#running === 0) for (const wake of this.#idle.splice(0)) wake();
    };
    const failed = (err: unknown): void => {
      const e = toStorpoolError(err);
      this.#counters.requestErrors++;
      this.#log.warn({ op: io.op, code: e.code, message: e.message }, 'nbd request failed');
      finish({ ok: false, errno: ERRORS[e.code].nbdErrno, message: `${e.code}: ${e.message}` });
    };
    // One promise reaction per request (not catch/then/finally chains): they are the hot path.
    const task = backend === undefined ? Promise.reject(new StorpoolError('CONFIG_ERR_INVALID', 'export was removed')) : execute(backend, io);
    task.then(finish, failed);
  }

  /** Backpressure: stop reading while the session is saturated or replies pile up unsent. */
  #flow(): void {
    if (this.#ended) return;
    const pause = this.#session.saturated || this.#socket.writableLength > this.#sendBufferBytesMax;
    if (pause && !this.#paused) this.#socket.pause();
    else if (!pause && this.#paused) this.#socket.resume();
    this.#paused = pause;
  }
}

async function execute(backend: NbdExport, io: NbdIo): Promise<NbdIoResult> {
  switch (io.op) {
    case 'read':
      return { ok: true, data: await backend.read(io.offset, io.length) };
    case 'write':
      await backend.write(io.offset, io.data, io.fua);
      return { ok: true };
    case 'trim':
      await backend.trim(io.offset, io.length, io.fua);
      return { ok: true };
    case 'writeZeroes':
      await backend.writeZeroes(io.offset, io.length, { fua: io.fua, noHole: io.noHole, fast: io.fast });
      return { ok: true };
    case 'flush':
      await backend.flush();
      return { ok: true };
    case 'cache':
      await backend.cache?.(io.offset, io.length);
      return { ok: true };
    case 'blockStatus':
      return { ok: true, extents: await backend.blockStatus(io.offset, io.length) };
  }
}
