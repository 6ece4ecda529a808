/**
 * iSCSI benchmark: libiscsi's `iscsi-perf` (4 KiB random reads, 32 in flight) and `qemu-img bench`
 * (4 KiB writes and reads, 32 in flight, QEMU's iSCSI driver) against storpool-iscsi serving a
 * volume of 3 local storage servers (replication 3 and 1; a write is acknowledged when durable on
 * every replica) and against tgt (`tgtd`, private port and control channel) on a raw file on the
 * same filesystem, in one run; ratios storpool/tgt. A fourth lane serves an in-memory LUN through the
 * same target: the target's own ceiling, without the client library and the servers.
 *
 * IOPS on a shared machine swing with what else runs; CPU per op does not (much), so each run also
 * prints the CPU milliseconds per I/O of the target process (target + client library), of the
 * storage servers, and of tgtd, read from /proc as bench/src/profile-write.ts does, and the load
 * average while it ran. (The initiators' own CPU is not counted: it is the same program for both.)
 *
 *   npm run bench:iscsi    (BENCH_SECONDS=10 per iscsi-perf run; BENCH_QEMU_REQUESTS=50000;
 *                           BENCH_DIR picks the filesystem; BENCH_LANES=tgt,mem,rep1,rep3 picks lanes,
 *                           BENCH_TESTS=randread,write,read picks measurements, BENCH_CPU_PROF=DIR
 *                           writes a CPU profile of the target process per storpool measurement)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { connect } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { IscsiServer, memoryBackend, volumeBackend, type LunBackend } from '@storpool/iscsi';
import { LocalCluster, freePort } from '@storpool/testkit';
import { cpuMs, load1 } from './proc.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const SIZE = 512 * 1024 ** 2;
const QEMU_REQUESTS = Number(process.env.BENCH_QEMU_REQUESTS ?? 50_000);

const LANES = new Set((process.env.BENCH_LANES ?? 'tgt,mem,rep1,rep3').split(','));
/** Which measurements to run (all by default): randread (iscsi-perf), write and read (qemu-img bench). */
const TESTS = new Set((process.env.BENCH_TESTS ?? 'randread,write,read').split(','));
/** BENCH_CPU_PROF=DIR: a CPU profile of this process (target + client library) per storpool measurement. */
const PROFILE_DIR = process.env.BENCH_CPU_PROF;
const SKIPPED: Measured = { iops: NaN, targetCpuMs: NaN, serverCpuMs: NaN, targetSyscalls: NaN, load: NaN };

/** One measurement: IOPS, CPU ms per op of the target process and of the servers (or tgtd), load. */
interface Measured { iops: number; targetCpuMs: number; serverCpuMs: number; targetSyscalls: number; load: number }
interface Numbers { perfRandRead: Measured; qemuWrite: Measured; qemuRead: Measured }

