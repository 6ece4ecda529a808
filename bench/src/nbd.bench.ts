/**
 * Block-service benchmark: fio with ioengine=nbd against storpool's NBD export (replication 1 and
 * 3 on 3 local servers; writes acknowledged only when durable on every replica), qemu-nbd and
 * nbdkit's file plugin on a raw file on the same filesystem, and fio libaio direct=1 on the raw
 * file (with and without fdatasync), with the targets.
 *
 *   npm run bench:nbd      (BENCH_SECONDS=10 per test by default; BENCH_DIR picks the filesystem)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { NbdServer, volumeExport } from '@storpool/nbd';
import { LocalCluster, freePort } from '@storpool/testkit';
import { cpuDuring, sampleTreeCpu } from './proc.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const SIZE = 1024 ** 3;

interface Numbers {
  randWriteIops: number;
  randReadIops: number;
  qd1WriteMeanUs: number;
  qd1WriteP99Us: number;
  seqWriteMiBs: number;
  /** CPU ms per 4K random read at QD32: fio's own, and the serving processes' (absent for fio on the raw file). */
  readCpuMs: { fio: number; serving: number } | undefined;
}

type Target = string[];

/** Who serves a target, for CPU accounting: other processes, and whether this one (storpool's NBD server) too. */
interface Serving {
  pids: number[];
  self: boolean;
}

interface FioRun {
  job: Record<string, any>;
  /** CPU ms fio's processes used. */
  fioCpuMs: number;
}

async function fio(target: Target, args: string[]): Promise<FioRun> {
  const child = execa('fio', ['--name=bench', ...target, `--size=${SIZE}`, `--runtime=${SECONDS}`, '--time_based', '--output-format=json', '--randrepeat=0', '--norandommap', ...args]);
  const cpu = sampleTreeCpu(child.pid!);
  const { stdout } = await child;
  const fioCpuMs = cpu.stop();
  // The nbd engine prints 'fio: connected to NBD server' lines before the JSON document.
  return { job: JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0], fioCpuMs };
}

async function run(target: Target, serving: Serving | undefined, sync = false): Promise<Numbers> {
  const syncArgs = sync ? ['--fdatasync=1'] : [];
  const { job: rw } = await fio(target, ['--rw=randwrite', '--bs=4k', '--iodepth=32', ...(sync ? ['--iodepth=1', '--numjobs=32', '--group_reporting'] : []), ...syncArgs]);
  const reads = await cpuDuring(serving?.pids ?? [], () => fio(target, ['--rw=randread', '--bs=4k', '--iodepth=32']));
  const servingMs = reads.pidsMs.reduce((a, b) => a + b, 0) + (serving?.self === true ? reads.selfMs : 0);
  const rr = reads.value.job;
  const readOps = rr.read.total_ios as number;
  const { job: lat } = await fio(target, ['--rw=randwrite', '--bs=4k', '--iodepth=1', ...syncArgs]);
  const { job: seq } = await fio(target, ['--rw=write', '--bs=1M', '--iodepth=8', ...syncArgs]);
  const clat = lat.write.clat_ns;
  const syncNs = sync ? (lat.sync?.lat_ns?.mean ?? 0) : 0;
  return {
    randWriteIops: rw.write.iops,
    randReadIops: rr.read.iops,
    qd1WriteMeanUs: (clat.mean + syncNs) / 1000,
    qd1WriteP99Us: (clat.percentile?.['99.000000'] ?? 0) / 1000,
    seqWriteMiBs: seq.write.bw_bytes / 1024 ** 2,
    readCpuMs: serving === undefined ? undefined : { fio: reads.value.fioCpuMs / readOps, serving: servingMs / readOps },
  };
}

