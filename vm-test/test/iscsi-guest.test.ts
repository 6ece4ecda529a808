/**
 * A real Linux kernel (Debian's, booted in QEMU) as an iSCSI initiator of storpool-iscsi: a local
 * cluster (3 storage servers, replication 3) with storpool-iscsi on a loopback portal, two volumes
 * exported as two targets through iSCSIConfig. In the guest `iscsistart` (open-iscsi's initramfs
 * login tool) logs in to each over slirp (the host's 127.0.0.1 is 10.0.2.2), each LUN appears as
 * /dev/sdX (iscsi_tcp + sd_mod), and the guest makes ext4 on one and xfs on the other, writes a
 * tree of files with host-computed checksums, syncs, unmounts, `e2fsck -fn` / `xfs_repair -n` must
 * be clean, remounts and verifies every checksum; dmesg must be free of I/O, file system and iSCSI
 * connection errors. The host then reads each volume through the client library (the same bytes
 * as the guest saw), checks that the three replicas of every object are identical, and that
 * storpool-iscsi logged no error.
 *
 * iscsistart cannot log out: it stops its event loop once the session is up, and without a
 * userspace daemon (iscsid) the kernel cannot send a Logout. The guest instead deletes the SCSI
 * disk through sysfs (the kernel flushes it with SYNCHRONIZE CACHE first) and powers off; the
 * target sees the connection close.
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
import { DEVSUM_BYTES, DMESG_CHECK, MiB, StepClock, TREE_FILES, fsCycleScript, hasFsMagic, makeTree, marker, type FsCycle } from './guest-fs.js';

const VERBOSE = process.env.VM_TEST_VERBOSE === '1';
const GUEST_HOST = '10.0.2.2';
const OBJECT_BYTES = 4 * MiB;
const INITIATOR = 'iqn.2026-11.test.vm:guest';
/** The portal group startLocalCluster creates for its iSCSI portal. */
const PORTAL_GROUP = 'local';

let tmp: string | undefined;
let cluster: LocalCluster | undefined;
let client: StorpoolClient | undefined;
let api: StorpoolApi;
let image: GuestImage;
let portalPort: number;

/** One volume, exported as its own target, one file system cycle on its LUN. */
interface Lun {
  volume: string;
  bytes: number;
  cycle: FsCycle;
}

// Two targets, two sessions: ext4 and xfs (mkfs.xfs refuses file systems under 300 MB). The guest
// links each session's disk to /dev/iscsi-<label>, whatever sdX the kernel gave it.
const LUNS: Lun[] = [
  { volume: 'iext4', bytes: 256 * MiB, cycle: { dev: '/dev/iscsi-iext4', fs: 'ext4', label: 'iext4', copies: 1, bigMiB: 8 } },
  { volume: 'ixfs', bytes: 320 * MiB, cycle: { dev: '/dev/iscsi-ixfs', fs: 'xfs', label: 'ixfs', copies: 1, bigMiB: 8 } },
];

interface ExportsView {
  iscsi: { baseName: string; portalGroups: Record<string, { name: string }>; targets: Record<string, { name: string; volume: string }> };
  volumes: Record<string, { globalId: string; size: number; dataId: number; placementId: number; parents: number[]; group: number }>;
}

/** storpool-iscsi logs this once its poll of iSCSIExports has picked up a target. */
async function waitServing(target: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await readFile(join(cluster!.dataDir, 'logs', 'iscsi.log'), 'utf8').catch(() => '');
    if (log.split('\n').some((l) => l.includes('serving target') && l.includes(`"target":"${target}"`))) return;
    if (Date.now() > deadline) throw new Error(`storpool-iscsi did not pick up ${target} within ${timeoutMs} ms:\n${log.split('\n').slice(-10).join('\n')}`);
    await sleep(200);
  }
}

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  tmp = await mkdtemp(join(tmpdir(), 'storpool-vm-iscsi-'));
  // A free port rather than 3260: other tests on this machine may hold the well-known one.
  portalPort = await freePort();
  cluster = await startLocalCluster({
    dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn',
    iscsi: { portal: `127.0.0.1:${portalPort}` },
  });
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(cluster.mapFile), clientId: 4001 });
}, 180_000);

afterAll(async () => {
  client?.close();
  await cluster?.stop();
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
}, 60_000);

type VolumeView = ExportsView['volumes'][string];

/**
 * Guest shell: log in to one target with iscsistart (a few attempts: one refused or timed-out
 * login on a loaded machine should not fail the run), find the disk of that session in sysfs,
 * link it to the cycle's device name and check its size.
 */
