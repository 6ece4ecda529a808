/**
 * The fault harness end to end, on one FaultCluster (3 hosts as network namespaces, real etcd,
 * storpool-mgmt, storpool-block, a libnbd writer):
 *  (a) smoke: the writer runs ~12 s, verify is clean, all replicas are equal, and verify does
 *      catch a lost acknowledged write;
 *  (b) partition: a partitioned host's server is unreachable from the root namespace and from the
 *      other hosts (TCP connect), a partition from one peer cuts only that peer, heal restores;
 *  (c) SIGKILL of a server during writes, restart after 10 s: the leader marks it down, writes go
 *      on with two copies; back, it catches up copying only what changed (a 16 MiB ballast volume
 *      written before is not copied); no acknowledged write lost, no I/O error, copies equal;
 *  (f) split brain: host 3 cut from the management plane (its disk is marked down, it keeps the
 *      old map), then from everything for 20 s during writes, then healed: writes go on, it
 *      catches up, copies end equal, nothing acknowledged lost; a client inside host 3 on the old
 *      map gets none of its writes acknowledged — its peers refuse the old epoch (their
 *      staleEpochRefused counters), cut off it reaches nobody, healed the old primary refuses the
 *      old epoch itself — and none of those writes survives on any copy;
 *  (d) storpool-mgmt SIGKILLed and restarted keeps the cluster state (etcd);
 *  (e) addServer(): a 4th host, disk and server join.
 * FAULT_SEED=N replays a writer's block choice and contents.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_PYTHON, FaultCluster, SERVER_PORT, VerifyingWriter, bytesCopied, formatReport, syncCounters, freezeMap, staleWrite, waitCaughtUp } from '../src/index.js';

const MiB = 1024 * 1024;
const OBJECT = 4 * MiB;
/** Objects of the split-brain probe volume of (f): enough that some have disk 3 as primary. */
const STALE_OBJECTS = 32;
let cluster: FaultCluster | undefined;
const writers: VerifyingWriter[] = [];

function newWriter(socketPath: string, name: string, blocks: number): VerifyingWriter {
  const w = new VerifyingWriter({ socketPath, stateFile: `${cluster!.dir}/writer-${name}.json`, blocks, queueDepth: 16, readPercent: 20 });
  writers.push(w);
  process.stdout.write(`[fault-test] ${name}: ${w.describe()}\n`);
  return w;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(250);
  }
}

/** Fills [0, bytes) of a volume with a byte, 1 MiB at a time, through NBD. */
function nbdFill(socketPath: string, bytes: number, value: number): Promise<void> {
  const script = `import nbd, sys\nh = nbd.NBD()\nh.connect_unix(sys.argv[1])\nb = bytes([int(sys.argv[3])]) * 1048576\nfor off in range(0, int(sys.argv[2]), 1048576):\n    h.pwrite(b, off)\nh.flush()\nh.shutdown()\n`;
  return new Promise((resolve, reject) => {
    execFile(DEBIAN_PYTHON, ['-c', script, socketPath, String(bytes), String(value)], { timeout: 120_000 }, (err, _out, stderr) => (err === null ? resolve() : reject(new Error(`${err.message}: ${stderr}`))));
  });
}

/** Overwrites one 4 KiB block through NBD, behind the writer's back. */
function nbdWriteZeros(socketPath: string, offset: number): Promise<void> {
  const script = `import nbd, sys\nh = nbd.NBD()\nh.connect_unix(sys.argv[1])\nh.pwrite(bytes(4096), int(sys.argv[2]))\nh.shutdown()\n`;
  return new Promise((resolve, reject) => {
    execFile(DEBIAN_PYTHON, ['-c', script, socketPath, String(offset)], { timeout: 30_000 }, (err, _out, stderr) => (err === null ? resolve() : reject(new Error(`${err.message}: ${stderr}`))));
  });
}

