/**
 * min_size, re-replication and rebalancing with real processes (the local cluster, 4 disks,
 * replication 3): two disks die → shards with one copy left refuse writes, reads go on; one comes
 * back and catches up; the other stays away past the re-replication timeout → its copies are rebuilt
 * on the three survivors; a fifth disk joins → about a quarter of the shards move onto it, and the
 * disks they left forget their copies (space freed). Every step ends with all data read back right
 * from every in-sync copy.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient, type VolumeSpec } from '@storpool/client';
import { startLocalCluster, SERVER_BIN, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api } from './helpers.js';
import { clientAtModelMap, reportOnTimeout, startServer, testLog, until, volumeSpec } from './recovery-helpers.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const OBJECTS = 32;
const RE_REPLICATE_AFTER_MS = 12_000;
let dir: string;
/** The management service's log, its last lines reported when a wait times out. */
const mgmtLog = testLog();
let cluster: LocalCluster;
let client: StorpoolClient;
let api: Api;
const extra: { kill: () => void }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-rebuild-'));
  reportOnTimeout(() => cluster, mgmtLog);
  cluster = await startLocalCluster({
    dataDir: dir, port: 0, disks: 4, diskSizeBytes: 256 * MiB, shardCount: 64, serverLogLevel: 'warn', log: mgmtLog.log,
    mgmt: { probeIntervalMs: 500, downAfterMs: 4_000, reReplicateAfterMs: RE_REPLICATE_AFTER_MS },
  });
  api = new Api(cluster.url, cluster.token);
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 1, retryDeadlineMs: 60_000, requestTimeoutMs: 5_000 });
}, 120_000);