function nbd(port: number, name = ''): Target {
  return ['--ioengine=nbd', `--uri=nbd://127.0.0.1:${port}/${name}`];
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await execa('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/`]);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`nothing serves NBD on port ${port}`);
}

async function peer(cmd: string, args: string[], port: number): Promise<{ proc: ChildProcess; stop: () => Promise<void> }> {
  const proc = spawn(cmd, args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  try {
    await waitForPort(port);
  } catch (err) {
    // Not yet in the caller's list of peers to stop: stop it here.
    proc.kill('SIGTERM');
    await exited;
    throw err;
  }
  return {
    proc,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'storpool-nbd-bench-'));
  const raw = join(dir, 'raw.img');
  const results = new Map<string, Numbers>();
  let cluster: LocalCluster | undefined;
  let server: NbdServer | undefined;
  const peers: { stop: () => Promise<void> }[] = [];
  try {
    console.log(`storpool NBD benchmark: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${SECONDS} s per test, files in ${dir}`);
    await execa('fio', ['--name=fill', `--filename=${raw}`, '--ioengine=libaio', '--direct=1', `--size=${SIZE}`, '--bs=1M', '--iodepth=8', '--rw=write']);
    const rawTarget = [`--filename=${raw}`, '--ioengine=libaio', '--direct=1'];
    results.set('fio raw', await run(rawTarget, undefined));
    results.set('fio raw+fsync', await run(rawTarget, undefined, true));

    const qport = await freePort();
    const qemu = await peer('qemu-nbd', ['-f', 'raw', '-t', '-p', String(qport), '-b', '127.0.0.1', '--cache=none', '--aio=native', raw], qport);
    peers.push(qemu);
    results.set('qemu-nbd', await run(nbd(qport), { pids: [qemu.proc.pid!], self: false }));
    await qemu.stop();
    peers.pop();

    const kport = await freePort();
    const kit = await peer('nbdkit', ['-f', '-p', String(kport), '-i', '127.0.0.1', 'file', `file=${raw}`], kport);
    peers.push(kit);
    results.set('nbdkit file', await run(nbd(kport), { pids: [kit.proc.pid!], self: false }));
    await kit.stop();
    peers.pop();
    await rm(raw, { force: true });

    cluster = await LocalCluster.start({ disks: 3, replications: [1, 3], diskSizeBytes: 3 * 1024 ** 3, dir, logLevel: 'warn', preallocate: true });
    const client = await cluster.client();
    server = new NbdServer({
      exports: [
        volumeExport(client.volume({ volumeId: 1, sizeBytes: SIZE, group: 1 }), { name: 'r1' }),
        volumeExport(client.volume({ volumeId: 2, sizeBytes: SIZE, group: 2 }), { name: 'r3' }),
      ],
    });
    const sport = (await server.listenTcp({ port: 0 })).port;
    // This process (NBD server + client library) and the storage servers.
    const storpool: Serving = { pids: [...cluster.servers.values()].map((s) => s.proc!.pid!), self: true };
    for (const name of ['r1', 'r3']) {
      // Lay the volume out first so reads hit data and writes overwrite, as on the raw file.
      await execa('fio', ['--name=fill', ...nbd(sport, name), `--size=${SIZE}`, '--bs=1M', '--iodepth=8', '--rw=write']);
      results.set(`storpool ${name === 'r1' ? 'rep1' : 'rep3'}`, await run(nbd(sport, name), storpool));
    }
  } finally {
    for (const p of peers) await p.stop();
    await server?.close();
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  }

  const cols = [...results.keys()];
  const fmt = (v: number): string => v.toFixed(0).padStart(14);
  console.log(`${''.padEnd(26)}${cols.map((c) => c.padStart(14)).join('')}`);
  const rows: [string, keyof Numbers][] = [
    ['4K randwrite QD32 IOPS', 'randWriteIops'],
    ['4K randread QD32 IOPS', 'randReadIops'],
    ['4K randwrite QD1 mean us', 'qd1WriteMeanUs'],
    ['4K randwrite QD1 p99 us', 'qd1WriteP99Us'],
    ['1M seq write QD8 MiB/s', 'seqWriteMiBs'],
  ];
  for (const [label, key] of rows) console.log(`${label.padEnd(26)}${cols.map((c) => fmt(results.get(c)![key] as number)).join('')}`);
  const cpuCell = (c: string, part: 'fio' | 'serving'): string => {
    const v = results.get(c)!.readCpuMs;
    return (v === undefined ? '-' : v[part].toFixed(4)).padStart(14);
  };
  console.log(`${'randread CPU ms/op: fio'.padEnd(26)}${cols.map((c) => cpuCell(c, 'fio')).join('')}`);
  console.log(`${'  serving processes'.padEnd(26)}${cols.map((c) => cpuCell(c, 'serving')).join('')}`);
  const r = results.get('fio raw')!;
  const s = results.get('storpool rep3')!;
  const k = results.get('nbdkit file')!;
  const check = (what: string, value: number, goal: number, higher = true): void =>
    console.log(`target ${what}: ${value.toFixed(0)} vs ${goal.toFixed(0)}: ${(higher ? value >= goal : value <= goal) ? 'MET' : 'NOT MET'}`);
  check('rep3 randwrite QD32 >= 0.5 x raw/3', s.randWriteIops, (0.5 * r.randWriteIops) / 3);
  check('rep3 randread QD32 >= 1.25 x nbdkit', s.randReadIops, 1.25 * k.randReadIops);
  // The read target as CPU: all processes share this machine's cores, fio included.
  const budget = (cpus().length * 1000) / (1.25 * k.randReadIops);
  const fioShare = s.readCpuMs?.fio ?? 0;
  console.log(
    `  at ${(1.25 * k.randReadIops).toFixed(0)} reads/s ${cpus().length} cores allow ${budget.toFixed(4)} ms of CPU per read in all; fio takes ${fioShare.toFixed(4)}, ` +
      `leaving ${(budget - fioShare).toFixed(4)} for the NBD server, client and storage servers (they use ${(s.readCpuMs?.serving ?? 0).toFixed(4)}; nbdkit alone ${(k.readCpuMs?.serving ?? 0).toFixed(4)})`,
  );
  check('rep3 QD1 write mean <= 300 us', s.qd1WriteMeanUs, 300, false);
  check('rep3 1M seq write >= 0.8 x raw/3', s.seqWriteMiBs, (0.8 * r.seqWriteMiBs) / 3);
  console.log('(storpool acknowledges a write when it is durable on every replica; raw, qemu-nbd and nbdkit acknowledge before any flush unless marked fsync)');
}

await main();
