/**
 * libiscsi's conformance suite (`iscsi-test-cu`, each test in its own process), three lanes side by
 * side in one run:
 *
 * - storpool-iscsi's target (this package: PDUs, sessions, SCSI, reservations) over an in-memory
 *   LUN, two portals: every test. Compared with
 * - tgt (`tgtd` on a private port and control channel, a file-backed LUN): every test.
 * - storpool-iscsi as deployed: two `storpool-iscsi` processes (controllers 1 and 2) serving a
 *   volume of a local cluster, reservations in the API's KV store: the multipath, reservation,
 *   COMPARE AND WRITE and INQUIRY families. The data-heavy families (tens of thousands of small
 *   synchronous writes, each fdatasync'ed by the storage servers) would take ~10 minutes here, so
 *   they run on the in-memory LUN only.
 *
 * Prints passed / skipped / failed side by side; asserts storpool-iscsi passes at least the floor
 * measured here and at least as many tests as tgt. About 3 minutes.
 */
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorpoolApi } from '@storpool/api-client';
import { IscsiServer, memoryBackend } from '@storpool/iscsi';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listTests, runConformance, type ConformanceResult } from './conformance.js';
import { ISCSI_BIN, ok, spawnLogged, stop, waitPort, type Spawned } from './helpers.js';

const MiB = 1024 * 1024;
const BASE = 'iqn.2026-11.com.storpool:conformance';
const INIT1 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test';
const INIT2 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2';
/** The memory lane passed 191 of 230 here (tgt 161, same run); the floor leaves room for a noisy machine. */
const PASS_FLOOR = 184;
/**
 * Families run against the cluster-backed processes too (45 of 45 passed here with the reservation fence, tgt 31;
 * with OrWrite, whose read-OR-compare-and-write runs at the shard primary there, 51 of 51). Left out:
 * CompareAndWrite.Simple and .Miscompare (~1,500 synchronous writes each, 60-90 s here).
 */
const CLUSTER_FAMILIES = /^(?:(?:MultipathIO|Prout[A-Za-z]*|Prin[A-Za-z]*|Reserve6|Inquiry|ReadCapacity16|OrWrite)\.|CompareAndWrite\.(?!Simple$|Miscompare$))/;
const MEMORY_TARGET = 'iqn.2026-11.com.storpool:memory';
const LUN_BYTES = 128 * MiB;
/** Each lane stops starting tests after this (the rest count as failed): bounds the file's time. */
const LANE_MS = 420_000;

let tmp: string;
let cluster: LocalCluster | undefined;
const iscsi: Spawned[] = [];
let tgt: Spawned | undefined;
let tgtControl = 0;
const ports: number[] = [];
let tgtPort = 0;
let memory: IscsiServer | undefined;
const memPorts: number[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-iscsi-conf-'));
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn' });
  const api = new StorpoolApi({ config: { path: cluster.confPath } });
  // Replication 1: the suite checks the protocol and command semantics, and issues tens of
  // thousands of small synchronous I/Os; three copies would only make it slower.
  await api.request('POST', 'VolumeTemplateCreate', [], { name: 'single', replication: 1, placeAll: 'default' });
  await api.request('POST', 'VolumeCreate', [], { name: 'conf1', size: LUN_BYTES, template: 'single' });
  ports.push(await freePort(), await freePort());
  const commands: unknown[] = [
    { setBaseName: { name: BASE } },
    { createPortalGroup: { name: 'pg' } },
    { createPortal: { portalGroup: 'pg', controller: 1, ip: '127.0.0.1', port: ports[0] } },
    { createPortal: { portalGroup: 'pg', controller: 2, ip: '127.0.0.1', port: ports[1] } },
    { createTarget: { volumeName: 'conf1' } },
  ];
  for (const name of [INIT1, INIT2]) commands.push({ createInitiator: { name, username: '', secret: '' } }, { export: { initiator: name, portalGroup: 'pg', volumeName: 'conf1' } });
  await api.request('POST', 'iSCSIConfig', [], { commands });
  for (const id of [1, 2]) {
    iscsi.push(spawnLogged(process.execPath, [ISCSI_BIN, '--controller-id', String(id), '--map-file', cluster.mapFile, '--log-level', 'warn'], join(tmp, `iscsi-${id}.log`), { STORPOOL_CONF: cluster.confPath }));
  }
  // tgt: its own control channel number so that no other tgtd is touched.
  tgtPort = await freePort();
  // tgtd refuses a control port above 32767 (its -C range): 20000..29999 from the PID.
  tgtControl = 20000 + (process.pid % 10000);
  const img = join(tmp, 'tgt.img');
  await writeFile(img, '');
  await truncate(img, LUN_BYTES);
  tgt = spawnLogged('tgtd', ['-f', '-C', String(tgtControl), '--iscsi', `portal=127.0.0.1:${tgtPort}`], join(tmp, 'tgtd.log'));
  await waitPort(tgtPort, tgt.child);
  const adm = (...a: string[]): Promise<string> => ok('tgtadm', ['-C', String(tgtControl), '--lld', 'iscsi', ...a]);
  await adm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', 'iqn.2026-11.test:tgt');
  await adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', img);
  await adm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
  await Promise.all(ports.map((port, i) => waitPort(port, iscsi[i]!.child)));
  memPorts.push(await freePort(), await freePort());
  const target = { name: MEMORY_TARGET, luns: [{ lun: 0, backend: memoryBackend({ id: 'memory.lun.0', sizeBytes: LUN_BYTES }) }] };
  memory = new IscsiServer({ catalog: { targets: new Map([[target.name, target]]), initiators: new Map(), portalGroups: new Map([['pg', { name: 'pg', tag: 1, portals: memPorts.map((port) => ({ host: '127.0.0.1', port })) }]]), open: true } });
  for (const port of memPorts) await memory.listen({ host: '127.0.0.1', port, portalGroupTag: 1 });
}, 240_000);