afterAll(async () => {
  client?.close();
  for (const e of extra) e.kill();
  for (const s of cluster?.servers ?? []) if (s.process.exitCode === null && s.process.signalCode === null) s.process.kill('SIGKILL');
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const block = (i: number, g: number): Buffer => {
  const buf = Buffer.alloc(4096, (i * 13 + g) & 0xff);
  buf.writeUInt32LE(i, 0);
  buf.writeUInt32LE(g, 4);
  return buf;
};

type Group = NonNullable<Awaited<ReturnType<LocalCluster['service']['model']['read']>>['shardMap']>['groups'][number];

async function groupOf(id: number): Promise<Group> {
  return (await cluster.service.model.read()).shardMap!.groups.find((g) => g.id === id)!;
}

const settled = (g: Group): boolean => (g.joining ?? []).every((j) => j.length === 0) && g.shards.every((r) => r.length === 3);

async function kill(diskId: number): Promise<void> {
  const s = cluster.servers.find((x) => x.diskId === diskId)!;
  const exited = s.exited;
  s.process.kill('SIGKILL');
  await exited;
}

/** Every object right through the volume, and on every in-sync copy of its shard. */
async function verifyAll(v: ReturnType<StorpoolClient['volume']>, s: VolumeSpec, generation: (i: number) => number): Promise<void> {
  await client.refreshMap();
  for (let i = 0; i < OBJECTS; i++) {
    const want = block(i, generation(i));
    expect((await v.read(i * OBJECT, 4096)).equals(want), `object ${i}`).toBe(true);
    // The map may still move (a late promotion): re-read it and check again on a stale epoch.
    for (let attempt = 0; ; attempt++) {
      try {
        const { replicas } = client.router.locate(s.group, s.placementId ?? s.volumeId, i);
        for (const disk of replicas) {
          const r = await client.readReplica(disk, s.group, s.volumeId, i, 0, 4096, s.placementId ?? s.volumeId);
          expect(r.data.equals(want), `object ${i} on disk ${disk}`).toBe(true);
        }
        break;
      } catch (err) {
        if (attempt > 20 || !/MAP_ERR|epoch/.test(String(err))) throw err;
        await new Promise((r) => setTimeout(r, 250));
        await client.refreshMap();
      }
    }
  }
}

describe('copies lost and rebuilt', () => {
  it('min_size stops writes to shards with one copy; a returning disk catches up; a lost one is re-replicated; a new disk takes its share', async () => {
    // On a loaded machine the leader may have called slow-starting servers down: wait for all up.
    await until('all disks up', async () => ([...(await cluster.service.model.read()).disks.values()].every((d) => d.down !== true && d.gone !== true) ? true : undefined));
    await api.post('VolumeCreate', { name: 'rb', size: OBJECTS * OBJECT, template: 'default' });
    const s = await volumeSpec(cluster, 'rb');
    const v = client.volume(s);
    const gen = new Map<number, number>();
    for (let i = 0; i < OBJECTS; i++) {
      await v.write(i * OBJECT, block(i, 1));
      gen.set(i, 1);
    }
    await until('a settled cluster', async () => (settled(await groupOf(s.group)) ? true : undefined));

    // Two of four disks die: shards that keep one copy refuse writes (min_size 2); reads go on.
    await kill(3);
    await kill(4);
    const degraded = await until('disks 3 and 4 down', async () => {
      const st = await cluster.service.model.read();
      return st.disks.get(3)?.down === true && st.disks.get(4)?.down === true ? st.shardMap!.groups.find((g) => g.id === s.group)! : undefined;
    });
    expect(degraded.minReplicas).toBe(2);
    await clientAtModelMap(cluster, client);
    const single = [...Array(OBJECTS).keys()].filter((i) => client.router.locate(s.group, s.placementId ?? s.volumeId, i).replicas.length === 1);
    const double = [...Array(OBJECTS).keys()].filter((i) => client.router.locate(s.group, s.placementId ?? s.volumeId, i).replicas.length === 2);
    expect(single.length).toBeGreaterThan(0);
    expect(double.length).toBeGreaterThan(0);
    const impatient = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 2, retryDeadlineMs: 1_500, requestTimeoutMs: 2_000 });
    try {
      const w = impatient.volume(s);
      await expect(w.write(single[0]! * OBJECT, block(single[0]!, 9))).rejects.toThrow(/REPL_ERR_TOO_FEW_REPLICAS/);
      expect((await w.read(single[0]! * OBJECT, 4096)).equals(block(single[0]!, 1))).toBe(true);
      await w.write(double[0]! * OBJECT, block(double[0]!, 2));
      gen.set(double[0]!, 2);
    } finally {
      impatient.close();
    }

    // Disk 4 returns and catches up; disk 3 stays away.
    const s4 = cluster.servers.find((x) => x.diskId === 4)!;
    extra.push(startServer(cluster, s4.diskPath));
    await until('disk 4 back in sync', async () => {
      const g = await groupOf(s.group);
      return g.shards.every((r) => r.includes(4) || !(g.joining?.flat() ?? []).includes(4)) && (g.joining ?? []).every((j) => !j.includes(4)) && (await cluster.service.model.read()).disks.get(4)?.down !== true ? true : undefined;
    });
    for (const i of single.slice(0, 4)) {
      await v.write(i * OBJECT, block(i, 3));
      gen.set(i, 3);
    }

    // Disk 3 is gone for good after the timeout: every shard gets three copies on disks 1, 2, 4.
    const rebuilt = await until('copies rebuilt without disk 3', async () => {
      const st = await cluster.service.model.read();
      const g = st.shardMap!.groups.find((x) => x.id === s.group)!;
      return st.disks.get(3)?.gone === true && settled(g) && g.shards.every((r) => !r.includes(3)) ? g : undefined;
    }, 120_000);
    expect(rebuilt.shards.every((r) => [...r].sort().join() === '1,2,4')).toBe(true);
    await cluster.service.recovery.idle();
    await verifyAll(v, s, (i) => gen.get(i)!);

    // A fifth disk joins the placement group: about a quarter of the shards move onto it.
    const usedBefore = new Map<number, number>();
    for (const d of [1, 2, 4]) usedBefore.set(d, ((await client.diskStats(d)) as { store: { blocksUsed: number } }).store.blocksUsed);
    const path5 = join(dir, 'disk-5.img');
    await new Promise<void>((resolve, reject) => {
      const init = spawn(process.execPath, [SERVER_BIN, 'disk', 'init', path5, '--size', String(256 * MiB), '--cluster-id', cluster.service.cluster.clusterId, '--disk-id', '5'], { stdio: 'inherit' });
      init.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`disk init exited ${code}`))));
    });
    await cluster.service.registerDisk({ id: 5, serverId: 5, address: { host: '127.0.0.1', port: await freePort() }, placementGroups: ['default'] });
    // Its server is not started yet: the shards moving onto it wait, and the balancer says so.
    expect(await api.get('VolumeBalancerStatus')).toMatchObject({ status: 'working', auto: true });
    extra.push(startServer(cluster, path5));
    const spread = await until('disk 5 holding its share', async () => {
      const g = await groupOf(s.group);
      return settled(g) && g.shards.some((r) => r.includes(5)) ? g : undefined;
    }, 120_000);
    const onFive = spread.shards.filter((r) => r.includes(5)).length;
    expect(onFive).toBeGreaterThan(spread.shards.length / 8);
    expect(onFive).toBeLessThan(spread.shards.length);
    await cluster.service.recovery.idle();
    await clientAtModelMap(cluster, client);
    const objects5 = await client.listObjects(5);
    expect(objects5.filter((o) => o.volumeId === s.volumeId && o.allocatedBlocks > 0).length).toBeGreaterThan(0);
    await verifyAll(v, s, (i) => gen.get(i)!);

    // The disks the shards left forget their copies: each disk holds objects of its own shards only.
    await until('surplus copies released', async () => {
      await client.refreshMap();
      for (const d of [1, 2, 4, 5]) {
        const held = (await client.listObjects(d)).filter((o) => o.volumeId === s.volumeId);
        if (held.some((o) => !client.router.locate(s.group, s.placementId ?? s.volumeId, o.objectIndex).replicas.includes(d))) return undefined;
      }
      return true;
    });
    const counters = cluster.service.recovery.counters;
    expect(counters.objectsReleased).toBeGreaterThan(0);
    expect(counters.bytesReleased).toBeGreaterThan(0);
    let freed = 0;
    for (const d of [1, 2, 4]) freed += usedBefore.get(d)! - ((await client.diskStats(d)) as { store: { blocksUsed: number } }).store.blocksUsed;
    expect(freed).toBeGreaterThan(0);
    expect(await api.get('VolumeBalancerStatus')).toMatchObject({ status: 'nothing to do', joiningShards: 0 });
    await verifyAll(v, s, (i) => gen.get(i)!);
  }, 400_000);
});
