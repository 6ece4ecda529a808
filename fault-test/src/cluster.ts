/**
 * FaultCluster: a whole cluster for fault tests, with every storage server on its own "host" (a
 * network namespace of a NetnsLab) so that hosts can be killed, restarted and partitioned:
 *
 *   root namespace: etcd (Debian etcd-server, private ports), storpool-mgmt (etcd backend,
 *                   publishes the shard-map file), storpool-block (client id 1, NBD unix sockets)
 *   host i (1..K):  storpool-server for disk i, listening on <host ip>:7001
 *
 * Server i is disk i, server id i, on lab host i (1-based throughout).
 *
 * Map delivery: on real hosts a server learns a new shard map over the network, so a host cut off
 * from the management plane keeps the map it had. Here every host gets its own copy of the map
 * file (<dir>/maps/host-N.json), copied from mgmt's as it changes, except to hosts partitioned from
 * the root namespace: a partitioned old primary really is on an old epoch until healed
 * (`mapDelivery: 'shared'` gives every server mgmt's own file instead). Everything is started by
 * PID and stopped in stop(), also when start() fails half-way; a process 'exit' handler SIGKILLs
 * what is left, and the lab removes namespaces and rules. Logs: <dir>/logs/*.log (FAULT_KEEP_TMP=1
 * keeps the directory).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolApi } from '@storpool/api-client';
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import { DAEMON_NODE_FLAGS } from '@storpool/daemon';
import { NetnsLab, SERVER_BIN, freePort, type LabHost, type LabProcess, type PartitionPeers } from '@storpool/testkit';
import { startEtcd, type EtcdMember } from './etcd.js';

export const MGMT_BIN = fileURLToPath(new URL('../../packages/mgmt/bin/storpool-mgmt.js', import.meta.url));
export const BLOCK_BIN = fileURLToPath(new URL('../../packages/block/bin/storpool-block.js', import.meta.url));
/** Every server listens on this port of its own host's address (namespaces do not share ports). */
export const SERVER_PORT = 7001;
export const CLIENT_ID = 1;
const MiB = 1024 * 1024;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
/** How often mgmt's map file is checked for a new map to deliver to the hosts (a stat each time). */
const MAP_DELIVERY_POLL_MS = 20;

/** What a server's command line is built from (see FaultClusterOptions.serverArgs). */
export interface ServerLaunch {
  diskId: number;
  diskPath: string;
  host: LabHost;
  port: number;
  /** The map file this server reads (its host's copy, or mgmt's own with mapDelivery 'shared'). */
  mapFile: string;
  /** etcd client URL reachable from the host namespace. */
  etcdEndpoint: string;
  mgmtUrl: string;
  logLevel: string;
}

export interface FaultClusterOptions {
  /** Storage servers (= hosts), default 3. */
  servers?: number;
  replication?: number;
  /** Bytes per disk file (sparse), default 1 GiB. */
  diskSizeBytes?: number;
  shardCount?: number;
  logLevel?: string;
  /**
   * argv of `storpool-server` (after the script) for one server; default
   * `serve --disk D --map F --listen IP:PORT --log-level L`. The place to add a metadata-store map
   * source, leases, etc.
   */
  serverArgs?: (s: ServerLaunch) => string[];
  /** Extra environment of the servers. */
  serverEnv?: Record<string, string>;
  /**
   * 'per-host' (default): each host reads its own copy of the map file, not updated while the host
   * is partitioned from the root namespace; 'shared': every server reads mgmt's file.
   */
  mapDelivery?: 'per-host' | 'shared';
  /** Extra argv of storpool-mgmt / storpool-block. */
  mgmtArgs?: string[];
  blockArgs?: string[];
}

export interface FaultServer {
  readonly diskId: number;
  readonly host: LabHost;
  readonly port: number;
  readonly diskPath: string;
  proc: LabProcess | undefined;
  /** Times this server was started. */
  starts: number;
}

