/**
 * A primary that stops answering in the middle of a catch-up copy (SIGSTOP: the process keeps its
 * sockets, as behind a partition) must not hold recovery until the copy's 10-minute deadline: the
 * leader's probes find the connection hung and drop it, the copy fails now and is planned again.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from './helpers.js';
import { reportOnTimeout, testLog, until, volumeSpec } from './recovery-helpers.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const OBJECTS = 24;
let dir: string;
const mgmtLog = testLog(400);
let cluster: LocalCluster;
let client: StorpoolClient;
let stopped: number | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-hung-'));
  reportOnTimeout(() => cluster, mgmtLog);
  cluster = await startLocalCluster({
    dataDir: dir, port: 0, disks: 4, diskSizeBytes: 256 * MiB, shardCount: 32, serverLogLevel: 'warn', log: mgmtLog.log,
    // Slow copies (128 KB/s each), so that one is surely running when its primary stops.
    mgmt: { probeIntervalMs: 500, downAfterMs: 3_000, reReplicateAfterMs: 2_000, syncBytesPerSec: 128_000 },
  });
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 1, retryDeadlineMs: 60_000, requestTimeoutMs: 5_000 });
}, 120_000);

afterAll(async () => {
  client?.close();
  const s = cluster?.servers.find((x) => x.diskId === stopped);
  if (s !== undefined) s.process.kill('SIGCONT');
  for (const x of cluster?.servers ?? []) if (x.process.exitCode === null && x.process.signalCode === null) x.process.kill('SIGKILL');
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('a primary hung mid-copy', () => {
  it('its catch-up copy fails within seconds (connection dropped after unanswered pings), not at the 10-minute deadline', async () => {
    await until('all disks up', async () => ([...(await cluster.service.model.read()).disks.values()].every((d) => d.down !== true && d.gone !== true) ? true : undefined));
    const api = new Api(cluster.url, cluster.token);
    await api.post('VolumeCreate', { name: 'h', size: OBJECTS * OBJECT, template: 'default' });
    const v = client.volume(await volumeSpec(cluster, 'h'));
    for (let i = 0; i < OBJECTS; i++) await v.write(i * OBJECT, Buffer.alloc(MiB, i + 1));

    // Disk 4 dies for good: its copies are rebuilt on disks 1-3, slowly.
    const s4 = cluster.servers.find((x) => x.diskId === 4)!;
    s4.process.kill('SIGKILL');
    await s4.exited;
    const job = await until('a catch-up copy running', () => {
      const task = cluster.service.recovery.tasks().find((t) => t.completedShards < t.allShards);
      return task === undefined ? undefined : task;
    }, 60_000);
    expect(job.allShards).toBeGreaterThan(0);
    // Stop a primary while it runs a SHARD_SYNC session (the leader waits on its reply).
    stopped = await until('a disk running a catch-up session', async () => {
      for (const d of [1, 2, 3]) {
        const sync = ((await client.diskStats(d)) as { sync: { sessionsStarted: number; sessionsCompleted: number; sessionsFailed: number } }).sync;
        if (sync.sessionsStarted > sync.sessionsCompleted + sync.sessionsFailed) return d;
      }
      return undefined;
    }, 60_000);
    const primary = cluster.servers.find((x) => x.diskId === stopped)!;
    const failuresBefore = cluster.service.recovery.counters.syncFailures;
    const t0 = Date.now();
    primary.process.kill('SIGSTOP');
    const line = await until('the copy from the stopped primary failing on a dropped connection', () =>
      mgmtLog.tail().split('\n').find((l) => l.includes('catch-up copy failed') && l.includes('pings in a row went unanswered') && l.includes(`"primary":${stopped}`)), 60_000);
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(cluster.service.recovery.counters.syncFailures).toBeGreaterThan(failuresBefore);
    expect(line).toContain('dropped');
    primary.process.kill('SIGCONT');
    stopped = undefined;
  }, 240_000);
});
