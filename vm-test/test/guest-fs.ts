/**
 * Shared by the VM tests: a tree of files with host-computed checksums, and the guest-side shell
 * that makes a file system on a block device, writes the tree, checks it offline (`e2fsck -fn` /
 * `xfs_repair -n`), remounts and verifies every checksum, then checks dmesg for I/O errors.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { VmResult } from '../src/index.js';

export const MiB = 1024 * 1024;
export const DEVSUM_BYTES = 16 * MiB;
export const TREE_FILES = 40;

export interface Tree {
  files: Record<string, Uint8Array>;
  sums: string;
}

/** A tree of files of varied sizes (empty to 2 MiB) with their sha256 sums, for /data in the guest. */
export function makeTree(totalFiles = TREE_FILES): Tree {
  const files: Record<string, Uint8Array> = {};
  const sums: string[] = [];
  for (let i = 0; i < totalFiles; i++) {
    const size = i === 0 ? 0 : i % 5 === 0 ? 2 * MiB - 1 : ((i * 7919) % 300) * 1024 + (i % 3) * 511;
    const path = `d${i % 4}/sub${i % 3}/f${i}.bin`;
    const data = randomBytes(size);
    files[`data/${path}`] = data;
    sums.push(`${createHash('sha256').update(data).digest('hex')}  ./${path}`);
  }
  return { files: { ...files, 'data.sums': Buffer.from(sums.join('\n') + '\n') }, sums: sums.join('\n') + '\n' };
}

export type Fs = 'ext4' | 'xfs';

export interface FsCycle {
  /** Block device in the guest, e.g. /dev/nbd0 or /dev/vda. */
  dev: string;
  fs: Fs;
  /** Names this cycle's markers: @@STEP write-start-<label>, @@FILES-<label>, @@DEVSUM-<label>. */
  label: string;
  /** Copies of the tree (each synced: @@STEP synced-<label>-<n>). */
  copies: number;
  /** A random file of this size, its checksum taken while writing. */
  bigMiB: number;
}

/**
 * Guest shell: mkfs, copy the tree `copies` times (sync after each), a big random file, sync,
 * umount, offline check must be clean, remount read-only, verify every checksum, print the file
 * count and the md5 of the device's first 16 MiB. Sources /lib/vmtest.sh first.
 */
export function fsCycleScript(c: FsCycle): string {
  const mnt = `/mnt/${c.label}`;
  const mkfs = c.fs === 'ext4' ? `mkfs.ext4 -q -F ${c.dev}` : `mkfs.xfs -q -f ${c.dev}`;
  // xfs_repair -n exits 1 when it finds corruption; e2fsck -n exits non-zero for any fix it would make
  const check = c.fs === 'ext4' ? `e2fsck -fn ${c.dev}` : `xfs_repair -n ${c.dev}`;
  return `
step mkfs-${c.label}
run ${mkfs}
mkdir -p ${mnt}
run mount -t ${c.fs} ${c.dev} ${mnt}
step write-start-${c.label}
for c in $(seq 1 ${c.copies}); do
  mkdir -p ${mnt}/copy$c || fail mkdir
  cp -a /data/. ${mnt}/copy$c/ || fail "copy $c on ${c.label}"
  sync || fail "sync $c"
  step synced-${c.label}-$c
done
dd if=/dev/urandom bs=1M count=${c.bigMiB} 2>/dev/null | tee ${mnt}/big.bin | sha256sum | sed 's#-#./big.bin#' > /tmp/big-${c.label}.sum
sync || fail sync
step write-done-${c.label}
run umount ${mnt}
step check-${c.label}
${check} > /tmp/check.log 2>&1; rc=$?
tail -5 /tmp/check.log
[ $rc -eq 0 ] || fail "${check} exited $rc"
step verify-${c.label}
run mount -t ${c.fs} -o ro ${c.dev} ${mnt}
for c in $(seq 1 ${c.copies}); do
  (cd ${mnt}/copy$c && sha256sum -c -s /data.sums) || fail "checksums differ in copy$c on ${c.label}"
done
(cd ${mnt} && sha256sum -c -s /tmp/big-${c.label}.sum) || fail "checksum of big.bin differs on ${c.label}"
echo "@@FILES-${c.label} $(find ${mnt} -type f | wc -l)"
run umount ${mnt}
echo "@@DEVSUM-${c.label} $(dd if=${c.dev} bs=1M count=${DEVSUM_BYTES / MiB} 2>/dev/null | md5sum | cut -d' ' -f1)"
`;
}

/**
 * Guest shell: fail if the kernel logged any I/O, file system or nbd connection error. `ignore`:
 * an extended regex (may use shell variables) of lines that are expected, e.g. the errors of a
 * multipath path that was made to fail.
 */
export function dmesgCheck(ignore?: string): string {
  return `
if dmesg | ${ignore !== undefined ? `{ grep -vE "${ignore}" || true; } | ` : ''}grep -iE 'I/O error|EXT4-fs error|EXT4-fs warning|XFS \\(.*\\): .*(error|corrupt|shutdown)|blk_update_request|nbd[0-9]+: (Connection timed out|Receive control failed|Dead connection)|buffer_io_error' > /tmp/dmesg.bad; then
  cat /tmp/dmesg.bad
  fail "kernel reported I/O errors"
fi
`;
}

export const DMESG_CHECK = dmesgCheck();

export function marker(result: VmResult, name: string): string | undefined {
  return result.lines.find((l) => l.startsWith(`@@${name} `))?.slice(name.length + 3).trim();
}

/** The file system's magic, as the host reads it from the volume's first bytes. */
export function hasFsMagic(fs: Fs, head: Buffer): boolean {
  return fs === 'ext4' ? head.readUInt16LE(1080) === 0xef53 : head.toString('latin1', 0, 4) === 'XFSB';
}

/** Steps seen on the console with their host time, and a one-line timing summary. */
export class StepClock {
  readonly at = new Map<string, number>();
  private readonly t0 = Date.now();
  private readonly seen: string[] = [];
  onLine = (line: string): void => {
    if (line.startsWith('@@STEP ')) {
      this.at.set(line.slice(7), Date.now());
      this.seen.push(`${line.slice(7)} +${((Date.now() - this.t0) / 1000).toFixed(1)}s`);
    }
  };
  summary(): string {
    return `${this.seen.join(', ')}; total ${((Date.now() - this.t0) / 1000).toFixed(1)}s`;
  }
}
