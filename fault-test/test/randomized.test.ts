/**
 * A randomized fault run (issue #5, test 6): four storage hosts in network namespaces, a verifying
 * writer through the block service, and a seeded schedule of faults, one at a time — SIGKILL a
 * server and restart it, or cut a host off from everything and heal it — for about 90 s. Then every
 * host is back, every disk catches up, every copy is equal, and every acknowledged write reads back.
 * FAULT_SEED=N replays the schedule and the writer's choices; the seed is printed and in every
 * failure message.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SeededRandom } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultCluster, VerifyingWriter, formatReport, waitCaughtUp } from '../src/index.js';

const MiB = 1024 * 1024;
const HOSTS = 4;
const RUN_MS = 90_000;
const seed = process.env.FAULT_SEED !== undefined ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
let cluster: FaultCluster | undefined;
let writer: VerifyingWriter | undefined;

beforeAll(async () => {
  cluster = await FaultCluster.start({ servers: HOSTS, logLevel: 'warn', diskSizeBytes: 512 * MiB });
}, 180_000);

afterAll(async () => {
  await writer?.kill();
  await cluster?.stop();
}, 120_000);

describe(`randomized faults (FAULT_SEED=${seed})`, () => {
  it('kills, restarts, partitions and heals at random under writes: nothing acknowledged lost, copies equal', async () => {
    const c = cluster!;
    const rnd = new SeededRandom(seed);
    const log = (line: string): void => void process.stdout.write(`[fault-test] random ${seed}: ${line}\n`);
    const vol = await c.createVolume('random', 32 * MiB);
    writer = new VerifyingWriter({ socketPath: vol.socketPath, stateFile: `${c.dir}/writer-random.json`, blocks: (32 * MiB) / 4096, queueDepth: 16, readPercent: 20, seed });
    await writer.start();
    await writer.waitAcked(100, 60_000);
    const steps: string[] = [];
    const end = Date.now() + RUN_MS;
    while (Date.now() < end) {
      const host = rnd.int(1, HOSTS);
      const outageMs = rnd.int(3_000, 12_000);
      if (rnd.next() < 0.5) {
        steps.push(`kill ${host} for ${outageMs} ms`);
        await c.killServer(host, 'SIGKILL');
        await sleep(outageMs);
        await c.restartServer(host);
      } else {
        steps.push(`partition ${host} for ${outageMs} ms`);
        await c.partitionHost(host, 'all');
        await sleep(outageMs);
        await c.heal(host);
      }
      log(steps[steps.length - 1]!);
      await sleep(rnd.int(2_000, 6_000));
    }
    const acked = writer.progress.acked;
    await writer.waitAcked(acked + 100, 90_000);
    const summary = await writer.stop();
    await waitCaughtUp(c, [...Array(HOSTS).keys()].map((i) => i + 1), 180_000);
    const replicas = await c.waitReplicasEqual(vol, 120_000);
    const context = `FAULT_SEED=${seed}; steps: ${steps.join('; ')}; ${writer.describe()}`;
    log(`${summary.acked} writes acknowledged, ${summary.errors} I/O errors, max latency ${summary.maxLatencyMs} ms, ${replicas.diffs.length} divergent replicas after ${steps.length} faults`);
    expect(summary.ioErrors, context).toEqual([]);
    expect([...summary.readErrorList, ...summary.readMismatchList], context).toEqual([]);
    expect(replicas.diffs, context).toEqual([]);
    const report = await writer.verify();
    expect(report.badCount, `${context}\n${formatReport(report)}`).toBe(0);
  }, 600_000);
});