export interface FaultVolume {
  name: string;
  size: number;
  /** The block service's NBD unix socket of this volume (default export = the volume). */
  socketPath: string;
  dataId: number;
  placementId: number;
  group: number;
}

export interface ReplicaDiff {
  objectIndex: number;
  disks: number[];
  problem: string;
}

interface RootChild { proc: ChildProcess; exited: Promise<void> }

const rootChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of rootChildren) c.kill('SIGKILL');
});

function spawnRoot(cmd: string, args: string[], logPath: string, env: NodeJS.ProcessEnv = process.env): RootChild {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const log = createWriteStream(logPath, { flags: 'a' });
  proc.stdout!.pipe(log);
  proc.stderr!.pipe(log);
  rootChildren.add(proc);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => {
    rootChildren.delete(proc);
    resolve();
  }));
  return { proc, exited };
}

async function stopRoot(c: RootChild | undefined): Promise<void> {
  if (c === undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill('SIGTERM');
  if (!(await Promise.race([c.exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]))) {
    c.proc.kill('SIGKILL');
    await c.exited;
  }
}

function tcpUp(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: timeoutMs });
    const done = (up: boolean): void => {
      s.destroy();
      resolve(up);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = START_TIMEOUT_MS, alive?: () => boolean): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (alive !== undefined && !alive()) throw new Error(`gave up waiting for ${what}: the process exited`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

export class FaultCluster {
  readonly dir: string;
  readonly lab: NetnsLab;
  readonly token: string;
  readonly servers: FaultServer[] = [];
  readonly mapFile: string;
  readonly runtimeDir: string;
  etcd: EtcdMember | undefined;
  mgmtUrl = '';
  api!: StorpoolApi;
  clusterId = '';
  readonly #o: FaultClusterOptions;
  #mgmt: RootChild | undefined;
  #block: RootChild | undefined;
  #clients: StorpoolClient[] = [];
  #statsClient: StorpoolClient | undefined;
  #stopped = false;
  /** Hosts that get no new map (partitioned from the root namespace). */
  readonly #mapCut = new Set<number>();
  /** Per host: the map text last delivered. */
  readonly #delivered = new Map<number, string>();
  #mapTimer: NodeJS.Timeout | undefined;
  /** Deliveries run one at a time (the timer, heal() and restartServer() all ask for one). */
  #delivering: Promise<void> = Promise.resolve();
  #mapVersion = '';
  #mapText = '';

  private constructor(dir: string, lab: NetnsLab, options: FaultClusterOptions) {
    this.dir = dir;
    this.lab = lab;
    this.#o = options;
    this.token = String(randomInt(1, 2 ** 47));
    this.mapFile = join(dir, 'shardmap.json');
    this.runtimeDir = join(dir, 'run');
  }

  static async start(options: FaultClusterOptions = {}): Promise<FaultCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'storpool-fault-'));
    let lab: NetnsLab;
    try {
      lab = await NetnsLab.create({ hosts: options.servers ?? 3 });
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const c = new FaultCluster(dir, lab, options);
    try {
      lab.adoptDir(dir);
      await c.#start();
      return c;
    } catch (err) {
      await c.stop({ keepDir: true });
      const logs = await c.logTails();
      if (process.env['FAULT_KEEP_TMP'] === undefined) await rm(dir, { recursive: true, force: true });
      throw new Error(`${(err as Error).message}\n${logs}`, { cause: err });
    }
  }

  async #start(): Promise<void> {
    await mkdir(join(this.dir, 'logs'), { recursive: true });
    await mkdir(this.runtimeDir, { recursive: true });
    this.etcd = await startEtcd(this.dir, this.lab.rootIp);
    this.lab.adopt(this.etcd.process.pid);
    const port = await freePort();
    this.mgmtUrl = `http://${this.lab.rootIp}:${port}`;
    this.api = new StorpoolApi({ host: this.lab.rootIp, port, token: this.token, ourId: CLIENT_ID });
    await this.restartMgmt();
    for (const host of this.lab.hosts) await this.#register(host);
    // The cluster id comes with the first published map; disks are formatted for it.
    const map = await until('the shard-map file', async () => {
      if (!existsSync(this.mapFile)) return undefined;
      const m = JSON.parse(await readFile(this.mapFile, 'utf8')) as { clusterId: string; disks: unknown[] };
      return m.disks.length === this.lab.hosts.length ? m : undefined;
    });
    this.clusterId = map.clusterId;
    await mkdir(join(this.dir, 'maps'), { recursive: true });
    let polling = false;
    this.#mapTimer = setInterval(() => {
      if (polling) return;
      polling = true;
      void this.deliverMaps().catch(() => undefined).finally(() => { polling = false; });
    }, MAP_DELIVERY_POLL_MS);
    this.#mapTimer.unref();
    await Promise.all(this.servers.map((s) => this.#format(s)));
    await Promise.all(this.servers.map((s) => this.restartServer(s.diskId)));
    await this.api.request('POST', 'VolumeTemplateCreate', [], { name: 'default', replication: this.#o.replication ?? 3, placeAll: 'default' });
    await this.api.request('POST', 'ClientRegister', [String(CLIENT_ID)]);
    await this.#startBlock();
  }

  /** Starts storpool-mgmt (again, on the same address and etcd); resolves once the API answers. */
  async restartMgmt(): Promise<void> {
    if (this.#mgmt !== undefined && this.#mgmt.proc.exitCode === null && this.#mgmt.proc.signalCode === null) throw new Error('storpool-mgmt is running');
    this.#mgmt = spawnRoot(process.execPath, [
      ...DAEMON_NODE_FLAGS,
      MGMT_BIN, '--etcd', this.etcd!.endpoint, '--listen', `${this.lab.rootIp}:${this.api.port}`, '--token', this.token,
      '--map-file', this.mapFile, '--log-level', this.#logLevel, ...(this.#o.mgmtArgs ?? []),
    ], join(this.dir, 'logs', 'mgmt.log'));
    this.lab.adopt(this.#mgmt.proc.pid);
    const mgmt = this.#mgmt.proc;
    await until('storpool-mgmt to answer', () => this.api.request('GET', 'VolumeTemplatesList').then(() => true, () => false), START_TIMEOUT_MS, () => mgmt.exitCode === null && mgmt.signalCode === null);
  }

  /** SIGKILLs (default) or SIGTERMs storpool-mgmt and waits until it is gone. */
  async killMgmt(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const m = this.#mgmt;
    if (m === undefined || m.proc.exitCode !== null || m.proc.signalCode !== null) return;
    m.proc.kill(signal);
    await m.exited;
  }

  /** A disk's own statistics (STATS request to its server): usage, counters. */
  async diskStats(i: number): Promise<Record<string, unknown>> {
    const client = this.#statsClient ??= await this.client();
    // The map may have grown since (addServer): the pool only knows disks of its current map.
    if (client.router.disk(this.server(i).diskId) === undefined) await client.refreshMap();
    return client.diskStats(this.server(i).diskId);
  }

  get #logLevel(): string {
    return this.#o.logLevel ?? 'info';
  }

  async #register(host: LabHost): Promise<FaultServer> {
    const s: FaultServer = { diskId: host.index, host, port: SERVER_PORT, diskPath: join(this.dir, `disk-${host.index}.img`), proc: undefined, starts: 0 };
    this.servers.push(s);
    await this.api.request('POST', 'DiskRegister', [String(s.diskId)], { serverId: s.diskId, address: { host: host.ip, port: s.port }, placementGroups: ['default'] });
    return s;
  }

  async #format(s: FaultServer): Promise<void> {
    const args = [SERVER_BIN, 'disk', 'init', s.diskPath, '--size', String(this.#o.diskSizeBytes ?? 1024 * MiB), '--cluster-id', this.clusterId, '--disk-id', String(s.diskId)];
    const proc = spawnRoot(process.execPath, args, join(this.dir, 'logs', `server-${s.diskId}.log`));
    await proc.exited;
    if (proc.proc.exitCode !== 0) throw new Error(`disk init of disk ${s.diskId} failed (${proc.proc.exitCode ?? proc.proc.signalCode})`);
  }

  async #startBlock(): Promise<void> {
    const conf = join(this.dir, 'storpool.conf');
    await writeFile(conf, [`SP_API_HTTP_HOST=${this.lab.rootIp}`, `SP_API_HTTP_PORT=${this.api.port}`, `SP_AUTH_TOKEN=${this.token}`, `SP_OURID=${CLIENT_ID}`, ''].join('\n'), { mode: 0o600 });
    this.#block = spawnRoot(process.execPath, [
      ...DAEMON_NODE_FLAGS,
      BLOCK_BIN, '--nbd', 'off', '--runtime-dir', this.runtimeDir, '--dev-root', join(this.dir, 'dev'), '--attach-method', 'none',
      '--map-file', this.mapFile, '--log-level', this.#logLevel, ...(this.#o.blockArgs ?? []),
    ], join(this.dir, 'logs', 'block.log'), { ...process.env, STORPOOL_CONF: conf, SP_OURID: String(CLIENT_ID) });
    this.lab.adopt(this.#block.proc.pid);
  }

  server(i: number): FaultServer {
    const s = this.servers[i - 1];
    if (s === undefined) throw new Error(`no server ${i} (servers are 1..${this.servers.length})`);
    return s;
  }

  #launch(s: FaultServer): ServerLaunch {
    return { diskId: s.diskId, diskPath: s.diskPath, host: s.host, port: s.port, mapFile: this.hostMapFile(s.diskId), etcdEndpoint: this.etcd!.endpoint, mgmtUrl: this.mgmtUrl, logLevel: this.#logLevel };
  }

  /** The default server command line (serverArgs may extend it). */
  static defaultServerArgs(l: ServerLaunch): string[] {
    return ['serve', '--disk', l.diskPath, '--map', l.mapFile, '--listen', `${l.host.ip}:${l.port}`, '--log-level', l.logLevel];
  }

  /**
   * Starts server i (again) in its host namespace; resolves once it accepts connections from the
   * root namespace (not waited for when `wait` is false, e.g. while the host is partitioned).
   */
  async restartServer(i: number, options: { wait?: boolean } = {}): Promise<void> {
    const s = this.server(i);
    if (s.proc !== undefined) throw new Error(`server ${i} is running (pid ${s.proc.pid})`);
    await this.deliverMaps();
    const args = (this.#o.serverArgs ?? FaultCluster.defaultServerArgs)(this.#launch(s));
    const proc = this.lab.spawn(s.host, process.execPath, [...DAEMON_NODE_FLAGS, SERVER_BIN, ...args], { env: { ...process.env, ...this.#o.serverEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(join(this.dir, 'logs', `server-${s.diskId}.log`), { flags: 'a' });
    proc.child.stdout!.pipe(log);
    proc.child.stderr!.pipe(log);
    s.proc = proc;
    s.starts++;
    void proc.exited.then(() => {
      if (s.proc === proc) s.proc = undefined;
    });
    if (options.wait === false) return;
    await until(`server ${i} to listen on ${s.host.ip}:${s.port}`, () => tcpUp(s.host.ip, s.port), START_TIMEOUT_MS, () => s.proc === proc);
  }

  /** Signals server i; with SIGKILL (default) waits until it is gone. */
  async killServer(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const s = this.server(i);
    if (s.proc === undefined) return;
    const proc = s.proc;
    await this.lab.kill(proc, signal, true);
    if (s.proc === proc) s.proc = undefined;
  }

  /**
   * Cuts host i off (default: from everyone, root namespace included: mgmt, etcd, the block
   * service). Cut from the root namespace, the host gets no new shard map until healed.
   */
  async partitionHost(i: number, from: PartitionPeers = 'all'): Promise<void> {
    // Before the rules: no map may slip through once the host is cut.
    if (from === 'all' || from.includes('root')) this.#mapCut.add(i);
    await this.lab.partition(this.server(i).host, { from: from === 'all' ? 'all' : from.map((p) => (p === 'root' ? p : this.server(typeof p === 'number' ? p : p.index).host)) });
  }

  /** Removes host i's partition rules (every host's without an argument); its map is delivered again. */
  async heal(i?: number): Promise<void> {
    await this.lab.heal(i === undefined ? undefined : this.server(i).host);
    if (i === undefined) this.#mapCut.clear();
    else this.#mapCut.delete(i);
    await this.deliverMaps();
  }

  /** The shard-map file server i reads (mgmt's own with mapDelivery 'shared'). */
  hostMapFile(i: number): string {
    return this.#o.mapDelivery === 'shared' ? this.mapFile : join(this.dir, 'maps', `host-${i}.json`);
  }

  /** The epoch of the map server i's host was last given (mgmt's with mapDelivery 'shared'). */
  async hostMapEpoch(i: number): Promise<number> {
    return (JSON.parse(await readFile(this.hostMapFile(i), 'utf8')) as { epoch: number }).epoch;
  }

  /** Copies mgmt's map file to every host not cut from the root namespace, if it changed (atomically: temp + rename). */
  deliverMaps(): Promise<void> {
    if (this.#o.mapDelivery === 'shared') return Promise.resolve();
    const run = this.#delivering.then(async () => {
      const st = await stat(this.mapFile).catch(() => undefined);
      if (st === undefined) return;
      // mgmt replaces the file (temp + rename): a new inode or mtime is a new map.
      const version = `${st.ino}/${st.mtimeMs}`;
      if (version !== this.#mapVersion) {
        this.#mapText = await readFile(this.mapFile, 'utf8');
        this.#mapVersion = version;
      }
      for (const s of this.servers) {
        if (this.#mapCut.has(s.diskId) || this.#delivered.get(s.diskId) === this.#mapText) continue;
        const path = this.hostMapFile(s.diskId);
        await writeFile(`${path}.tmp`, this.#mapText);
        await rename(`${path}.tmp`, path);
        this.#delivered.set(s.diskId, this.#mapText);
      }
    });
    // A failed delivery (the directory going away at stop) must not block the next ones.
    this.#delivering = run.catch(() => undefined);
    return run;
  }

  /**
   * A new host with a new disk and server, registered in the placement group `default`: mgmt
   * puts the disk in the target placement of its share of the shards, it joins them and the
   * primaries copy them to it (docs/resilience.md, rebalancing).
   */
  async addServer(): Promise<FaultServer> {
    const host = await this.lab.addHost();
    const s = await this.#register(host);
    await this.#format(s);
    await this.restartServer(s.diskId);
    return s;
  }

  /** Creates a volume from template `default`, attaches it to the block service, waits for its socket. */
  async createVolume(name: string, size = 64 * MiB): Promise<FaultVolume> {
    await this.api.request('POST', 'VolumeCreate', [], { name, size, template: 'default' });
    await this.api.volumesReassignWait({ reassign: [{ volume: name, rw: [CLIENT_ID] }], attachTimeout: 60 });
    const socketPath = join(this.runtimeDir, 'nbd', `${name}.sock`);
    await until(`the NBD socket of ${name}`, async () => existsSync(socketPath));
    const att = await this.api.request<{ attachments: { name: string; dataId: number; placementId: number; group: number }[] }>('GET', 'ClientAttachments', [String(CLIENT_ID)]);
    const a = att.data.attachments.find((x) => x.name === name);
    if (a === undefined) throw new Error(`volume ${name} is not in ClientAttachments/${CLIENT_ID}`);
    return { name, size, socketPath, dataId: a.dataId, placementId: a.placementId, group: a.group };
  }

  /** A client library instance on the published map (closed by stop()). */
  async client(): Promise<StorpoolClient> {
    const client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(this.mapFile), clientId: 4000 + this.#clients.length, requestTimeoutMs: 10_000, retryDeadlineMs: 20_000 });
    this.#clients.push(client);
    return client;
  }

  /**
   * Reads every object of a volume from every replica the current map names (no repair, no
   * forwarding) and returns the differences: data or version mismatches, and replicas that could
   * not be read. Empty means all replicas are equal.
   */
  async compareReplicas(vol: FaultVolume): Promise<{ objects: number; diffs: ReplicaDiff[] }> {
    const client = await this.client();
    await client.refreshMap();
    const objectBytes = 4 * MiB;
    const objects = Math.ceil(vol.size / objectBytes);
    const diffs: ReplicaDiff[] = [];
    for (let obj = 0; obj < objects; obj++) {
      const { replicas } = client.router.locate(vol.group, vol.placementId, obj);
      const copies: { disk: number; data?: Buffer; version?: number; error?: string }[] = [];
      for (const disk of replicas) {
        try {
          const r = await client.readReplica(disk, vol.group, vol.dataId, obj, 0, objectBytes, vol.placementId);
          copies.push({ disk, data: r.data, version: r.version });
        } catch (err) {
          copies.push({ disk, error: (err as Error).message });
        }
      }
      const failed = copies.filter((c) => c.error !== undefined);
      if (failed.length > 0) {
        diffs.push({ objectIndex: obj, disks: failed.map((c) => c.disk), problem: `unreadable: ${failed.map((c) => `disk ${c.disk}: ${c.error}`).join('; ')}` });
        continue;
      }
      const [first, ...rest] = copies;
      for (const c of rest) {
        if (!c.data!.equals(first!.data!)) diffs.push({ objectIndex: obj, disks: [first!.disk, c.disk], problem: `data differs (versions ${first!.version} / ${c.version})` });
        else if (c.version !== first!.version) diffs.push({ objectIndex: obj, disks: [first!.disk, c.disk], problem: `versions differ: ${first!.version} / ${c.version}` });
      }
    }
    return { objects, diffs };
  }

  /** compareReplicas() until there is no difference (e.g. after a catch-up); the last result either way. */
  async waitReplicasEqual(vol: FaultVolume, timeoutMs = 60_000): Promise<{ objects: number; diffs: ReplicaDiff[] }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.compareReplicas(vol);
      if (r.diffs.length === 0 || Date.now() > deadline) return r;
      await sleep(1_000);
    }
  }

  /** The last lines of every log (for failure messages). */
  async logTails(lines = 15): Promise<string> {
    const out: string[] = [];
    for (const name of ['mgmt', 'block', ...this.servers.map((s) => `server-${s.diskId}`)]) {
      const text = await readFile(join(this.dir, 'logs', `${name}.log`), 'utf8').catch(() => '');
      if (text !== '') out.push(`--- ${name}.log`, ...text.trimEnd().split('\n').slice(-lines));
    }
    return out.join('\n');
  }

  /** Stops everything by PID (block service, servers, mgmt, etcd), removes the lab and the directory. */
  async stop(options: { keepDir?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#mapTimer !== undefined) clearInterval(this.#mapTimer);
    for (const c of this.#clients) c.close();
    this.#clients = [];
    const errors: unknown[] = [];
    const step = async (fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    await step(() => stopRoot(this.#block));
    await step(async () => {
      await this.lab.heal().catch(() => undefined);
      await Promise.all(this.servers.map(async (s) => {
        if (s.proc === undefined) return;
        const proc = s.proc;
        await this.lab.kill(proc, 'SIGTERM', false);
        if (!(await Promise.race([proc.exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]))) await this.lab.kill(proc, 'SIGKILL');
      }));
    });
    await step(() => stopRoot(this.#mgmt));
    await step(async () => {
      if (this.etcd === undefined) return;
      await stopRoot({ proc: this.etcd.process, exited: this.etcd.exited });
    });
    await step(() => this.lab.destroy());
    if (options.keepDir !== true && process.env['FAULT_KEEP_TMP'] === undefined) await step(() => rm(this.dir, { recursive: true, force: true }));
    if (errors.length > 0) throw new AggregateError(errors, 'FaultCluster.stop: some steps failed');
  }
}
