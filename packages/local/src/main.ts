/**
 * storpool-local (`npm start`): a whole cluster on this host. Environment:
 *   STORPOOL_DATA     data directory (default ./.storpool)
 *   SP_API_HTTP_HOST  API address (default 127.0.0.1)
 *   SP_API_HTTP_PORT  API port (default 8181)
 *   SP_AUTH_TOKEN     API token (default: kept from the data directory's storpool.conf, else new)
 *   STORPOOL_DISK_SIZE  bytes per disk file on first run (default 4 GiB, sparse)
 *   STORPOOL_LOG_LEVEL  log level (default info)
 *   STORPOOL_BLOCK      `off`: do not start this host's block service (storpool-block)
 *   STORPOOL_NBD_LISTEN the block service's NBD address (default 127.0.0.1:10809)
 *   STORPOOL_ISCSI      `off`: do not start storpool-iscsi
 *   STORPOOL_ISCSI_PORTAL its portal (default 127.0.0.1:3260 as root, else 127.0.0.1:13260)
 */
import { resolve } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_PORT, startLocalCluster } from './index.js';
import { stopOnSignals } from '@storpool/daemon';

async function main(): Promise<void> {
  const env = process.env;
  const log = pino({ name: 'storpool-local', level: env['STORPOOL_LOG_LEVEL'] ?? 'info' });
  const dataDir = resolve(env['STORPOOL_DATA'] ?? '.storpool');
  const portText = env['SP_API_HTTP_PORT'] ?? String(DEFAULT_PORT);
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) throw new Error(`SP_API_HTTP_PORT=${portText} is not a port number`);
  const sizeText = env['STORPOOL_DISK_SIZE'];
  if (sizeText !== undefined && !/^\d+$/.test(sizeText)) throw new Error(`STORPOOL_DISK_SIZE=${sizeText} must be a number of bytes`);
  const cluster = await startLocalCluster({
    dataDir, port: Number(portText), log, serverLogLevel: 'info',
    // This host's block service (SP_OURID 1): volumes attached `here` appear as /dev/storpool/NAME
    // and as NBD exports on STORPOOL_NBD_LISTEN (default 127.0.0.1:10809); STORPOOL_BLOCK=off skips it.
    ...(env['STORPOOL_BLOCK'] === 'off' ? {} : { block: { ...(env['STORPOOL_NBD_LISTEN'] !== undefined ? { nbd: env['STORPOOL_NBD_LISTEN'] } : {}) } }),
    ...(env['STORPOOL_ISCSI'] === 'off' ? {} : { iscsi: env['STORPOOL_ISCSI_PORTAL'] !== undefined ? { portal: env['STORPOOL_ISCSI_PORTAL'] } : true }),
    ...(env['SP_API_HTTP_HOST'] !== undefined ? { host: env['SP_API_HTTP_HOST'] } : {}),
    ...(env['SP_AUTH_TOKEN'] !== undefined && env['SP_AUTH_TOKEN'] !== '' ? { token: env['SP_AUTH_TOKEN'] } : {}),
    ...(sizeText !== undefined ? { diskSizeBytes: Number(sizeText) } : {}),
  });
  process.stdout.write([
    '',
    `storpool local cluster is up: ${cluster.servers.length} storage servers, data in ${cluster.dataDir}`,
    `STORPOOL_API=${cluster.url}/ctrl/1.0/`,
    ...(cluster.block !== undefined ? [`block service: NBD on ${cluster.block.nbd}, devices in ${cluster.block.devRoot}/storpool (logs/block.log)`] : []),
    ...(cluster.iscsi !== undefined ? [`iSCSI target: portal ${cluster.iscsi.portal} (storpool iscsi ..., logs/iscsi.log)`] : []),
    `config (for the storpool CLI): ${cluster.confPath}   e.g. cp ${cluster.confPath} /etc/storpool.conf`,
    'try:',
    `  curl -s -H 'Authorization: Storpool v1:${cluster.token}' ${cluster.url}/ctrl/1.0/VolumeTemplatesList`,
    `  curl -s -H 'Authorization: Storpool v1:${cluster.token}' -d '{"name":"vol1","size":1073741824,"template":"default"}' ${cluster.url}/ctrl/1.0/VolumeCreate`,
    'Ctrl-C stops everything.',
    '',
  ].join('\n'));
  const life = stopOnSignals({ log, close: () => cluster.stop(), message: 'stopping the local cluster' });
  for (const s of cluster.servers) {
    void s.exited.then(() => { if (!life.stopping) log.error({ diskId: s.diskId }, 'storage server exited unexpectedly; see logs/'); });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`storpool-local: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
