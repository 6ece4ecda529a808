/**
 * The connecting side of the wire protocol: one TCP connection to one storage server, with many
 * requests in flight (pipelined; replies may come back in any order, matched by request id).
 * Used by the client library (to primaries) and by primaries (to their replicas).
 */
import { Socket, connect } from 'node:net';
import { StorpoolError, codeFromWire } from '@storpool/errors';
import {
  CONNECT_TIMEOUT_MS,
  Op,
  PROTOCOL_VERSION,
  ReplyDecoder,
  decodeHelloReply,
  encodeHelloRequest,
  encodeRequestFields,
  REQUEST_HEADER_BYTES,
  type DiskAddress,
  type HelloReply,
  type PeerRole,
  type ReplyFrame,
  type RequestFields,
} from '@storpool/protocol';
import { BatchedWriter } from './batched-writer.js';

export interface WireConnectionOptions {
  address: DiskAddress;
  clusterId: string;
  role: PeerRole;
  senderId: number;
  /** The disk we expect to reach; a different one answering is refused. */
  expectDiskId?: number;
  connectTimeoutMs?: number;
}

export type WireRequest = RequestFields;

interface Pending {
  resolve: (frame: ReplyFrame) => void;
  reject: (err: StorpoolError) => void;
  deadline: number;
}

/** How often pending requests are checked against their deadlines. */
const DEADLINE_SCAN_MS = 250;

/** The socket's read buffer (libuv reads at most this much per call). */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Takes the bytes of each read out of the socket's reused read buffer (a copy of just what
 * arrived, before the buffer is read into again) and hands them to the connection; holds any that
 * come before the connection is attached.
 */
class ReadSink {
  #early: Buffer[] = [];
  #sink: ((chunk: Buffer) => void) | undefined;

