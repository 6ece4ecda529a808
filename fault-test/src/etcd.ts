/**
 * One real etcd member (Debian's etcd-server) for a fault cluster: private ports, its own data dir,
 * listening on 127.0.0.1 and on the lab's root address so that processes in host namespaces
 * reach it too. Stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '@storpool/testkit';

export const ETCD_BINARY = process.env['ETCD_BINARY'] ?? '/usr/bin/etcd';
const START_TIMEOUT_MS = 30_000;

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export interface EtcdMember {
  /** Client URL on the lab's root address (reachable from every host namespace). */
  readonly endpoint: string;
  readonly localEndpoint: string;
  readonly process: ChildProcess;
  readonly exited: Promise<void>;
  readonly logPath: string;
}

export async function startEtcd(dir: string, address: string): Promise<EtcdMember> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `http://${address}:${clientPort}`;
  const localEndpoint = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const logPath = join(dir, 'etcd.log');
  const log = openSync(logPath, 'a');
  const child = spawn(ETCD_BINARY, [
    '--name', 'fault', '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', `${localEndpoint},${endpoint}`, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `fault=${peerUrl}`, '--initial-cluster-state', 'new', '--initial-cluster-token', `storpool-fault-${process.pid}`,
    // Fast elections, as the meta tests: the minimum lease TTL becomes 1.5 x 500 ms.
    '--heartbeat-interval', '50', '--election-timeout', '500', '--log-level', 'warn', '--logger', 'zap',
  ], { stdio: ['ignore', log, log] });
  closeSync(log);
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    running.delete(child);
    resolve();
  }));
  const member: EtcdMember = { endpoint, localEndpoint, process: child, exited, logPath };
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const response = await fetch(`${localEndpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      if (((await response.json()) as { health?: string }).health === 'true') return member;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`etcd did not become healthy (see ${logPath})`);
    }
    await sleep(100);
  }
}
