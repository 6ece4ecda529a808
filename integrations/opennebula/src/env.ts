/**
 * What every action needs: the API, names, the client id of a host, and commands on a host (this
 * one directly, others over ssh, as OpenNebula's own TM drivers do).
 */
import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { StorpoolApi, StorpoolApiError, loadConfig, parseIni } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';

export const MiB = 1024 * 1024;

export interface DriverEnv {
  api: StorpoolApi;
  /** Object name prefix (ONE_PX in StorPool's addon). */
  prefix: string;
  /** Where the block service makes its links: <devRoot>/storpool/<name>. */
  devRoot: string;
  /** Seconds VolumesReassignWait waits for a client that is not connected. */
  attachTimeout: number;
  /** Remote command runner (ssh); called as <ssh...> <host> <script>. */
  ssh: string[];
  localHosts: Set<string>;
  configPath: string | undefined;
  /** Location tag (nloc) on VM snapshots. */
  location: string;
  /** libvirt URI on the hosts (kvmrc's LIBVIRT_URI), for stopping a domain around a VM snapshot revert. */
  libvirtUri: string;
}

export function driverEnv(env: NodeJS.ProcessEnv = process.env): DriverEnv {
  const configPath = env['STORPOOL_CONF'];
  const short = hostname().split('.')[0] ?? hostname();
  const local = new Set(['localhost', '127.0.0.1', '::1', hostname(), short]);
  for (const h of (env['STORPOOL_ONE_LOCAL_HOSTS'] ?? '').split(/[\s,]+/)) if (h !== '') local.add(h);
  return {
    api: new StorpoolApi(configPath === undefined ? {} : { config: { path: configPath } }),
    prefix: env['ONE_PX'] ?? 'one',
    devRoot: env['STORPOOL_DEV_ROOT'] ?? '/dev',
    attachTimeout: Number(env['STORPOOL_ONE_ATTACH_TIMEOUT'] ?? 60),
    ssh: (env['STORPOOL_ONE_SSH'] ?? 'ssh').split(' ').filter(Boolean),
    localHosts: local,
    configPath,
    location: env['STORPOOL_ONE_LOCATION'] ?? short,
    libvirtUri: env['STORPOOL_ONE_LIBVIRT_URI'] ?? 'qemu:///system',
  };
}

export const names = {
  image: (e: DriverEnv, imageId: number): string => `${e.prefix}-img-${imageId}`,
  disk: (e: DriverEnv, vmId: number, diskId: number): string => `${e.prefix}-sys-${vmId}-${diskId}`,
  contextDisk: (e: DriverEnv, vmId: number, diskId: number): string => `${e.prefix}-sys-${vmId}-${diskId}-iso`,
  template: (e: DriverEnv, dsId: number): string => `${e.prefix}-ds-${dsId}`,
  /** Disk/image snapshot (TM snap_create, DS snap_*). */
  snapshot: (volume: string, snapId: number | string): string => `${volume}-snap${snapId}`,
  /** VM snapshot (one group snapshot over the VM's disks). */
  vmSnapshot: (volume: string, snapId: number | string): string => `${volume}-ONESNAP${snapId}`,
};

/** `host:path` as OpenNebula passes it (the host part may be absent). */
export function splitHostPath(arg: string): { host: string; path: string } {
  const i = arg.indexOf(':');
  if (i < 0) return { host: 'localhost', path: arg };
  return { host: arg.slice(0, i), path: arg.slice(i + 1) };
}

/** The volume named by an image SOURCE (`fe:one-img-5`, `one-img-5` or `.../one-img-5`). */
export function sourceVolume(source: string): string {
  const path = splitHostPath(source).path.replace(/\/+$/, '');
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (name === '') throw new StorpoolError('CONFIG_ERR_INVALID', `empty image source ${JSON.stringify(source)}`);
  return name;
}

/** VM id and disk id of `.../<vmid>/disk.<n>`. */
export function diskIds(path: string): { vmId: number; diskId: number } {
  const m = /\/(\d+)\/disk\.(\d+)$/.exec(path);
  if (m === null) throw new StorpoolError('CONFIG_ERR_INVALID', `not a VM disk path: ${JSON.stringify(path)} (expected .../<vmid>/disk.<n>)`);
  return { vmId: Number(m[1]), diskId: Number(m[2]) };
}

/**
 * The client id (SP_OURID) of an OpenNebula host: its [host] section of storpool.conf (this host:
 * the file's global part and its own section). Another host must have its own SP_OURID: the
 * global one is this host's, not theirs.
 */
export function clientIdOf(e: DriverEnv, host: string): number {
  const isLocal = e.localHosts.has(host);
  const cfg = loadConfig({ ...(e.configPath === undefined ? {} : { path: e.configPath }), ...(isLocal ? {} : { section: host, useEnv: false }) });
  let id = cfg.values['SP_OURID'];
  if (!isLocal) {
    id = undefined;
    for (const file of cfg.files) id = parseIni(readFileSync(file, 'utf8'), file).get(host)?.get('SP_OURID') ?? id;
  }
  if (id === undefined || !/^\d+$/.test(id)) {
    throw new StorpoolError('CONFIG_ERR_INVALID', `no SP_OURID for host ${host}: add a [${host}] section with SP_OURID to storpool.conf`);
  }
  return Number(id);
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    child.stdin?.on('error', () => {});
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Runs a shell script on a host: here directly, elsewhere through ssh. */
export function onHost(e: DriverEnv, host: string, script: string): Promise<string> {
  if (e.localHosts.has(host)) return run('sh', ['-c', script]);
  const [cmd, ...args] = e.ssh;
  return run(cmd!, [...args, host, script]);
}

/**
 * The client id of a host, or undefined when it has none (e.g. the front-end, where oned moves a
 * stopped or undeployed VM's directory, is usually no storpool client).
 */
export function clientIdIfAny(e: DriverEnv, host: string): number | undefined {
  try {
    return clientIdOf(e, host);
  } catch (err) {
    if (err instanceof StorpoolError && /^no SP_OURID for host/.test(err.message)) return undefined;
    throw err;
  }
}

export function runLocal(cmd: string, args: string[]): Promise<string> {
  return run(cmd, args);
}

/** Single-quoted for sh. */
export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function devicePath(e: DriverEnv, name: string): string {
  return `${e.devRoot}/storpool/${name}`;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StorpoolApiError && err.name === 'objectDoesNotExist';
}
