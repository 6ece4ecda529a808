/**
 * Socket plumbing of a storage server: accepts connections, runs the HELLO gate, decodes request
 * frames, hands them to the ShardService and writes replies (in completion order, not arrival
 * order). A malformed frame closes that connection with a logged reason; the process goes on.
 */
import { AssertionError } from 'node:assert';
import { createServer, type Server, type Socket } from 'node:net';
import { StorpoolError, toStorpoolError, wireStatus } from '@storpool/errors';
import { BatchedWriter } from '@storpool/net';
import {
  CONNECTION_REQUESTS_IN_FLIGHT_MAX,
  Op,
  PROTOCOL_VERSION,
  REPLY_HEADER_BYTES,
  RequestDecoder,
  checkHello,
  decodeHelloRequest,
  encodeHelloReply,
  encodeReplyHeader,
  opName,
  type RequestFrame,
} from '@storpool/protocol';
import type { Logger } from 'pino';
import type { ShardService } from './shard-service.js';

export interface ListenerOptions {
  service: ShardService;
  clusterId: string;
  diskId: number;
  log: Logger;
}

export interface ListenerCounters {
  connections: number;
  connectionsRefused: number;
  framesInvalid: number;
}

export class StorageListener {
  readonly counters: ListenerCounters = { connections: 0, connectionsRefused: 0, framesInvalid: 0 };
  readonly #o: ListenerOptions;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #nextConnId = 1;

  constructor(options: ListenerOptions) {
    this.#o = options;
    this.#server = createServer({ noDelay: true }, (socket) => this.#accept(socket));
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ host, port }, () => {
        this.#server.off('error', reject);
        const addr = this.#server.address();
        if (addr === null || typeof addr === 'string') throw new Error('listener has no TCP address');
        resolve({ host: addr.address, port: addr.port });
      });
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #accept(socket: Socket): void {
    const log = this.#o.log.child({ connId: this.#nextConnId++, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    this.counters.connections++;
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    const decoder = new RequestDecoder();
    let greeted = false;
    let inFlight = 0;
    let paused = false;
    const out = new BatchedWriter(socket);

    const send = (requestId: number, status: number, version: number, payload: readonly Uint8Array[]): void => {
      if (socket.destroyed) return;
      let payloadBytes = 0;
      for (const p of payload) payloadBytes += p.length;
      const header = Buffer.allocUnsafe(REPLY_HEADER_BYTES);
      encodeReplyHeader({ status, flags: 0, requestId, payloadBytes, version, epoch: this.#o.service.epoch }, header);
      out.write([header]);
      out.write(payload);
    };

    const fail = (requestId: number, err: StorpoolError): void => {
      send(requestId, wireStatus(err.code), 0, [Buffer.from(err.message, 'utf8')]);
    };

    const dispatch = (frame: RequestFrame): void => {
      const h = frame.header;
      if (!greeted) {
        if (h.op !== Op.HELLO) throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `first frame is ${opName(h.op)}, expected HELLO`);
        const hello = decodeHelloRequest(frame.payload);
        const refusal = checkHello(hello, this.#o.clusterId);
        if (refusal) {
          this.counters.connectionsRefused++;
          log.warn({ reason: refusal.message }, 'connection refused');
          fail(h.requestId, refusal);
          out.end();
          return;
        }
        greeted = true;
        log.debug({ role: hello.role, senderId: hello.senderId }, 'peer greeted');
        send(h.requestId, 0, 0, [encodeHelloReply({ protocolVersion: PROTOCOL_VERSION, diskId: this.#o.diskId, clusterId: this.#o.clusterId, epoch: this.#o.service.epoch })]);
        return;
      }
      inFlight++;
      if (inFlight >= CONNECTION_REQUESTS_IN_FLIGHT_MAX && !paused) {
        paused = true;
        socket.pause();
      }
      this.#o.service.handle(h, frame.payload).then(
        (result) => {
          settled();
          send(h.requestId, 0, result.version, result.payload);
        },
        (err: unknown) => {
          settled();
          if (err instanceof AssertionError) {
            // Our own bug: crash (and be restarted) rather than serve from a broken state.
            process.nextTick(() => {
              throw err;
            });
            return;
          }
          const e = toStorpoolError(err);
          if (e.code === 'INTERNAL_ERR') log.error({ err, op: opName(h.op) }, 'request failed');
          else log.debug({ code: e.code, op: opName(h.op), message: e.message }, 'request refused');
          fail(h.requestId, e);
        },
      );
    };

    const settled = (): void => {
      inFlight--;
      if (paused && inFlight < CONNECTION_REQUESTS_IN_FLIGHT_MAX / 2) {
        paused = false;
        socket.resume();
      }
    };

    socket.on('data', (chunk: Buffer) => {
      try {
        for (const frame of decoder.push(chunk)) dispatch(frame);
      } catch (err) {
        this.counters.framesInvalid++;
        log.warn({ reason: (err as Error).message }, 'closing connection: invalid frame');
        socket.destroy();
      }
    });
    socket.on('error', (err) => log.debug({ err: err.message }, 'socket error'));
    socket.on('close', () => {
      this.#sockets.delete(socket);
      log.debug('connection closed');
    });
  }
}
