/**
 * Peering after a failover, with real processes: a primary dies after one replica applied a write
 * the others never saw (made here by sending that replica a REPLICA_WRITE directly, as the dying
 * primary would have). The map fails over to a new primary; the leader has it compare its copies
 * with the other in-sync one, and whichever content the new primary holds, both copies end equal —
 * same bytes, same version — and the volume reads what they hold. Then the old primary returns and
 * catches up to the same.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { ConnectionPool, ShardMapView } from '@storpool/net';
import { Op, PeerRole, RequestFlag, chunkCrcs, encodeCrcs, type OpCode } from '@storpool/protocol';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Recovery } from '../src/recovery.js';
import { Api } from './helpers.js';
import { clientAtModelMap, reportOnTimeout, startServer, testLog, until, volumeSpec } from './recovery-helpers.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
const OBJECTS = 8;
let dir: string;
/** The management service's log, its last lines reported when a wait times out. */
const mgmtLog = testLog();
let cluster: LocalCluster;
let client: StorpoolClient;
let api: Api;
const extra: { kill: () => void }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-peering-'));
  reportOnTimeout(() => cluster, mgmtLog);
  cluster = await startLocalCluster({
    dataDir: dir, port: 0, diskSizeBytes: 256 * MiB, shardCount: 16, serverLogLevel: 'warn', log: mgmtLog.log,
    mgmt: { probeIntervalMs: 500, downAfterMs: 3_000, reReplicateAfterMs: 3_600_000 },
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

const fill = (tag: number): Buffer => {
  const b = Buffer.alloc(8192, tag);
  b.writeUInt32LE(tag * 0x01010101, 0);
  return b;
};

/** A new volume of `objects` objects written with fill(1), and where its object 0 lives. */
async function prepare(name: string, objects: number) {
  await until('all disks up', async () => ([...(await cluster.service.model.read()).disks.values()].every((d) => d.down !== true) ? true : undefined));
  await api.post('VolumeCreate', { name, size: objects * OBJECT, template: 'default' });
  const s = await volumeSpec(cluster, name);
  const placementId = s.placementId!;
  const v = client.volume(s);
  for (let i = 0; i < objects; i++) await v.write(i * OBJECT, fill(1));
  // Three copies in sync (a disk that flapped under load may still be catching up).
  const { replicas, shard } = await until('object 0 in sync on three disks', async () => {
    await client.refreshMap();
    const r = client.router.locate(s.group, placementId, 0);
    return r.replicas.length === 3 && client.router.shard(s.group, r.shard).joining.length === 0 ? r : undefined;
  });
  const [primary, a, b] = replicas as [number, number, number];
  const v1 = (await client.readReplica(primary, s.group, s.volumeId, 0, 0, 8192, placementId)).version;
  const read = (disk: number, objectIndex = 0) => client.readReplica(disk, s.group, s.volumeId, objectIndex, 0, 8192, placementId);
  return { s, v, placementId, shard, primary, a, b, v1, read };
}

/**
 * Sends `disk` a replica op of object 0 as `primary` would (a write it never acknowledged, a
 * piece of a copy): the peer connection is closed after `fn`.
 */
async function asPrimary(p: Awaited<ReturnType<typeof prepare>>, disk: number, fn: (piece: (op: OpCode, flags: number, block: number, blocks: number, version: number, payload: Buffer[]) => Promise<unknown>) => Promise<void>): Promise<void> {
  const view = await ShardMapView.open(new FileShardMapSource(cluster.mapFile));
  const peers = new ConnectionPool({ view, clusterId: cluster.service.cluster.clusterId, role: PeerRole.PEER, senderId: p.primary, log: pino({ level: 'silent' }) });
  try {
    const conn = await peers.get(disk);
    await fn((op, flags, block, blocks, version, payload) =>
      conn.request({ op, flags, epoch: view.router.epoch, group: p.s.group, parentCount: 0, volumeId: p.s.volumeId, objectIndex: 0, offset: block * 4096, length: blocks * 4096, version, placementId: p.placementId, shard: p.shard }, payload, 5_000));
  } finally {
    peers.close();
  }
}

const withCrcs = (data: Buffer): Buffer[] => [data, encodeCrcs(chunkCrcs(data))];

describe('peering after a failover', () => {
  it("a copy's pieces only overwrite the target's blocks; the last one (REPLACE) sets the version exactly", async () => {
    // What a new primary's copy to an in-sync replica does there, piece by piece: if the copy is cut
    // short (the primary dies too), every block the target held (acknowledged writes) is still there.
    const p = await prepare('cut', 1);
    const { a, v1, read } = p;
    expect(v1).toBeGreaterThan(1);
    await asPrimary(p, a, async (piece) => {
      // The first piece: block 0 only.
      const first = Buffer.alloc(4096, 5);
      await piece(Op.REPLICA_WRITE, RequestFlag.SYNC, 0, 1, 0, withCrcs(first));
      let r = await read(a);
      expect(r.data.subarray(0, 4096).equals(first)).toBe(true);
      expect(r.data.subarray(4096).equals(fill(1).subarray(4096)), 'block 1 (not in the piece) kept').toBe(true);
      expect(r.version).toBe(v1);
      // The last piece (holes for the rest), with a version below the target's: taken exactly.
      await piece(Op.REPLICA_TRIM, RequestFlag.SYNC | RequestFlag.REPLACE, 2, 1022, v1 - 1, []);
      r = await read(a);
      expect(r.version).toBe(v1 - 1);
      expect(r.data.subarray(4096).equals(fill(1).subarray(4096))).toBe(true);
      // REPLACE without SYNC is refused and changes nothing.
      await expect(piece(Op.REPLICA_TRIM, RequestFlag.REPLACE, 0, 2, 0, [])).rejects.toThrow(/REPLACE is a flag/);
      expect((await read(a)).version).toBe(v1 - 1);
    });
  }, 120_000);

  it('an unacknowledged write on one replica: after the primary dies, the in-sync copies are made equal to the new primary', async () => {
    // Object 0: its primary P, replicas A and B. A gets a write P "sent" but never acknowledged.
    const p = await prepare('p', OBJECTS);
    const { s, v, placementId, shard, primary, a, b, v1, read } = p;
    await asPrimary(p, a, (piece) => piece(Op.REPLICA_WRITE, 0, 0, 2, v1 + 1, withCrcs(fill(2))).then(() => undefined));
    expect((await read(a)).data.equals(fill(2))).toBe(true);
    expect((await read(b)).data.equals(fill(1))).toBe(true);

    // The primary dies: a new primary (A or B) takes the shard with a new term.
    const dead = cluster.servers.find((x) => x.diskId === primary)!;
    const exited = dead.exited;
    dead.process.kill('SIGKILL');
    await exited;
    const peeredBefore = cluster.service.recovery.counters.objectsPeered;
    await until('the copies made equal', async () => {
      const g = (await cluster.service.model.read()).shardMap!.groups.find((x) => x.id === s.group)!;
      if (g.shards[shard]!.includes(primary) || cluster.service.recovery.counters.objectsPeered === peeredBefore) return undefined;
      return true;
    });
    await clientAtModelMap(cluster, client);
    const now = client.router.locate(s.group, placementId, 0).replicas;
    expect([...now].sort()).toEqual([a, b].sort());
    const copies = await Promise.all(now.map((d) => read(d)));
    // Which content wins is the new primary's; what matters is that both agree, bytes and version.
    const winner = now[0] === a ? fill(2) : fill(1);
    for (const c of copies) {
      expect(c.data.equals(winner)).toBe(true);
      expect(c.version).toBe(copies[0]!.version);
    }
    expect((await v.read(0, 8192)).equals(winner)).toBe(true);
    // The other objects were never touched: all equal on both copies, as written.
    for (let i = 1; i < OBJECTS; i++) {
      for (const d of client.router.locate(s.group, placementId, i).replicas) {
        expect((await read(d, i)).data.equals(fill(1)), `object ${i} on disk ${d}`).toBe(true);
      }
    }

    // The old primary returns, catches up, and holds the same.
    const returned = startServer(cluster, dead.diskPath);
    extra.push(returned);
    await until('the old primary back in sync', async () => {
      const g = (await cluster.service.model.read()).shardMap!.groups.find((x) => x.id === s.group)!;
      return g.shards[shard]!.includes(primary) && (g.joining ?? []).every((j) => j.length === 0) ? true : undefined;
    });
    await clientAtModelMap(cluster, client);
    const back = await read(primary);
    expect(back.data.equals(winner)).toBe(true);
    expect(back.version).toBe(copies[0]!.version);
  }, 300_000);

  it('a leader that takes over peers a failover its predecessor left undone (which terms are peered is in the metadata store)', async () => {
    const p = await prepare('takeover', 1);
    const { s, placementId, shard, primary, a, v1, read } = p;
    await asPrimary(p, a, (piece) => piece(Op.REPLICA_WRITE, 0, 0, 2, v1 + 1, withCrcs(fill(3))).then(() => undefined));

    // The old leader marks the primary down (a new term) and stops before it peers: as if it died.
    await cluster.service.recovery.stop();
    const dead = cluster.servers.find((x) => x.diskId === primary)!;
    const exited = dead.exited;
    dead.process.kill('SIGKILL');
    await exited;
    await cluster.service.model.mutate((st) => {
      const d = st.disks.get(primary)!;
      d.down = true;
      d.downSince = Date.now();
    });
    const state = await cluster.service.model.read();
    const g = state.shardMap!.groups.find((x) => x.id === s.group)!;
    const term = g.terms![shard]!;
    expect(g.shards[shard]).not.toContain(primary);
    expect(state.groups.get(s.group)!.peered![shard]).not.toBe(term);
    // The map file is published after the mutation: wait for the client to see the new primary.
    const now = await until('the new map published', async () => {
      await client.refreshMap();
      const r = client.router.locate(s.group, placementId, 0).replicas;
      return r.includes(primary) ? undefined : r;
    });
    const before = await Promise.all(now.map((d) => read(d)));
    expect(before[0]!.data.equals(before[1]!.data), 'copies differ before the new leader runs').toBe(false);

    // A new leader (another Recovery over the same metadata) compares them.
    const leader = new Recovery({ model: cluster.service.model, client: async () => client, isLeader: () => true, log: pino({ level: 'silent' }), probeIntervalMs: 500, downAfterMs: 3_000, reReplicateAfterMs: 3_600_000, syncBytesPerSec: 0 });
    leader.start();
    try {
      await until('the shard recorded as peered at its new term', async () => ((await cluster.service.model.read()).groups.get(s.group)!.peered![shard] === term ? true : undefined));
      expect(leader.counters.shardsPeered).toBeGreaterThan(0);
      const after = await Promise.all(now.map((d) => read(d)));
      const winner = now[0] === a ? fill(3) : fill(1);
      for (const c of after) {
        expect(c.data.equals(winner)).toBe(true);
        expect(c.version).toBe(after[0]!.version);
      }
    } finally {
      await leader.stop();
    }
  }, 300_000);
});
