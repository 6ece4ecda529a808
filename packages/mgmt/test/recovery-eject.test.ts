/**
 * DiskSoftEject and DiskEject with real processes (the local cluster, 6 disks in 3 fault sets —
 * A: 1, 2; B: 3, 4; C: 5, 6 — replication 3), each while writers go on through the client library:
 *  - DiskSoftEject 6: the disk stays in sync until its replacements are, then holds no in-sync or
 *    joining copy; its shards moved to disk 5, the only other disk of its fault set.
 *  - DiskEject 1: the disk leaves every in-sync list at once (StorPool: "stop using the disk
 *    immediately, even if it holds data"), and its copies are rebuilt on disk 2, again the only
 *    disk that keeps every shard in three fault sets.
 * Every step ends with no write failed and every object read back right from every in-sync copy.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient, type Volume, type VolumeSpec } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from './helpers.js';
import { clientAtModelMap, reportOnTimeout, testLog, until } from './recovery-helpers.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const OBJECTS = 24;
/** Writers in parallel, each on its own objects (so every object's last acknowledged write is known). */
const LANES = 4;
const FAULT_SETS: Record<number, string> = { 1: 'A', 2: 'A', 3: 'B', 4: 'B', 5: 'C', 6: 'C' };
let dir: string;
/** The management service's log, its last lines reported when a wait times out. */
const mgmtLog = testLog();
let cluster: LocalCluster | undefined;
let client: StorpoolClient;
let api: Api;
let spec: VolumeSpec;
let volume: Volume;
/** The writers of the running test, stopped in afterAll if the test failed before stopping them. */
let running: { stop: () => Promise<unknown> } | undefined;
/** Object -> generation of its last acknowledged write. */
const acked = new Map<number, number>();

type ShardMap = NonNullable<Awaited<ReturnType<LocalCluster['service']['model']['read']>>['shardMap']>;
type Group = ShardMap['groups'][number];

const block = (i: number, g: number): Buffer => {
  const buf = Buffer.alloc(4096, (i * 29 + g) & 0xff);
  buf.writeUInt32LE(i, 0);
  buf.writeUInt32LE(g, 4);
  return buf;
};

async function group(): Promise<Group> {
  return (await cluster!.service.model.read()).shardMap!.groups.find((g) => g.id === spec.group)!;
}

/** No disk joins, every shard has three in-sync copies. */
const settled = (g: Group): boolean => (g.joining ?? []).every((j) => j.length === 0) && g.shards.every((r) => r.length === 3);
/** Every shard's copies are in three different fault sets. */
const spreadOverFaultSets = (g: Group): boolean => g.shards.every((r) => new Set(r.map((d) => FAULT_SETS[d])).size === 3);

