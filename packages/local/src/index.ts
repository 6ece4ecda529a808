/**
 * The one-command local cluster: N storage servers with file-backed disks under a data directory
 * and storpool-mgmt (embedded metadata store) in this process. Disks are formatted on the first
 * run and reused afterwards; every child is stopped by PID in stop().
 *
 * Data directory layout:
 *   meta/            the embedded metadata store (cluster, volumes, shard map...)
 *   disk-N.img       the disk of storage server N
 *   shardmap.json    the shard map as published by storpool-mgmt (servers read it)
 *   storpool.conf    SP_API_HTTP_HOST / SP_API_HTTP_PORT / SP_AUTH_TOKEN / SP_OURID / SP_CLUSTER_ID
 *   logs/server-N.log
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { DAEMON_NODE_FLAGS } from '@storpool/daemon';
import { startManagementService, type ManagementService, type ManagementServiceOptions } from '@storpool/mgmt';
import { pino, type Logger } from 'pino';

export const SERVER_BIN = fileURLToPath(new URL('../../server/bin/storpool-server.js', import.meta.url));
export const BLOCK_BIN = fileURLToPath(new URL('../../block/bin/storpool-block.js', import.meta.url));
export const ISCSI_BIN = fileURLToPath(new URL('../../iscsi/bin/storpool-iscsi.js', import.meta.url));

/** The block service (storpool-block) of this host, started with SP_OURID = ourId. */
export interface LocalBlockOptions {
  /** NBD TCP address, `HOST:PORT` or `off`; default 127.0.0.1:10809. */
  nbd?: string;
  /** Default /run/storpool as root, else <dataDir>/run. */
  runtimeDir?: string;
  /** Default /dev as root (links in /dev/storpool, /dev/storpool-byid), else <dataDir>/dev. */
  devRoot?: string;
  /** Default auto as root, else none (no devices: loop and FUSE mounts need root). */
  attachMethod?: 'auto' | 'nbd' | 'nbdfuse' | 'none';
  logLevel?: string;
}

export interface LocalClusterOptions {
  dataDir: string;
  /** API address; defaults 127.0.0.1 and 8181 (StorPool's own 81 needs root). */
  host?: string;
  port?: number;
  /** Default: the token of an existing storpool.conf, else a new random one. */
  token?: string;
  disks?: number;
  diskSizeBytes?: number;
  /** SP_OURID of this host (registered as a client). */
  ourId?: number;
  log?: Logger;
  serverLogLevel?: string;
  /** More `storpool-server serve` arguments (e.g. `--scrub-mbps 2`). */
  serverArgs?: string[];
  shardCount?: number;
  /** More options for the management service (failure detection timings, minReplicas...). */
  mgmt?: Pick<ManagementServiceOptions, 'probeIntervalMs' | 'downAfterMs' | 'reReplicateAfterMs' | 'syncBytesPerSec' | 'minReplicas'>;
  /** Also start this host's block service (logs/block.log). Default: not started. */
  block?: boolean | LocalBlockOptions;
  /**
   * Also start storpool-iscsi (logs/iscsi.log) with one portal `HOST:PORT` (default 127.0.0.1:3260
   * as root, else 127.0.0.1:13260) in portal group `local`, controller = ourId. Default: not started.
   */
  iscsi?: boolean | { portal?: string };
}

export interface LocalServer {
  diskId: number;
  diskPath: string;
  port: number;
  process: ChildProcess;
  exited: Promise<void>;
}

export interface LocalCluster {
  dataDir: string;
  url: string;
  token: string;
  confPath: string;
  mapFile: string;
  service: ManagementService;
  servers: LocalServer[];
  /** The block service, when started (`block` option). */
  block?: { process: ChildProcess; exited: Promise<void>; nbd: string; devRoot: string; runtimeDir: string };
  /** storpool-iscsi, when started (`iscsi` option). */
  iscsi?: { process: ChildProcess; exited: Promise<void>; portal: string };
  stop(): Promise<void>;
}

export const DEFAULT_PORT = 8181;
const DEFAULT_DISK_BYTES = 4 * 1024 ** 3;
// A process that exits fails the start at once; one that is alive but slow (a loaded machine, a
// cold tsx cache) is waited for: the integration tests' second-start retries worked around 30 s.
const SERVER_START_TIMEOUT_MS = 120_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;
const BLOCK_START_TIMEOUT_MS = 120_000;

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port'));
      s.close(() => resolvePort(addr.port));
    });
  });
}

async function run(args: string[]): Promise<void> {
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, SERVER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  if (code !== 0) throw new Error(`storpool-server ${args.join(' ')} failed (${code}): ${output.trim()}`);
}

/** Reads KEY=value lines (storpool.conf format). */
export async function readConf(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  if (!existsSync(path)) return out;
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    const m = /^\s*([A-Z_][A-Z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m !== null) out[m[1]!] = m[2]!;
  }
  return out;
}