/** Read-like plus write-like system calls (read, recv, write, writev, ...) of a process so far (/proc/PID/io). */
function syscalls(pid: number): number {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return Number(/syscr: (\d+)/.exec(io)?.[1] ?? NaN) + Number(/syscw: (\d+)/.exec(io)?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/**
 * Runs `fn` (which returns ops and seconds) and charges the CPU of `target` (the pid whose work
 * is the target's: this process for storpool, tgtd for tgt) and of `servers` to it.
 */
async function measure(target: number, servers: number[], name: string, fn: () => Promise<{ ops: number; seconds: number }>): Promise<Measured> {
  const self = target === process.pid;
  let session: Session | undefined;
  if (self && PROFILE_DIR !== undefined) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  const c0 = process.cpuUsage();
  const t0 = self ? 0 : cpuMs(target);
  const sys0 = syscalls(target);
  const s0 = servers.map(cpuMs);
  const { ops, seconds } = await fn();
  const c1 = process.cpuUsage(c0);
  const targetMs = self ? (c1.user + c1.system) / 1000 : cpuMs(target) - t0;
  const targetSyscalls = syscalls(target) - sys0;
  const serverMs = servers.map(cpuMs).reduce((a, b, i) => a + b - s0[i]!, 0);
  if (session !== undefined) {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    await mkdir(PROFILE_DIR!, { recursive: true });
    await writeFile(join(PROFILE_DIR!, `${name}.cpuprofile`), JSON.stringify(profile));
  }
  return { iops: ops / seconds, targetCpuMs: targetMs / ops, serverCpuMs: serverMs / ops, targetSyscalls: targetSyscalls / ops, load: load1() };
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${port}`);
}

async function iscsiPerf(url: string): Promise<{ ops: number; seconds: number }> {
  const r = await execa('iscsi-perf', ['-m', '32', '-b', '8', '-r', '-t', String(SECONDS), url], { reject: false, all: true });
  const m = /iops average (\d+)[^\n]*\s*\n*\s*finished/.exec(r.all ?? '') ?? [...(r.all ?? '').matchAll(/iops average (\d+)/g)].pop();
  if (m === undefined || m === null) throw new Error(`iscsi-perf printed no average: ${r.all}`);
  return { ops: Number(m[1]) * SECONDS, seconds: SECONDS };
}

async function qemuBench(url: string, write: boolean): Promise<{ ops: number; seconds: number }> {
  const args = ['bench', '-f', 'raw', '-t', 'none', '-c', String(QEMU_REQUESTS), '-d', '32', '-s', '4096', ...(write ? ['-w'] : []), url];
  const { stdout } = await execa('qemu-img', args);
  const m = /Run completed in ([\d.]+) seconds/.exec(stdout);
  if (m === null) throw new Error(`qemu-img bench: ${stdout}`);
  return { ops: QEMU_REQUESTS, seconds: Number(m[1]) };
}

async function run(lane: string, url: string, target: number, servers: number[]): Promise<Numbers> {
  // Lay the LUN out first so that reads hit data, as on the raw file.
  await execa('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', String(SIZE / (1024 * 1024)), '-d', '8', '-s', String(1024 * 1024), '-w', url]);
  const qemuWrite = TESTS.has('write') ? await measure(target, servers, `${lane}-write`, () => qemuBench(url, true)) : SKIPPED;
  const qemuRead = TESTS.has('read') ? await measure(target, servers, `${lane}-read`, () => qemuBench(url, false)) : SKIPPED;
  const perfRandRead = TESTS.has('randread') ? await measure(target, servers, `${lane}-randread`, () => iscsiPerf(url)) : SKIPPED;
  return { perfRandRead, qemuWrite, qemuRead };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'storpool-iscsi-bench-'));
  const results = new Map<string, Numbers>();
  let cluster: LocalCluster | undefined;
  let server: IscsiServer | undefined;
  let tgt: { proc: ChildProcess; exited: Promise<void> } | undefined;
  // tgtd refuses a control port above 32767
  const control = 20000 + (process.pid % 10000);
  const loadBefore = load1();
  try {
    console.log(`storpool iSCSI benchmark: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, iscsi-perf ${SECONDS} s, qemu-img bench ${QEMU_REQUESTS} requests, files in ${dir}, load ${loadBefore}`);
    if (LANES.has('tgt')) {
      const raw = join(dir, 'tgt.img');
      await writeFile(raw, '');
      await truncate(raw, SIZE);
      const tport = await freePort();
      const proc = spawn('tgtd', ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${tport}`], { stdio: ['ignore', 'inherit', 'inherit'] });
      tgt = { proc, exited: new Promise<void>((r) => proc.once('exit', () => r())) };
      await waitPort(tport);
      const adm = (...a: string[]) => execa('tgtadm', ['-C', String(control), '--lld', 'iscsi', ...a]);
      await adm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', 'iqn.2026-11.bench:tgt');
      await adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', raw);
      await adm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
      results.set('tgt raw file', await run('tgt', `iscsi://127.0.0.1:${tport}/iqn.2026-11.bench:tgt/1`, proc.pid!, []));
      tgt.proc.kill('SIGKILL'); // tgtd ignores SIGTERM
      await tgt.exited;
      tgt = undefined;
      await rm(raw, { force: true });
    }

    const targets: { name: string; lane: string; luns: { lun: number; backend: LunBackend }[] }[] = [];
    if (LANES.has('mem')) targets.push({ name: 'iqn.2026-11.bench:mem', lane: 'mem', luns: [{ lun: 0, backend: memoryBackend({ id: 'bench.mem', sizeBytes: SIZE }) }] });
    const reps = [1, 3].filter((r) => LANES.has(`rep${r}`));
    let pids: number[] = [];
    if (reps.length > 0) {
      cluster = await LocalCluster.start({ disks: 3, replications: reps, diskSizeBytes: 2 * 1024 ** 3, dir, logLevel: 'warn', preallocate: true });
      const client = await cluster.client();
      pids = [...cluster.servers.values()].map((s) => s.proc!.pid!);
      reps.forEach((rep, i) => targets.push({
        name: `iqn.2026-11.bench:rep${rep}`, lane: `rep${rep}`,
        luns: [{ lun: 0, backend: volumeBackend(client.volume({ volumeId: i + 1, sizeBytes: SIZE, group: i + 1 }), { id: `bench.rep${rep}` }) }],
      }));
    }
    server = new IscsiServer({ catalog: { targets: new Map(targets.map((t) => [t.name, t])), initiators: new Map(), portalGroups: new Map(), open: true } });
    const sport = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
    for (const t of targets) results.set(`storpool ${t.lane}`, await run(t.lane, `iscsi://127.0.0.1:${sport}/${t.name}/0`, process.pid, t.lane === 'mem' ? [] : pids));
  } finally {
    await server?.close();
    await cluster?.stop();
    if (tgt !== undefined) {
      tgt.proc.kill('SIGKILL');
      await tgt.exited;
    }
    for (const f of [`/var/run/tgtd/socket.${control}`, `/var/run/tgtd/socket.${control}.lock`]) if (existsSync(f)) await rm(f, { force: true });
    await rm(dir, { recursive: true, force: true });
  }
  report(results, loadBefore);
}

