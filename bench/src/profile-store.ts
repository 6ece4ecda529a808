/**
 * The storage engine alone, in this process: 4 KiB random writes (or READ=1 reads) at QD (default
 * 32) on a fresh file-backed disk for SECONDS_RUN seconds. Prints IOPS, mean latency, commits and
 * CPU per op (this process, all threads: user/system), the metric to compare on a busy machine.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { DiskStore, formatDisk } from '@storpool/server';
import { BLOCK_BYTES, BLOCKS_PER_OBJECT, chunkCrcs } from '@storpool/protocol';
import { SeededRandom } from '@storpool/testkit';

const qd = Number(process.env.QD ?? 32);
const seconds = Number(process.env.SECONDS_RUN ?? 5);
const reading = process.env.READ === '1';
/** OPS=n: a fixed number of ops instead of SECONDS_RUN (for instruction counts under callgrind). */
const opsLimit = Number(process.env.OPS ?? Infinity);
const dir = mkdtempSync(join(tmpdir(), 'sp-profile-store-'));
try {
  const path = join(dir, 'disk.img');
  await formatDisk(path, { clusterId: randomUUID(), diskId: 1, sizeBytes: 2 * 1024 ** 3 });
  const store = await DiskStore.open(path);
  const block = Buffer.alloc(BLOCK_BYTES, 1);
  const crcs = chunkCrcs(block);
  const objects = 256; // 1 GiB
  if (reading) for (let o = 0; o < 16; o++) for (let b = 0; b < BLOCKS_PER_OBJECT; b += 64) await store.write({ volumeId: 1, objectIndex: o }, b, Buffer.alloc(64 * BLOCK_BYTES, 3), chunkCrcs(Buffer.alloc(64 * BLOCK_BYTES, 3)), 1);
  const c0 = process.cpuUsage();
  const s0 = store.stats();
  const end = process.env.OPS === undefined ? performance.now() + seconds * 1000 : Infinity;
  let ops = 0;
  let latency = 0;
  await Promise.all(Array.from({ length: qd }, async (_, w) => {
    const rnd = new SeededRandom(w + 1);
    let version = 1;
    while (performance.now() < end && ops < opsLimit) {
      const t = performance.now();
      if (reading) await store.read({ volumeId: 1, objectIndex: rnd.int(0, 15) }, rnd.int(0, BLOCKS_PER_OBJECT - 1), 1);
      else await store.write({ volumeId: 1, objectIndex: rnd.int(0, objects - 1) }, rnd.int(0, BLOCKS_PER_OBJECT - 1), block, crcs, version++);
      latency += performance.now() - t;
      ops++;
    }
  }));
  const c = process.cpuUsage(c0);
  const s1 = store.stats();
  const commits = s1.commits - s0.commits;
  console.log(
    `store 4K rand${reading ? 'read' : 'write'} QD${qd}: ${ops} ops, ${(ops / seconds).toFixed(0)} IOPS, mean ${(latency / ops).toFixed(3)} ms, ` +
      `CPU ${((c.user + c.system) / 1000 / ops).toFixed(4)} ms/op (user ${(c.user / 1000 / ops).toFixed(4)} sys ${(c.system / 1000 / ops).toFixed(4)})` +
      (reading ? '' : `, ${commits} commits, ${(ops / Math.max(commits, 1)).toFixed(1)} ops/commit`) +
      `; load ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`,
  );
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
