/**
 * The kernel's iSCSI initiator keeps working when one of two portals goes away (issue #8):
 * a local cluster (3 storage servers, replication 3) and two storpool-iscsi processes of our own
 * (controllers 1 and 2, one portal each in one portal group) serving the same volume. The guest
 * logs in through both portals with `iscsistart` (two sessions, two SCSI disks with the same
 * WWID) and puts a dm-multipath device over them with `dmsetup` (one path group, round-robin:
 * both portals carry the I/O), makes ext4 on it, writes a tree and syncs. Then the host SIGKILLs
 * portal A's process while the guest writes files one after another, each fsync'd: session A's
 * connection drops, its I/O waits for the session's recovery timeout (set to RECOVERY_TMO_S; no
 * iscsid reconnects), then fails with a transport error, dm-multipath fails the path and resends
 * the I/O through portal B. The file system never sees an error: the writes go on, a tree is
 * written after the failover, sync, umount, `e2fsck -fn` clean, remount and every checksum
 * verifies — the files synced before the kill, every file whose fsync'd write returned across the
 * failover, and those written after. The host then reads the file system through the client
 * library (the same bytes), compares the three replicas of every object, and checks that portal
 * B's storpool-iscsi logged no error.
 *
 * No multipathd: the table is set with dmsetup by hand (multipath-tools would need udev and a
 * daemon); nothing reinstates a failed path, which this test does not need.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorpoolApi } from '@storpool/api-client';
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { ensureImage, runVm, type GuestImage } from '../src/index.js';
import { DEVSUM_BYTES, MiB, StepClock, TREE_FILES, dmesgCheck, hasFsMagic, makeTree, marker } from './guest-fs.js';
import {
  iscsiDmesgCheck, iscsiLogRecords, iscsiLoginScript, replicaDiffs, startIscsiProcess, stopIscsiProcess, targetOf, waitServing,
  type ExportsView, type IscsiProcess,
} from './iscsi-helpers.js';

const VERBOSE = process.env.VM_TEST_VERBOSE === '1';
const BASE = 'iqn.2026-11.com.storpool:fo';
const PORTAL_GROUP = 'fo';
const INITIATOR = 'iqn.2026-11.test.vm:failover';
const VOLUME = 'ifo';
const VOLUME_BYTES = 256 * MiB;
/** How long I/O on the dead session waits before it fails over (open-iscsi's default is 120 s). */
const RECOVERY_TMO_S = 5;
/** After the guest's `kill-portal-a` marker: the guest is in its write loop by then. */
const KILL_DELAY_MS = 1_000;
/** Files the loop writes after it saw path A failed. */
const FILES_AFTER_FAILOVER = 6;
/** The loop fails the test if path A is not failed this long after the kill marker. */
const FAILOVER_LIMIT_S = 90;
/** Size of each file of the loop: 4 x 64 KiB. */
const LOOP_FILE_BLOCKS = 4;

let tmp: string | undefined;
let cluster: LocalCluster | undefined;
let client: StorpoolClient | undefined;
let api: StorpoolApi;
let image: GuestImage;
const ports: number[] = [];
const portals: IscsiProcess[] = [];
/** Kills QEMU (by PID, in runVm) if the test is abandoned, e.g. on its timeout. */
const vmAbort = new AbortController();

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  tmp = await mkdtemp(join(tmpdir(), 'storpool-vm-iscsi-fo-'));
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn' });
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 4002 });
  // Free ports rather than 3260: other tests on this machine may hold the well-known one.
  while (ports.length < 2) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  await api.request('POST', 'VolumeCreate', [], { name: VOLUME, size: VOLUME_BYTES, template: 'default' });
  // One portal group with a portal per controller: every portal serves every volume. No nets and
  // no secret: slirp's connections arrive from 127.0.0.1, AuthMethod None.
  await api.request('POST', 'iSCSIConfig', [], {
    commands: [
      { setBaseName: { name: BASE } },
      { createPortalGroup: { name: PORTAL_GROUP } },
      { createPortal: { portalGroup: PORTAL_GROUP, controller: 1, ip: '127.0.0.1', port: ports[0] } },
      { createPortal: { portalGroup: PORTAL_GROUP, controller: 2, ip: '127.0.0.1', port: ports[1] } },
      { createTarget: { volumeName: VOLUME } },
      { createInitiator: { name: INITIATOR, username: '', secret: '' } },
      { export: { initiator: INITIATOR, portalGroup: PORTAL_GROUP, volumeName: VOLUME } },
    ],
  });
  for (const [i, port] of ports.entries()) {
    portals.push(await startIscsiProcess({ controllerId: i + 1, port, confPath: cluster.confPath, mapFile: cluster.mapFile, logPath: join(tmp, `iscsi-${i + 1}.log`) }));
  }
}, 240_000);

