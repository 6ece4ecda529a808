/**
 * iSCSI benchmark: libiscsi's `iscsi-perf` (4 KiB random reads, 32 in flight) and `qemu-img bench`
 * (4 KiB writes and reads, 32 in flight, QEMU's iSCSI driver) against storpool-iscsi serving a
 * volume of 3 local storage servers (replication 3 and 1; a write is acknowledged when durable on
 * every replica) and against tgt (`tgtd`, private port and control channel) on a raw file on the
 * same filesystem, in one run; ratios storpool/tgt.
 *
 *   npm run bench:iscsi    (BENCH_SECONDS=10 per iscsi-perf run; BENCH_DIR picks the filesystem)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { IscsiServer, volumeBackend } from '@storpool/iscsi';
import { LocalCluster, freePort } from '@storpool/testkit';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const SIZE = 512 * 1024 ** 2;
const QEMU_REQUESTS = Number(process.env.BENCH_QEMU_REQUESTS ?? 50_000);

interface Numbers { perfRandReadIops: number; qemuWriteIops: number; qemuReadIops: number }

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

async function iscsiPerf(url: string): Promise<number> {
  const r = await execa('iscsi-perf', ['-m', '32', '-b', '8', '-r', '-t', String(SECONDS), url], { reject: false, all: true });
  const m = /iops average (\d+)[^\n]*\s*\n*\s*finished/.exec(r.all ?? '') ?? [...(r.all ?? '').matchAll(/iops average (\d+)/g)].pop();
  if (m === undefined || m === null) throw new Error(`iscsi-perf printed no average: ${r.all}`);
  return Number(m[1]);
}

async function qemuBench(url: string, write: boolean): Promise<number> {
  const args = ['bench', '-f', 'raw', '-t', 'none', '-c', String(QEMU_REQUESTS), '-d', '32', '-s', '4096', ...(write ? ['-w'] : []), url];
  const { stdout } = await execa('qemu-img', args);
  const m = /Run completed in ([\d.]+) seconds/.exec(stdout);
  if (m === null) throw new Error(`qemu-img bench: ${stdout}`);
  return QEMU_REQUESTS / Number(m[1]);
}

async function run(url: string): Promise<Numbers> {
  // Lay the LUN out first so that reads hit data, as on the raw file.
  await execa('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', String(SIZE / (1024 * 1024)), '-d', '8', '-s', String(1024 * 1024), '-w', url]);
  const qemuWriteIops = await qemuBench(url, true);
  const qemuReadIops = await qemuBench(url, false);
  const perfRandReadIops = await iscsiPerf(url);
  return { perfRandReadIops, qemuWriteIops, qemuReadIops };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'storpool-iscsi-bench-'));
  const results = new Map<string, Numbers>();
  let cluster: LocalCluster | undefined;
  let server: IscsiServer | undefined;
  let tgt: { proc: ChildProcess; exited: Promise<void> } | undefined;
  const control = 20000 + (process.pid % 20000);
  try {
    console.log(`storpool iSCSI benchmark: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, iscsi-perf ${SECONDS} s, qemu-img bench ${QEMU_REQUESTS} requests, files in ${dir}`);
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
    results.set('tgt raw file', await run(`iscsi://127.0.0.1:${tport}/iqn.2026-11.bench:tgt/1`));
    tgt.proc.kill('SIGKILL'); // tgtd ignores SIGTERM
    await tgt.exited;
    tgt = undefined;
    await rm(raw, { force: true });

    cluster = await LocalCluster.start({ disks: 3, replications: [1, 3], diskSizeBytes: 2 * 1024 ** 3, dir, logLevel: 'warn', preallocate: true });
    const client = await cluster.client();
    const targets = [1, 3].map((rep, i) => ({
      name: `iqn.2026-11.bench:rep${rep}`,
      luns: [{ lun: 0, backend: volumeBackend(client.volume({ volumeId: i + 1, sizeBytes: SIZE, group: i + 1 }), { id: `bench.rep${rep}` }) }],
    }));
    server = new IscsiServer({ catalog: { targets: new Map(targets.map((t) => [t.name, t])), initiators: new Map(), portalGroups: new Map(), open: true } });
    const sport = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
    for (const t of targets) results.set(`storpool ${t.name.split(':')[1]}`, await run(`iscsi://127.0.0.1:${sport}/${t.name}/0`));
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

  const cols = [...results.keys()];
  console.log(`${''.padEnd(34)}${cols.map((c) => c.padStart(16)).join('')}`);
  const rows: [string, keyof Numbers][] = [
    ['iscsi-perf 4K randread QD32 IOPS', 'perfRandReadIops'],
    ['qemu-img bench 4K write QD32 IOPS', 'qemuWriteIops'],
    ['qemu-img bench 4K read QD32 IOPS', 'qemuReadIops'],
  ];
  for (const [label, key] of rows) console.log(`${label.padEnd(34)}${cols.map((c) => results.get(c)![key].toFixed(0).padStart(16)).join('')}`);
  const t = results.get('tgt raw file')!;
  for (const c of cols.filter((x) => x !== 'tgt raw file')) {
    const s = results.get(c)!;
    console.log(`${c} / tgt: randread ${(s.perfRandReadIops / t.perfRandReadIops).toFixed(2)}, write ${(s.qemuWriteIops / t.qemuWriteIops).toFixed(2)}, read ${(s.qemuReadIops / t.qemuReadIops).toFixed(2)}`);
  }
  console.log('goal: storpool rep3 >= tgt on 4 KiB random read and write at QD32');
  console.log('(storpool acknowledges a write when it is durable on every replica; tgt on a raw file acknowledges from the page cache)');
}

await main();
