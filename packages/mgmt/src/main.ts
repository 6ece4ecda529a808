/**
 * storpool-mgmt: argv and environment only; the work is in service.ts.
 *
 *   storpool-mgmt (--meta-dir DIR | --etcd URL,URL [--etcd-prefix P] [--etcd-timeout SECONDS]) [--listen HOST:PORT]
 *                 [--token TOKEN] [--map-file PATH] [--log-level LEVEL]
 *
 * Environment: SP_API_HTTP_HOST, SP_API_HTTP_PORT, SP_AUTH_TOKEN (the flags win).
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ERRORS, StorpoolError, toStorpoolError } from '@storpool/errors';
import type { MetaConfig } from '@storpool/meta';
import { pino } from 'pino';
import { startManagementService } from './service.js';
import { stopOnSignals } from '@storpool/daemon';

const USAGE = `usage: storpool-mgmt (--meta-dir DIR | --etcd URL[,URL...] [--etcd-prefix PREFIX] [--etcd-timeout SECONDS])
                     [--listen HOST:PORT] [--token TOKEN] [--map-file PATH] [--log-level LEVEL]
                     [--down-after SECONDS] [--re-replicate-after SECONDS] [--min-replicas N] [--sync-mbps MB/s]
environment: SP_API_HTTP_HOST, SP_API_HTTP_PORT (default 127.0.0.1:81), SP_AUTH_TOKEN`;

function usage(message: string): never {
  throw new StorpoolError('CONFIG_ERR_INVALID', `${message}\n${USAGE}`);
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'meta-dir': { type: 'string' }, etcd: { type: 'string' }, 'etcd-prefix': { type: 'string' }, 'etcd-timeout': { type: 'string' }, listen: { type: 'string' },
      token: { type: 'string' }, 'map-file': { type: 'string' }, 'log-level': { type: 'string', default: 'info' }, help: { type: 'boolean', short: 'h' },
      'down-after': { type: 'string' }, 're-replicate-after': { type: 'string' }, 'min-replicas': { type: 'string' }, 'sync-mbps': { type: 'string' },
    },
  });
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let meta: MetaConfig;
  if (values['meta-dir'] !== undefined && values.etcd !== undefined) usage('give either --meta-dir or --etcd');
  if (values['meta-dir'] !== undefined) meta = { backend: 'embedded', dir: resolve(values['meta-dir']) };
  else if (values.etcd !== undefined) {
    const timeout = values['etcd-timeout'];
    if (timeout !== undefined && (!/^\d+(\.\d+)?$/.test(timeout) || Number(timeout) < 0.1 || Number(timeout) > 600)) usage(`--etcd-timeout ${timeout} must be seconds between 0.1 and 600`);
    meta = {
      backend: 'etcd', endpoints: values.etcd.split(',').filter((e) => e !== ''),
      ...(values['etcd-prefix'] !== undefined ? { prefix: values['etcd-prefix'] } : {}),
      ...(timeout !== undefined ? { callTimeoutMs: Math.round(Number(timeout) * 1000) } : {}),
    };
  } else usage('--meta-dir or --etcd is required');
  let host = process.env['SP_API_HTTP_HOST'] ?? '127.0.0.1';
  let portText = process.env['SP_API_HTTP_PORT'] ?? '81';
  if (values.listen !== undefined) {
    const m = /^(.+):(\d+)$/.exec(values.listen);
    if (m === null) usage(`--listen ${values.listen} is not HOST:PORT`);
    host = m[1]!.replace(/^\[(.*)\]$/, '$1');
    portText = m[2]!;
  }
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) usage(`port ${portText} is not a port number`);
  const token = values.token ?? process.env['SP_AUTH_TOKEN'];
  if (token === undefined || token === '') usage('--token or SP_AUTH_TOKEN is required');
  const number = (flag: 'down-after' | 're-replicate-after' | 'min-replicas' | 'sync-mbps', min: number): number | undefined => {
    const text = values[flag];
    if (text === undefined) return undefined;
    if (!/^\d+(\.\d+)?$/.test(text) || Number(text) < min) usage(`--${flag} ${text} must be a number >= ${min}`);
    return Number(text);
  };
  const downAfter = number('down-after', 0.5);
  const reReplicateAfter = number('re-replicate-after', 1);
  const minReplicas = number('min-replicas', 1);
  const syncMbps = number('sync-mbps', 0);
  if (minReplicas !== undefined && !Number.isInteger(minReplicas)) usage('--min-replicas must be a whole number');
  const log = pino({ name: 'storpool-mgmt', level: values['log-level'] });
  const service = await startManagementService({
    meta, host, port: Number(portText), token, log, ...(values['map-file'] !== undefined ? { mapFile: resolve(values['map-file']) } : {}),
    ...(downAfter !== undefined ? { downAfterMs: downAfter * 1000 } : {}),
    ...(reReplicateAfter !== undefined ? { reReplicateAfterMs: reReplicateAfter * 1000 } : {}),
    ...(minReplicas !== undefined ? { minReplicas } : {}),
    ...(syncMbps !== undefined ? { syncBytesPerSec: syncMbps * 1_000_000 } : {}),
  });
  stopOnSignals({ log, close: () => service.close() });
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = toStorpoolError(err);
  process.stderr.write(`storpool-mgmt: ${e.code}: ${e.message.split('\n').join('\n  ')}\n`);
  if (e.code === 'INTERNAL_ERR') process.stderr.write(`${(err as Error).stack ?? ''}\n`);
  process.exit(ERRORS[e.code].cliExit);
});