async function waitListening(port: number, child: ChildProcess, diskId: number): Promise<void> {
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`storage server of disk ${diskId} exited before listening (see logs/server-${diskId}.log)`);
    const up = await new Promise<boolean>((r) => {
      const probe = connect({ host: '127.0.0.1', port });
      probe.once('connect', () => { probe.destroy(); r(true); });
      probe.once('error', () => { probe.destroy(); r(false); });
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`storage server of disk ${diskId} not listening on ${port} after ${SERVER_START_TIMEOUT_MS} ms`);
    await sleep(50);
  }
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const done = await Promise.race([exited.then(() => true), sleep(SERVER_STOP_TIMEOUT_MS).then(() => false)]);
  if (!done) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** The default template of a local cluster: 3 copies on the `default` placement group. */
async function createDefaultTemplate(url: string, token: string): Promise<void> {
  const response = await fetch(`${url}/ctrl/1.0/VolumeTemplateCreate`, {
    method: 'POST',
    headers: { Authorization: `Storpool v1:${token}` },
    body: JSON.stringify({ name: 'default', replication: 3, placeAll: 'default' }),
  });
  const body = (await response.json()) as { error?: { name: string; descr: string } };
  if (body.error !== undefined && body.error.name !== 'objectExists') throw new Error(`cannot create the default template: ${body.error.descr}`);
}

