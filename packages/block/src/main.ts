/**
 * storpool-block: the block service of one client host. Configuration: storpool.conf (API.md §2:
 * SP_API_HTTP_HOST/PORT, SP_AUTH_TOKEN, SP_OURID; STORPOOL_CONF names another file) and:
 *
 *   --client-id N          else SP_OURID
 *   --map-file PATH        else STORPOOL_MAP_FILE, else shardmap.json next to the config file if
 *                          present, else /var/lib/storpool/shardmap.json
 *   --nbd HOST:PORT|off    else STORPOOL_NBD_LISTEN, else 127.0.0.1:10809
 *   --runtime-dir DIR      else STORPOOL_RUNTIME_DIR, else /run/storpool (sockets in nbd/)
 *   --dev-root DIR         else STORPOOL_DEV_ROOT, else /dev (links in storpool/, storpool-byid/)
 *   --attach-method M      auto|nbd|nbdfuse|none, else STORPOOL_ATTACH_METHOD, else auto
 *   --io-timeout SECONDS   how long an I/O waits for a degraded cluster before the device gets an
 *                          error, else STORPOOL_IO_TIMEOUT, else 0 = as long as it takes
 *   --log-level L          else STORPOOL_LOG_LEVEL, else info
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { StorpoolApi, endpointFromConfig, loadConfig } from '@storpool/api-client';
import { FileShardMapSource } from '@storpool/client';
import { pino } from 'pino';
import type { AttachMethod } from './devices.js';
import { startBlockService } from './service.js';
import { stopOnSignals } from '@storpool/daemon';

async function main(): Promise<void> {
  const env = process.env;
  const { values: args } = parseArgs({
    options: {
      'client-id': { type: 'string' }, 'map-file': { type: 'string' }, nbd: { type: 'string' }, 'runtime-dir': { type: 'string' },
      'dev-root': { type: 'string' }, 'attach-method': { type: 'string' }, 'log-level': { type: 'string' }, 'io-timeout': { type: 'string' },
    },
  });
  const log = pino({ name: 'storpool-block', level: args['log-level'] ?? env['STORPOOL_LOG_LEVEL'] ?? 'info' });
  const config = loadConfig();
  const endpoint = endpointFromConfig(config);
  const idText = args['client-id'];
  const clientId = idText !== undefined ? Number(idText) : endpoint.ourId;
  if (clientId === undefined || !Number.isInteger(clientId) || clientId < 1 || clientId > 4095) throw new Error('no client id: set SP_OURID (1..4095) in storpool.conf or the environment, or pass --client-id');
  const nextToConf = config.files[0] === undefined ? undefined : join(dirname(config.files[0]), 'shardmap.json');
  const mapFile = args['map-file'] ?? env['STORPOOL_MAP_FILE'] ?? (nextToConf !== undefined && existsSync(nextToConf) ? nextToConf : '/var/lib/storpool/shardmap.json');
  const listen = args.nbd ?? env['STORPOOL_NBD_LISTEN'] ?? '127.0.0.1:10809';
  let nbd: { host: string; port: number } | false = false;
  if (listen !== 'off') {
    const m = /^(.*):(\d+)$/.exec(listen);
    if (m === null || Number(m[2]) > 65535) throw new Error(`--nbd ${listen}: expected HOST:PORT or off`);
    nbd = { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
  }
  const method = args['attach-method'] ?? env['STORPOOL_ATTACH_METHOD'] ?? 'auto';
  if (!['auto', 'nbd', 'nbdfuse', 'none'].includes(method)) throw new Error(`--attach-method ${method}: expected auto, nbd, nbdfuse or none`);
  const ioTimeoutText = args['io-timeout'] ?? env['STORPOOL_IO_TIMEOUT'] ?? '0';
  const ioTimeout = Number(ioTimeoutText);
  if (ioTimeoutText.trim() === '' || !Number.isFinite(ioTimeout) || ioTimeout < 0) throw new Error(`--io-timeout ${ioTimeoutText}: expected seconds >= 0 (0 = wait as long as it takes)`);
  const runtimeDir = args['runtime-dir'] ?? env['STORPOOL_RUNTIME_DIR'];
  const devRoot = args['dev-root'] ?? env['STORPOOL_DEV_ROOT'];
  const service = await startBlockService({
    clientId, api: new StorpoolApi({ host: endpoint.host, port: endpoint.port, ...(endpoint.token !== undefined ? { token: endpoint.token } : {}) }),
    mapSource: new FileShardMapSource(mapFile), nbd, attachMethod: method as AttachMethod | 'auto', log, ioTimeoutMs: ioTimeout === 0 ? Infinity : ioTimeout * 1000,
    ...(runtimeDir !== undefined ? { runtimeDir } : {}), ...(devRoot !== undefined ? { devRoot } : {}),
  });
  log.info({ clientId, nbd: service.nbdAddress, method: service.method, mapFile }, 'storpool-block running');
  stopOnSignals({ log, close: () => service.close() });
}

main().catch((err: unknown) => {
  process.stderr.write(`storpool-block: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