function loginScript(target: string, tag: string, lun: Lun): string {
  const { dev, label } = lun.cycle;
  return `
step login-${label}
ok=
for i in 1 2 3 4 5; do
  iscsistart -i ${INITIATOR} -t ${target} -g ${tag} -a ${GUEST_HOST} -p ${portalPort} && { ok=1; break; }
  sleep 2
done
[ -n "$ok" ] || fail "iscsistart could not log in to ${target}"
sess=
for s in /sys/class/iscsi_session/session*; do [ "$(cat $s/targetname)" = "${target}" ] && sess=$s; done
[ -n "$sess" ] || fail "no iSCSI session for ${target}"
# iscsistart asks the kernel to scan the new host; rescan ourselves if the LUN is slow to show up
disk=
for i in $(seq 1 120); do
  disk=$(ls $sess/device/target*/*/block 2>/dev/null | head -1)
  [ -n "$disk" ] && [ -b /dev/$disk ] && break
  [ $i -eq 20 ] && for h in /sys/class/scsi_host/host*/scan; do echo '- - -' > $h; done
  sleep 0.5
done
[ -n "$disk" ] && [ -b /dev/$disk ] || { dmesg | tail -20; fail "no disk for the session of ${target}"; }
ln -s /dev/$disk ${dev}
step logged-in-${label}
echo "@@DISK-${label} /dev/$disk $(cat /sys/block/$disk/device/vendor) $(cat /sys/block/$disk/device/model) discard_max=$(cat /sys/block/$disk/queue/discard_max_bytes)"
[ "$(cat /sys/block/$disk/size)" = "${lun.bytes / 512}" ] || fail "$disk size $(cat /sys/block/$disk/size) sectors"
`;
}

/** The objects of one volume (its dataId) that a disk holds: object index -> version and allocated 4 KiB blocks. */
async function listedObjects(c: StorpoolClient, disk: number, dataId: number): Promise<Map<number, { version: number; blocks: number }>> {
  const out = new Map<number, { version: number; blocks: number }>();
  const PAGE = 4096;
  let after: { volumeId: number; objectIndex: number } | undefined;
  for (;;) {
    const page = await c.listObjects(disk, after, PAGE);
    for (const e of page) if (e.volumeId === dataId) out.set(e.objectIndex, { version: e.version, blocks: e.allocatedBlocks });
    if (page.length < PAGE) return out;
    after = { volumeId: page[PAGE - 1]!.volumeId, objectIndex: page[PAGE - 1]!.objectIndex };
  }
}

/**
 * Compares a volume's replicas without repair or forwarding: every object any disk holds must be
 * held by each of its three replicas at the same version with the same number of allocated
 * blocks, and with the same bytes. Objects with no allocated block (never written, or unmapped by
 * mkfs's discard) read as zeros on every copy, so only the others are read: reading every object
 * of both volumes from every copy cost 20-30 s here. Returns the differences, how many objects
 * were compared and how many of them were read.
 */