export async function startLocalCluster(o: LocalClusterOptions): Promise<LocalCluster> {
  const log = o.log ?? pino({ name: 'storpool-local', level: 'silent' });
  const dataDir = resolve(o.dataDir);
  await mkdir(join(dataDir, 'logs'), { recursive: true });
  const confPath = join(dataDir, 'storpool.conf');
  const mapFile = join(dataDir, 'shardmap.json');
  const previous = await readConf(confPath);
  const token = o.token ?? previous['SP_AUTH_TOKEN'] ?? String(randomInt(1, 2 ** 47)) + String(randomInt(100000, 999999));
  const host = o.host ?? '127.0.0.1';
  const ourId = o.ourId ?? 1;
  const servers: LocalServer[] = [];
  let service: ManagementService | undefined;
  let block: LocalCluster['block'];
  let iscsi: LocalCluster['iscsi'];
  const stop = async (): Promise<void> => {
    if (iscsi !== undefined) await stopChild(iscsi.process, iscsi.exited);
    iscsi = undefined;
    // The block service first: it detaches its devices while the storage is still there.
    if (block !== undefined) await stopChild(block.process, block.exited);
    block = undefined;
    await Promise.all(servers.map((s) => stopChild(s.process, s.exited)));
    await service?.close();
    service = undefined;
  };
  try {
    service = await startManagementService({
      meta: { backend: 'embedded', dir: join(dataDir, 'meta') }, host, port: o.port ?? DEFAULT_PORT, token, mapFile,
      log: log.child({ component: 'mgmt' }), ...(o.shardCount !== undefined ? { shardCount: o.shardCount } : {}), ...o.mgmt,
    });
    const clusterId = service.cluster.clusterId;
    const diskCount = o.disks ?? 3;
    const disks: { id: number; path: string; port: number }[] = [];
    for (let id = 1; id <= diskCount; id++) {
      const path = join(dataDir, `disk-${id}.img`);
      if (!existsSync(path)) {
        log.info({ disk: path }, 'formatting disk');
        await run(['disk', 'init', path, '--size', String(o.diskSizeBytes ?? DEFAULT_DISK_BYTES), '--cluster-id', clusterId, '--disk-id', String(id)]);
      }
      const port = await freePort();
      disks.push({ id, path, port });
      await service.registerDisk({ id, serverId: id, address: { host: '127.0.0.1', port }, placementGroups: ['default'] });
    }
    const state = await service.model.read();
    if (!state.templates.has('default')) await createDefaultTemplate(service.url, token);
    await service.registerClient(ourId);
    await service.publishShardMap();
    for (const d of disks) {
      const logFile = createWriteStream(join(dataDir, 'logs', `server-${d.id}.log`), { flags: 'a' });
      const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, SERVER_BIN, 'serve', '--disk', d.path, '--map', mapFile, '--log-level', o.serverLogLevel ?? 'info', ...(o.serverArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout?.pipe(logFile);
      child.stderr?.pipe(logFile);
      const exited = new Promise<void>((r) => child.once('exit', (code, signal) => {
        log.info({ diskId: d.id, code, signal }, 'storage server exited');
        r();
      }));
      servers.push({ diskId: d.id, diskPath: d.path, port: d.port, process: child, exited });
    }
    await Promise.all(servers.map((s) => waitListening(s.port, s.process, s.diskId)));
    const url = service.url;
    const conf = [
      '# written by storpool-local; read by the storpool CLI and the integrations',
      `SP_API_HTTP_HOST=${host}`, `SP_API_HTTP_PORT=${service.port}`, `SP_AUTH_TOKEN=${token}`, `SP_OURID=${ourId}`,
      `SP_CLUSTER_ID=${service.cluster.spClusterId}`, `SP_CLUSTER_NAME=${service.cluster.name}`, '',
    ].join('\n');
    await writeFile(confPath, conf, { mode: 0o600 });
    if (o.block !== undefined && o.block !== false) block = await startBlock(o.block === true ? {} : o.block, dataDir, confPath, mapFile, ourId, service, log);
    if (o.iscsi !== undefined && o.iscsi !== false) iscsi = await startIscsi(o.iscsi === true ? {} : o.iscsi, dataDir, confPath, mapFile, ourId, service.url, token, log);
    return { dataDir, url, token, confPath, mapFile, service, servers, ...(block !== undefined ? { block } : {}), ...(iscsi !== undefined ? { iscsi } : {}), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** One portal group `local` with one portal of this host, then storpool-iscsi (see packages/iscsi). */
async function startIscsi(i: { portal?: string }, dataDir: string, confPath: string, mapFile: string, ourId: number, url: string, token: string, log: Logger): Promise<NonNullable<LocalCluster['iscsi']>> {
  const portal = i.portal ?? (process.getuid?.() === 0 ? '127.0.0.1:3260' : '127.0.0.1:13260');
  const m = /^(.*):(\d+)$/.exec(portal);
  if (m === null) throw new Error(`iSCSI portal ${portal}: expected HOST:PORT`);
  const commands = [
    { setBaseName: { name: 'iqn.2026-11.com.storpool:local' } }, { createPortalGroup: { name: 'local' } },
    { createPortal: { portalGroup: 'local', controller: ourId, ip: m[1]!, port: Number(m[2]) } },
  ];
  // One command at a time: on a reused data directory they exist already (objectExists, busy).
  for (const c of commands) {
    await fetch(`${url}/ctrl/1.0/iSCSIConfig`, { method: 'POST', headers: { Authorization: `Storpool v1:${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ commands: [c] }) });
  }
  const logFile = createWriteStream(join(dataDir, 'logs', 'iscsi.log'), { flags: 'a' });
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ISCSI_BIN, '--controller-id', String(ourId), '--map-file', mapFile], { env: { ...process.env, STORPOOL_CONF: confPath }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(logFile);
  child.stderr?.pipe(logFile);
  const exited = new Promise<void>((r) => child.once('exit', (code, signal) => {
    log.info({ code, signal }, 'storpool-iscsi exited');
    r();
  }));
  const deadline = Date.now() + BLOCK_START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('storpool-iscsi exited at startup (see logs/iscsi.log)');
    const up = await new Promise<boolean>((r) => {
      const s = connect(Number(m[2]), m[1]!);
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (up) break;
    if (Date.now() > deadline) {
      await stopChild(child, exited);
      throw new Error(`storpool-iscsi did not listen on ${portal} within ${BLOCK_START_TIMEOUT_MS} ms (see logs/iscsi.log)`);
    }
    await sleep(100);
  }
  return { process: child, exited, portal };
}

async function startBlock(b: LocalBlockOptions, dataDir: string, confPath: string, mapFile: string, ourId: number, service: ManagementService, log: Logger): Promise<NonNullable<LocalCluster['block']>> {
  const root = process.getuid?.() === 0;
  const nbd = b.nbd ?? '127.0.0.1:10809';
  const runtimeDir = b.runtimeDir ?? (root ? '/run/storpool' : join(dataDir, 'run'));
  const devRoot = b.devRoot ?? (root ? '/dev' : join(dataDir, 'dev'));
  const method = b.attachMethod ?? (root ? 'auto' : 'none');
  const logFile = createWriteStream(join(dataDir, 'logs', 'block.log'), { flags: 'a' });
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, BLOCK_BIN, '--nbd', nbd, '--runtime-dir', runtimeDir, '--dev-root', devRoot, '--attach-method', method, '--map-file', mapFile, '--log-level', b.logLevel ?? 'info'], {
    env: { ...process.env, STORPOOL_CONF: confPath, SP_OURID: String(ourId) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(logFile);
  child.stderr?.pipe(logFile);
  const exited = new Promise<void>((r) => child.once('exit', (code, signal) => {
    log.info({ code, signal }, 'block service exited');
    r();
  }));
  const handle = { process: child, exited, nbd, devRoot, runtimeDir };
  // Ready once it has reported to mgmt (VolumesReassignWait waits for it from then on).
  const deadline = Date.now() + BLOCK_START_TIMEOUT_MS;
  while ((await service.meta.get(`mgmt-clients/${ourId}`)) === undefined) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('the block service exited at startup (see logs/block.log)');
    if (Date.now() > deadline) {
      await stopChild(child, exited);
      throw new Error(`the block service did not report within ${BLOCK_START_TIMEOUT_MS} ms (see logs/block.log)`);
    }
    await sleep(50);
  }
  return handle;
}

/** A local cluster for integration tests, with a raw API caller (see test-cluster.ts). */
export { startTestCluster, type TestCluster, type Raw } from './test-cluster.js';
