/**
 * A real Linux kernel (Debian's, booted in QEMU) as an NBD client of storpool: the guest attaches
 * a volume (replication 3 over 3 local storage servers) exported by the host's NBD server with
 * nbd-client, makes ext4, writes a tree of files whose checksums the host computed, fsck's it and
 * verifies after a remount; the host then reads the volume through the client library.
 * Debian packages: qemu-system-x86 (and apt lists for `apt-get download`, see docs/vm-test.md).
 */
import { createHash, randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '@storpool/testkit';
import type { StorpoolClient } from '@storpool/client';
import { NbdServer, volumeExport } from '@storpool/nbd';
import { ensureImage, runVm, type GuestImage, type VmResult } from '../src/index.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 256 * MiB;
const DEVSUM_BYTES = 16 * MiB;
const VERBOSE = process.env.VM_TEST_VERBOSE === '1';

let cluster: LocalCluster;
let client: StorpoolClient;
let server: NbdServer;
let port: number;
let image: GuestImage;

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 1024 * MiB, logLevel: 'warn' });
  client = await cluster.client();
  server = new NbdServer({ log: pino({ level: process.env.NBD_TEST_LOG ?? 'silent' }) });
  // slirp maps the guest's 10.0.2.2 to the host's 127.0.0.1
  port = (await server.listenTcp({ host: '127.0.0.1', port: 0 })).port;
}, 180_000);

afterAll(async () => {
  await server?.close();
  await cluster?.stop();
}, 60_000);

interface Tree {
  files: Record<string, Uint8Array>;
  sums: string;
}

/** A tree of files of varied sizes (empty to 2 MiB) with their sha256 sums, computed on the host. */
function makeTree(totalFiles: number): Tree {
  const files: Record<string, Uint8Array> = {};
  const sums: string[] = [];
  for (let i = 0; i < totalFiles; i++) {
    const size = i === 0 ? 0 : i % 5 === 0 ? 2 * MiB - 1 : ((i * 7919) % 300) * 1024 + (i % 3) * 511;
    const path = `d${i % 4}/sub${i % 3}/f${i}.bin`;
    const data = randomBytes(size);
    files[`data/${path}`] = data;
    sums.push(`${createHash('sha256').update(data).digest('hex')}  ./${path}`);
  }
  return { files, sums: sums.join('\n') + '\n' };
}

/** The guest script: attach, mkfs, copy the tree (`copies` times), fsck, remount, verify, detach. */
function guestScript(name: string, copies: number): string {
  return `. /lib/vmtest.sh
set -o pipefail
step attach
run nbd-client 10.0.2.2 ${port} /dev/nbd0 -N ${name} -b 4096 -t 120
[ "$(cat /sys/block/nbd0/size)" = "${VOLUME_BYTES / 512}" ] || fail "nbd0 size $(cat /sys/block/nbd0/size) sectors"
step mkfs
run mkfs.ext4 -q -F /dev/nbd0
mkdir -p /mnt/v
run mount -t ext4 /dev/nbd0 /mnt/v
step write-start
for c in $(seq 1 ${copies}); do
  mkdir -p /mnt/v/copy$c || fail mkdir
  cp -a /data/. /mnt/v/copy$c/ || fail "copy $c"
  sync || fail "sync $c"
  step synced-$c
done
dd if=/dev/urandom bs=1M count=32 2>/dev/null | tee /mnt/v/big.bin | sha256sum | sed 's#-#./big.bin#' > /tmp/big.sum
sync || fail sync
step write-done
run umount /mnt/v
step fsck
e2fsck -fn /dev/nbd0 > /tmp/fsck.log 2>&1; rc=$?
cat /tmp/fsck.log
[ $rc -eq 0 ] || fail "e2fsck -fn exited $rc"
step verify
run mount -t ext4 -o ro /dev/nbd0 /mnt/v
for c in $(seq 1 ${copies}); do
  (cd /mnt/v/copy$c && sha256sum -c -s /data.sums) || fail "checksums differ in copy$c"
done
(cd /mnt/v && sha256sum -c -s /tmp/big.sum) || fail "checksum of big.bin differs"
echo "@@FILES $(find /mnt/v -type f | wc -l)"
run umount /mnt/v
echo "@@DEVSUM $(dd if=/dev/nbd0 bs=1M count=${DEVSUM_BYTES / MiB} 2>/dev/null | md5sum | cut -d' ' -f1)"
run nbd-client -d /dev/nbd0
if dmesg | grep -iE 'I/O error|EXT4-fs error|EXT4-fs warning|blk_update_request|nbd0: (Connection timed out|Receive control failed|Dead connection)|buffer_io_error' > /tmp/dmesg.bad; then
  cat /tmp/dmesg.bad
  fail "kernel reported I/O errors"
fi
`;
}

function marker(result: VmResult, name: string): string | undefined {
  return result.lines.find((l) => l.startsWith(`@@${name} `))?.slice(name.length + 3).trim();
}

async function runGuest(name: string, volumeId: number, copies: number, onLine?: (line: string) => void): Promise<{ result: VmResult; tree: Tree; stepAt: Map<string, number> }> {
  const volume = client.volume({ volumeId, sizeBytes: VOLUME_BYTES, group: 1 });
  server.addExport(volumeExport(volume, { name }));
  const tree = makeTree(40);
  const t0 = Date.now();
  const stepTimes: string[] = [];
  const stepAt = new Map<string, number>();
  const result = await runVm({
    image,
    script: guestScript(name, copies),
    files: { ...tree.files, 'data.sums': tree.sums },
    timeoutMs: 180_000,
    onLine: (line) => {
      if (line.startsWith('@@STEP')) {
        stepAt.set(line.slice(7), Date.now());
        stepTimes.push(`${line.slice(7)} +${Date.now() - t0} ms`);
      }
      if (VERBOSE) console.log(`  [guest] ${line}`);
      onLine?.(line);
    },
  });
  console.log(`vm-test ${name}: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${stepTimes.join(', ')}; total ${Date.now() - t0} ms`);
  if (!result.ok) console.log(result.log);
  expect(result.reason).toBeUndefined();
  expect(result.ok).toBe(true);
  expect(Number(marker(result, 'FILES'))).toBe(copies * 40 + 1);

  // The data is really in storpool: the client library reads an ext4 image, the same bytes the guest read.
  const head = await volume.read(0, DEVSUM_BYTES);
  expect(head.readUInt16LE(1080)).toBe(0xef53);
  expect(createHash('md5').update(head).digest('hex')).toBe(marker(result, 'DEVSUM'));
  return { result, tree, stepAt };
}

describe('kernel NBD client in a QEMU guest against storpool', () => {
  it('nbd-client attaches a replicated volume: mkfs.ext4, write a tree, fsck -n clean, remount and verify checksums', async () => {
    await runGuest('vol', 1, 2);
  }, 240_000);

  it('the same while storage server 2 is SIGKILLed and restarted during the writes: no I/O error, fsck clean, checksums match', async () => {
    let restart: Promise<void> | undefined;
    let killedAt = 0;
    let restartedAt = 0;
    const { stepAt } = await runGuest('kill', 2, 3, (line) => {
      if (line.startsWith('@@STEP write-start') && restart === undefined) {
        restart = (async () => {
          await new Promise((r) => setTimeout(r, 1500));
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
    // the outage really overlapped the guest's writes (each copy is synced to the device)
    expect(stepAt.get('write-done')).toBeGreaterThan(restartedAt);
    expect(stepAt.get('synced-1')).toBeGreaterThan(killedAt);
  }, 240_000);
});