/** LANES writers, object i written by lane i % LANES, until stopped. */
function startLoad(): { writes: () => number; stop: () => Promise<{ writes: number; errors: string[] }> } {
  let stopped = false;
  let writes = 0;
  let generation = 1000;
  const errors: string[] = [];
  const lanes = [...Array(LANES).keys()].map(async (lane) => {
    for (let k = 0; !stopped; k++) {
      const i = lane + (k * LANES) % OBJECTS;
      const g = ++generation;
      try {
        await volume.write(i * OBJECT + 4096, block(i, g));
        acked.set(i, g);
        writes++;
      } catch (err) {
        // The outcome is unknown: the check below would have to accept either; the test fails anyway.
        errors.push(`object ${i} generation ${g}: ${(err as Error).message}`);
        acked.delete(i);
        // A closed client fails at once: without a pause the loop would starve the event loop.
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  const load = {
    writes: () => writes,
    async stop() {
      stopped = true;
      await Promise.all(lanes);
      running = undefined;
      return { writes, errors };
    },
  };
  running = load;
  return load;
}

/** Every object right through the volume and on every in-sync copy of its shard. */
async function verifyAll(): Promise<void> {
  await clientAtModelMap(cluster!, client);
  for (let i = 0; i < OBJECTS; i++) {
    const want = block(i, acked.get(i)!);
    expect((await volume.read(i * OBJECT + 4096, 4096)).equals(want), `object ${i}`).toBe(true);
    const { replicas } = client.router.locate(spec.group, spec.placementId ?? spec.volumeId, i);
    for (const disk of replicas) {
      const r = await client.readReplica(disk, spec.group, spec.volumeId, i, 4096, 4096, spec.placementId ?? spec.volumeId);
      expect(r.data.equals(want), `object ${i} on disk ${disk}`).toBe(true);
    }
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-eject-'));
  reportOnTimeout(() => cluster, mgmtLog);
  cluster = await startLocalCluster({
    dataDir: dir, port: 0, disks: 6, diskSizeBytes: 256 * MiB, shardCount: 64, serverLogLevel: 'warn', log: mgmtLog.log,
    mgmt: { probeIntervalMs: 500, downAfterMs: 4_000, reReplicateAfterMs: 3_600_000 },
  });
  // The same disks, now in fault sets (nothing written yet: the map just settles again).
  for (const s of cluster.servers) {
    await cluster.service.registerDisk({ id: s.diskId, serverId: s.diskId, faultSet: FAULT_SETS[s.diskId]!, address: { host: '127.0.0.1', port: s.port }, placementGroups: ['default'] });
  }
  api = new Api(cluster.url, cluster.token);
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 1, retryDeadlineMs: 60_000, requestTimeoutMs: 5_000 });
  await api.post('VolumeCreate', { name: 'ej', size: OBJECTS * OBJECT, template: 'default' });
  const o = [...(await cluster.service.model.read()).objects.values()].find((x) => x.name === 'ej')!;
  spec = { volumeId: o.dataId, placementId: o.placementId, parents: [...o.parents], sizeBytes: o.size, group: o.group, readOnly: false };
  await until('all disks up and the map settled over the fault sets', async () => {
    const st = await cluster!.service.model.read();
    const g = st.shardMap!.groups.find((x) => x.id === spec.group)!;
    return [...st.disks.values()].every((d) => d.down !== true) && settled(g) && spreadOverFaultSets(g) ? true : undefined;
  }, 240_000);
  await client.refreshMap();
  volume = client.volume(spec);
  for (let i = 0; i < OBJECTS; i++) {
    await volume.write(i * OBJECT + 4096, block(i, 1));
    acked.set(i, 1);
  }
}, 300_000);

afterAll(async () => {
  await running?.stop();
  client?.close();
  for (const s of cluster?.servers ?? []) if (s.process.exitCode === null && s.process.signalCode === null) s.process.kill('SIGKILL');
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('disks taken out of service', () => {
  it('DiskSoftEject drains a disk under writes: it stays in sync until its replacements are, then holds no copy; its fault set takes them', async () => {
    const before = await group();
    const onSix = before.shards.flatMap((r, i) => (r.includes(6) ? [i] : []));
    expect(onSix.length).toBeGreaterThan(0);
    const load = startLoad();
    await until('writes going on', async () => (load.writes() >= 20 ? true : undefined), 120_000);
    const t0 = Date.now();
    await api.post('DiskSoftEject/6');
    // Right after: disk 6 leaves the target but no copy is dropped before its replacement is in sync.
    const first = await group();
    for (const i of onSix) expect(first.shards[i]!.length + (first.joining?.[i]?.length ?? 0), `shard ${i}: ${JSON.stringify(first.shards[i])} + ${JSON.stringify(first.joining?.[i])}`).toBeGreaterThanOrEqual(3);
    expect(first.shards.filter((r) => r.includes(6)).length, 'a soft-ejected disk stays in sync until replaced').toBe(onSix.length);
    const writesAtEject = load.writes();
    const drained = await until('disk 6 drained', async () => {
      const g = await group();
      return settled(g) && !g.shards.flat().includes(6) && !(g.joining ?? []).flat().includes(6) ? g : undefined;
    }, 120_000);
    const drainMs = Date.now() - t0;
    const { writes, errors } = await load.stop();
    process.stdout.write(`[recovery-eject] soft eject: ${onSix.length} shards moved off disk 6 in ${drainMs} ms, ${writes - writesAtEject} writes during the drain, ${errors.length} errors\n`);
    expect(errors).toEqual([]);
    expect(writes - writesAtEject).toBeGreaterThan(0);
    // Its shards went to disk 5, the only other disk of fault set C; the rest did not move.
    for (const i of onSix) expect([...drained.shards[i]!].sort(), `shard ${i}`).toEqual([...before.shards[i]!.filter((d) => d !== 6), 5].sort());
    before.shards.forEach((r, i) => {
      if (!r.includes(6)) expect([...drained.shards[i]!].sort(), `shard ${i}`).toEqual([...r].sort());
    });
    expect(spreadOverFaultSets(drained)).toBe(true);
    const disk = (await api.get<Record<string, { softEject: string }>>('DisksList'))['6']!;
    expect(disk.softEject).toBe('on');
    // Still running and answering: soft eject moves data, it does not stop the server.
    await client.ping(6, 2_000);
    await cluster!.service.recovery.idle();
    await verifyAll();
  }, 240_000);

  it('DiskEject stops using a disk at once; its copies are rebuilt on other disks respecting fault sets', async () => {
    const before = await group();
    const onOne = before.shards.flatMap((r, i) => (r.includes(1) ? [i] : []));
    expect(onOne.length).toBeGreaterThan(0);
    const load = startLoad();
    await until('writes going on', async () => (load.writes() >= 20 ? true : undefined), 120_000);
    const t0 = Date.now();
    await api.post('DiskEject/1');
    // At once: no shard lists disk 1 in sync (nor joining); the others carry on with two copies.
    const first = await group();
    expect(first.shards.filter((r) => r.includes(1)).map((r) => r.join(',')), 'an ejected disk leaves every in-sync list at once').toEqual([]);
    expect((first.joining ?? []).flat()).not.toContain(1);
    for (const i of onOne) expect(first.shards[i]!.length, `shard ${i}`).toBe(2);
    const writesAtEject = load.writes();
    const rebuilt = await until('copies of disk 1 rebuilt', async () => {
      const g = await group();
      return settled(g) ? g : undefined;
    }, 120_000);
    const rebuildMs = Date.now() - t0;
    const { writes, errors } = await load.stop();
    process.stdout.write(`[recovery-eject] eject: ${onOne.length} shards rebuilt without disk 1 in ${rebuildMs} ms, ${writes - writesAtEject} writes meanwhile, ${errors.length} errors\n`);
    expect(errors).toEqual([]);
    expect(writes - writesAtEject).toBeGreaterThan(0);
    // Disk 2 is the only disk left in fault set A: every shard of disk 1 now has it.
    for (const i of onOne) expect([...rebuilt.shards[i]!].sort(), `shard ${i}`).toEqual([...before.shards[i]!.filter((d) => d !== 1), 2].sort());
    expect(rebuilt.shards.flat()).not.toContain(1);
    expect(spreadOverFaultSets(rebuilt)).toBe(true);
    const counters = cluster!.service.recovery.counters;
    expect(counters.shardsPromoted).toBeGreaterThanOrEqual(onOne.length);
    await cluster!.service.recovery.idle();
    await verifyAll();
  }, 240_000);
});
