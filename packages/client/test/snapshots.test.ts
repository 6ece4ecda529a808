/**
 * Copy-on-write through the data path: a snapshot freezes a data id, the volume continues under a
 * new data id whose reads fall through to it; clones share the lineage; trims in a child hide the
 * parent's data; purge releases one data id and nothing else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK_BYTES, BLOCK_DATA, BLOCK_HOLE, BLOCK_ZERO, OBJECT_BYTES } from '@storpool/protocol';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import type { StorpoolClient, Volume } from '../src/index.js';

const SIZE = 16 * OBJECT_BYTES;

describe('copy-on-write snapshots and clones', () => {
  let cluster: LocalCluster;
  let client: StorpoolClient;
  beforeAll(async () => {
    cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 512 * 1024 ** 2 });
    client = await cluster.client();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  async function randomMutations(rnd: SeededRandom, volume: Volume, model: Buffer, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const len = rnd.int(1, 40_000);
      const off = rnd.int(0, SIZE - len);
      const kind = rnd.next();
      if (kind < 0.7) {
        const data = rnd.bytes(len);
        data.copy(model, off);
        await volume.write(off, data);
      } else {
        model.fill(0, off, off + len);
        await (kind < 0.85 ? volume.trim(off, len) : volume.writeZeroes(off, len));
      }
    }
  }

  async function expectEqual(volume: Volume, model: Buffer, what: string, seed: number): Promise<void> {
    for (let off = 0; off < SIZE; off += OBJECT_BYTES) {
      const got = await volume.read(off, OBJECT_BYTES);
      if (!got.equals(model.subarray(off, off + OBJECT_BYTES))) expect.fail(`${what}: object ${off / OBJECT_BYTES} differs (SEED=${seed})`);
    }
  }

  it('snapshot, continue writing, clone, trim over parent data, purge', async () => {
    const rnd = new SeededRandom();
    // Volume "a" starts as data id 10.
    const a0 = client.volume({ volumeId: 10, sizeBytes: SIZE, group: 1 });
    const modelSnap = Buffer.alloc(SIZE);
    await randomMutations(rnd, a0, modelSnap, 60);
    // Snapshot: data id 10 is frozen as the snapshot; "a" continues as data id 11 on top of it.
    const snap = client.volume({ volumeId: 10, sizeBytes: SIZE, group: 1, readOnly: true });
    const a = client.volume({ volumeId: 11, placementId: 10, parents: [10], sizeBytes: SIZE, group: 1 });
    const modelA = Buffer.from(modelSnap);
    await expectEqual(a, modelA, 'volume right after the snapshot', rnd.seed);
    await randomMutations(rnd, a, modelA, 60);
    // A whole-object trim in the child must read zeros, not the parent's data.
    await a.trim(3 * OBJECT_BYTES, OBJECT_BYTES);
    modelA.fill(0, 3 * OBJECT_BYTES, 4 * OBJECT_BYTES);
    await expectEqual(a, modelA, 'volume after writes over the snapshot', rnd.seed);
    await expectEqual(snap, modelSnap, 'snapshot after writes to the volume', rnd.seed);
    await expect(snap.write(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });

    // A clone of the snapshot: its own data id, same lineage, independent of "a".
    const clone = client.volume({ volumeId: 12, placementId: 10, parents: [10], sizeBytes: SIZE, group: 1 });
    const modelClone = Buffer.from(modelSnap);
    await expectEqual(clone, modelClone, 'fresh clone', rnd.seed);
    await randomMutations(rnd, clone, modelClone, 40);
    await expectEqual(clone, modelClone, 'clone after writes', rnd.seed);
    await expectEqual(a, modelA, 'volume after writes to the clone', rnd.seed);
    await expectEqual(snap, modelSnap, 'snapshot after writes to the clone', rnd.seed);

    // Block states through the chain.
    const fresh = client.volume({ volumeId: 13, placementId: 10, parents: [12, 10], sizeBytes: SIZE, group: 1 });
    await fresh.write(5 * OBJECT_BYTES, Buffer.alloc(BLOCK_BYTES, 1));
    await fresh.writeZeroes(5 * OBJECT_BYTES + BLOCK_BYTES, BLOCK_BYTES);
    const states = await fresh.allocation(5 * OBJECT_BYTES, 3 * BLOCK_BYTES);
    expect(states[0]).toBe(BLOCK_DATA);
    expect(states[1]).toBe(BLOCK_ZERO);
    const parentState = (await clone.allocation(5 * OBJECT_BYTES + 2 * BLOCK_BYTES, BLOCK_BYTES))[0];
    expect(states[2]).toBe(parentState);
    const never = client.volume({ volumeId: 14, sizeBytes: SIZE, group: 1 });
    expect([...(await never.allocation(0, 2 * BLOCK_BYTES))]).toEqual([BLOCK_HOLE, BLOCK_HOLE]);

    // Purge of the clone's chain member 13 and of "a" (11) leaves the snapshot and the clone intact.
    const before = await Promise.all([1, 2, 3].map((d) => client.diskStats(d)));
    expect(await client.purge(13)).toBeGreaterThan(0);
    expect(await client.purge(11)).toBeGreaterThan(0);
    const after = await Promise.all([1, 2, 3].map((d) => client.diskStats(d)));
    const used = (s: Record<string, unknown>[]): number => s.reduce((n, x) => n + (x.store as { blocksUsed: number }).blocksUsed, 0);
    expect(used(after)).toBeLessThan(used(before));
    await expectEqual(snap, modelSnap, 'snapshot after purges', rnd.seed);
    await expectEqual(clone, modelClone, 'clone after purges', rnd.seed);
    await expectEqual(a, modelSnap, 'a purged volume reads through to its parent only', rnd.seed);
  }, 180_000);
});
