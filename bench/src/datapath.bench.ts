/**
 * Data-path benchmark: the client library against 3 local storage servers (replication 1 and 3),
 * side by side with fio on a raw file on the same filesystem (the physical limit of this machine).
 *
 *   npm run bench            (BENCH_SECONDS=10 by default per test; BENCH_DIR to pick the filesystem)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { BLOCK_BYTES } from '@storpool/protocol';
import { LocalCluster, SeededRandom } from '@storpool/testkit';
import type { Volume } from '@storpool/client';
import { cpuDuring } from './proc.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const VOLUME_BYTES = 1024 ** 3;
const baseDir = process.env.BENCH_DIR ?? tmpdir();

interface Result {
  randWriteIops: number;
  /** Random writes at QD32 where each write is durable before the next on its queue slot. */
  randWriteDurableIops?: number;
  randReadIops: number;
  qd1WriteLatencyUs: number;
  seqWriteMiBs: number;
  /** CPU ms per random write at QD32: this process (the client library) and each storage server. */
  writeCpuMs?: { client: number; servers: number[] };
}

async function fio(file: string, args: string[]): Promise<Record<string, any>> {
  const { stdout } = await execa('fio', ['--name=raw', `--filename=${file}`, '--ioengine=libaio', '--direct=1', `--size=${VOLUME_BYTES}`, `--runtime=${SECONDS}`, '--time_based', '--output-format=json', '--randrepeat=0', ...args]);
  return JSON.parse(stdout).jobs[0];
}

async function rawFio(dir: string): Promise<Result> {
  const file = join(dir, 'fio-raw.img');
  // Lay the file out first so the random tests measure overwrites, not allocation.
  await execa('fio', ['--name=fill', `--filename=${file}`, '--ioengine=libaio', '--direct=1', `--size=${VOLUME_BYTES}`, '--bs=1M', '--iodepth=8', '--rw=write']);
  const rw = await fio(file, ['--rw=randwrite', '--bs=4k', '--iodepth=32']);
  const rr = await fio(file, ['--rw=randread', '--bs=4k', '--iodepth=32']);
  const lat = await fio(file, ['--rw=randwrite', '--bs=4k', '--iodepth=1', '--fdatasync=1']);
  // 32 jobs each fdatasync-ing every write: the durable-ack equivalent of QD32.
  const durable = await fio(file, ['--rw=randwrite', '--bs=4k', '--iodepth=1', '--numjobs=32', '--group_reporting', '--fdatasync=1']);
  const seq = await fio(file, ['--rw=write', '--bs=1M', '--iodepth=8']);
  await rm(file, { force: true });
  return {
    randWriteIops: rw.write.iops,
    randWriteDurableIops: durable.write.iops,
    randReadIops: rr.read.iops,
    // fdatasync after every write: the same durability as an acknowledged storpool write.
    qd1WriteLatencyUs: (lat.write.clat_ns.mean + (lat.sync?.lat_ns?.mean ?? 0)) / 1000,
    seqWriteMiBs: seq.write.bw_bytes / 1024 ** 2,
  };
}

/** Runs `op` with `depth` workers for SECONDS; returns ops/s and mean latency. */
async function load(depth: number, op: (rnd: SeededRandom) => Promise<void>): Promise<{ opsPerSec: number; meanLatencyUs: number }> {
  const end = performance.now() + SECONDS * 1000;
  let ops = 0;
  let latency = 0;
  await Promise.all(
    Array.from({ length: depth }, async (_, w) => {
      const rnd = new SeededRandom(w + 1);
      while (performance.now() < end) {
        const t0 = performance.now();
        await op(rnd);
        latency += performance.now() - t0;
        ops++;
      }
    }),
  );
  return { opsPerSec: ops / SECONDS, meanLatencyUs: (latency / ops) * 1000 };
}

