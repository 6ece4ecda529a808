/**
 * Ad-hoc profile of the NBD export path: fio (ioengine=nbd) against an NbdServer in this process
 * over a volume of REP=1|3 on 3 local servers, the 1 GiB volume filled first. RW=randread|randwrite
 * (default randread), QD (32), SECONDS_RUN (8). Prints IOPS and CPU ms per op of this process (NBD
 * server + client library), of fio, and of each storage server: the metric to compare on a busy machine.
 */
import { execa } from 'execa';
import { NbdServer, volumeExport } from '@storpool/nbd';
import { LocalCluster } from '@storpool/testkit';
import { cpuMs, load1, sampleTreeCpu } from './proc.js';

const rep = Number(process.env.REP ?? 3);
const qd = Number(process.env.QD ?? 32);
const rw = process.env.RW ?? 'randread';
const seconds = Number(process.env.SECONDS_RUN ?? 8);
const SIZE = 1024 ** 3;
const cluster = await LocalCluster.start({ disks: 3, replications: [rep], diskSizeBytes: 2 * 1024 ** 3, logLevel: 'warn', preallocate: true });
const server = new NbdServer({ exports: [volumeExport((await cluster.client()).volume({ volumeId: 1, sizeBytes: SIZE, group: 1 }), { name: 'v' })] });
try {
  const port = (await server.listenTcp({ port: 0 })).port;
  const target = ['--ioengine=nbd', `--uri=nbd://127.0.0.1:${port}/v`, `--size=${SIZE}`];
  await execa('fio', ['--name=fill', ...target, '--bs=1M', '--iodepth=8', '--rw=write']);
  // Unmeasured first: V8 optimizes the hot paths.
  await execa('fio', ['--name=warm', ...target, `--rw=${rw}`, '--bs=4k', `--iodepth=${qd}`, '--runtime=3', '--time_based', '--norandommap']);
  const pids = [...cluster.servers.values()].map((s) => s.proc!.pid!);
  const before = pids.map(cpuMs);
  const self0 = process.cpuUsage();
  const fio = execa('fio', ['--name=run', ...target, `--rw=${rw}`, '--bs=4k', `--iodepth=${qd}`, `--runtime=${seconds}`, '--time_based', '--norandommap', '--output-format=json']);
  // fio forks its job processes: their CPU, sampled until they end.
  const fioCpu = sampleTreeCpu(fio.pid!);
  const { stdout } = await fio;
  const fioMs = fioCpu.stop();
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  const self = process.cpuUsage(self0);
  const ops = (job.read.total_ios as number) + (job.write.total_ios as number);
  const per = (ms: number): string => (ms / ops).toFixed(3);
  const servers = pids.map((p, i) => cpuMs(p) - before[i]!);
  console.log(`rep${rep} 4K ${rw} QD${qd} via NBD: ${(ops / seconds).toFixed(0)} IOPS; load ${load1()}`);
  console.log(`CPU ms per op: nbd+client ${per((self.user + self.system) / 1000)} (user ${per(self.user / 1000)} sys ${per(self.system / 1000)}), fio ~${per(fioMs)}, servers ${servers.map(per).join(' ')}`);
} finally {
  await server.close();
  await cluster.stop();
}
