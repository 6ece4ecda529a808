/**
 * A real 3-member etcd cluster on 127.0.0.1 for tests: free ports, temp data dirs, waits for
 * health, stops members by PID (SIGTERM, then SIGKILL) and removes its directory.
 */
import { freePort } from '@storpool/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const ETCD_BINARY = process.env['ETCD_BINARY'] ?? '/usr/bin/etcd';

interface Member {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly logPath: string;
  process: ChildProcess | undefined;
}


async function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return Promise.race([
    new Promise<boolean>((resolve) => child.once('exit', () => resolve(true))),
    sleep(timeoutMs).then(() => false),
  ]);
}

export class EtcdCluster {
  readonly dir: string;
  readonly members: Member[];
  static readonly #all = new Set<EtcdCluster>();

  private constructor(dir: string, members: Member[]) {
    this.dir = dir;
    this.members = members;
  }

  get endpoints(): string[] {
    return this.members.map((member) => member.clientUrl);
  }

  static async start(size = 3, timeoutMs = 20_000): Promise<EtcdCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'storpool-etcd-'));
    const members: Member[] = [];
    for (let i = 0; i < size; i++) {
      const [client, peer] = [await freePort(), await freePort()];
      members.push({
        name: `m${i}`, clientUrl: `http://127.0.0.1:${client}`, peerUrl: `http://127.0.0.1:${peer}`,
        logPath: join(dir, `m${i}.log`), process: undefined,
      });
    }
    const cluster = new EtcdCluster(dir, members);
    EtcdCluster.#all.add(cluster);
    const initial = members.map((member) => `${member.name}=${member.peerUrl}`).join(',');
    for (const member of members) cluster.#spawn(member, initial);
    try {
      await cluster.waitHealthy(timeoutMs);
    } catch (error) {
      const logs = members.map((member) => `--- ${member.name}\n${tail(member.logPath)}`).join('\n');
      await cluster.stop();
      throw new Error(`${(error as Error).message}\n${logs}`);
    }
    return cluster;
  }

  #spawn(member: Member, initialCluster: string): void {
    const log = openSync(member.logPath, 'a');
    member.process = spawn(ETCD_BINARY, [
      '--name', member.name,
      '--data-dir', join(this.dir, member.name),
      '--listen-client-urls', member.clientUrl, '--advertise-client-urls', member.clientUrl,
      '--listen-peer-urls', member.peerUrl, '--initial-advertise-peer-urls', member.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new',
      '--initial-cluster-token', `storpool-test-${process.pid}`,
      // Fast elections for tests: the minimum lease TTL becomes 1.5 x 500 ms.
      '--heartbeat-interval', '50', '--election-timeout', '500',
      '--log-level', 'warn', '--logger', 'zap',
    ], { stdio: ['ignore', log, log] });
    closeSync(log);
  }

  /** Every running member answers /health with true. */
  async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = this.members.filter((member) => member.process !== undefined);
      const health = await Promise.all(running.map(async (member) => {
        try {
          const response = await fetch(`${member.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
          return ((await response.json()) as { health?: string }).health === 'true';
        } catch {
          return false;
        }
      }));
      if (health.every(Boolean)) return;
      if (Date.now() > deadline) throw new Error(`etcd cluster in ${this.dir} not healthy after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /** SIGKILL one member (no clean shutdown), as a crashed host would. */
  async kill(index: number): Promise<void> {
    const member = this.members[index];
    if (member?.process === undefined) return;
    const child = member.process;
    member.process = undefined;
    child.kill('SIGKILL');
    await exited(child, 5_000);
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map(async (member) => {
      const child = member.process;
      member.process = undefined;
      if (child === undefined) return;
      child.kill('SIGTERM');
      if (!(await exited(child, 3_000))) {
        child.kill('SIGKILL');
        await exited(child, 3_000);
      }
    }));
    rmSync(this.dir, { recursive: true, force: true });
    EtcdCluster.#all.delete(this);
  }

  /** Last resort when the test process exits without afterAll having run. */
  static killAllSync(): void {
    for (const cluster of EtcdCluster.#all) {
      for (const member of cluster.members) member.process?.kill('SIGKILL');
      rmSync(cluster.dir, { recursive: true, force: true });
    }
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

process.once('exit', () => EtcdCluster.killAllSync());
