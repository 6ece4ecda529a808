/** What the recovery tests share: polling, a volume's client spec, starting a storage server again, a report of the cluster's state when a wait times out. */
import { spawn, type ChildProcess } from 'node:child_process';
import type { StorpoolClient, VolumeSpec } from '@storpool/client';
import { SERVER_BIN, type LocalCluster } from '@storpool/local';
import { pino, type Logger } from 'pino';

/** What a timed-out wait adds to its error (set per test file: each runs in its own module instance). */
let timeoutReport: (() => Promise<string>) | undefined;

/**
 * The cluster under test's state and its management service's last log lines, appended to the
 * error of every wait that times out, so a failure on a busy CI machine can be read afterwards.
 */
export function reportOnTimeout(cluster: () => LocalCluster | undefined, log: TestLog): void {
  timeoutReport = async () => {
    const c = cluster();
    if (c === undefined) return 'no cluster';
    const st = await c.service.model.read();
    const disks = [...st.disks.values()].map((d) => `${d.id}${d.down === true ? ' down' : ''}${d.gone === true ? ' gone' : ''}`).join(', ');
    const groups = (st.shardMap?.groups ?? []).map((g) => {
      const joining = (g.joining ?? []).reduce((n, j) => n + j.length, 0);
      const short = g.shards.filter((r) => r.length < g.replication).length;
      const unpeered = g.shards.filter((_, i) => st.groups.get(g.id)?.peered?.[i] !== (g.terms?.[i] ?? 0)).length;
      return `group ${g.id}: ${joining} joining copies, ${short} shards short of ${g.replication} in sync, ${unpeered} not peered at their term`;
    });
    const r = c.service.recovery;
    return [
      `${c.service.isLeader ? 'leading' : 'NOT leading'}; map epoch ${st.shardMap?.epoch}; disks ${disks}`, ...groups,
      `recovery tasks ${JSON.stringify(r.tasks())}`, `recovery counters ${JSON.stringify(r.counters)}`,
      'last log lines of the management service:', log.tail(),
    ].join('\n');
  };
}

/** Polls `fn` until it returns something other than undefined; fails naming `what` after `timeoutMs`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 90_000, pollMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      const report = await timeoutReport?.().catch((err: unknown) => `(no report: ${(err as Error).message})`);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${report === undefined ? '' : `\n${report}`}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** The management service's logger in a recovery test: its last lines kept for a timeout report, all echoed when RECOVERY_TEST_LOG names a level. */
export interface TestLog {
  log: Logger;
  tail: () => string;
}

export function testLog(keep = 80): TestLog {
  const lines: string[] = [];
  const echo = process.env.RECOVERY_TEST_LOG !== undefined;
  const log = pino({ level: process.env.RECOVERY_TEST_LOG ?? 'info' }, {
    write(line: string) {
      lines.push(line.trimEnd());
      if (lines.length > keep) lines.shift();
      if (echo) process.stdout.write(line);
    },
  });
  return { log, tail: () => lines.join('\n') };
}

/**
 * Waits until `client` has read, from the map file, at least the map the management service
 * holds now: the file may publish it a moment later, and a client a map behind still sees a
 * joining disk as joining (it serves no reads) or a dead one as in sync.
 */
export async function clientAtModelMap(cluster: LocalCluster, client: StorpoolClient): Promise<void> {
  const epoch = (await cluster.service.model.read()).shardMap!.epoch;
  await until(`the client at map epoch ${epoch}`, async () => ((await client.refreshMap()).epoch >= epoch ? true : undefined), 120_000);
}

/** The client-library spec of a volume the management service knows by name. */
export async function volumeSpec(cluster: LocalCluster, name: string): Promise<VolumeSpec> {
  const state = await cluster.service.model.read();
  const o = [...state.objects.values()].find((x) => x.name === name);
  if (o === undefined) throw new Error(`no object ${name}`);
  return { volumeId: o.dataId, placementId: o.placementId, parents: [...o.parents], sizeBytes: o.size, group: o.group, readOnly: false };
}

/** A storage server for `diskPath` on the cluster's map (a restart, or a disk added by the test). */
export function startServer(cluster: LocalCluster, diskPath: string): { child: ChildProcess; kill: () => void; exited: Promise<void> } {
  const child = spawn(process.execPath, [SERVER_BIN, 'serve', '--disk', diskPath, '--map', cluster.mapFile, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, kill: () => child.kill('SIGKILL'), exited };
}
