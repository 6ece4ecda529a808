/**
 * storpool-server: argv parsing and process lifecycle only; the work is in DiskStore,
 * ShardService and StorageListener.
 *
 *   storpool-server disk init PATH --size SIZE --cluster-id UUID --disk-id N [--force] [--index-dir DIR]
 *   storpool-server serve --disk PATH --map FILE [--listen HOST:PORT] [--index-dir DIR] [--log-level LEVEL]
 *                         [--scrub-mbps N] [--scrub-interval SECONDS]
 */
import { parseArgs } from 'node:util';
import { ERRORS, StorpoolError, toStorpoolError } from '@storpool/errors';
import { FileShardMapSource, ShardMapView } from '@storpool/net';
import { pino } from 'pino';
import { startStorageServer } from './storage-server.js';
import { parseSize } from './size.js';
import { formatDisk } from './store/index.js';
import { stopOnSignals } from '@storpool/daemon';

const USAGE = `usage:
  storpool-server disk init PATH --size SIZE --cluster-id UUID --disk-id N [--force] [--index-dir DIR]
  storpool-server serve --disk PATH --map FILE [--listen HOST:PORT] [--index-dir DIR] [--log-level LEVEL]
                        [--scrub-mbps N] [--scrub-interval SECONDS]
    --scrub-mbps: scrubber bandwidth in MB/s (10^6 bytes; 0 = unthrottled; default 32)
    --scrub-interval: a scrub pass this many seconds after the previous one (0 = only on demand; default 604800)`;

function usage(message: string): never {
  throw new StorpoolError('CONFIG_ERR_INVALID', `${message}\n${USAGE}`);
}

function nonNegative(flag: string, text: string): number {
  if (!/^\d+(\.\d+)?$/.test(text)) usage(`${flag} ${text} is not a non-negative number`);
  return Number(text);
}

async function diskInit(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { size: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' }, force: { type: 'boolean', default: false }, 'index-dir': { type: 'string' } },
  });
  if (positionals.length !== 1) usage('disk init takes exactly one PATH');
  const clusterId = values['cluster-id'] ?? usage('--cluster-id is required');
  const diskIdText = values['disk-id'] ?? usage('--disk-id is required');
  if (!/^\d+$/.test(diskIdText)) usage(`--disk-id ${diskIdText} is not a number`);
  const sb = await formatDisk(positionals[0]!, {
    clusterId,
    diskId: Number(diskIdText),
    force: values.force,
    ...(values.size !== undefined ? { sizeBytes: parseSize(values.size) } : {}),
    ...(values['index-dir'] !== undefined ? { indexDir: values['index-dir'] } : {}),
  });
  process.stdout.write(`${JSON.stringify({ ok: true, disk: positionals[0], ...sb })}\n`);
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { disk: { type: 'string' }, map: { type: 'string' }, listen: { type: 'string' }, 'index-dir': { type: 'string' }, 'log-level': { type: 'string', default: 'info' }, 'scrub-mbps': { type: 'string' }, 'scrub-interval': { type: 'string' } },
  });
  const diskPath = values.disk ?? usage('--disk is required');
  const mapPath = values.map ?? usage('--map is required');
  let listen: { host: string; port: number } | undefined;
  if (values.listen !== undefined) {
    const m = /^(.+):(\d+)$/.exec(values.listen);
    if (m === null || Number(m[2]) > 65535) usage(`--listen ${values.listen} is not HOST:PORT`);
    listen = { host: m[1]!, port: Number(m[2]) };
  }
  const scrub = {
    ...(values['scrub-mbps'] !== undefined ? { scrubBandwidthBytesPerSecond: Math.round(nonNegative('--scrub-mbps', values['scrub-mbps']) * 1_000_000) } : {}),
    ...(values['scrub-interval'] !== undefined ? { scrubIntervalMs: Math.round(nonNegative('--scrub-interval', values['scrub-interval']) * 1000) } : {}),
  };
  const log = pino({ name: 'storpool-server', level: values['log-level'] });
  const view = await ShardMapView.open(new FileShardMapSource(mapPath));
  const server = await startStorageServer({ diskPath, view, log, ...scrub, ...(listen ? { listen } : {}), ...(values['index-dir'] !== undefined ? { indexDir: values['index-dir'] } : {}) });
  stopOnSignals({ log, close: () => server.close() });
}

async function main(argv: string[]): Promise<void> {
  const [command, sub, ...rest] = argv;
  if (command === 'disk' && sub === 'init') return diskInit(rest);
  if (command === 'serve') return serve(argv.slice(1));
  if (command === undefined || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  usage(`unknown command ${JSON.stringify(argv.join(' '))}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = toStorpoolError(err);
  process.stderr.write(`storpool-server: ${e.code}: ${e.message.split('\n').join('\n  ')}\n`);
  if (e.code === 'INTERNAL_ERR') process.stderr.write(`${(err as Error).stack ?? ''}\n`);
  process.exit(ERRORS[e.code].cliExit);
});