async function replicaDiffs(c: StorpoolClient, vol: VolumeView, disks: number[]): Promise<{ diffs: string[]; objects: number; read: number }> {
  await c.refreshMap();
  const held = new Map(await Promise.all(disks.map(async (d) => [d, await listedObjects(c, d, vol.dataId)] as const)));
  const objects = [...new Set([...held.values()].flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const diffs: string[] = [];
  let read = 0;
  let next = 0;
  // a few objects at a time: the three servers read and checksum in parallel
  const worker = async (): Promise<void> => {
    for (let i = next++; i < objects.length; i = next++) {
      const obj = objects[i]!;
      const { replicas } = c.router.locate(vol.group, vol.placementId, obj);
      if (replicas.length !== 3) diffs.push(`object ${obj}: ${replicas.length} replicas`);
      const meta = replicas.map((d) => held.get(d)?.get(obj));
      const shown = meta.map((m) => (m === undefined ? 'absent' : `v${m.version}/${m.blocks} blocks`));
      if (shown.some((m) => m !== shown[0])) {
        diffs.push(`object ${obj}: ${shown.join(' / ')} on disks ${replicas.join(' / ')}`);
        continue;
      }
      if (meta[0]!.blocks === 0) continue;
      read++;
      const copies = await Promise.all(replicas.map((disk) => c.readReplica(disk, vol.group, vol.dataId, obj, 0, OBJECT_BYTES, vol.placementId)));
      for (let k = 1; k < copies.length; k++) {
        if (!copies[k]!.data.equals(copies[0]!.data)) diffs.push(`object ${obj}: disk ${replicas[k]} data differs from disk ${replicas[0]}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { diffs, objects: objects.length, read };
}

describe('open-iscsi in a QEMU guest against storpool-iscsi', () => {
  it('iscsistart logs in to two targets over slirp: mkfs.ext4 / mkfs.xfs, write a tree, e2fsck -fn / xfs_repair -n clean, remount and verify checksums; host reads the same bytes, replicas identical', async () => {
    const commands: unknown[] = [
      // No nets and no secret: the initiator may log in from anywhere (slirp's connections come
      // from the host's 127.0.0.1) with AuthMethod None.
      { createInitiator: { name: INITIATOR, username: '', secret: '' } },
    ];
    for (const l of LUNS) {
      await api.request('POST', 'VolumeCreate', [], { name: l.volume, size: l.bytes, template: 'default' });
      commands.push({ createTarget: { volumeName: l.volume } }, { export: { initiator: INITIATOR, portalGroup: PORTAL_GROUP, volumeName: l.volume } });
    }
    await api.request('POST', 'iSCSIConfig', [], { commands });
    const view = (await api.request<ExportsView>('GET', 'iSCSIExports')).data;
    // iscsistart needs the portal group tag; the target answers its login with it
    const tag = Object.entries(view.iscsi.portalGroups).find(([, g]) => g.name === PORTAL_GROUP)![0];
    const targets = LUNS.map((l) => Object.values(view.iscsi.targets).find((t) => t.volume === l.volume)!.name);
    for (const t of targets) await waitServing(t);

    const script = `. /lib/vmtest.sh
set -o pipefail
${LUNS.map((l, i) => loginScript(targets[i]!, tag, l)).join('\n')}
cat /sys/class/iscsi_session/session*/targetname | sed 's/^/@@SESSION /'
${LUNS.map((l) => fsCycleScript(l.cycle)).join('\n')}
step detach
# No logout without iscsid: delete each disk (the kernel flushes it with SYNCHRONIZE CACHE first);
# power-off then drops the connections.
run sync
for d in ${LUNS.map((l) => l.cycle.dev).join(' ')}; do
  disk=$(basename $(readlink $d))
  echo 1 > /sys/block/$disk/device/delete || fail "cannot delete $disk"
done
${DMESG_CHECK}
# iSCSI trouble the generic check does not name: connection errors and recovery, failed SCSI commands
if dmesg | grep -iE 'detected conn error|ping timeout|session recovery timed out|iscsi: .*(error|failed)|FAILED Result|Sense Key' > /tmp/dmesg.iscsi; then
  cat /tmp/dmesg.iscsi
  fail "kernel reported iSCSI errors"
fi
`;
    const clock = new StepClock();
    const result = await runVm({
      image, script, files: makeTree().files, timeoutMs: 420_000,
      onLine: (line) => {
        clock.onLine(line);
        if (VERBOSE) console.log(`  [guest] ${line}`);
      },
    });
    console.log(`vm-test iscsi guest: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${clock.summary()}; ${LUNS.map((l) => marker(result, `DISK-${l.cycle.label}`)).join('; ')}`);
    if (!result.ok) {
      console.log(result.log);
      console.log((await readFile(join(cluster!.dataDir, 'logs', 'iscsi.log'), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n'));
    }
    expect(result.reason).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(result.lines.filter((l) => l.startsWith('@@SESSION ')).map((l) => l.slice(10)).sort()).toEqual([...targets].sort());

    const t0 = Date.now();
    const compared: string[] = [];
    for (const [i, l] of LUNS.entries()) {
      const { cycle } = l;
      expect(marker(result, `DISK-${cycle.label}`)).toMatch(/^\/dev\/sd[a-z]+ STORPOOL /);
      expect(Number(marker(result, `FILES-${cycle.label}`))).toBe(cycle.copies * TREE_FILES + 1);
      const vol = view.volumes[targets[i]!]!;
      // The data is really in storpool: the client library reads the file system the guest made, the same bytes.
      const volume = client!.volume({ volumeId: vol.dataId, placementId: vol.placementId, parents: vol.parents, sizeBytes: vol.size, group: vol.group });
      const head = await volume.read(0, DEVSUM_BYTES);
      expect(hasFsMagic(cycle.fs, head), `${cycle.fs} magic on ${l.volume}`).toBe(true);
      expect(createHash('md5').update(head).digest('hex')).toBe(marker(result, `DEVSUM-${cycle.label}`));
      const replicas = await replicaDiffs(client!, vol, cluster!.servers.map((sv) => sv.diskId));
      expect(replicas.diffs, `replicas of ${l.volume}`).toEqual([]);
      // the guest's file system really reached the disks (ext4 / xfs metadata + the tree)
      expect(replicas.objects).toBeGreaterThan(0);
      compared.push(`${l.volume}: ${replicas.objects} objects, ${replicas.read} read`);
    }
    console.log(`vm-test iscsi guest: host read-back and replica comparison (${compared.join('; ')}: 3 equal copies each) in ${Date.now() - t0} ms`);
    // The target itself logged no error (pino level 50+) for anything the kernel initiator sent;
    // warnings (e.g. the connection dropped at power-off) are printed.
    const records = (await readFile(join(cluster!.dataDir, 'logs', 'iscsi.log'), 'utf8')).split('\n').filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg?: string });
    for (const r of records.filter((x) => x.level === 40)) console.log(`storpool-iscsi warning: ${JSON.stringify(r)}`);
    expect(records.filter((r) => r.level >= 50)).toEqual([]);
  }, 540_000);
});
