/**
 * QEMU's own NBD client: storpool volumes (replication 3, 3 local storage servers) exported by the
 * host's NBD server become the guest's virtio disks, one through `nbd+unix://` and one through
 * `nbd://` (QEMU connects; the guest kernel sees plain /dev/vda and /dev/vdb). The guest makes ext4
 * and xfs, writes a tree of files with host-computed checksums, checks offline, remounts and
 * verifies; the host reads the same bytes back through the client library.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '@storpool/testkit';
import type { StorpoolClient } from '@storpool/client';
import { NbdServer, volumeExport } from '@storpool/nbd';
import { ensureImage, runVm, type GuestImage } from '../src/index.js';
import { DEVSUM_BYTES, DMESG_CHECK, MiB, StepClock, TREE_FILES, fsCycleScript, hasFsMagic, makeTree, marker, type FsCycle } from './guest-fs.js';

const VOLUME_BYTES = 512 * MiB;
const VERBOSE = process.env.VM_TEST_VERBOSE === '1';

let cluster: LocalCluster;
let client: StorpoolClient;
let server: NbdServer;
let port: number;
let socketPath: string;
let tmp: string;
let image: GuestImage;

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  tmp = await mkdtemp(join(tmpdir(), 'storpool-vm-qnbd-'));
  cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 2048 * MiB, logLevel: 'warn' });
  client = await cluster.client();
  server = new NbdServer({ log: pino({ level: process.env.NBD_TEST_LOG ?? 'silent' }) });
  port = (await server.listenTcp({ host: '127.0.0.1', port: 0 })).port;
  socketPath = join(tmp, 'nbd.sock');
  await server.listenUnix(socketPath);
}, 180_000);

afterAll(async () => {
  await server?.close();
  await cluster?.stop();
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
}, 60_000);

describe("QEMU's NBD client: storpool volumes as the guest's virtio disks", () => {
  it('nbd+unix:// and nbd:// drives: ext4 on /dev/vda, xfs on /dev/vdb, offline checks clean, checksums verified', async () => {
    const cycles: (FsCycle & { uri: string; volumeId: number })[] = [
      { dev: '/dev/vda', fs: 'ext4', label: 'qunix', copies: 2, bigMiB: 16, volumeId: 1, uri: `nbd+unix:///qunix?socket=${socketPath}` },
      { dev: '/dev/vdb', fs: 'xfs', label: 'qtcp', copies: 2, bigMiB: 16, volumeId: 2, uri: `nbd://127.0.0.1:${port}/qtcp` },
    ];
    const volumes = cycles.map((c) => {
      const volume = client.volume({ volumeId: c.volumeId, sizeBytes: VOLUME_BYTES, group: 1 });
      server.addExport(volumeExport(volume, { name: c.label }));
      return volume;
    });
    const sizes = cycles.map((c) => `[ "$(cat /sys/block/${c.dev.slice(5)}/size)" = "${VOLUME_BYTES / 512}" ] || fail "${c.dev}: $(cat /sys/block/${c.dev.slice(5)}/size 2>&1) sectors"`).join('\n');
    const script = `. /lib/vmtest.sh\nset -o pipefail\n${sizes}\n${cycles.map(fsCycleScript).join('\n')}\n${DMESG_CHECK}`;
    const clock = new StepClock();
    const result = await runVm({
      image, script, files: makeTree().files, timeoutMs: 600_000,
      drives: cycles.map((c) => ({ file: c.uri })),
      onLine: (line) => {
        clock.onLine(line);
        if (VERBOSE) console.log(`  [guest] ${line}`);
      },
    });
    console.log(`vm-test qemu nbd drives: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${clock.summary()}`);
    if (!result.ok) console.log(result.log);
    expect(result.reason).toBeUndefined();
    expect(result.ok).toBe(true);
    for (const [i, c] of cycles.entries()) {
      expect(Number(marker(result, `FILES-${c.label}`))).toBe(c.copies * TREE_FILES + 1);
      const head = await volumes[i]!.read(0, DEVSUM_BYTES);
      expect(hasFsMagic(c.fs, head), `${c.fs} magic on ${c.label}`).toBe(true);
      expect(createHash('md5').update(head).digest('hex')).toBe(marker(result, `DEVSUM-${c.label}`));
    }
  }, 660_000);
});
