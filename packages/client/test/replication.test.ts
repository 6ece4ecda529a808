import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK_BYTES, OBJECT_BYTES } from '@storpool/protocol';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import type { StorpoolClient } from '../src/index.js';

const VOLUME_BYTES = 1024 ** 3;

describe('replicated data path: 3 servers, replication 3, 1 GiB volume', () => {
  let cluster: LocalCluster;
  let client: StorpoolClient;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 2 * 1024 ** 3 });
    client = await cluster.client();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('random mixed-size unaligned writes, trims and reads match an in-memory model, and every replica is identical', async () => {
    const rnd = new SeededRandom();
    const seed = `SEED=${rnd.seed}`;
    const volume = client.volume({ volumeId: 101, sizeBytes: VOLUME_BYTES, group: 1 });
    const model = Buffer.alloc(VOLUME_BYTES);
    const touched = new Set<number>();
    const sizes = [512, 1000, 4096, 4097, 8192, 65536, 100_000, 1024 ** 2];

    const randomRange = (): [number, number] => {
      const len = sizes[rnd.int(0, sizes.length - 1)]! + (rnd.next() < 0.3 ? rnd.int(0, 511) : 0);
      const aligned = rnd.next() < 0.5;
      let off = rnd.int(0, VOLUME_BYTES - len);
      if (aligned) off -= off % BLOCK_BYTES;
      return [off, len];
    };

    for (let round = 0; round < 40; round++) {
      // A batch of non-overlapping mutations in flight together, then reads of random ranges.
      const ranges: [number, number][] = [];
      while (ranges.length < 16) {
        const [off, len] = randomRange();
        if (ranges.every(([o, l]) => off + len <= o || o + l <= off)) ranges.push([off, len]);
      }
      await Promise.all(
        ranges.map(async ([off, len]) => {
          for (let o = Math.floor(off / OBJECT_BYTES); o <= Math.floor((off + len - 1) / OBJECT_BYTES); o++) touched.add(o);
          const kind = rnd.next();
          if (kind < 0.8) {
            const data = rnd.bytes(len);
            data.copy(model, off);
            await volume.write(off, data);
          } else if (kind < 0.9) {
            model.fill(0, off, off + len);
            await volume.trim(off, len);
          } else {
            model.fill(0, off, off + len);
            await volume.writeZeroes(off, len);
          }
        }),
      );
      const reads = [...ranges.slice(0, 8), ...Array.from({ length: 8 }, randomRange)];
      const got = await Promise.all(reads.map(([off, len]) => volume.read(off, len)));
      got.forEach((buf, i) => {
        const [off, len] = reads[i]!;
        if (!buf.equals(model.subarray(off, off + len))) expect.fail(`${seed} round ${round}: read ${off}+${len} differs from the model`);
      });
    }

    // Every replica of every touched object holds exactly the model's bytes.
    const router = client.router;
    for (const objectIndex of touched) {
      const { replicas } = router.locate(1, 101, objectIndex);
      expect(replicas).toHaveLength(3);
      const expected = model.subarray(objectIndex * OBJECT_BYTES, (objectIndex + 1) * OBJECT_BYTES);
      const copies = await Promise.all(replicas.map((disk) => client.readReplica(disk, 1, 101, objectIndex, 0, OBJECT_BYTES)));
      copies.forEach((c, i) => {
        if (!c.data.equals(expected)) expect.fail(`${seed}: object ${objectIndex} on disk ${replicas[i]} differs from the model`);
      });
      expect(new Set(copies.map((c) => c.version)).size, `object ${objectIndex} versions differ between replicas`).toBe(1);
    }
    expect(touched.size).toBeGreaterThan(100);
  }, 240_000);

  it('refuses out-of-range I/O without touching the volume', async () => {
    const volume = client.volume({ volumeId: 102, sizeBytes: 1024 ** 2, group: 1 });
    await expect(volume.write(1024 ** 2 - 10, Buffer.alloc(20))).rejects.toMatchObject({ code: 'STORE_ERR_OUT_OF_RANGE' });
    await expect(volume.read(-1, 10)).rejects.toMatchObject({ code: 'STORE_ERR_OUT_OF_RANGE' });
    expect((await volume.read(0, 1024 ** 2)).equals(Buffer.alloc(1024 ** 2))).toBe(true);
  });
});
