import { describe, expect, it } from 'vitest';
import { StorpoolError } from '@storpool/errors';
import { buildShardGroup, parseShardMap, placeReplicas, shardOf, ShardRouter, type DiskEntry } from '../src/index.js';

function disk(id: number, serverId: number, faultSet = '', weight = 1): DiskEntry {
  return { id, serverId, faultSet, address: { host: '127.0.0.1', port: 7000 + id }, weight, placementGroups: ['default'] };
}

describe('placement', () => {
  it('never puts two replicas on one server or fault set', () => {
    const disks = [disk(1, 1, 'r1'), disk(2, 1, 'r1'), disk(3, 2, 'r1'), disk(4, 3, 'r2'), disk(5, 4, 'r2'), disk(6, 5, 'r3'), disk(7, 6, 'r3')];
    const group = buildShardGroup({ id: 1, name: 'g', replication: 3, placeAll: 'default', shardCount: 512 }, disks);
    const byId = new Map(disks.map((d) => [d.id, d]));
    for (const replicas of group.shards) {
      expect(replicas).toHaveLength(3);
      expect(new Set(replicas.map((r) => byId.get(r)!.serverId)).size).toBe(3);
      expect(new Set(replicas.map((r) => byId.get(r)!.faultSet)).size).toBe(3);
    }
  });

  it('spreads primaries evenly and in proportion to weight', () => {
    const disks = [disk(1, 1), disk(2, 2), disk(3, 3), disk(4, 4, '', 2)];
    const group = buildShardGroup({ id: 1, name: 'g', replication: 1, placeAll: 'default', shardCount: 10000 }, disks);
    const count = new Map<number, number>();
    for (const [p] of group.shards) count.set(p!, (count.get(p!) ?? 0) + 1);
    for (const id of [1, 2, 3]) expect(count.get(id)! / 10000).toBeCloseTo(0.2, 1);
    expect(count.get(4)! / 10000).toBeCloseTo(0.4, 1);
  });

  it('adding a disk moves only about 1/n of the replicas', () => {
    const disks = Array.from({ length: 9 }, (_, i) => disk(i + 1, i + 1));
    const before = buildShardGroup({ id: 3, name: 'g', replication: 3, placeAll: 'default', shardCount: 4096 }, disks);
    const after = buildShardGroup({ id: 3, name: 'g', replication: 3, placeAll: 'default', shardCount: 4096 }, [...disks, disk(10, 10)]);
    let moved = 0;
    before.shards.forEach((replicas, s) => {
      const next = new Set(after.shards[s]);
      moved += replicas.filter((r) => !next.has(r)).length;
    });
    const fraction = moved / (4096 * 3);
    expect(fraction).toBeGreaterThan(0.05);
    expect(fraction).toBeLessThan(0.15); // ideal 1/10
  });

  it('refuses a replication the fault domains cannot satisfy, with what to do', () => {
    expect(() => buildShardGroup({ id: 1, name: 'g', replication: 3, placeAll: 'default', shardCount: 4 }, [disk(1, 1), disk(2, 1), disk(3, 2)])).toThrow(/add disks or lower the replication/);
    expect(placeReplicas(1, 0, [disk(1, 1), disk(2, 1)], ['default', 'default'])).toHaveLength(1);
  });

  it('draws head, middle and tail replicas from their own placement groups', () => {
    const ssd = [1, 2, 3].map((i) => ({ ...disk(i, i), placementGroups: ['ssd'] }));
    const hdd = [4, 5, 6].map((i) => ({ ...disk(i, i), placementGroups: ['hdd'] }));
    const group = buildShardGroup({ id: 2, name: 'hybrid', replication: 3, placeHead: 'ssd', placeAll: 'hdd', placeTail: 'hdd', shardCount: 64 }, [...ssd, ...hdd]);
    for (const [head, mid, tail] of group.shards) {
      expect(head).toBeLessThanOrEqual(3);
      expect(mid).toBeGreaterThanOrEqual(4);
      expect(tail).toBeGreaterThanOrEqual(4);
    }
  });

  it('hashes objects of a volume over all shards', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 4096; i++) seen.add(shardOf(42, i, 64));
    expect(seen.size).toBe(64);
    expect(shardOf(2 ** 40 + 3, 1, 1024)).toBe(shardOf(2 ** 40 + 3, 1, 1024));
  });
});

describe('shard map validation', () => {
  const disks = [disk(1, 1), disk(2, 2), disk(3, 3)];
  const good = { clusterId: '7b0a1f4e-3c2d-4e5f-8a9b-0c1d2e3f4a5b', epoch: 1, disks, groups: [buildShardGroup({ id: 1, name: 'g', replication: 3, placeAll: 'default', shardCount: 8 }, disks)] };

  it('accepts a good map and routes objects to it', () => {
    const router = new ShardRouter(parseShardMap(JSON.parse(JSON.stringify(good))));
    const { shard, replicas } = router.locate(1, 5, 6);
    expect(shard).toBe(shardOf(5, 6, 8));
    expect(replicas).toHaveLength(3);
    expect(() => router.locate(9, 1, 1)).toThrow(StorpoolError);
  });

  it.each([
    ['bad cluster id', { ...good, clusterId: 'nope' }],
    ['epoch 0', { ...good, epoch: 0 }],
    ['duplicate disk', { ...good, disks: [...disks, disk(1, 9)] }],
    ['unknown disk in a shard', { ...good, groups: [{ ...good.groups[0]!, shards: [[1, 2, 99]] }] }],
    ['repeated disk in a shard', { ...good, groups: [{ ...good.groups[0]!, shards: [[1, 1]] }] }],
    ['port out of range', { ...good, disks: [{ ...disk(1, 1), address: { host: 'h', port: 70000 } }] }],
  ])('refuses %s with MAP_ERR_INVALID', (_name, value) => {
    expect(() => parseShardMap(value)).toThrowError(expect.objectContaining({ code: 'MAP_ERR_INVALID' }));
  });
});
