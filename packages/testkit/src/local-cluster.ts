/**
 * Real storage-server processes on 127.0.0.1 with file-backed disks in a temp dir: the harness of
 * the integration tests, the benchmarks and `npm start`. Every process it starts is stopped by
 * PID in stop(), also when a test failed.
 */
import { randomUUID } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorpoolClient, FileShardMapSource, type ClientOptions } from '@storpool/client';
import { DAEMON_NODE_FLAGS } from '@storpool/daemon';
import { buildShardGroup, type DiskEntry, type ShardMap } from '@storpool/protocol';
import { spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';

export const SERVER_BIN = fileURLToPath(new URL('../../server/bin/storpool-server.js', import.meta.url));

export interface LocalClusterOptions {
  disks?: number;
  diskSizeBytes?: number;
  /** Shard groups to create: id 1 "r<replication>" for each replication given. */
  replications?: number[];
  shardCount?: number;
  /** Keep data here instead of a fresh temp dir (not removed on stop). */
  dir?: string;
  logLevel?: string;
  /** Print server logs to this process's stderr. */
  inheritLogs?: boolean;
  /**
   * Write the disk files full of zeros before formatting ("thick"), as a real block device is:
   * without it the first write of every block also allocates filesystem extents (a journal
   * commit per fdatasync), which a benchmark should not measure.
   */
  preallocate?: boolean;
  /** More `storpool-server serve` arguments (e.g. `--scrub-mbps 2`). */
  serverArgs?: string[];
}

export interface ServerProcess {
  diskId: number;
  diskPath: string;
  port: number;
  proc: ChildProcess | undefined;
  exited: Promise<void> | undefined;
  log: string[];
}

/** Server processes of every LocalCluster of this process: killed if the process exits without stop(). */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port'));
      s.close(() => resolve(addr.port));
    });
  });
}

export class LocalCluster {
  readonly dir: string;
  readonly clusterId: string;
  readonly mapPath: string;
  readonly servers = new Map<number, ServerProcess>();
  map: ShardMap;
  readonly #ownsDir: boolean;
  readonly #o: LocalClusterOptions;
  #clients: StorpoolClient[] = [];

  private constructor(dir: string, ownsDir: boolean, clusterId: string, map: ShardMap, options: LocalClusterOptions) {
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.clusterId = clusterId;
    this.map = map;
    this.mapPath = join(dir, 'shardmap.json');
    this.#o = options;
  }

  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    const diskCount = options.disks ?? 3;
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'storpool-cluster-')));
    const clusterId = randomUUID();
    const disks: DiskEntry[] = [];
    for (let i = 1; i <= diskCount; i++) {
      disks.push({ id: i, serverId: i, faultSet: '', address: { host: '127.0.0.1', port: await freePort() }, weight: 1, placementGroups: ['default'] });
    }
    const groups = (options.replications ?? [3]).map((r, i) =>
      buildShardGroup({ id: i + 1, name: `r${r}`, replication: r, placeAll: 'default', shardCount: options.shardCount ?? 256 }, disks),
    );
    const cluster = new LocalCluster(dir, options.dir === undefined, clusterId, { clusterId, epoch: 1, disks, groups }, options);
    try {
      await cluster.writeMap();
      const size = String(options.diskSizeBytes ?? 2 * 1024 ** 3);
      await Promise.all(
        disks.map(async (d) => {
          const diskPath = join(dir, `disk-${d.id}.img`);
          if (options.preallocate === true) await execa('dd', ['if=/dev/zero', `of=${diskPath}`, 'bs=4M', `count=${Math.ceil(Number(size) / 4 / 1024 ** 2)}`, 'conv=fsync', 'status=none']);
          await execa(process.execPath, [SERVER_BIN, 'disk', 'init', diskPath, '--size', size, '--cluster-id', clusterId, '--disk-id', String(d.id)]);
          cluster.servers.set(d.id, { diskId: d.id, diskPath, port: d.address.port, proc: undefined, exited: undefined, log: [] });
        }),
      );
      await Promise.all(disks.map((d) => cluster.startServer(d.id)));
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  async writeMap(): Promise<void> {
    const tmp = `${this.mapPath}.tmp`;
    await writeFile(tmp, JSON.stringify(this.map, null, 2));
    const { rename } = await import('node:fs/promises');
    await rename(tmp, this.mapPath);
  }

  /** Starts (or restarts) a disk's server process; resolves once it listens. */
  async startServer(diskId: number): Promise<void> {
    const s = this.servers.get(diskId);
    if (s === undefined) throw new Error(`no disk ${diskId}`);
    if (s.proc !== undefined) throw new Error(`disk ${diskId} already running`);
    // STORPOOL_SERVER_NODE_ARGS: extra node flags for the servers (e.g. --cpu-prof for profiling).
    const nodeArgs = [...DAEMON_NODE_FLAGS, ...(process.env.STORPOOL_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [])];
    const proc = spawn(process.execPath, [...nodeArgs, SERVER_BIN, 'serve', '--disk', s.diskPath, '--map', this.mapPath, '--log-level', this.#o.logLevel ?? 'info', ...(this.#o.serverArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    s.proc = proc;
    running.add(proc);
    s.exited = new Promise<void>((resolve) =>
      proc.once('exit', () => {
        running.delete(proc);
        resolve();
      }),
    );
    await new Promise<void>((resolve, reject) => {
      let ready = false;
      const onLine = (line: string): void => {
        s.log.push(line);
        if (s.log.length > 2000) s.log.splice(0, 1000);
        if (this.#o.inheritLogs === true) process.stderr.write(`[disk ${diskId}] ${line}\n`);
      };
      const poll = (): void => {
        if (ready || s.proc !== proc) return;
        const probe = connect({ host: '127.0.0.1', port: s.port });
        probe.once('connect', () => {
          probe.destroy();
          ready = true;
          resolve();
        });
        probe.once('error', () => {
          probe.destroy();
          setTimeout(poll, 50);
        });
      };
      poll();
      let tail = '';
      const onData = (chunk: Buffer): void => {
        tail += chunk.toString('utf8');
        const lines = tail.split('\n');
        tail = lines.pop()!;
        for (const l of lines) onLine(l);
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onData);
      proc.once('exit', (code, signal) => {
        if (s.proc === proc) s.proc = undefined;
        if (!ready) reject(new Error(`storage server for disk ${diskId} exited (${code ?? signal}) before listening:\n${s.log.slice(-20).join('\n')}`));
      });
    });
  }

  /** SIGKILL (default) or SIGTERM a disk's server and wait until it is gone. */
  async killServer(diskId: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const s = this.servers.get(diskId);
    const proc = s?.proc;
    if (proc === undefined || s === undefined) return;
    proc.kill(signal);
    await s.exited;
    s.proc = undefined;
  }

  diskPath(diskId: number): string {
    const s = this.servers.get(diskId);
    if (s === undefined) throw new Error(`no disk ${diskId}`);
    return s.diskPath;
  }

  async client(options: Partial<ClientOptions> = {}): Promise<StorpoolClient> {
    const client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(this.mapPath), clientId: 1, ...options });
    this.#clients.push(client);
    return client;
  }

  async stop(): Promise<void> {
    for (const c of this.#clients) c.close();
    this.#clients = [];
    await Promise.all([...this.servers.keys()].map((id) => this.killServer(id, 'SIGTERM')));
    // A server that ignores SIGTERM is not acceptable in tests: make sure nothing is left.
    for (const s of this.servers.values()) s.proc?.kill('SIGKILL');
    if (this.#ownsDir) await rm(this.dir, { recursive: true, force: true });
  }
}