  attach(sink: (chunk: Buffer) => void): void {
    this.#sink = sink;
    for (const chunk of this.#early.splice(0)) sink(chunk);
  }

  push(buf: Uint8Array, n: number): boolean {
    const chunk = Buffer.allocUnsafe(n);
    chunk.set(buf.subarray(0, n));
    if (this.#sink === undefined) this.#early.push(chunk);
    else this.#sink(chunk);
    return true;
  }
}

export class WireConnection {
  readonly address: DiskAddress;
  #socket: Socket;
  #decoder = new ReplyDecoder();
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed: StorpoolError | undefined;
  #timer: NodeJS.Timeout;
  #out: BatchedWriter;
  hello: HelloReply | undefined;
  #onClose: ((err: StorpoolError) => void)[] = [];

  private constructor(socket: Socket, address: DiskAddress, reads: ReadSink) {
    this.#socket = socket;
    this.address = address;
    this.#out = new BatchedWriter(socket);
    socket.setNoDelay(true);
    reads.attach((chunk) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(new StorpoolError('CLIENT_ERR_CONNECTION', `${address.host}:${address.port}: ${err.message}`)));
    socket.on('close', () => this.#fail(new StorpoolError('CLIENT_ERR_CONNECTION', `connection to ${address.host}:${address.port} closed`)));
    this.#timer = setInterval(() => this.#expire(), DEADLINE_SCAN_MS);
    this.#timer.unref();
  }

  /** Connects and completes the HELLO exchange. */
  static async open(options: WireConnectionOptions): Promise<WireConnection> {
    const { address } = options;
    const timeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const reads = new ReadSink();
    const socket = await new Promise<Socket>((resolve, reject) => {
      // Reads land in one buffer of this connection's, and only what arrived is copied out: the
      // default allocates a 64 KiB buffer for every read (malloc, shrink, a GC-tracked ArrayBuffer).
      const s = connect({ host: address.host, port: address.port, noDelay: true, onread: { buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES), callback: (n, buf) => reads.push(buf, n) } });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new StorpoolError('CLIENT_ERR_CONNECTION', `connecting to ${address.host}:${address.port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new StorpoolError('CLIENT_ERR_CONNECTION', `cannot connect to ${address.host}:${address.port}: ${err.message}`));
      });
    });
    const conn = new WireConnection(socket, address, reads);
    try {
      const reply = await conn.request(
        { op: Op.HELLO, flags: 0, epoch: 0, group: 0, parentCount: 0, volumeId: 0, objectIndex: 0, offset: 0, length: 0, version: 0, placementId: 0, shard: 0 },
        [encodeHelloRequest({ protocolVersion: PROTOCOL_VERSION, role: options.role, senderId: options.senderId, clusterId: options.clusterId })],
        timeoutMs,
      );
      const hello = decodeHelloReply(reply.payload);
      if (hello.clusterId !== options.clusterId) throw new StorpoolError('WIRE_ERR_CLUSTER_MISMATCH', `${address.host}:${address.port} belongs to cluster ${hello.clusterId}`);
      if (options.expectDiskId !== undefined && hello.diskId !== options.expectDiskId) {
        throw new StorpoolError('MAP_ERR_INVALID', `${address.host}:${address.port} serves disk ${hello.diskId}, the shard map says disk ${options.expectDiskId}`);
      }
      conn.hello = hello;
      return conn;
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  onClose(listener: (err: StorpoolError) => void): void {
    this.#onClose.push(listener);
  }

  /**
   * Sends one request; resolves with the reply frame when its status is 0, rejects with the
   * StorpoolError the server named otherwise. Payload parts are written as they are (no copy).
   */
  request(h: WireRequest, payload: readonly Uint8Array[], timeoutMs: number): Promise<ReplyFrame> {
    if (this.#closed) return Promise.reject(this.#closed);
    const requestId = this.#nextId;
    this.#nextId = this.#nextId === 0xffffffff ? 1 : this.#nextId + 1;
    let payloadBytes = 0;
    for (const part of payload) payloadBytes += part.length;
    const header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
    encodeRequestFields(h, requestId, payloadBytes, header, 0);
    const promise = new Promise<ReplyFrame>((resolve, reject) => {
      this.#pending.set(requestId, { resolve, reject, deadline: Date.now() + timeoutMs });
    });
    this.#out.write([header]);
    this.#out.write(payload);
    return promise;
  }

  close(): void {
    this.#fail(new StorpoolError('CLIENT_ERR_CLOSED', `connection to ${this.address.host}:${this.address.port} closed by us`));
  }

  /** Closes a connection found hung: requests in flight fail CLIENT_ERR_CONNECTION (transient: retried elsewhere or later). */
  abort(reason: string): void {
    this.#fail(new StorpoolError('CLIENT_ERR_CONNECTION', `connection to ${this.address.host}:${this.address.port} dropped: ${reason}`));
  }

  #onData(chunk: Buffer): void {
    let frames: ReplyFrame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.#fail(err instanceof StorpoolError ? err : new StorpoolError('WIRE_ERR_FRAME_INVALID', String(err)));
      return;
    }
    for (const frame of frames) {
      const pending = this.#pending.get(frame.header.requestId);
      if (pending === undefined) continue; // timed out already
      this.#pending.delete(frame.header.requestId);
      if (frame.header.status === 0) {
        pending.resolve(frame);
      } else {
        const message = frame.payload.length > 0 ? frame.payload.toString('utf8') : undefined;
        pending.reject(new StorpoolError(codeFromWire(frame.header.status), message));
      }
    }
  }

  #expire(): void {
    const now = Date.now();
    for (const [id, p] of this.#pending) {
      if (p.deadline <= now) {
        this.#pending.delete(id);
        p.reject(new StorpoolError('CLIENT_ERR_TIMEOUT', `request to ${this.address.host}:${this.address.port} timed out`));
      }
    }
  }

  #fail(err: StorpoolError): void {
    if (this.#closed) return;
    this.#closed = err;
    clearInterval(this.#timer);
    this.#socket.destroy();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
    for (const listener of this.#onClose) listener(err);
  }
}
