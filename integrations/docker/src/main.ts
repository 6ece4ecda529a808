/**
 * storpool-docker: the Docker volume plugin daemon. Configuration: storpool.conf (API.md §2:
 * SP_API_HTTP_HOST/PORT, SP_AUTH_TOKEN, SP_OURID; STORPOOL_CONF names another file) and:
 *
 *   --socket PATH          else STORPOOL_DOCKER_SOCKET, else /run/docker/plugins/storpool.sock
 *                          (ignored under systemd socket activation: the socket is fd 3)
 *   --root DIR             else STORPOOL_DOCKER_ROOT, else /var/lib/storpool/docker (mount points)
 *   --dev-root DIR         else STORPOOL_DEV_ROOT, else /dev (the block service's links)
 *   --client-id N          else SP_OURID
 *   --default-size SIZE    else STORPOOL_DOCKER_DEFAULT_SIZE, else 10G
 *   --default-template T   else STORPOOL_DOCKER_DEFAULT_TEMPLATE, else default
 *   --default-fs ext4|xfs  else STORPOOL_DOCKER_DEFAULT_FS, else ext4
 *   --log-level L          else STORPOOL_LOG_LEVEL, else info
 */
import { parseArgs } from 'node:util';
import { StorpoolApi, endpointFromConfig, loadConfig } from '@storpool/api-client';
import { pino } from 'pino';
import { DockerVolumeDriver } from './driver.js';
import { FILESYSTEMS, parseSize, type Filesystem } from './options.js';
import { createPluginServer, listenPlugin, socketFromSystemd } from './plugin.js';

export const DEFAULT_SOCKET = '/run/docker/plugins/storpool.sock';
export const DEFAULT_ROOT = '/var/lib/storpool/docker';

async function main(): Promise<void> {
  const env = process.env;
  const { values: args } = parseArgs({
    options: {
      socket: { type: 'string' }, root: { type: 'string' }, 'dev-root': { type: 'string' }, 'client-id': { type: 'string' },
      'default-size': { type: 'string' }, 'default-template': { type: 'string' }, 'default-fs': { type: 'string' }, 'log-level': { type: 'string' },
    },
  });
  const log = pino({ name: 'storpool-docker', level: args['log-level'] ?? env['STORPOOL_LOG_LEVEL'] ?? 'info' });
  const endpoint = endpointFromConfig(loadConfig());
  const idText = args['client-id'];
  const clientId = idText !== undefined ? Number(idText) : endpoint.ourId;
  if (clientId === undefined || !Number.isInteger(clientId) || clientId < 1 || clientId > 4095) throw new Error('no client id: set SP_OURID (1..4095) in storpool.conf or the environment, or pass --client-id');
  const fs = args['default-fs'] ?? env['STORPOOL_DOCKER_DEFAULT_FS'] ?? 'ext4';
  if (!(FILESYSTEMS as readonly string[]).includes(fs)) throw new Error(`--default-fs ${fs}: expected ${FILESYSTEMS.join(' or ')}`);
  const api = new StorpoolApi({ host: endpoint.host, port: endpoint.port, ...(endpoint.token !== undefined ? { token: endpoint.token } : {}) });
  const driver = new DockerVolumeDriver({
    api, clientId, log,
    root: args.root ?? env['STORPOOL_DOCKER_ROOT'] ?? DEFAULT_ROOT,
    devRoot: args['dev-root'] ?? env['STORPOOL_DEV_ROOT'] ?? '/dev',
    defaults: {
      sizeBytes: parseSize(args['default-size'] ?? env['STORPOOL_DOCKER_DEFAULT_SIZE'] ?? '10G'),
      template: args['default-template'] ?? env['STORPOOL_DOCKER_DEFAULT_TEMPLATE'] ?? 'default',
      fs: fs as Filesystem,
    },
  });
  await driver.init();
  const server = createPluginServer(driver, log);
  const socket = args.socket ?? env['STORPOOL_DOCKER_SOCKET'] ?? DEFAULT_SOCKET;
  const systemd = socketFromSystemd();
  await listenPlugin(server, socket, systemd);
  log.info({ socket: systemd ? 'systemd fd 3' : socket, clientId }, 'storpool-docker listening');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping (mounts stay; their state is in the root directory)');
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5_000).unref();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  process.stderr.write(`storpool-docker: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
