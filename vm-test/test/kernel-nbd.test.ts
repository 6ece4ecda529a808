/**
 * A real Linux kernel (Debian's, booted in QEMU) as an NBD client of storpool: the guest attaches
 * volumes (replication 3 over 3 local storage servers) exported by the host's NBD server with
 * nbd-client, makes ext4 and xfs, writes a tree of files whose checksums the host computed, checks
 * them offline (e2fsck -fn, xfs_repair -n), verifies after a remount; the host then reads the
 * volumes through the client library. Debian packages: qemu-system-x86 (and apt lists for
 * `apt-get download`, see docs/vm-test.md).
 */
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '@storpool/testkit';
import type { StorpoolClient } from '@storpool/client';
import { NbdServer, volumeExport } from '@storpool/nbd';
import { ensureImage, runVm, type GuestImage, type VmResult } from '../src/index.js';
import { DEVSUM_BYTES, DMESG_CHECK, MiB, StepClock, TREE_FILES, fsCycleScript, hasFsMagic, makeTree, marker, type FsCycle } from './guest-fs.js';

// mkfs.xfs refuses file systems under 300 MB
const VOLUME_BYTES = 512 * MiB;
const VERBOSE = process.env.VM_TEST_VERBOSE === '1';

let cluster: LocalCluster;
let client: StorpoolClient;
let server: NbdServer;
let port: number;
let image: GuestImage;
let nextVolumeId = 1;

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 2048 * MiB, logLevel: 'warn' });
  client = await cluster.client();
  server = new NbdServer({ log: pino({ level: process.env.NBD_TEST_LOG ?? 'silent' }) });
  // slirp maps the guest's 10.0.2.2 to the host's 127.0.0.1
  port = (await server.listenTcp({ host: '127.0.0.1', port: 0 })).port;
}, 180_000);

afterAll(async () => {
  await server?.close();
  await cluster?.stop();
}, 60_000);

interface Volume { cycle: FsCycle; volume: ReturnType<StorpoolClient['volume']> }

/** Exports one volume per cycle (export name = label), boots a guest that attaches each to /dev/nbdN. */
async function runGuest(cycles: FsCycle[], onLine?: (line: string) => void, guest: { before?: string; after?: string } = {}): Promise<{ result: VmResult; clock: StepClock }> {
  const vols: Volume[] = cycles.map((cycle) => {
    const volume = client.volume({ volumeId: nextVolumeId++, sizeBytes: VOLUME_BYTES, group: 1 });
    server.addExport(volumeExport(volume, { name: cycle.label }));
    return { cycle, volume };
  });
  const attach = cycles.map((c) => `
step attach-${c.label}
run nbd-client 10.0.2.2 ${port} ${c.dev} -N ${c.label} -b 4096 -t 120
[ "$(cat /sys/block/${c.dev.slice(5)}/size)" = "${VOLUME_BYTES / 512}" ] || fail "${c.dev} size $(cat /sys/block/${c.dev.slice(5)}/size) sectors"`).join('\n');
  const detach = cycles.map((c) => `run nbd-client -d ${c.dev}`).join('\n');
  const script = `. /lib/vmtest.sh\nset -o pipefail\n${guest.before ?? ''}\n${attach}\n${cycles.map(fsCycleScript).join('\n')}\n${guest.after ?? ''}\n${detach}\n${DMESG_CHECK}`;
  const clock = new StepClock();
  const result = await runVm({
    image, script, files: makeTree().files, timeoutMs: 600_000,
    onLine: (line) => {
      clock.onLine(line);
      if (VERBOSE) console.log(`  [guest] ${line}`);
      onLine?.(line);
    },
  });
  console.log(`vm-test kernel nbd ${cycles.map((c) => `${c.label}:${c.fs}`).join(' ')}: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${clock.summary()}`);
  if (!result.ok) console.log(result.log);
  expect(result.reason).toBeUndefined();
  expect(result.ok).toBe(true);
  for (const { cycle, volume } of vols) {
    expect(Number(marker(result, `FILES-${cycle.label}`))).toBe(cycle.copies * TREE_FILES + 1);
    // The data is really in storpool: the client library reads the file system the guest made, the same bytes it read.
    const head = await volume.read(0, DEVSUM_BYTES);
    expect(hasFsMagic(cycle.fs, head), `${cycle.fs} magic on ${cycle.label}`).toBe(true);
    expect(createHash('md5').update(head).digest('hex')).toBe(marker(result, `DEVSUM-${cycle.label}`));
  }
  return { result, clock };
}

describe('kernel NBD client in a QEMU guest against storpool', () => {
  it('nbd-client attaches replicated volumes: mkfs.ext4 and mkfs.xfs, write a tree, e2fsck -fn / xfs_repair -n clean, remount and verify checksums', async () => {
    await runGuest([
      { dev: '/dev/nbd0', fs: 'ext4', label: 'vext4', copies: 2, bigMiB: 16 },
      { dev: '/dev/nbd1', fs: 'xfs', label: 'vxfs', copies: 2, bigMiB: 16 },
    ]);
  }, 660_000);

  it('the same while storage server 2 is SIGKILLed and restarted during the writes: no I/O error, fsck clean, checksums match', async () => {
    let restart: Promise<void> | undefined;
    let killedAt = 0;
    let restartedAt = 0;
    const { clock } = await runGuest([{ dev: '/dev/nbd0', fs: 'ext4', label: 'kill', copies: 3, bigMiB: 32 }], (line) => {
      if (line.startsWith('@@STEP write-start-kill') && restart === undefined) {
        restart = (async () => {
          await new Promise((r) => setTimeout(r, 500));
          await cluster.killServer(2);
          killedAt = Date.now();
          await new Promise((r) => setTimeout(r, 3000));
          await cluster.startServer(2);
          restartedAt = Date.now();
        })();
      }
    });
    expect(restart).toBeDefined();
    await restart;
    expect(killedAt).toBeGreaterThan(0);
    expect(restartedAt).toBeGreaterThan(killedAt);
    // the whole outage lay inside the guest's writes, and a copy was synced to the device after
    // the kill (how many syncs came before it depends on the machine's speed)
    expect(clock.at.get('write-start-kill')).toBeLessThan(killedAt);
    expect(clock.at.get('write-done-kill')).toBeGreaterThan(restartedAt);
    expect(clock.at.get('synced-kill-3')).toBeGreaterThan(killedAt);
  }, 660_000);

  it('the same over a lossy, slow link (tc netem in the guest: 20±5 ms delay, 2% loss): fsck clean, checksums match', async () => {
    // Debian's busybox sh runs its own applets before PATH (its tc has no netem): iproute2's by path
    const { result } = await runGuest([{ dev: '/dev/nbd0', fs: 'ext4', label: 'netem', copies: 1, bigMiB: 8 }], undefined, {
      before: `run /sbin/tc qdisc add dev eth0 root netem delay 20ms 5ms loss 2%
/sbin/tc qdisc show dev eth0 | grep -q netem || fail "netem not set"`,
      // packets netem dropped on the guest's egress while the guest wrote
      after: `echo "@@NETEM $(/sbin/tc -s qdisc show dev eth0 | sed -n 's/.*dropped \\([0-9]*\\).*/\\1/p' | head -1)"`,
    });
    const dropped = Number(marker(result, 'NETEM'));
    console.log(`vm-test netem: ${dropped} packets dropped by netem during the run`);
    expect(dropped).toBeGreaterThan(0);
  }, 660_000);
});
