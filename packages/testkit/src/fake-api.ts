/**
 * A small real HTTP server standing in for the management API: records every request (raw
 * request-target, headers, body) and answers with whatever the test's handler returns.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Raw request-target as sent, e.g. `/ctrl/1.0/VolumeDescribe/~a.b.c`. */
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface FakeReply {
  status?: number;
  /** Sent verbatim when a string, JSON-encoded otherwise. */
  body: unknown;
  delayMs?: number;
}

export type FakeHandler = (req: RecordedRequest) => FakeReply;

export interface FakeApi {
  port: number;
  requests: RecordedRequest[];
  setHandler(handler: FakeHandler): void;
  close(): Promise<void>;
}

export function ok(data: unknown, generation = 7): FakeReply {
  return { body: { generation, data } };
}

export function apiError(name: string, descr: string, transient = false, status = 500): FakeReply {
  return { status, body: { error: { name, descr, transient } } };
}

export async function startFakeApi(handler: FakeHandler = () => ok({ ok: true, generation: 7 })): Promise<FakeApi> {
  let current = handler;
  const requests: RecordedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(recorded);
      const reply = current(recorded);
      const send = (): void => {
        const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
        res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', connection: 'close' });
        res.end(text);
      };
      if (reply.delayMs === undefined) send();
      else setTimeout(send, reply.delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    requests,
    setHandler(h) {
      current = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
