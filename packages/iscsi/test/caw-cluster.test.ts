/**
 * COMPARE AND WRITE is atomic across storpool-iscsi processes: a local cluster (3 storage servers,
 * the default template's 3 copies), two `storpool-iscsi` processes (controllers 1 and 2, one
 * portal each) serving one volume, and one libiscsi initiator logged in through each portal
 * (test/caw-initiator.py: libiscsi's iscsi_compareandwrite_sync through ctypes). Each portal
 * used to serialize COMPARE AND WRITE with a lock of its own, so two portals could both win one
 * round; the command now runs at the shard primary.
 *
 * - Rounds in lockstep: both initiators send COMPARE AND WRITE (counter v -> v + 1) on the same
 *   LBA at the same moment; exactly one gets GOOD, the other MISCOMPARE (0x0E, 0x1D00).
 * - Free-running: both increment one counter as VMware's ATS does (read, compare-and-write, on a
 *   miscompare read again) until each won N times; the counter ends at 2N: no update lost.
 *
 * Every process is stopped by PID; the temp directory goes even on failure.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_PATH, ISCSI_BIN, spawnLogged, stop, waitPort, type Spawned } from './helpers.js';

const MiB = 1024 * 1024;
const BASE = 'iqn.2026-11.com.storpool:caw';
const VOLUME = 'cawvol';
const INITIATORS = ['iqn.2026-11.test:caw-a', 'iqn.2026-11.test:caw-b'];
const INITIATOR_SCRIPT = fileURLToPath(new URL('./caw-initiator.py', import.meta.url));
const SENSE_MISCOMPARE = 0x0e;
const ASC_MISCOMPARE_DURING_VERIFY = 0x1d;
const LOCKSTEP_ROUNDS = 40;
const FREE_WINS_EACH = 25;

type Reply = Record<string, unknown>;

/** One caw-initiator.py process: a command in, one JSON line out. */
class Initiator {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  #stderr = '';

  constructor(name: string, portal: string) {
    this.#child = spawn('python3', [INITIATOR_SCRIPT, name, portal, `${BASE}:${VOLUME}`], { env: { ...process.env, PATH: DEBIAN_PATH } });
    this.#child.stderr.on('data', (b: Buffer) => { this.#stderr += b.toString(); });
    this.#lines = createInterface({ input: this.#child.stdout })[Symbol.asyncIterator]();
  }

  async #next(): Promise<Reply> {
    const line = await this.#lines.next();
    if (line.done === true) throw new Error(`initiator exited: ${this.#stderr}`);
    return JSON.parse(line.value) as Reply;
  }

  ready(): Promise<Reply> {
    return this.#next();
  }

  command(words: (string | number)[]): Promise<Reply> {
    this.#child.stdin.write(`${words.join(' ')}\n`);
    return this.#next();
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((r) => this.#child.once('exit', r));
    this.#child.stdin.end('quit\n');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

let tmp: string;
let cluster: LocalCluster | undefined;
const targets: Spawned[] = [];
const ports: number[] = [];
const initiators: Initiator[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-iscsi-caw-'));
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 512 * MiB, ourId: 1, serverLogLevel: 'warn' });
  const api = new StorpoolApi({ config: { path: cluster.confPath } });
  await api.request('POST', 'VolumeCreate', [], { name: VOLUME, size: 64 * MiB, template: 'default' });
  ports.push(await freePort(), await freePort());
  const commands: unknown[] = [
    { setBaseName: { name: BASE } },
    { createPortalGroup: { name: 'pg1' } },
    { portalGroupAddNetwork: { portalGroup: 'pg1', net: '127.0.0.0/8' } },
    { createPortal: { portalGroup: 'pg1', controller: 1, ip: '127.0.0.1', port: ports[0] } },
    { createPortal: { portalGroup: 'pg1', controller: 2, ip: '127.0.0.1', port: ports[1] } },
    { createTarget: { volumeName: VOLUME } },
  ];
  for (const name of INITIATORS) {
    commands.push({ createInitiator: { name, username: '', secret: '' } }, { export: { initiator: name, portalGroup: 'pg1', volumeName: VOLUME } });
  }
  await api.request('POST', 'iSCSIConfig', [], { commands });
  for (const id of [1, 2]) {
    targets.push(spawnLogged(process.execPath, [ISCSI_BIN, '--controller-id', String(id), '--map-file', cluster.mapFile, '--log-level', 'info'], join(tmp, `iscsi-${id}.log`), { STORPOOL_CONF: cluster.confPath }));
  }
  await Promise.all(ports.map((port, i) => waitPort(port, targets[i]!.child)));
  // One initiator through each portal (each process serves the volume from its own client).
  INITIATORS.forEach((name, i) => initiators.push(new Initiator(name, `127.0.0.1:${ports[i]}`)));
  for (const init of initiators) expect(await init.ready()).toEqual({ ready: true });
}, 180_000);