afterAll(async () => {
  await memory?.close();
  for (const p of iscsi) await stop(p);
  await stop(tgt, 1_000); // tgtd ignores SIGTERM: SIGKILL after a second
  for (const f of [`/var/run/tgtd/socket.${tgtControl}`, `/var/run/tgtd/socket.${tgtControl}.lock`]) if (tgtControl !== 0 && existsSync(f)) await rm(f, { force: true });
  await cluster?.stop();
  if (tmp !== undefined && process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
}, 120_000);

function line(name: string, r: ConformanceResult): string {
  return `${name.padEnd(14)} passed ${String(r.passed.length).padStart(3)}  skipped ${String(r.skipped.length).padStart(3)}  failed ${String(r.failed.length).padStart(3)}  (${(r.ms / 1000).toFixed(0)} s)`;
}

describe('iscsi-test-cu -t ALL, test by test', () => {
  it('storpool-iscsi passes at least as many tests as tgt, and at least the measured floor', async () => {
    const filter = process.env['ISCSI_CONFORMANCE_FILTER'];
    const tests = await listTests(filter === undefined ? undefined : new RegExp(filter));
    if (filter === undefined) expect(tests.length).toBeGreaterThan(200);
    const deadline = Date.now() + LANE_MS;
    const memUrl = (i: number): string => `iscsi://127.0.0.1:${memPorts[i]}/${MEMORY_TARGET}/0`;
    const spUrl = (i: number): string => `iscsi://127.0.0.1:${ports[i]}/${BASE}:conf1/0`;
    const tgtUrl = `iscsi://127.0.0.1:${tgtPort}/iqn.2026-11.test:tgt/1`;
    const clusterTests = tests.filter((t) => CLUSTER_FAMILIES.test(t));
    const [mem, tg, sp] = await Promise.all([
      runConformance({ tests, url: memUrl(0), url2: memUrl(1), deadline }),
      runConformance({ tests, url: tgtUrl, url2: tgtUrl, deadline }),
      runConformance({ tests: clusterTests, url: spUrl(0), url2: spUrl(1), deadline, timeoutMs: 90_000 }),
    ]);
    const tgSubset = { ...tg, passed: tg.passed.filter((t) => CLUSTER_FAMILIES.test(t)), skipped: tg.skipped.filter((t) => CLUSTER_FAMILIES.test(t)), failed: tg.failed.filter((t) => CLUSTER_FAMILIES.test(t)) };
    const report = [
      `iscsi-test-cu, ${tests.length} tests, each in its own process:`,
      line('storpool-iscsi', mem) + ' (in-memory LUN, all tests)',
      line('tgt', tg) + ' (file-backed LUN, all tests)',
      `cluster families (${clusterTests.length} tests: ${CLUSTER_FAMILIES.source}):`,
      line('storpool-iscsi', sp) + ' (2 storpool-iscsi processes, cluster volume)',
      `${'tgt'.padEnd(14)} passed ${String(tgSubset.passed.length).padStart(3)}  skipped ${String(tgSubset.skipped.length).padStart(3)}  failed ${String(tgSubset.failed.length).padStart(3)}`,
      `storpool-iscsi (memory) failed: ${mem.failed.join(' ') || '-'}`,
      `storpool-iscsi (cluster) failed: ${sp.failed.join(' ') || '-'}`,
      `tgt failed: ${tg.failed.join(' ') || '-'}`,
      `passed by tgt only: ${tg.passed.filter((t) => !mem.passed.includes(t)).join(' ') || '-'}`,
      `slowest on the cluster: ${[...sp.times].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([t, ms]) => `${t} ${(ms / 1000).toFixed(1)}s`).join(', ')}`,
    ].join('\n');
    process.stdout.write(`${report}\n`);
    await writeFile(join(tmp, 'report.txt'), report);
    if (filter !== undefined) return;
    const fixed = ['ModeSense6.Residuals', 'iSCSIdatasn.iSCSIDataSnInvalid', 'WriteSame10.ZeroBlocks', 'WriteSame16.ZeroBlocks', 'WriteSame10.UnmapUntilEnd', 'OrWrite.Simple', 'OrWrite.Verify', 'OrWrite.DpoFua', 'OrWrite.ZeroBlocks'];
    for (const t of ['CompareAndWrite.Simple', 'ProutRegister.Simple', 'PrinReadKeys.Simple', 'Unmap.Simple', 'WriteSame10.Simple', 'MultipathIO.Simple', ...fixed]) {
      expect(mem.passed, t).toContain(t);
    }
    // Reservations across the two processes: a change is answered only once the other portal obeys it (PR_FENCE_MS).
    const acrossPortals = ['ProutReserve.AccessEA', 'ProutReserve.AccessWE', 'Reserve6.2Initiators', 'Reserve6.Logout', 'MultipathIO.Reset'];
    for (const t of ['OrWrite.Simple', 'OrWrite.Verify', 'CompareAndWrite.Unwritten', 'ProutRegister.Simple', 'ProutReserve.Simple', 'PrinReadKeys.Simple', 'MultipathIO.Simple', 'MultipathIO.CompareAndWrite', ...acrossPortals]) {
      expect(sp.passed, t).toContain(t);
    }
    expect(mem.passed.length).toBeGreaterThanOrEqual(PASS_FLOOR);
    expect(mem.passed.length).toBeGreaterThanOrEqual(tg.passed.length);
    expect(sp.passed.length).toBeGreaterThanOrEqual(tgSubset.passed.length);
  }, 900_000);
});
