/**
 * COMPARE AND WRITE through the data path (3 real servers, replication 3): two clients race
 * compare-and-write increments of counters, one unaligned (a read-modify-write of a partial block
 * at the primary) and one a whole 4 KiB block; every success is counted once and no increment is
 * lost, and every replica ends identical. A miscompare reports the first differing byte and
 * changes nothing; a retry of a written attempt is answered "written"; a range across objects is
 * refused; a clone compares against what it inherits from its snapshot; a client with a stale map
 * is refused, refreshes it and retries on the new primary.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK_BYTES, OBJECT_BYTES, Op, chunkCrcs, decodeCompareAndWriteResult, encodeCrcs, encodeParents } from '@storpool/protocol';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import type { StorpoolClient, Volume } from '../src/index.js';

const SIZE = 8 * OBJECT_BYTES;
const GROUP = 1;

/** A counter record: the value (u32) repeated over the whole record, so a torn write shows. */
function record(value: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE(value, i);
  return b;
}

function valueOf(b: Buffer): number {
  const v = b.readUInt32LE(0);
  expect(b.equals(record(v, b.length)), 'counter record is torn').toBe(true);
  return v;
}

describe('compareAndWrite: cluster-wide atomic at the shard primary', () => {
  let cluster: LocalCluster;
  let clients: StorpoolClient[];

  beforeAll(async () => {
    cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 512 * 1024 ** 2 });
    clients = [await cluster.client({ clientId: 1 }), await cluster.client({ clientId: 2 })];
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  /** Each worker increments until it has won `wins` times; returns the attempts that lost. */
  async function incrementer(volume: Volume, offset: number, bytes: number, wins: number): Promise<{ won: number; lost: number }> {
    let won = 0;
    let lost = 0;
    let seen = valueOf(await volume.read(offset, bytes));
    while (won < wins) {
      const at = await volume.compareAndWrite(offset, record(seen, bytes), record(seen + 1, bytes));
      if (at === -1) {
        won++;
        seen++;
      } else {
        lost++;
        // The value starts in the record's first u32; a lost race differs there first.
        expect(at).toBeLessThan(4);
        seen = valueOf(await volume.read(offset, bytes));
      }
    }
    return { won, lost };
  }

  async function expectReplicasEqual(client: StorpoolClient, volumeId: number, objectIndex: number, expected: (data: Buffer) => void): Promise<number> {
    const { replicas } = client.router.locate(GROUP, volumeId, objectIndex);
    expect(replicas).toHaveLength(3);
    const copies = await Promise.all(replicas.map((disk) => client.readReplica(disk, GROUP, volumeId, objectIndex, 0, OBJECT_BYTES)));
    for (const c of copies) expect(c.data.equals(copies[0]!.data), `object ${objectIndex}: replicas differ`).toBe(true);
    expect(new Set(copies.map((c) => c.version)).size, `object ${objectIndex}: replica versions differ`).toBe(1);
    expected(copies[0]!.data);
    return copies[0]!.version;
  }

  it('two clients racing increments: final value = successes, every replica identical', async () => {
    const volumes = clients.map((c) => c.volume({ volumeId: 101, sizeBytes: SIZE, group: GROUP }));
    // One 512-byte counter inside a 4 KiB block (partial-block merge at the primary), one whole block in another object.
    const counters = [
      { offset: OBJECT_BYTES + 1536, bytes: 512 },
      { offset: 3 * OBJECT_BYTES + 2 * BLOCK_BYTES, bytes: BLOCK_BYTES },
    ];
    const WORKERS_PER_CLIENT = 3;
    const WINS_PER_WORKER = 12;
    for (const { offset, bytes } of counters) {
      await volumes[0]!.write(offset, record(0, bytes));
      const results = await Promise.all(
        volumes.flatMap((v) => Array.from({ length: WORKERS_PER_CLIENT }, () => incrementer(v, offset, bytes, WINS_PER_WORKER))),
      );
      const won = results.reduce((n, r) => n + r.won, 0);
      const lost = results.reduce((n, r) => n + r.lost, 0);
      expect(won).toBe(2 * WORKERS_PER_CLIENT * WINS_PER_WORKER);
      // Six workers on one counter: the race is real, plenty of attempts lose.
      expect(lost).toBeGreaterThan(0);
      for (const v of volumes) expect(valueOf(await v.read(offset, bytes))).toBe(won);
      const objectIndex = Math.floor(offset / OBJECT_BYTES);
      const inObject = offset - objectIndex * OBJECT_BYTES;
      await expectReplicasEqual(clients[0]!, 101, objectIndex, (data) => expect(valueOf(data.subarray(inObject, inObject + bytes))).toBe(won));
    }
  }, 240_000);

  it('a miscompare reports the first differing byte and changes nothing on any replica', async () => {
    const rnd = new SeededRandom();
    const volume = clients[0]!.volume({ volumeId: 102, sizeBytes: SIZE, group: GROUP });
    const offset = 2 * OBJECT_BYTES + 1000; // unaligned, spans two 4 KiB blocks
    const length = 5000;
    const before = rnd.bytes(length);
    await volume.write(offset, before);
    const versionBefore = await expectReplicasEqual(clients[0]!, 102, 2, () => {});
    for (const diff of [0, 1, 3095, 3096, length - 1]) {
      const compare = Buffer.from(before);
      compare[diff] = compare[diff]! ^ 0x40;
      compare[length - 1] = compare[length - 1]! ^ (diff === length - 1 ? 0 : 0x01); // a later difference too
      expect(await volume.compareAndWrite(offset, compare, rnd.bytes(length)), `SEED=${rnd.seed}`).toBe(diff);
    }
    expect((await volume.read(offset, length)).equals(before)).toBe(true);
    const versionAfter = await expectReplicasEqual(clients[0]!, 102, 2, (data) => expect(data.subarray(1000, 1000 + length).equals(before)).toBe(true));
    expect(versionAfter).toBe(versionBefore);
    // And with the right compare bytes it writes, on every replica.
    const next = rnd.bytes(length);
    expect(await clients[1]!.volume({ volumeId: 102, sizeBytes: SIZE, group: GROUP }).compareAndWrite(offset, before, next)).toBe(-1);
    const versionWritten = await expectReplicasEqual(clients[0]!, 102, 2, (data) => expect(data.subarray(1000, 1000 + length).equals(next)).toBe(true));
    expect(versionWritten).toBeGreaterThan(versionBefore);
  });

  it('a retry of an attempt the primary wrote (same token) is answered "written", another token miscompares', async () => {
    const client = clients[0]!;
    const volume = client.volume({ volumeId: 103, sizeBytes: SIZE, group: GROUP });
    const old = Buffer.alloc(512, 1);
    const mine = Buffer.alloc(512, 2);
    await volume.write(512, old);
    const target = { group: GROUP, volumeId: 103, placementId: 103, parents: [], parentBytes: encodeParents([]) };
    const attempt = async (token: number, compare: Buffer, data: Buffer): Promise<ReturnType<typeof decodeCompareAndWriteResult>> => {
      const reply = await client.toPrimary(target, 0, { op: Op.COMPARE_AND_WRITE, flags: 0, offset: 512, length: 512, version: token }, [compare, encodeCrcs(chunkCrcs(compare)), data, encodeCrcs(chunkCrcs(data))]);
      return decodeCompareAndWriteResult(reply.payload);
    };
    expect(await attempt(0x1234, old, mine)).toEqual({ written: true });
    // The client lost the answer and sends the same attempt again: it was written, not a miscompare.
    expect(await attempt(0x1234, old, mine)).toEqual({ written: true });
    expect((await volume.read(512, 512)).equals(mine)).toBe(true);
    // Another caller with the stale compare bytes loses.
    expect(await attempt(0x5678, old, Buffer.alloc(512, 3))).toEqual({ written: false, offset: 0 });
    // A later writer changed the range: the old attempt's retry is still "written", and changes nothing.
    const later = Buffer.alloc(512, 4);
    await volume.write(512, later);
    expect(await attempt(0x1234, old, mine)).toEqual({ written: true });
    expect((await volume.read(512, 512)).equals(later)).toBe(true);
    const stats = await client.diskStats(client.router.locate(GROUP, 103, 0).replicas[0]!);
    expect((stats['service'] as { compareAndWriteRetriesWritten: number }).compareAndWriteRetriesWritten).toBeGreaterThanOrEqual(2);
  });

  it('refuses a range across an object boundary, mismatched lengths and a read-only volume', async () => {
    const volume = clients[0]!.volume({ volumeId: 104, sizeBytes: SIZE, group: GROUP });
    const two = Buffer.alloc(1024);
    await expect(volume.compareAndWrite(OBJECT_BYTES - 512, two, two)).rejects.toMatchObject({ code: 'STORE_ERR_OUT_OF_RANGE', message: expect.stringContaining('crosses the object boundary') });
    await expect(volume.compareAndWrite(0, Buffer.alloc(512), two)).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });
    await expect(volume.compareAndWrite(SIZE - 512, two, two)).rejects.toMatchObject({ code: 'STORE_ERR_OUT_OF_RANGE' });
    await expect(clients[0]!.volume({ volumeId: 104, sizeBytes: SIZE, group: GROUP, readOnly: true }).compareAndWrite(0, two, two)).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });
    // Inside one object, right up to its end, is fine (a hole compares as zeros).
    expect(await volume.compareAndWrite(OBJECT_BYTES - 1024, two, Buffer.alloc(1024, 9))).toBe(-1);
    expect(await volume.compareAndWrite(0, Buffer.alloc(0), Buffer.alloc(0))).toBe(-1);
  });

  it('a clone compares against the data it inherits from its snapshot, and writes only itself', async () => {
    const client = clients[1]!;
    const snapshot = client.volume({ volumeId: 110, placementId: 110, sizeBytes: SIZE, group: GROUP });
    const inherited = Buffer.alloc(4096, 0x5a);
    await snapshot.write(8192, inherited);
    const clone = client.volume({ volumeId: 111, placementId: 110, parents: [110], sizeBytes: SIZE, group: GROUP });
    expect(await clone.compareAndWrite(8192 + 100, Buffer.alloc(200), Buffer.alloc(200, 1))).toBe(0);
    expect(await clone.compareAndWrite(8192 + 100, inherited.subarray(100, 300), Buffer.alloc(200, 1))).toBe(-1);
    const expected = Buffer.from(inherited);
    expected.fill(1, 100, 300);
    expect((await clone.read(8192, 4096)).equals(expected)).toBe(true);
    expect((await snapshot.read(8192, 4096)).equals(inherited)).toBe(true);
  });

  it('a client with a stale map is refused, refreshes it and retries on the new primary (as write)', async () => {
    const [first, second] = clients as [StorpoolClient, StorpoolClient];
    const volumes = clients.map((c) => c.volume({ volumeId: 105, sizeBytes: SIZE, group: GROUP }));
    await volumes[0]!.write(4 * OBJECT_BYTES, record(7, 512));
    const oldPrimary = first.router.locate(GROUP, 105, 4).replicas[0];
    const epoch = first.router.epoch;
    // New map: every shard's replica order rotated (new primaries), the next epoch.
    cluster.map = { ...cluster.map, epoch: epoch + 1, groups: cluster.map.groups.map((g) => ({ ...g, shards: g.shards.map((r) => [...r.slice(1), r[0]!]) })) };
    await cluster.writeMap();
    await new Promise((r) => setTimeout(r, 2500)); // the servers poll the map every second
    expect(first.router.epoch).toBe(epoch);
    const refreshes = first.counters.mapRefreshes;
    expect(await volumes[0]!.compareAndWrite(4 * OBJECT_BYTES, record(7, 512), record(8, 512))).toBe(-1);
    expect(first.router.epoch).toBe(epoch + 1);
    expect(first.counters.mapRefreshes).toBeGreaterThan(refreshes);
    expect(first.router.locate(GROUP, 105, 4).replicas[0]).not.toBe(oldPrimary);
    // The other stale client, with the old compare bytes, gets a miscompare from the new primary.
    expect(await volumes[1]!.compareAndWrite(4 * OBJECT_BYTES, record(7, 512), record(9, 512))).toBe(0);
    expect(second.router.epoch).toBe(epoch + 1);
    await expectReplicasEqual(first, 105, 4, (data) => expect(valueOf(data.subarray(0, 512))).toBe(8));
  });
});
