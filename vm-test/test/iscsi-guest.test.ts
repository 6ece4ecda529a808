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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorpoolApi } from '@storpool/api-client';
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { ensureImage, runVm, type GuestImage } from '../src/index.js';
import { DEVSUM_BYTES, DMESG_CHECK, MiB, StepClock, TREE_FILES, fsCycleScript, hasFsMagic, makeTree, marker, type FsCycle } from './guest-fs.js';
import { iscsiDmesgCheck, iscsiLogRecords, iscsiLoginScript, replicaDiffs, targetOf, waitServing, type ExportsView } from './iscsi-helpers.js';

const VERBOSE = process.env.VM_TEST_VERBOSE === '1';
const INITIATOR = 'iqn.2026-11.test.vm:guest';
/** The portal group startLocalCluster creates for its iSCSI portal. */
const PORTAL_GROUP = 'local';

let tmp: string | undefined;
let cluster: LocalCluster | undefined;
let client: StorpoolClient | undefined;
let api: StorpoolApi;
let image: GuestImage;
let portalPort: number;
/** startLocalCluster's storpool-iscsi logs here. */
const iscsiLog = (): string => join(cluster!.dataDir, 'logs', 'iscsi.log');

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
    const tag = targetOf(view, PORTAL_GROUP, LUNS[0]!.volume).tag;
    const targets = LUNS.map((l) => targetOf(view, PORTAL_GROUP, l.volume).target);
    for (const t of targets) await waitServing(iscsiLog(), t);

    const script = `. /lib/vmtest.sh
set -o pipefail
${LUNS.map((l, i) => iscsiLoginScript({ initiator: INITIATOR, target: targets[i]!, tag, port: portalPort, label: l.cycle.label, dev: l.cycle.dev, bytes: l.bytes })).join('\n')}
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
${iscsiDmesgCheck()}`;
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
      console.log((await readFile(iscsiLog(), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n'));
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
    const records = await iscsiLogRecords(iscsiLog());
    for (const r of records.filter((x) => x.level === 40)) console.log(`storpool-iscsi warning: ${JSON.stringify(r)}`);
    expect(records.filter((r) => r.level >= 50)).toEqual([]);
  }, 540_000);
});
