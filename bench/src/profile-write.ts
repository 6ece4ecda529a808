import { LocalCluster, SeededRandom } from '@storpool/testkit';
import { BLOCK_BYTES } from '@storpool/protocol';
const rep = Number(process.env.REP ?? 3);
const cluster = await LocalCluster.start({ disks: 3, replications: [rep], diskSizeBytes: 2 * 1024 ** 3, logLevel: 'warn', preallocate: process.env.THICK === '1' });
try {
  const client = await cluster.client();
  const vol = client.volume({ volumeId: 1, sizeBytes: 1024 ** 3, group: 1 });
  const block = Buffer.alloc(BLOCK_BYTES, 1);
  const end = performance.now() + 5000;
  let ops = 0;
  await Promise.all(Array.from({ length: 32 }, async (_, w) => {
    const rnd = new SeededRandom(w + 1);
    while (performance.now() < end) { await vol.write(rnd.int(0, 262143) * BLOCK_BYTES, block); ops++; }
  }));
  console.log(`rep${rep} 4K randwrite QD32: ${(ops / 5).toFixed(0)} IOPS`);
  for (const d of [1, 2, 3]) { const s = (await client.diskStats(d)) as any; console.log(d, s.store.commits, s.store.writesCommitted, (s.store.writesCommitted / s.store.commits).toFixed(1)); }
} finally { await cluster.stop(); }