afterAll(async () => {
  vmAbort.abort();
  for (const p of portals) await stopIscsiProcess(p);
  client?.close();
  await cluster?.stop();
  if (tmp !== undefined && process.env.KEEP_TMP === undefined) await rm(tmp, { recursive: true, force: true });
}, 90_000);

/** One write of the loop (`@@W n start end`): guest uptime in seconds at its start and end, and when the host read the line. */
interface LoopWrite { n: number; start: number; end: number; hostAt: number }

describe('open-iscsi + dm-multipath in a QEMU guest over two storpool-iscsi portals', () => {
  it('portal A SIGKILLed mid-writes: I/O fails over to portal B, no error reaches ext4, fsck clean, every synced file verifies; replicas identical', async () => {
    const view = (await api.request<ExportsView>('GET', 'iSCSIExports')).data;
    const { tag, target, vol } = targetOf(view, PORTAL_GROUP, VOLUME);
    for (const p of portals) await waitServing(p.logPath, target);

    const login = (label: string, port: number): string =>
      iscsiLoginScript({ initiator: INITIATOR, target, tag, port, label, dev: `/dev/iscsi-${label}`, bytes: VOLUME_BYTES, recoveryTmoS: RECOVERY_TMO_S });
    // Path A's own kernel messages are expected once it is killed: its disk, SCSI address, session, connection.
    const pathA = '\\[$A\\]|dev $A,|sd $ASCSI:|$ASESS:|$ACONN:';
    const script = `. /lib/vmtest.sh
set -o pipefail
# no udev in the guest: dmsetup makes /dev/mapper nodes itself
export DM_DISABLE_UDEV=1
${login('pa', ports[0]!)}
ASESS=$(basename $sess)
${login('pb', ports[1]!)}
A=$(basename $(readlink /dev/iscsi-pa)); B=$(basename $(readlink /dev/iscsi-pb))
[ "$A" != "$B" ] || fail "one disk for both sessions"
[ "$(cat /sys/block/$A/device/wwid)" = "$(cat /sys/block/$B/device/wwid)" ] || fail "the portals show different LUs"
ADEV=$(cat /sys/block/$A/dev); BDEV=$(cat /sys/block/$B/dev)
ASCSI=$(basename $(readlink /sys/block/$A/device))
ACONN=connection\${ASESS#session}:0
# writes completed on each path (field 5 of the disk's stat)
pathio() { echo "$(awk '{print $5}' /sys/block/$A/stat) $(awk '{print $5}' /sys/block/$B/stat)"; }

step multipath
# one path group, round-robin over both paths: both portals carry the I/O until one goes
run dmsetup create mpfo --table "0 $(cat /sys/block/$A/size) multipath 0 0 1 1 round-robin 0 2 1 $ADEV 1 $BDEV 1"
[ -b /dev/mapper/mpfo ] || fail "no /dev/mapper/mpfo"
echo "@@DM-BEFORE $(dmsetup status mpfo)"
step mkfs
run mkfs.ext4 -q -F /dev/mapper/mpfo
mkdir -p /mnt/fo
run mount -t ext4 /dev/mapper/mpfo /mnt/fo
step write-before
mkdir -p /mnt/fo/before && cp -a /data/. /mnt/fo/before/ || fail "copy before the kill"
run sync
echo "@@PATHIO before-kill $(pathio)"
step synced-before-kill

# One file after another, each fsync'd (conv=fsync) so that its blocks go to the paths now, not
# at a later sync; until path A is seen failed and ${FILES_AFTER_FAILOVER} more files after that.
mkdir -p /mnt/fo/during
: > /tmp/during.sums
failed=; n=0; after=0
limit=$(( $(cut -d. -f1 /proc/uptime) + ${FAILOVER_LIMIT_S} ))
step kill-portal-a
while [ $after -lt ${FILES_AFTER_FAILOVER} ]; do
  n=$((n+1))
  dd if=/dev/urandom of=/tmp/chunk bs=64k count=${LOOP_FILE_BLOCKS} 2>/dev/null || fail "urandom"
  echo "$(sha256sum < /tmp/chunk | cut -d' ' -f1)  ./f$n.bin" >> /tmp/during.sums
  t0=$(cut -d' ' -f1 /proc/uptime)
  dd if=/tmp/chunk of=/mnt/fo/during/f$n.bin bs=64k conv=fsync 2>/tmp/dd.err || { cat /tmp/dd.err; fail "write of during/f$n.bin failed"; }
  echo "@@W $n $t0 $(cut -d' ' -f1 /proc/uptime)"
  if [ -n "$failed" ]; then
    after=$((after+1))
  elif dmsetup status mpfo | grep -q " $ADEV F "; then
    failed=$n
    step failed-over
    echo "@@PATHIO failed-over $(pathio)"
  else
    [ $(cut -d. -f1 /proc/uptime) -lt $limit ] || fail "path A not failed ${FAILOVER_LIMIT_S} s after the kill marker"
  fi
done
echo "@@DM-AFTER $(dmsetup status mpfo)"
echo "@@SESSION-A $(cat /sys/class/iscsi_session/$ASESS/state)"

step write-after
mkdir -p /mnt/fo/after && cp -a /data/. /mnt/fo/after/ || fail "copy after the failover"
dd if=/dev/urandom bs=1M count=8 2>/dev/null | tee /mnt/fo/big.bin | sha256sum | sed 's#-#./big.bin#' > /tmp/big.sum
run sync
echo "@@PATHIO end $(pathio)"
step write-done
run umount /mnt/fo
step check
e2fsck -fn /dev/mapper/mpfo > /tmp/check.log 2>&1; rc=$?
tail -5 /tmp/check.log
[ $rc -eq 0 ] || fail "e2fsck -fn exited $rc"
step verify
run mount -t ext4 -o ro /dev/mapper/mpfo /mnt/fo
(cd /mnt/fo/before && sha256sum -c -s /data.sums) || fail "files synced before the kill differ"
(cd /mnt/fo/during && sha256sum -c -s /tmp/during.sums) || fail "files written across the failover differ"
(cd /mnt/fo/after && sha256sum -c -s /data.sums) || fail "files written after the failover differ"
(cd /mnt/fo && sha256sum -c -s /tmp/big.sum) || fail "big.bin differs"
echo "@@FILES $(find /mnt/fo/before -type f | wc -l) $(find /mnt/fo/during -type f | wc -l) $(find /mnt/fo/after -type f | wc -l)"
run umount /mnt/fo
echo "@@DEVSUM $(dd if=/dev/mapper/mpfo bs=1M count=${DEVSUM_BYTES / MiB} 2>/dev/null | md5sum | cut -d' ' -f1)"

step detach
# what the kernel said about the failover; path A's I/O errors are expected, counted
dmesg | grep -E 'conn error|recovery timed out|Failing path|reinstat' | head -20 | sed 's/^/@@KLOG /'
echo "@@KERRORS-A $(dmesg | grep -c "dev $A,")"
run dmsetup remove mpfo
run sync
# No logout without iscsid: delete the live path's disk (flushed first); power-off drops the connection
echo 1 > /sys/block/$B/device/delete || fail "cannot delete $B"
${dmesgCheck(pathA)}
${iscsiDmesgCheck(pathA)}`;

    const clock = new StepClock();
    const writes: LoopWrite[] = [];
    let kill: Promise<void> | undefined;
    let killedAt = 0;
    const result = await runVm({
      image, script, files: makeTree().files, timeoutMs: 300_000, signal: vmAbort.signal,
      onLine: (line) => {
        clock.onLine(line);
        if (VERBOSE) console.log(`  [guest] ${line}`);
        const w = /^@@W (\d+) ([\d.]+) ([\d.]+)$/.exec(line);
        if (w !== null) writes.push({ n: Number(w[1]), start: Number(w[2]), end: Number(w[3]), hostAt: Date.now() });
        if (line.startsWith('@@STEP kill-portal-a') && kill === undefined) {
          kill = (async () => {
            await sleep(KILL_DELAY_MS);
            process.kill(portals[0]!.child.pid!, 'SIGKILL');
            killedAt = Date.now();
          })();
        }
      },
    });
    await kill;
    const stalls = writes.map((w) => w.end - w.start);
    const longest = writes[stalls.indexOf(Math.max(...stalls))];
    console.log(`vm-test iscsi failover: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${clock.summary()}`);
    console.log(`vm-test iscsi failover: ${writes.length} loop writes (${LOOP_FILE_BLOCKS * 64} KiB, fsync'd), ${writes.filter((w) => w.hostAt < killedAt).length} done before the kill; longest ${longest === undefined ? '-' : `f${longest.n}: ${(longest.end - longest.start).toFixed(2)} s`}; typical ${median(stalls).toFixed(2)} s`);
    for (const name of ['DISK-pa', 'DISK-pb', 'DM-BEFORE', 'DM-AFTER', 'SESSION-A', 'FILES', 'KERRORS-A']) console.log(`  @@${name} ${marker(result, name)}`);
    for (const l of result.lines.filter((x) => x.startsWith('@@PATHIO ') || x.startsWith('@@KLOG '))) console.log(`  ${l}`);
    if (!result.ok) {
      console.log(result.log);
      for (const p of portals) console.log(`${p.logPath}:\n${(await readFile(p.logPath, 'utf8').catch(() => '')).split('\n').slice(-20).join('\n')}`);
    }
    expect(result.reason).toBeUndefined();
    expect(result.ok).toBe(true);

    // Two paths to one LU: two sessions, two disks, the same WWID (VPD 0x83 through either portal).
    const [diskA, diskB] = [marker(result, 'DISK-pa')!, marker(result, 'DISK-pb')!];
    expect(diskA).toMatch(/^\/dev\/sd[a-z]+ STORPOOL /);
    expect(diskA.split(' ')[0]).not.toBe(diskB.split(' ')[0]);
    expect(/wwid=(\S+)/.exec(diskA)?.[1]).toBe(/wwid=(\S+)/.exec(diskB)?.[1]);

    // The kill: portal A's process died of our SIGKILL while the loop was writing.
    expect(killedAt).toBeGreaterThan(0);
    expect(await portals[0]!.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(killedAt, 'kill after the loop started').toBeGreaterThan(clock.at.get('kill-portal-a')!);
    expect(killedAt, 'kill before the loop saw the failover').toBeLessThan(clock.at.get('failed-over')!);
    // The kernel saw the connection drop, gave up on session A after RECOVERY_TMO_S and
    // dm-multipath failed the path; one write of the loop waited for that (the others take
    // ~0.2 s), not much longer.
    const klog = (what: string): number | undefined => {
      const l = result.lines.find((x) => x.startsWith('@@KLOG ') && x.includes(what));
      return l === undefined ? undefined : Number(/\[\s*([\d.]+)\]/.exec(l)?.[1]);
    };
    const [connError, recoveryTimedOut, failingPath] = [klog('detected conn error'), klog(`session recovery timed out after ${RECOVERY_TMO_S} secs`), klog('Failing path')];
    expect(connError).toBeDefined();
    expect(recoveryTimedOut! - connError!).toBeGreaterThanOrEqual(RECOVERY_TMO_S - 0.5);
    expect(failingPath! - connError!).toBeLessThan(RECOVERY_TMO_S + 10);
    console.log(`vm-test iscsi failover: guest kernel: conn error +${connError} s, recovery timed out +${recoveryTimedOut} s, path failed +${failingPath} s (${(failingPath! - connError!).toFixed(2)} s without path A); ${marker(result, 'KERRORS-A')} I/O errors logged on path A`);
    expect(longest!.end - longest!.start).toBeGreaterThan(1);
    expect(longest!.end - longest!.start).toBeLessThan(RECOVERY_TMO_S + 30);
    // The kernel gave up on session A when its recovery timed out (FAILED while it waited, then FREE).
    expect(marker(result, 'SESSION-A')).toBe('FREE');

    // Both portals carried writes before the kill; after the failover only B did.
    const pathio = (phase: string): number[] => (result.lines.find((l) => l.startsWith(`@@PATHIO ${phase} `)) ?? '').split(' ').slice(2).map(Number);
    const [beforeKill, failedOver, end] = [pathio('before-kill'), pathio('failed-over'), pathio('end')];
    expect(beforeKill[0]).toBeGreaterThan(0);
    expect(beforeKill[1]).toBeGreaterThan(0);
    expect(end[0]).toBe(failedOver[0]);
    expect(end[1]).toBeGreaterThan(failedOver[1]!);

    // Everything synced before the kill, every loop file, the tree and big file after: all verified.
    const files = marker(result, 'FILES')!.split(' ').map(Number);
    expect(files).toEqual([TREE_FILES, writes.length, TREE_FILES]);
    expect(writes.length).toBeGreaterThan(FILES_AFTER_FAILOVER);

    // The data is really in storpool: the client library reads the file system the guest made, the same bytes.
    const t0 = Date.now();
    const volume = client!.volume({ volumeId: vol.dataId, placementId: vol.placementId, parents: vol.parents, sizeBytes: vol.size, group: vol.group });
    const head = await volume.read(0, DEVSUM_BYTES);
    expect(hasFsMagic('ext4', head)).toBe(true);
    expect(createHash('md5').update(head).digest('hex')).toBe(marker(result, 'DEVSUM'));
    const replicas = await replicaDiffs(client!, vol, cluster!.servers.map((sv) => sv.diskId));
    expect(replicas.diffs, `replicas of ${VOLUME}`).toEqual([]);
    expect(replicas.objects).toBeGreaterThan(0);
    console.log(`vm-test iscsi failover: host read-back and replica comparison (${replicas.objects} objects, ${replicas.read} read: 3 equal copies) in ${Date.now() - t0} ms`);

    // Portal B logged no error (pino level 50+); portal A none before it was killed.
    for (const p of portals) {
      const records = await iscsiLogRecords(p.logPath);
      for (const r of records.filter((x) => x.level === 40)) console.log(`${p.logPath} warning: ${JSON.stringify(r)}`);
      expect(records.filter((r) => r.level >= 50), p.logPath).toEqual([]);
    }
  }, 420_000);
});

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