function report(results: Map<string, Numbers>, loadBefore: number): void {
  const cols = [...results.keys()];
  const row = (label: string, cell: (n: Numbers) => string): void => console.log(`${label.padEnd(44)}${cols.map((c) => cell(results.get(c)!).padStart(16)).join('')}`);
  console.log(`${''.padEnd(44)}${cols.map((c) => c.padStart(16)).join('')}`);
  const rows: [string, keyof Numbers][] = [
    ['iscsi-perf 4K randread QD32', 'perfRandRead'],
    ['qemu-img bench 4K write QD32', 'qemuWrite'],
    ['qemu-img bench 4K read QD32', 'qemuRead'],
  ];
  for (const [label, key] of rows) {
    row(`${label} IOPS`, (n) => n[key].iops.toFixed(0));
    row('  CPU ms/op target (+client library)', (n) => n[key].targetCpuMs.toFixed(3));
    row('  CPU ms/op storage servers', (n) => n[key].serverCpuMs.toFixed(3));
    row('  target read+write syscalls/op', (n) => n[key].targetSyscalls.toFixed(2));
    row('  load average (1 min) after', (n) => n[key].load.toFixed(1));
  }
  const t = results.get('tgt raw file');
  if (t !== undefined) {
    for (const c of cols.filter((x) => x !== 'tgt raw file')) {
      const s = results.get(c)!;
      const ratio = (k: keyof Numbers): string => `${(s[k].iops / t[k].iops).toFixed(2)} (target CPU/op ${(s[k].targetCpuMs / t[k].targetCpuMs).toFixed(1)}x)`;
      console.log(`${c} / tgt IOPS: randread ${ratio('perfRandRead')}, write ${ratio('qemuWrite')}, read ${ratio('qemuRead')}`);
    }
  }
  console.log(`load average (1 min) before ${loadBefore}, after ${load1()} on ${cpus().length} cores`);
  console.log('goal: storpool rep3 >= tgt on 4 KiB random read and write at QD32');
  console.log('(storpool acknowledges a write when it is durable on every replica; tgt on a raw file acknowledges from the page cache)');
}

await main();
