/**
 * storpool-iscsi: the iSCSI target of one controller host. Configuration: storpool.conf (API.md
 * §2: SP_API_HTTP_HOST/PORT, SP_AUTH_TOKEN, SP_OURID; STORPOOL_CONF names another file) and:
 *
 *   --controller-id N      this host's iSCSIId (portals with this controller are served); else
 *                          STORPOOL_ISCSI_ID, else SP_OURID
 *   --map-file PATH        else STORPOOL_MAP_FILE, else shardmap.json next to the config file if
 *                          present, else /var/lib/storpool/shardmap.json
 *   --listen HOST:PORT     listen here (repeatable) instead of the configured portals
 *   --log-level L          else STORPOOL_LOG_LEVEL, else info
 *   STORPOOL_ISCSI_MUTUAL_USER / STORPOOL_ISCSI_MUTUAL_SECRET: what the target answers mutual CHAP with
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { StorpoolApi, endpointFromConfig, loadConfig } from '@storpool/api-client';
import { FileShardMapSource } from '@storpool/client';
import { pino } from 'pino';
import { startIscsiService } from './service.js';
import { stopOnSignals } from '@storpool/daemon';

async function main(): Promise<void> {
  const env = process.env;
  const { values: args } = parseArgs({
    options: { 'controller-id': { type: 'string' }, 'map-file': { type: 'string' }, listen: { type: 'string', multiple: true }, 'log-level': { type: 'string' } },
  });
  const START_RETRY_MS = 60_000;
  const log = pino({ name: 'storpool-iscsi', level: args['log-level'] ?? env['STORPOOL_LOG_LEVEL'] ?? 'info' });
  const config = loadConfig();
  const endpoint = endpointFromConfig(config);
  const idText = args['controller-id'] ?? env['STORPOOL_ISCSI_ID'];
  const controllerId = idText !== undefined ? Number(idText) : endpoint.ourId;
  if (controllerId === undefined || !Number.isInteger(controllerId) || controllerId < 1 || controllerId > 4095) throw new Error('no controller id: pass --controller-id (1..4095), or set STORPOOL_ISCSI_ID or SP_OURID');
  const nextToConf = config.files[0] === undefined ? undefined : join(dirname(config.files[0]), 'shardmap.json');
  const mapFile = args['map-file'] ?? env['STORPOOL_MAP_FILE'] ?? (nextToConf !== undefined && existsSync(nextToConf) ? nextToConf : '/var/lib/storpool/shardmap.json');
  const listen = (args.listen ?? []).map((l) => {
    const m = /^(.*):(\d+)$/.exec(l);
    if (m === null || Number(m[2]) > 65535) throw new Error(`--listen ${l}: expected HOST:PORT`);
    return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
  });
  const mu = env['STORPOOL_ISCSI_MUTUAL_USER'];
  const ms = env['STORPOOL_ISCSI_MUTUAL_SECRET'];
  const start = (): ReturnType<typeof startIscsiService> => startIscsiService({
    controllerId, api: new StorpoolApi({ host: endpoint.host, port: endpoint.port, ...(endpoint.token !== undefined ? { token: endpoint.token } : {}) }),
    mapSource: new FileShardMapSource(mapFile), log,
    ...(listen.length > 0 ? { listen } : {}),
    ...(mu !== undefined && ms !== undefined ? { mutualChap: { username: mu, secret: ms } } : {}),
  });
  // A management API or shard map not there yet (a host booting, a loaded machine) is waited for, a while.
  const deadline = Date.now() + START_RETRY_MS;
  let service: Awaited<ReturnType<typeof startIscsiService>>;
  for (;;) {
    try {
      service = await start();
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      log.warn({ err: (err as Error).message }, 'cannot start yet; retrying');
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
  log.info({ controllerId, portals: service.addresses, mapFile }, 'storpool-iscsi running');
  stopOnSignals({ log, close: () => service.close() });
}

main().catch((err: unknown) => {
  process.stderr.write(`storpool-iscsi: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