afterAll(async () => {
  for (const init of initiators) await init.close();
  for (const t of targets) await stop(t);
  await cluster?.stop();
  if (tmp !== undefined && process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
}, 120_000);

describe('COMPARE AND WRITE through two storpool-iscsi portals', () => {
  it(`lockstep: in each of ${LOCKSTEP_ROUNDS} rounds on one LBA exactly one portal's initiator wins`, async () => {
    const lba = 8 * 1024 + 3; // a 512-byte block inside a 4 KiB block: the primary merges it
    const [a, b] = initiators as [Initiator, Initiator];
    expect(await a.command(['read', lba])).toEqual({ value: 0, uniform: true }); // never written: zeros
    const wins = [0, 0];
    for (let round = 0; round < LOCKSTEP_ROUNDS; round++) {
      const results = await Promise.all([a.command(['caw', lba, round, round + 1]), b.command(['caw', lba, round, round + 1])]);
      const winners = results.map((r, i) => (r['status'] === 0 ? i : -1)).filter((i) => i >= 0);
      expect(winners, `round ${round}: ${JSON.stringify(results)}`).toHaveLength(1);
      const loser = results[1 - winners[0]!]!;
      expect(loser).toEqual({ status: 2, key: SENSE_MISCOMPARE, asc: ASC_MISCOMPARE_DURING_VERIFY, ascq: 0 });
      wins[winners[0]!]!++;
    }
    // Both portals read the last value, whole.
    for (const init of initiators) expect(await init.command(['read', lba])).toEqual({ value: LOCKSTEP_ROUNDS, uniform: true });
    expect(wins[0]! + wins[1]!).toBe(LOCKSTEP_ROUNDS);
  }, 300_000);

  it(`free-running ATS-style increments through both portals lose no update (${FREE_WINS_EACH} wins each)`, async () => {
    const lba = 3 * 8192; // the first block of a 4 MiB object: a whole-block merge at its start
    const results = await Promise.all(initiators.map((init) => init.command(['incr', lba, FREE_WINS_EACH])));
    for (const r of results) expect(r['won']).toBe(FREE_WINS_EACH);
    for (const init of initiators) expect(await init.command(['read', lba])).toEqual({ value: 2 * FREE_WINS_EACH, uniform: true });
  }, 300_000);

  it('a COMPARE AND WRITE across a 4 MiB object boundary is refused (INVALID FIELD IN CDB), not run non-atomically', async () => {
    // LBA 8191 + 2 blocks: the last 512 bytes of object 0 and the first of object 1.
    expect(await initiators[0]!.command(['caw', 8191, 0, 1, 2])).toEqual({ status: 2, key: 0x05, asc: 0x24, ascq: 0 });
    // Inside one object the same two blocks' worth works.
    expect(await initiators[0]!.command(['caw', 8189, 0, 1, 2])).toEqual({ status: 0 });
    expect(await initiators[1]!.command(['read', 8190])).toEqual({ value: 1, uniform: true });
  });
});
