/**
 * A local cluster (3 storage servers, storpool-mgmt, this host's block service without devices)
 * for integration tests (retried once on a loaded machine), and a raw HTTP caller that sends requests the way the Python
 * clients do: raw path, no Content-Type, JSON body or none, one connection per request.
 */
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@storpool/testkit';
import { startLocalCluster, type LocalCluster } from './index.js';

export interface Raw { status: number; body: { data?: unknown; generation?: number; error?: { name: string; descr: string; transient: boolean } } }

export interface TestCluster {
  local: LocalCluster;
  dir: string;
  host: string;
  port: number;
  token: string;
  /** `call` is everything after `/ctrl/1.0/`, sent unencoded. */
  call(method: 'GET' | 'POST', call: string, body?: unknown, rawBody?: string): Promise<Raw>;
  /** The data of a successful call; throws with the error envelope otherwise. */
  ok<D = unknown>(method: 'GET' | 'POST', call: string, body?: unknown): Promise<D>;
  stop(): Promise<void>;
}

export async function startTestCluster(prefix: string): Promise<TestCluster> {
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  let local: LocalCluster | undefined;
  // On a machine shared by many test runs a storage server can miss the launcher's start
  // deadline; a second attempt (fresh data directory) rides that out.
  for (let attempt = 1; local === undefined; attempt++) {
    try {
      local = await startLocalCluster({
        dataDir: join(dir, `data-${attempt}`), port: 0, disks: 3, diskSizeBytes: 1024 ** 3, shardCount: 64,
        block: { nbd: `127.0.0.1:${await freePort()}`, attachMethod: 'none', devRoot: join(dir, 'dev'), runtimeDir: join(dir, 'run') },
      });
    } catch (err) {
      if (attempt < 2) continue;
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }
  const l = local;
  const url = new URL(l.url);
  const host = url.hostname;
  const port = Number(url.port);
  const call = (method: 'GET' | 'POST', path: string, body?: unknown, rawBody?: string): Promise<Raw> =>
    new Promise((resolve, reject) => {
      const text = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
      const req = request({ host, port, method, path: `/ctrl/1.0/${path}`, headers: { Authorization: `Storpool v1:${l.token}`, Connection: 'close' } }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { data += c; });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(data) as Raw['body'] });
          } catch {
            reject(new Error(`${method} ${path}: HTTP ${res.statusCode} body is not JSON: ${data.slice(0, 200)}`));
          }
        });
      });
      req.on('error', reject);
      if (text !== undefined) req.write(text);
      req.end();
    });
  const ok = async <D>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<D> => {
    const r = await call(method, path, body);
    if (r.status !== 200 || r.body.error !== undefined) throw new Error(`${method} ${path} failed: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.data as D;
  };
  return {
    local: l, dir, host, port, token: l.token, call, ok,
    stop: async () => {
      await l.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
