/** Ad-hoc profile of 4 KiB random writes at QD32 (REP=1|3, THICK=1): IOPS, commits, CPU per process. */
import { readFileSync } from 'node:fs';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import { BLOCK_BYTES } from '@storpool/protocol';

const rep = Number(process.env.REP ?? 3);
const qd = Number(process.env.QD ?? 32);
const cpuMs = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
};
const cluster = await LocalCluster.start({ disks: 3, replications: [rep], diskSizeBytes: 2 * 1024 ** 3, logLevel: 'warn', preallocate: process.env.THICK === '1' });
try {
  const client = await cluster.client();
  const vol = client.volume({ volumeId: 1, sizeBytes: 1024 ** 3, group: 1 });
  const block = Buffer.alloc(BLOCK_BYTES, 1);
  const pids = [...cluster.servers.values()].map((s) => s.proc!.pid!);
  const before = pids.map(cpuMs);
  const c0 = process.cpuUsage();
  const seconds = Number(process.env.SECONDS_RUN ?? 5);
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  await Promise.all(Array.from({ length: qd }, async (_, w) => {
    const rnd = new SeededRandom(w + 1);
    while (performance.now() < end) { await vol.write(rnd.int(0, 262143) * BLOCK_BYTES, block); ops++; }
  }));
  const c1 = process.cpuUsage(c0);
  const after = pids.map(cpuMs);
  console.log(`rep${rep} 4K randwrite QD${qd}: ${(ops / seconds).toFixed(0)} IOPS; CPU ms per write: client ${((c1.user + c1.system) / 1000 / ops).toFixed(3)}, servers ${pids.map((_, i) => ((after[i]! - before[i]!) / ops).toFixed(3)).join(' ')}`);
  for (const d of [1, 2, 3]) { const s = (await client.diskStats(d)) as { store: { commits: number; writesCommitted: number } }; console.log(`disk ${d}: ${s.store.commits} commits, ${(s.store.writesCommitted / s.store.commits).toFixed(1)} writes/commit`); }
} finally { await cluster.stop(); }
