/**
 * A randomized fault run (issue #5, test 6): four storage hosts in network namespaces, a verifying
 * writer through the block service, and a seeded schedule of faults, one at a time, for about 90 s:
 *  - SIGKILL a server and restart it, or cut a host off from everything and heal it (at random);
 *  - once, early: a new host with a new disk joins under load (data must spread onto it);
 *  - once: bytes of one copy of blocks of a "cold" volume are flipped in a disk file, and a scrub
 *    pass of that disk (DiskScrubStart) must find and repair exactly those blocks.
 * Then every host is back, every disk catches up and holds data, every copy is equal, the cold
 * volume reads back as written, and every acknowledged write reads back. FAULT_SEED=N replays the
 * schedule and the writer's choices; the seed is printed and in every failure message.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SeededRandom } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultCluster, VerifyingWriter, checkCold, coldBlock, corruptBlockInFile, formatReport, scrubPass, waitCaughtUp, writeCold, type FaultVolume } from '../src/index.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const HOSTS = 4;
const RUN_MS = 90_000;
/** The cold volume: this many objects, each with this many blocks written once before the faults. */
const COLD_OBJECTS = 6;
const COLD_BLOCKS = 64;
/** Blocks corrupted by the corruption step (all on one disk). */
const CORRUPT_BLOCKS = 2;
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

/**
 * Flips CORRUPT_BLOCKS cold blocks on one disk chosen from the seed, then scrubs that disk.
 * Everything is caught up first (no disk joining, the map at its target), so the choice depends
 * on the seed and the disk set only, and the scrubber has every other copy to repair from.
 */
async function corruptAndScrub(c: FaultCluster, rnd: SeededRandom, cold: FaultVolume): Promise<string> {
  await waitCaughtUp(c, c.servers.map((s) => s.diskId), 120_000);
  const client = await c.client();
  await client.refreshMap();
  const holders = new Map<number, number[]>();
  for (let o = 0; o < COLD_OBJECTS; o++) {
    for (const d of client.router.locate(cold.group, cold.placementId, o).replicas) holders.set(d, [...(holders.get(d) ?? []), o]);
  }
  const disks = [...holders.keys()].sort((a, b) => a - b);
  const disk = disks[rnd.int(0, disks.length - 1)]!;
  const objects = holders.get(disk)!;
  const victims: { o: number; b: number }[] = [];
  while (victims.length < CORRUPT_BLOCKS) {
    const v = { o: objects[rnd.int(0, objects.length - 1)]!, b: rnd.int(0, COLD_BLOCKS - 1) };
    if (!victims.some((x) => x.o === v.o && x.b === v.b)) victims.push(v);
  }
  for (const v of victims) await corruptBlockInFile(c.server(disk).diskPath, coldBlock(seed, v.o, v.b));
  const s = await scrubPass(c, disk);
  const what = `corrupt disk ${disk} blocks ${victims.map((v) => `${v.o}/${v.b}`).join(',')}: scrub found ${s.pass.errorsFound}, repaired ${s.pass.repaired}, unrepairable ${s.pass.unrepairable} in ${s.pass.objects} objects`;
  expect(s.pass, `FAULT_SEED=${seed}: ${what}`).toMatchObject({ errorsFound: CORRUPT_BLOCKS, repaired: CORRUPT_BLOCKS, unrepairable: 0, aborted: false });
  // Repaired in place: this disk's own copy of each block is right again.
  for (const v of victims) {
    const r = await client.readReplica(disk, cold.group, cold.dataId, v.o, v.b * 4096, 4096, cold.placementId);
    expect(r.data.equals(coldBlock(seed, v.o, v.b)), `FAULT_SEED=${seed}: disk ${disk} object ${v.o} block ${v.b} after the scrub`).toBe(true);
  }
  return what;
}

