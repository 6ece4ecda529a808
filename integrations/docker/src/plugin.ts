/**
 * Docker's plugin protocol v1: HTTP POSTs with JSON bodies on a unix socket
 * (https://docs.docker.com/engine/extend/plugin_api/ and plugins_volume/). Every answer is JSON;
 * a failure is `{"Err": "<message>"}` with status 500, which Docker shows to the user as is.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StorpoolApiError } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import type { Logger } from 'pino';
import type { DockerVolumeDriver } from './driver.js';

/** Requests are tiny (a name, an id, a few options); anything larger is not Docker. */
export const REQUEST_BODY_BYTES_MAX = 64 * 1024;
const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

type Body = Record<string, unknown>;
type Handler = (d: DockerVolumeDriver, b: Body) => Promise<unknown> | unknown;

const str = (b: Body, key: string): string => (typeof b[key] === 'string' ? b[key] : '');

const ROUTES: Record<string, Handler> = {
  '/Plugin.Activate': (d) => d.activate(),
  '/VolumeDriver.Capabilities': (d) => d.capabilities(),
  '/VolumeDriver.Create': async (d, b) => { await d.create(str(b, 'Name'), b['Opts'] as Record<string, unknown> | null | undefined); return {}; },
  '/VolumeDriver.Get': (d, b) => d.get(str(b, 'Name')),
  '/VolumeDriver.List': (d) => d.list(),
  '/VolumeDriver.Path': (d, b) => d.path(str(b, 'Name')),
  '/VolumeDriver.Mount': (d, b) => d.mount(str(b, 'Name'), str(b, 'ID')),
  '/VolumeDriver.Unmount': async (d, b) => { await d.unmount(str(b, 'Name'), str(b, 'ID')); return {}; },
  '/VolumeDriver.Remove': async (d, b) => { await d.remove(str(b, 'Name')); return {}; },
};

/** The message Docker shows: the API's own description, or our error's message. */
export function errorMessage(err: unknown): string {
  if (err instanceof StorpoolApiError) return err.descr !== '' ? err.descr : err.message;
  if (err instanceof StorpoolError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

async function readBody(req: IncomingMessage): Promise<Body> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > REQUEST_BODY_BYTES_MAX) throw new StorpoolError('DOCKER_ERR_INVALID_OPTION', 'request body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new StorpoolError('DOCKER_ERR_INVALID_OPTION', 'request body is not a JSON object');
  return parsed as Body;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function createPluginServer(driver: DockerVolumeDriver, log: Logger): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const handler = ROUTES[path];
    if (req.method !== 'POST' || handler === undefined) {
      send(res, 404, { Err: `unknown plugin call ${req.method ?? ''} ${path}` });
      return;
    }
    readBody(req)
      .then(async (body) => {
        const result = await handler(driver, body);
        log.debug({ call: path, body }, 'ok');
        send(res, 200, result);
      })
      .catch((err: unknown) => {
        log.warn({ call: path, err: errorMessage(err) }, 'plugin call failed');
        send(res, 500, { Err: errorMessage(err) });
      });
  });
}

/** Listens on `socketPath` (a stale socket file is replaced) or on systemd's socket (fd 3). */
export async function listenPlugin(server: Server, socketPath: string, fromSystemd: boolean): Promise<void> {
  if (fromSystemd) {
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen({ fd: 3 }, () => resolve()); });
    return;
  }
  await mkdir(dirname(socketPath), { recursive: true });
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(socketPath, () => resolve()); });
}

/** systemd socket activation (sd_listen_fds): one socket passed as fd 3 to this very process. */
export function socketFromSystemd(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['LISTEN_FDS'] === '1' && env['LISTEN_PID'] === String(process.pid);
}