async function clientBench(volume: Volume, serverPids: readonly number[]): Promise<Result> {
  const blocks = VOLUME_BYTES / BLOCK_BYTES;
  const block = Buffer.alloc(BLOCK_BYTES, 0xab);
  const mib = Buffer.alloc(1024 ** 2, 0xcd);
  // Fill the volume so that reads hit data and writes overwrite (as fio's raw file does).
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (let off = w * 1024 ** 2; off < VOLUME_BYTES; off += 8 * 1024 ** 2) await volume.write(off, mib);
  }));
  const writes = await cpuDuring(serverPids, () => load(32, (rnd) => volume.write(rnd.int(0, blocks - 1) * BLOCK_BYTES, block)));
  const rw = writes.value;
  const writeOps = rw.opsPerSec * SECONDS;
  const rr = await load(32, async (rnd) => void (await volume.read(rnd.int(0, blocks - 1) * BLOCK_BYTES, BLOCK_BYTES)));
  const lat = await load(1, (rnd) => volume.write(rnd.int(0, blocks - 1) * BLOCK_BYTES, block));
  let seqOff = 0;
  const seq = await load(8, () => {
    const off = seqOff;
    seqOff = (seqOff + mib.length) % VOLUME_BYTES;
    return volume.write(off, mib);
  });
  return { randWriteIops: rw.opsPerSec, randReadIops: rr.opsPerSec, qd1WriteLatencyUs: lat.meanLatencyUs, seqWriteMiBs: seq.opsPerSec, writeCpuMs: { client: writes.selfMs / writeOps, servers: writes.pidsMs.map((ms) => ms / writeOps) } };
}

function row(name: string, unit: string, raw: number, r1: number, r3: number, higherIsBetter = true): string {
  const ratio = (x: number): string => (higherIsBetter ? x / raw : raw / x).toFixed(2);
  return `${name.padEnd(28)}${raw.toFixed(0).padStart(10)}${r1.toFixed(0).padStart(12)}${r3.toFixed(0).padStart(12)}   ${unit.padEnd(6)} rep1/raw ${ratio(r1)}  rep3/raw ${ratio(r3)}`;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(baseDir, 'storpool-bench-'));
  const cluster = await LocalCluster.start({ disks: 3, replications: [1, 3], diskSizeBytes: 3 * 1024 ** 3, dir, logLevel: 'warn', preallocate: true });
  try {
    console.log(`storpool data-path benchmark: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, ${SECONDS} s per test, files in ${dir}`);
    const raw = await rawFio(dir);
    const client = await cluster.client();
    const serverPids = [...cluster.servers.values()].map((s) => s.proc!.pid!);
    const rep1 = await clientBench(client.volume({ volumeId: 1, sizeBytes: VOLUME_BYTES, group: 1 }), serverPids);
    const rep3 = await clientBench(client.volume({ volumeId: 2, sizeBytes: VOLUME_BYTES, group: 2 }), serverPids);
    console.log(`${''.padEnd(28)}${'fio raw'.padStart(10)}${'rep 1'.padStart(12)}${'rep 3'.padStart(12)}`);
    console.log(row('4K random write, QD32', 'IOPS', raw.randWriteIops, rep1.randWriteIops, rep3.randWriteIops));
    console.log(`${'  (fio with fdatasync each, 32 jobs)'.padEnd(28)}${(raw.randWriteDurableIops ?? 0).toFixed(0).padStart(10)}`);
    console.log(row('4K random read, QD32', 'IOPS', raw.randReadIops, rep1.randReadIops, rep3.randReadIops));
    console.log(row('4K write latency, QD1', 'us', raw.qd1WriteLatencyUs, rep1.qd1WriteLatencyUs, rep3.qd1WriteLatencyUs, false));
    console.log(row('1M sequential write, QD8', 'MiB/s', raw.seqWriteMiBs, rep1.seqWriteMiBs, rep3.seqWriteMiBs));
    const target = 0.5 * (raw.randWriteIops / 3);
    console.log(`target: rep3 random-write IOPS >= 0.5 x (raw IOPS / 3) = ${target.toFixed(0)}: ${rep3.randWriteIops >= target ? 'MET' : 'NOT MET'} (${rep3.randWriteIops.toFixed(0)})`);
    // Where the write ceiling comes from: every process of the data path shares this machine's cores.
    const cores = cpus().length;
    for (const [name, r] of [['rep 1', rep1], ['rep 3', rep3]] as const) {
      const c = r.writeCpuMs!;
      const total = c.client + c.servers.reduce((a, b) => a + b, 0);
      console.log(
        `CPU per 4K random write, ${name}: client ${c.client.toFixed(3)} ms + servers ${c.servers.map((x) => x.toFixed(3)).join(' / ')} ms = ${total.toFixed(3)} ms; ` +
          `${cores} cores give at most ${((cores * 1000) / total).toFixed(0)} IOPS`,
      );
    }
    console.log(`the target needs <= ${((cores * 1000) / target).toFixed(3)} ms of CPU per rep3 write in all processes together`);
    console.log('(fio QD1 latency includes an fdatasync per write, the durability of an acknowledged storpool write)');
  } finally {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
