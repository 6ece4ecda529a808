/**
 * HTTP transport of API.md §1 over node:http (it hands over the raw request target, so `#` and
 * `*` in names arrive as sent): `/ctrl/1.0/[RemoteCommand/<cluster>/][MultiCluster/]<Call>[/args]`,
 * any Content-Type, `?json=`, `Authorization: Storpool v1:<token>`, and the
 * `{"generation","data"}` / `{"error":{name,descr,transient}}` envelopes.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { ApiError, invalid, toApiError } from './api-error.js';
import { REQUEST_BODY_BYTES_MAX } from './limits.js';

export interface CallRequest {
  call: string;
  method: 'GET' | 'POST';
  /** Path arguments, percent-decoded if they were encoded. */
  args: string[];
  /** Parsed JSON body (POST) or `?json=` (GET); undefined when absent or empty. */
  body: unknown;
  /** The body did not parse as JSON (calls without JSON ignore this). */
  bodyInvalid: string | undefined;
  /** `RemoteCommand/<cluster>` target, if any. */
  remote: string | undefined;
}

export interface CallReply {
  data: unknown;
  generation: number;
}

export type Dispatch = (request: CallRequest) => Promise<CallReply>;

const BASE = '/ctrl/1.0/';
const KV_CALLS = new Set(['List', 'Get', 'Create', 'Delete', 'Set']);

function decodeArg(raw: string): string {
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw invalid(`path argument ${JSON.stringify(raw)} is not valid percent-encoding`);
  }
}

/** Splits the raw request target into call name, arguments and the `json` query parameter. */
export function parseTarget(target: string): { call: string; args: string[]; remote: string | undefined; query: string | undefined } {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  let query: string | undefined;
  if (q !== -1) {
    const params = new URLSearchParams(target.slice(q + 1));
    query = params.get('json') ?? undefined;
  }
  if (!path.startsWith(BASE)) throw new ApiError('invalidParam', `unknown path ${path.slice(0, 100)}: calls are under ${BASE}`);
  let segments = path.slice(BASE.length).split('/');
  let remote: string | undefined;
  if (segments[0] === 'RemoteCommand') {
    if (segments.length < 3) throw invalid('RemoteCommand/<cluster>/<Call> needs a cluster and a call');
    remote = decodeArg(segments[1]!);
    segments = segments.slice(2);
  }
  if (segments[0] === 'MultiCluster') segments = segments.slice(1);
  let call = segments[0] ?? '';
  let rest = segments.slice(1);
  if (call === 'KV' && rest.length > 0 && KV_CALLS.has(rest[0]!)) {
    call = `KV/${rest[0]!}`;
    rest = rest.slice(1);
  }
  if (rest.length > 0 && rest[rest.length - 1] === '') rest = rest.slice(0, -1);
  return { call, args: rest.map(decodeArg), remote, query };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > REQUEST_BODY_BYTES_MAX) throw invalid(`request body larger than ${REQUEST_BODY_BYTES_MAX} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseJson(text: string | undefined): { body: unknown; bodyInvalid: string | undefined } {
  if (text === undefined || text.trim() === '') return { body: undefined, bodyInvalid: undefined };
  try {
    return { body: JSON.parse(text) as unknown, bodyInvalid: undefined };
  } catch (err) {
    return { body: undefined, bodyInvalid: (err as Error).message };
  }
}

function send(res: ServerResponse, status: number, payload: unknown): void {
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'private', Connection: 'close', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function authorized(header: string | undefined, token: string): boolean {
  const expected = Buffer.from(`Storpool v1:${token}`);
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export interface HttpOptions {
  token: string;
  log: Logger;
  dispatch: Dispatch;
}

export function createApiServer(o: HttpOptions): Server {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = process.hrtime.bigint();
    let call = '?';
    try {
      if (!authorized(req.headers.authorization, o.token)) throw new ApiError('authError', 'missing or wrong Authorization header (expected "Storpool v1:<SP_AUTH_TOKEN>")');
      const method = req.method === 'GET' || req.method === 'HEAD' ? 'GET' : req.method === 'POST' ? 'POST' : undefined;
      if (method === undefined) throw invalid(`method ${req.method ?? ''} not supported: use GET or POST`);
      const target = parseTarget(req.url ?? '/');
      call = target.call;
      const raw = method === 'POST' ? (await readBody(req)).toString('utf8') : target.query;
      const { body, bodyInvalid } = parseJson(raw);
      const reply = await o.dispatch({ call, method, args: target.args, body, bodyInvalid, remote: target.remote });
      send(res, 200, { generation: reply.generation, data: reply.data });
      o.log.debug({ call, method, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'call');
    } catch (err) {
      const e = toApiError(err);
      if (e.apiName === 'internalError') o.log.error({ err, call }, 'internal error');
      else o.log.info({ call, error: e.apiName, descr: e.message }, 'call failed');
      if (!res.headersSent) send(res, e.httpStatus, { error: e.toJSON() });
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      o.log.error({ err }, 'request handler failed');
      res.destroy();
    });
  });
  server.keepAliveTimeout = 1_000;
  return server;
}