beforeAll(async () => {
  cluster = await FaultCluster.start({ servers: 3, logLevel: 'warn', diskSizeBytes: 512 * MiB });
}, 180_000);

afterAll(async () => {
  for (const w of writers) await w.kill();
  await cluster?.stop();
}, 120_000);

describe('fault harness', () => {
  it('(a) smoke: a verifying writer through the block service, verify clean, replicas equal', async () => {
    const c = cluster!;
    const vol = await c.createVolume('smoke', 32 * MiB);
    const w = newWriter(vol.socketPath, 'smoke', (32 * MiB) / 4096);
    await w.start({ durationMs: 12_000 });
    const summary = await w.stop({ wait: true });
    process.stdout.write(`[fault-test] smoke: ${summary.acked} writes acknowledged, ${summary.reads} reads checked, ${summary.errors} I/O errors, max latency ${summary.maxLatencyMs} ms\n`);
    expect(summary.acked, w.describe()).toBeGreaterThan(50);
    expect(summary.reads, w.describe()).toBeGreaterThan(0);
    expect(summary.ioErrors, w.describe()).toEqual([]);
    expect([...summary.readErrorList, ...summary.readMismatchList], w.describe()).toEqual([]);
    const report = await w.verify();
    expect(report.badCount, formatReport(report)).toBe(0);
    expect(report.counts.acked, formatReport(report)).toBeGreaterThan(0);
    const replicas = await c.compareReplicas(vol);
    expect(replicas.diffs, `${w.describe()}\n${JSON.stringify(replicas.diffs.slice(0, 10), null, 1)}`).toEqual([]);
    expect(replicas.objects).toBe(8);
    process.stdout.write(`[fault-test] disk 1 stats: ${JSON.stringify(await c.diskStats(1)).slice(0, 400)}\n`);

    // verify() must be able to fail: lose one acknowledged block.
    const st = JSON.parse(await readFile(`${c.dir}/writer-smoke.json`, 'utf8')) as { acked: Record<string, number> };
    const victim = Number(Object.keys(st.acked)[0]);
    await nbdWriteZeros(vol.socketPath, victim * 4096);
    const broken = await w.verify();
    expect(broken.badCount, formatReport(broken)).toBe(1);
    expect(broken.bad[0]!.block).toBe(victim);
    expect(broken.bad[0]!.problem).toMatch(/lost/);
  }, 150_000);

  it('(b) partition: a partitioned host is unreachable from the root namespace and its peers; heal restores it', async () => {
    const c = cluster!;
    const lab = c.lab;
    const [h1, h2, h3] = [c.server(1).host, c.server(2).host, c.server(3).host];
    const reach = async (): Promise<Record<string, boolean>> => ({
      'root->1': await lab.canConnect('root', h1.ip, SERVER_PORT),
      '2->1': await lab.canConnect(h2, h1.ip, SERVER_PORT),
      '3->1': await lab.canConnect(h3, h1.ip, SERVER_PORT),
      '1->2': await lab.canConnect(h1, h2.ip, SERVER_PORT),
      '2->3': await lab.canConnect(h2, h3.ip, SERVER_PORT),
    });
    expect(await reach()).toEqual({ 'root->1': true, '2->1': true, '3->1': true, '1->2': true, '2->3': true });

    await c.partitionHost(1);
    expect(await reach()).toEqual({ 'root->1': false, '2->1': false, '3->1': false, '1->2': false, '2->3': true });
    await c.heal(1);
    expect(await reach()).toEqual({ 'root->1': true, '2->1': true, '3->1': true, '1->2': true, '2->3': true });

    // From one peer only: the root namespace and host 3 still reach host 1.
    await c.partitionHost(1, [2]);
    expect(await lab.partitionRules(h1)).toHaveLength(2);
    expect(await reach()).toEqual({ 'root->1': true, '2->1': false, '3->1': true, '1->2': false, '2->3': true });
    await c.heal();
    expect(await lab.partitionRules(h1)).toEqual([]);
    expect(await reach()).toEqual({ 'root->1': true, '2->1': true, '3->1': true, '1->2': true, '2->3': true });
  }, 120_000);

  it('(c) SIGKILL a server during writes, restart it after 10 s: no acknowledged write lost, no I/O error', async () => {
    const c = cluster!;
    const vol = await c.createVolume('killed', 32 * MiB);
    // Ballast: 16 MiB written before the kill and never again: a catch-up must not copy it.
    const ballast = await c.createVolume('ballast', 16 * MiB);
    await nbdFill(ballast.socketPath, 16 * MiB, 0xab);
    const copiedBefore = await bytesCopied(c, 2);
    const w = newWriter(vol.socketPath, 'kill', (32 * MiB) / 4096);
    await w.start();
    await w.waitAcked(200, 60_000);
    const pidBefore = c.server(2).proc!.pid;
    await c.killServer(2, 'SIGKILL');
    expect(c.server(2).proc).toBeUndefined();
    const ackedAtKill = w.progress.acked;
    await sleep(10_000);
    const ackedWhileDown = w.progress.acked - ackedAtKill;
    await c.restartServer(2);
    expect(c.server(2).proc!.pid).not.toBe(pidBefore);
    const ackedAtRestart = w.progress.acked;
    // Writes go on once the server is back.
    await w.waitAcked(ackedAtRestart + 200, 90_000);
    const summary = await w.stop();
    // Disk 2 catches up (only what changed while it was away), then every copy is equal.
    await waitCaughtUp(c, [2]);
    const replicas = await c.waitReplicasEqual(vol, 120_000);
    const ballastReplicas = await c.compareReplicas(ballast);
    const copied = (await bytesCopied(c, 2)) - copiedBefore;
    process.stdout.write(
      `[fault-test] kill: ${summary.acked} writes acknowledged (${ackedWhileDown} while server 2 was down), ${summary.reads} reads checked, ` +
      `${summary.errors + summary.readErrors} I/O errors, ${summary.readMismatches} wrong reads, ` +
      `max latency ${summary.maxLatencyMs} ms, ${replicas.diffs.length} divergent replicas of ${replicas.objects} objects, catch-up to disk 2 copied ${copied} bytes\n` +
      replicas.diffs.slice(0, 4).map((d) => `  object ${d.objectIndex} disks ${d.disks.join(',')}: ${d.problem}\n`).join(''),
    );
    expect(replicas.diffs).toEqual([]);
    expect(ballastReplicas.diffs).toEqual([]);
    expect(copied).toBeGreaterThan(0);
    // At most the written volume (32 MiB), never the 16 MiB ballast on top of it.
    expect(copied, JSON.stringify(await syncCounters(c))).toBeLessThanOrEqual(32 * MiB);
    expect(summary.ioErrors, w.describe()).toEqual([]);
    expect([...summary.readErrorList, ...summary.readMismatchList], w.describe()).toEqual([]);
    const report = await w.verify();
    expect(report.badCount, formatReport(report)).toBe(0);
    expect(report.counts.acked, formatReport(report)).toBeGreaterThan(150);
  }, 480_000);

  it("(f) partition a host for 20 s during writes, heal: nothing acknowledged lost, copies equal; the old primary's stale-epoch writes are refused", async () => {
    const c = cluster!;
    const vol = await c.createVolume('partitioned', 32 * MiB);
    // Split-brain probe: the first block of each of 32 objects written once (0x11) before the cut;
    // a client that only reaches host 3 later writes them again through a frozen old map.
    const stale = await c.createVolume('stale-epoch', STALE_OBJECTS * OBJECT);
    const client = await c.client();
    const sv = client.volume({ volumeId: stale.dataId, placementId: stale.placementId, parents: [], sizeBytes: stale.size, group: stale.group });
    for (let o = 0; o < STALE_OBJECTS; o++) await sv.write(o * OBJECT, Buffer.alloc(4096, 0x11));
    const old = await freezeMap(c, 'f');
    await client.refreshMap();
    expect(client.router.epoch, 'the map moved while it was frozen').toBe(old.epoch);
    // Objects whose primary is disk 3 at the old epoch: after the cut their primary moves away.
    const victims = [...Array(STALE_OBJECTS).keys()].filter((o) => client.router.locate(stale.group, stale.placementId, o).replicas[0] === 3).slice(0, 4);
    expect(victims.length).toBeGreaterThan(0);
    const refused = async (disks: number[]): Promise<number> => {
      let n = 0;
      for (const d of disks) n += ((await c.diskStats(d)) as { service: { staleEpochRefused: number } }).service.staleEpochRefused;
      return n;
    };
    const log = (line: string): void => void process.stdout.write(`[fault-test] partition: ${line}\n`);

    const w = newWriter(vol.socketPath, 'partition', (32 * MiB) / 4096);
    await w.start();
    await w.waitAcked(200, 60_000);
    // 1. Host 3 loses the management plane (mgmt, etcd, the block service, map delivery) but still
    //    reaches its peers: the leader marks disk 3 down and the map moves on without it.
    await c.partitionHost(3, ['root']);
    await until('disk 3 out of every in-sync list', async () => {
      await client.refreshMap();
      return victims.every((o) => !client.router.locate(stale.group, stale.placementId, o).replicas.includes(3)) ? true : undefined;
    }, 60_000);
    const moved = client.router.epoch;
    expect(await c.hostMapEpoch(3), 'host 3 must still be on the old map').toBe(old.epoch);
    expect(await c.hostMapEpoch(1)).toBeGreaterThanOrEqual(moved);
    const refusedByPeers = await refused([1, 2]);
    const viaPeers = await staleWrite(c, 3, stale, old.path, victims, 0x22);
    const refusedByPeersDelta = (await refused([1, 2])) - refusedByPeers;
    log(`old primary (disk 3, epoch ${old.epoch}, map now ${moved}) with its peers reachable: ${JSON.stringify(viaPeers)}; peers refused ${refusedByPeersDelta} stale-epoch requests`);
    // The old primary writes locally and forwards with its old epoch; the peers, on the new map, refuse.
    expect(viaPeers.filter((r) => r.ok)).toEqual([]);
    expect(viaPeers.map((r) => r.code)).toEqual(victims.map(() => 'MAP_ERR_STALE_EPOCH'));
    expect(refusedByPeersDelta).toBeGreaterThanOrEqual(victims.length);

    // 2. Cut from everything for 20 s: writes go on with the other copies; the old primary's
    //    writes reach nobody and are not acknowledged either.
    await c.partitionHost(3, 'all');
    const cutAt = Date.now();
    const ackedAtCut = w.progress.acked;
    const isolated = await staleWrite(c, 3, stale, old.path, victims, 0x33);
    log(`old primary cut from everything: ${JSON.stringify(isolated)}`);
    expect(isolated.filter((r) => r.ok)).toEqual([]);
    await sleep(Math.max(0, 20_000 - (Date.now() - cutAt)));
    const ackedWhileCut = w.progress.acked - ackedAtCut;
    expect(await c.hostMapEpoch(3)).toBe(old.epoch);

    // 3. Healed: host 3 gets the new map; the old primary itself now refuses the old epoch.
    await c.heal(3);
    await until('server 3 on the new map', async () => (((await c.diskStats(3).catch(() => ({ epoch: 0 }))) as { epoch: number }).epoch >= moved ? true : undefined), 60_000);
    const refusedBy3 = await refused([3]);
    const afterHeal = await staleWrite(c, 3, stale, old.path, victims, 0x44);
    const refusedBy3Delta = (await refused([3])) - refusedBy3;
    log(`old primary after the heal: ${JSON.stringify(afterHeal)}; it refused ${refusedBy3Delta} stale-epoch requests`);
    expect(afterHeal.map((r) => r.code)).toEqual(victims.map(() => 'MAP_ERR_STALE_EPOCH'));
    expect(refusedBy3Delta).toBeGreaterThanOrEqual(victims.length);

    await w.waitAcked(w.progress.acked + 200, 90_000);
    const summary = await w.stop();
    await waitCaughtUp(c, [3]);
    const replicas = await c.waitReplicasEqual(vol, 120_000);
    log(`${summary.acked} writes acknowledged (${ackedWhileCut} while host 3 was cut off), ${summary.errors} I/O errors, max latency ${summary.maxLatencyMs} ms, ${replicas.diffs.length} divergent replicas`);
    // Writes went on while host 3 was cut off (its disk marked down, shards on the other two).
    expect(ackedWhileCut).toBeGreaterThan(0);
    expect(summary.ioErrors, w.describe()).toEqual([]);
    expect([...summary.readErrorList, ...summary.readMismatchList], w.describe()).toEqual([]);
    expect(replicas.diffs).toEqual([]);
    const report = await w.verify();
    expect(report.badCount, formatReport(report)).toBe(0);
    // Nothing of the unacknowledged writes is left anywhere: every copy of every victim (disk 3's,
    // which took them locally, included) holds the acknowledged 0x11.
    await client.refreshMap();
    const labels: string[] = [];
    for (const o of victims) {
      const { replicas: disks } = client.router.locate(stale.group, stale.placementId, o);
      expect(disks).toContain(3);
      const copies = await Promise.all(disks.map((d) => client.readReplica(d, stale.group, stale.dataId, o, 0, 4096, stale.placementId)));
      expect(copies.map((r) => r.data.equals(Buffer.alloc(4096, 0x11))), `object ${o} on disks ${disks.join(',')}`).toEqual(disks.map(() => true));
      expect((await sv.read(o * OBJECT, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
      // Versions too: disk 3's copy must not keep the (higher) version of a refused write — a
      // catch-up copy replaces the target's object, version included.
      const versions = copies.map((r, i) => `${disks[i]}:v${r.version}`).join(',');
      expect(new Set(copies.map((r) => r.version)).size, `object ${o}: versions ${versions}`).toBe(1);
      labels.push(`object ${o}: ${versions}`);
    }
    log(`copies of the stale-written objects after the catch-up: all 0x11; ${labels.join('; ')}`);
  }, 420_000);

  it('(d) storpool-mgmt SIGKILLed and restarted: the cluster state is kept in etcd', async () => {
    const c = cluster!;
    const list = async (): Promise<string[]> => (await c.api.request<{ name: string }[]>('GET', 'VolumesList')).data.map((v) => v.name).sort();
    await c.createVolume('mgmt-restart', 4 * MiB);
    const before = await list();
    await c.killMgmt();
    await expect(c.api.request('GET', 'VolumesList')).rejects.toThrow();
    await c.restartMgmt();
    expect(before).toContain('mgmt-restart');
    expect(await list()).toEqual(before);
  }, 120_000);

  // Last: a new disk changes the shard map of every volume above.
  it('(e) addServer: a 4th host joins the placement group and its server serves', async () => {
    const c = cluster!;
    const s = await c.addServer();
    expect(s.diskId).toBe(4);
    expect(s.host.netns).toBe(c.lab.host(4).netns);
    expect(await c.lab.canConnect(1, s.host.ip, SERVER_PORT)).toBe(true);
    const map = JSON.parse(await readFile(c.mapFile, 'utf8')) as { disks: { id: number; address: { host: string; port: number } }[] };
    expect(map.disks.find((d) => d.id === 4)?.address).toEqual({ host: s.host.ip, port: SERVER_PORT });
    expect((await c.diskStats(4))['diskId']).toBe(4);
  }, 120_000);
});
