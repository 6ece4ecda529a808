/**
 * `storpool-libvirt` (and `storpool libvirt ...`, which delegates here): prints libvirt XML made
 * from the cluster's state, and defines a pool with virsh.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { StorpoolApi } from '@storpool/api-client';
import { diskXmlFromCluster, poolXmlFromCluster, volumeXmlFromCluster } from './cluster.js';
import { poolName, poolTargetPath, type DiskSource, type DiskSpec } from './xml.js';

export const LIBVIRT_USAGE = `usage:
  storpool-libvirt pool-xml TEMPLATE [--name NAME] [--dev-root DIR]
  storpool-libvirt pool-define TEMPLATE [--name NAME] [--dev-root DIR] [--connect URI] [--start]
  storpool-libvirt vol-xml VOLUME [--dev-root DIR]
  storpool-libvirt disk-xml VOLUME [--source tcp|unix|block|iscsi] [--target vda] [--bus virtio|scsi|sata|ide] [--ro]
        tcp:   [--host 127.0.0.1] [--port 10809]         (the block service's NBD listener)
        unix:  [--socket PATH | --runtime-dir /run/storpool]
        block: [--dev-root /dev]                         (/dev/storpool-byid/<globalId>)
        iscsi: --host HOST [--port 3260] --iqn IQN [--lun 0]
`;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Default: from storpool.conf / the environment. */
  api?: () => StorpoolApi;
}

const OPTIONS = {
  name: { type: 'string' }, 'dev-root': { type: 'string' }, connect: { type: 'string', short: 'c' }, start: { type: 'boolean' },
  source: { type: 'string' }, target: { type: 'string' }, bus: { type: 'string' }, ro: { type: 'boolean' }, host: { type: 'string' },
  port: { type: 'string' }, socket: { type: 'string' }, 'runtime-dir': { type: 'string' }, iqn: { type: 'string' }, lun: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

class UsageError extends Error {}

function port(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--port ${text}: expected 1..65535`);
  return n;
}

function diskSource(v: Record<string, string | boolean | undefined>): DiskSource {
  const str = (k: string): string | undefined => (typeof v[k] === 'string' ? v[k] : undefined);
  const kind = str('source') ?? 'tcp';
  const host = str('host');
  const p = port(str('port'));
  switch (kind) {
    case 'tcp': return { kind: 'nbd-tcp', ...(host !== undefined ? { host } : {}), ...(p !== undefined ? { port: p } : {}) };
    case 'unix': {
      const socket = str('socket');
      const runtimeDir = str('runtime-dir');
      return { kind: 'nbd-unix', ...(socket !== undefined ? { socket } : {}), ...(runtimeDir !== undefined ? { runtimeDir } : {}) };
    }
    case 'block': {
      const devRoot = str('dev-root');
      return { kind: 'block', ...(devRoot !== undefined ? { devRoot } : {}) };
    }
    case 'iscsi': {
      const iqn = str('iqn');
      if (host === undefined || iqn === undefined) throw new UsageError('--source iscsi needs --host and --iqn');
      const lun = str('lun') === undefined ? undefined : Number(str('lun'));
      if (lun !== undefined && (!Number.isInteger(lun) || lun < 0)) throw new UsageError(`--lun ${str('lun')}: expected a number`);
      return { kind: 'iscsi', host, iqn, ...(p !== undefined ? { port: p } : {}), ...(lun !== undefined ? { lun } : {}) };
    }
    default: throw new UsageError(`--source ${kind}: expected tcp, unix, block or iscsi`);
  }
}

function virsh(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('virsh', args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

/** Runs one command; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function runLibvirtCli(argv: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    io.stderr(`${(err as Error).message}\n${LIBVIRT_USAGE}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const [command, object, ...rest] = positionals;
  if (v.help === true || command === undefined) {
    io.stdout(LIBVIRT_USAGE);
    return v.help === true ? 0 : 2;
  }
  if (object === undefined || rest.length > 0) {
    io.stderr(`${command}: expected exactly one TEMPLATE or VOLUME\n${LIBVIRT_USAGE}`);
    return 2;
  }
  try {
    const api = (io.api ?? (() => new StorpoolApi()))();
    const devRoot = v['dev-root'];
    const pool = { template: object, ...(v.name !== undefined ? { name: v.name } : {}), ...(devRoot !== undefined ? { devRoot } : {}) };
    switch (command) {
      case 'pool-xml':
        io.stdout(await poolXmlFromCluster(api, pool));
        return 0;
      case 'pool-define': {
        const xml = await poolXmlFromCluster(api, pool);
        // libvirt's dir backend refuses to start a pool whose directory is missing; the block
        // service makes it on its first attachment.
        await mkdir(poolTargetPath(devRoot), { recursive: true });
        const dir = await mkdtemp(join(tmpdir(), 'storpool-libvirt-'));
        try {
          const file = join(dir, 'pool.xml');
          await writeFile(file, xml);
          const connect = v.connect !== undefined ? ['-c', v.connect] : [];
          const steps = [['pool-define', file], ...(v.start === true ? [['pool-start', poolName(pool)]] : [])];
          for (const step of steps) {
            const r = await virsh([...connect, ...step]);
            if (r.code !== 0) {
              io.stderr(`virsh ${step.join(' ')} failed: ${r.out}`);
              return 1;
            }
            io.stdout(r.out);
          }
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
        return 0;
      }
      case 'vol-xml':
        io.stdout(await volumeXmlFromCluster(api, object, devRoot));
        return 0;
      case 'disk-xml': {
        const bus = v.bus;
        if (bus !== undefined && !['virtio', 'scsi', 'sata', 'ide'].includes(bus)) throw new UsageError(`--bus ${bus}: expected virtio, scsi, sata or ide`);
        const extra: Omit<DiskSpec, 'volume' | 'globalId' | 'source'> = {
          ...(v.target !== undefined ? { target: v.target } : {}), ...(bus !== undefined ? { bus: bus as NonNullable<DiskSpec['bus']> } : {}),
          ...(v.ro === true ? { readOnly: true } : {}),
        };
        io.stdout(await diskXmlFromCluster(api, object, diskSource(v), extra));
        return 0;
      }
      default:
        io.stderr(`unknown command '${command}'\n${LIBVIRT_USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n`);
      return 2;
    }
    io.stderr(`storpool-libvirt: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
