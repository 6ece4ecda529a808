/** Starts the shim: connects to storpool, makes sure its record bucket exists, listens. */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { StorpoolApi, type StorpoolApiOptions } from '@storpool/api-client';
import { pino, type Logger } from 'pino';
import { CinderShim } from './http.js';
import { KeystoneAuth, type KeystoneOptions } from './keystone.js';
import { CinderService, type CinderServiceOptions } from './service.js';

export interface CinderApiOptions extends Omit<CinderServiceOptions, 'api'> {
  host?: string;
  port?: number;
  /** How to reach storpool; default: /etc/storpool.conf (or STORPOOL_CONF) and the environment. */
  storpool?: StorpoolApiOptions;
  /** Keystone to validate tokens with; absent = noauth. */
  keystone?: KeystoneOptions;
  defaultProjectId?: string;
  defaultUserId?: string;
  log?: Logger;
}

export interface RunningCinderApi {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

export async function startCinderApi(o: CinderApiOptions): Promise<RunningCinderApi> {
  const log = o.log ?? pino({ name: 'storpool-cinder-api', level: 'silent' });
  const storpoolOptions: StorpoolApiOptions = { ...(o.storpool ?? {}) };
  if (o.storpoolConf !== undefined && storpoolOptions.config === undefined) storpoolOptions.config = { path: o.storpoolConf };
  const api = new StorpoolApi(storpoolOptions);
  const { storpool: _s, keystone, log: _l, host: _h, port: _p, defaultProjectId, defaultUserId, ...serviceOptions } = o;
  const service = new CinderService({ ...serviceOptions, api });
  await service.init();
  const shim = new CinderShim({
    service, log, ...(keystone !== undefined ? { keystone: new KeystoneAuth(keystone) } : {}),
    ...(defaultProjectId !== undefined ? { defaultProjectId } : {}), ...(defaultUserId !== undefined ? { defaultUserId } : {}),
  });
  const server = shim.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8776, o.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.host ?? '127.0.0.1';
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port, server,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