describe(`randomized faults (FAULT_SEED=${seed})`, () => {
  it('kills, restarts, partitions, heals, adds a disk and corrupts a copy at random under writes: nothing acknowledged lost, copies equal', async () => {
    const c = cluster!;
    const rnd = new SeededRandom(seed);
    const log = (line: string): void => void process.stdout.write(`[fault-test] random ${seed}: ${line}\n`);
    const cold = await c.createVolume('cold', COLD_OBJECTS * OBJECT);
    await writeCold(c, cold, seed, COLD_BLOCKS);
    const vol = await c.createVolume('random', 32 * MiB);
    writer = new VerifyingWriter({ socketPath: vol.socketPath, stateFile: `${c.dir}/writer-random.json`, blocks: (32 * MiB) / 4096, queueDepth: 16, readPercent: 20, seed });
    await writer.start();
    await writer.waitAcked(100, 60_000);
    const steps: string[] = [];
    const context = (): string => `FAULT_SEED=${seed}; steps: ${steps.join('; ')}; ${writer!.describe()}`;
    // The two one-off steps at seeded places: the new disk early (it then takes part in the faults).
    const addAt = rnd.int(0, 1);
    const corruptAt = rnd.int(2, 3);
    const added: number[] = [];
    const end = Date.now() + RUN_MS;
    for (let k = 0; Date.now() < end || k <= corruptAt; k++) {
      if (k === addAt) {
        const s = await c.addServer();
        added.push(s.diskId);
        steps.push(`add disk ${s.diskId}`);
      } else if (k === corruptAt) {
        steps.push(`corrupt (pending)`);
        steps[steps.length - 1] = await corruptAndScrub(c, rnd, cold);
      } else {
        const host = rnd.int(1, c.servers.length);
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
      }
      log(steps[steps.length - 1]!);
      await sleep(rnd.int(2_000, 6_000));
    }
    const acked = writer.progress.acked;
    await writer.waitAcked(acked + 100, 90_000);
    const summary = await writer.stop();
    const all = c.servers.map((s) => s.diskId);
    await waitCaughtUp(c, all, 180_000);
    const replicas = await c.waitReplicasEqual(vol, 120_000);
    const coldReplicas = await c.waitReplicasEqual(cold, 60_000);
    // Every disk holds data, the added one included (its share moved onto it under load).
    const usage = new Map<number, number>();
    for (const d of all) usage.set(d, ((await c.diskStats(d)) as { store: { blocksUsed: number } }).store.blocksUsed);
    const client = await c.client();
    await client.refreshMap();
    const onAdded = added.map((d) => [...Array(8).keys()].filter((o) => client.router.locate(vol.group, vol.placementId, o).replicas.includes(d)).length);
    log(`${summary.acked} writes acknowledged, ${summary.errors} I/O errors, max latency ${summary.maxLatencyMs} ms, ${replicas.diffs.length} + ${coldReplicas.diffs.length} divergent replicas after ${steps.length} faults; blocks used per disk ${JSON.stringify(Object.fromEntries(usage))}; objects of the writer's volume in sync on added disk(s) ${added.join(',')}: ${onAdded.join(',')}`);
    expect(summary.ioErrors, context()).toEqual([]);
    expect([...summary.readErrorList, ...summary.readMismatchList], context()).toEqual([]);
    expect(replicas.diffs, context()).toEqual([]);
    expect(coldReplicas.diffs, context()).toEqual([]);
    expect(added.length, context()).toBe(1);
    expect(onAdded[0], `${context()}: no object of the writer's volume moved onto the added disk`).toBeGreaterThan(0);
    for (const [d, used] of usage) expect(used, `${context()}: disk ${d} holds nothing`).toBeGreaterThan(0);
    expect(await checkCold(c, cold, seed, COLD_BLOCKS), context()).toEqual([]);
    const report = await writer.verify();
    expect(report.badCount, `${context()}\n${formatReport(report)}`).toBe(0);
  }, 600_000);
});
