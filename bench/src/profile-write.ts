/**
 * Ad-hoc profile of 4 KiB random writes (REP=1|3, QD, THICK=1, SECONDS_RUN, READ=1 for reads,
 * SEQ=1 for 1 MiB sequential writes, FILL=1 to write the whole 1 GiB volume first, READ_MIB=n to read
 * from the first n MiB, default 64):
 * IOPS, commits, and CPU per op per process, split into user/system and main thread/other threads
 * (libuv threadpool, LMDB, GC). CPU per op is the metric to compare on a busy machine. WARMUP=s
 * (default 3) of the same load first, unmeasured.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import { BLOCK_BYTES } from '@storpool/protocol';

const rep = Number(process.env.REP ?? 3);
const qd = Number(process.env.QD ?? 32);
const reading = process.env.READ === '1';
const sequential = process.env.SEQ === '1';
const readBlocks = (Number(process.env.READ_MIB ?? 64) * 1024 * 1024) / BLOCK_BYTES;
interface Cpu { user: number; sys: number; mainUser: number; mainSys: number }
/** CPU ms of a process (user, system) and of its main thread, from /proc. */
const cpu = (pid: number): Cpu => {
  const parse = (path: string): [number, number] => {
    const f = readFileSync(path, 'utf8').split(') ')[1]!.split(' ');
    return [(Number(f[11]) * 1000) / 100, (Number(f[12]) * 1000) / 100];
  };
  const [user, sys] = parse(`/proc/${pid}/stat`);
  const [mainUser, mainSys] = parse(`/proc/${pid}/task/${pid}/stat`);
  return { user, sys, mainUser, mainSys };
};
/** CPU ms per thread name (libuv threadpool, LMDB writer, GC, ...) of a process. */
const threads = (pid: number): Map<string, number> => {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      const f = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').split(') ')[1]!.split(' ');
      out.set(`${comm}/${t === String(pid) ? 'main' : t}`, ((Number(f[11]) + Number(f[12])) * 1000) / 100);
    } catch {
      // the thread ended
    }
  }
  return out;
};
const cluster = await LocalCluster.start({ disks: 3, replications: [rep], diskSizeBytes: 2 * 1024 ** 3, logLevel: 'warn', preallocate: process.env.THICK === '1' });
try {
  const client = await cluster.client();
  const vol = client.volume({ volumeId: 1, sizeBytes: 1024 ** 3, group: 1 });
  const block = Buffer.alloc(sequential ? 1024 * 1024 : BLOCK_BYTES, 1);
  let next = 0;
  if (process.env.FILL === '1') {
    // A full volume first (as after a sequential fill): random writes then overwrite, and the index is large.
    const big = Buffer.alloc(1024 * 1024, 3);
    for (let off = 0; off < 1024 ** 3; off += big.length) await vol.write(off, big);
  }
  if (reading && process.env.FILL !== '1') {
    // Something to read: 64 MiB written sequentially first.
    const big = Buffer.alloc(1024 * 1024, 7);
    for (let off = 0; off < 64 * 1024 * 1024; off += big.length) await vol.write(off, big);
  }
  const pids = [...cluster.servers.values()].map((s) => s.proc!.pid!);
  const seconds = Number(process.env.SECONDS_RUN ?? 5);
  // The same load unmeasured first (WARMUP seconds, default 3): until V8 has optimized the hot
  // paths, compiling them costs more CPU than running them, and a short run measures mostly that.
  const warmup = Number(process.env.WARMUP ?? 3);
  let end = performance.now() + warmup * 1000;
  let measuring = false;
  let before = pids.map(cpu);
  let threadsBefore = pids.map(threads);
  let c0 = process.cpuUsage();
  let ops = 0;
  // A sum, not an array of samples: 400k numbers kept the harness's own GC busy (promoted to old space).
  let latencySum = 0;
  const startMeasuring = (): void => {
    measuring = true;
    ops = 0;
    latencySum = 0;
    before = pids.map(cpu);
    threadsBefore = pids.map(threads);
    c0 = process.cpuUsage();
    end = performance.now() + seconds * 1000;
  };
  if (warmup <= 0) startMeasuring();
  await Promise.all(Array.from({ length: qd }, async (_, w) => {
    const rnd = new SeededRandom(w + 1);
    for (;;) {
      if (performance.now() >= end) {
        if (measuring) break;
        startMeasuring();
      }
      const t = performance.now();
      if (reading) await vol.read(rnd.int(0, readBlocks - 1) * BLOCK_BYTES, BLOCK_BYTES);
      else if (sequential) {
        const at = next;
        next = (next + block.length) % (1024 ** 3);
        await vol.write(at, block);
      } else await vol.write(rnd.int(0, 262143) * BLOCK_BYTES, block);
      latencySum += performance.now() - t;
      ops++;
    }
  }));
  const c1 = process.cpuUsage(c0);
  const after = pids.map(cpu);
  const threadsAfter = pids.map(threads);
  const per = (ms: number): string => (ms / ops).toFixed(3);
  const mean = latencySum / ops;
  console.log(`rep${rep} ${sequential ? '1M seqwrite' : `4K rand${reading ? 'read' : 'write'}`} QD${qd}: ${(ops / seconds).toFixed(0)} IOPS, mean ${mean.toFixed(3)} ms; load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
  console.log(`CPU ms per op: client ${((c1.user + c1.system) / 1000 / ops).toFixed(3)} (user ${per(c1.user / 1000)} sys ${per(c1.system / 1000)})`);
  let total = (c1.user + c1.system) / 1000;
  pids.forEach((_, i) => {
    const a = after[i]!;
    const b = before[i]!;
    const u = a.user - b.user;
    const s = a.sys - b.sys;
    total += u + s;
    console.log(`  server ${i + 1}: ${per(u + s)} (user ${per(u)} sys ${per(s)}; main thread user ${per(a.mainUser - b.mainUser)} sys ${per(a.mainSys - b.mainSys)})`);
    const tb = threadsBefore[i]!;
    const parts = [...threadsAfter[i]!].map(([name, ms]) => [name, ms - (tb.get(name) ?? 0)] as const).filter(([, ms]) => ms > 0).sort((x, y) => y[1] - x[1]);
    console.log(`    threads: ${parts.map(([name, ms]) => `${name} ${per(ms)}`).join(', ')}`);
  });
  console.log(`  total ${per(total)} ms CPU per op`);
  if (reading) {
    for (const d of [1, 2, 3]) {
      const s = (await client.diskStats(d)) as { store: { syncReads: number; asyncReads: number; slowSyncReads: number } };
      console.log(`disk ${d}: ${s.store.syncReads} synchronous reads, ${s.store.asyncReads} through the threadpool, ${s.store.slowSyncReads} slow`);
    }
  }
  if (!reading) for (const d of [1, 2, 3]) { const s = (await client.diskStats(d)) as { store: { commits: number; writesCommitted: number } }; console.log(`disk ${d}: ${s.store.commits} commits, ${(s.store.writesCommitted / s.store.commits).toFixed(1)} writes/commit`); }
} finally { await cluster.stop(); }
