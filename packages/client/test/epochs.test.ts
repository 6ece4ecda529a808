/**
 * Shard-map changes: a client routing with an old epoch is refused, re-reads the map and retries
 * against the new primaries; data written before and after the change reads back everywhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OBJECT_BYTES } from '@storpool/protocol';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import type { StorpoolClient } from '../src/index.js';

describe('shard-map epochs', () => {
  let cluster: LocalCluster;
  let client: StorpoolClient;
  beforeAll(async () => {
    cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 256 * 1024 ** 2, shardCount: 64 });
    client = await cluster.client();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('a stale client is refused, refreshes its map and retries on the new primaries', async () => {
    const rnd = new SeededRandom();
    const volume = client.volume({ volumeId: 4, sizeBytes: 32 * OBJECT_BYTES, group: 1 });
    const before = rnd.bytes(32 * 65536);
    for (let o = 0; o < 32; o++) await volume.write(o * OBJECT_BYTES, before.subarray(o * 65536, (o + 1) * 65536));
    const oldPrimaries = Array.from({ length: 32 }, (_, o) => client.router.locate(1, 4, o).replicas[0]);

    // New map: every shard's replica order rotated (new primaries), epoch 2.
    cluster.map = { ...cluster.map, epoch: 2, groups: cluster.map.groups.map((g) => ({ ...g, shards: g.shards.map((r) => [...r.slice(1), r[0]!]) })) };
    await cluster.writeMap();
    // Let the servers notice on their own (they poll the map every second).
    await new Promise((r) => setTimeout(r, 2500));

    expect(client.router.epoch).toBe(1);
    const after = rnd.bytes(32 * 65536);
    for (let o = 0; o < 32; o++) await volume.write(o * OBJECT_BYTES + 65536, after.subarray(o * 65536, (o + 1) * 65536));
    expect(client.router.epoch).toBe(2);
    expect(client.counters.mapRefreshes).toBeGreaterThan(0);
    const refused = await Promise.all([1, 2, 3].map(async (d) => ((await client.diskStats(d)) as { service: { staleEpochRefused: number } }).service.staleEpochRefused));
    expect(refused.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);

    for (let o = 0; o < 32; o++) {
      expect(client.router.locate(1, 4, o).replicas[0]).not.toBe(oldPrimaries[o]);
      const got = await volume.read(o * OBJECT_BYTES, 2 * 65536);
      expect(got.equals(Buffer.concat([before.subarray(o * 65536, (o + 1) * 65536), after.subarray(o * 65536, (o + 1) * 65536)])), `object ${o} (SEED=${rnd.seed})`).toBe(true);
      const copies = await Promise.all(client.router.locate(1, 4, o).replicas.map((d) => client.readReplica(d, 1, 4, o, 0, 2 * 65536)));
      for (const c of copies) expect(c.data.equals(got)).toBe(true);
    }
  }, 60_000);
});
