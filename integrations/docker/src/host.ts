/**
 * The host steps of a mount: find the device the block service made, make a file system on a
 * blank one, mount, unmount. Each runs a real tool (blkid, mkfs.*, mount, umount) with a timeout;
 * a failure becomes DOCKER_ERR_HOST with the tool's own message.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolError } from '@storpool/errors';
import type { Filesystem } from './options.js';

/** mkfs of a large volume over NBD can take a while on a loaded host. */
export const HOST_COMMAND_TIMEOUT_MS = 120_000;
/** VolumesReassignWait returns once the link exists; this only covers a slow udev-less re-read. */
export const DEVICE_WAIT_MS = 15_000;

/** Tools live in sbin; services started by systemd or tests may have a PATH without it. */
const TOOL_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

interface Run { code: number; stdout: string; stderr: string }

export function run(cmd: string, args: string[], timeoutMs = HOST_COMMAND_TIMEOUT_MS): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, PATH: TOOL_PATH } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr: err !== null && stderr === '' ? err.message : stderr });
    });
  });
}

async function must(cmd: string, args: string[], what: string): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new StorpoolError('DOCKER_ERR_HOST', `${what}: ${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Waits until `path` is a block device. */
export async function waitForDevice(path: string, timeoutMs = DEVICE_WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await stat(path).catch(() => undefined);
    if (st?.isBlockDevice() === true) return;
    if (Date.now() > deadline) throw new StorpoolError('DOCKER_ERR_HOST', `${path} did not appear: is storpool-block running for this client id?`);
    await sleep(100);
  }
}

/** The file-system type on the device, or undefined when blkid finds no signature (exit 2). */
export async function probeFilesystem(device: string): Promise<string | undefined> {
  const r = await run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', device]);
  if (r.code === 2) return undefined;
  if (r.code !== 0) throw new StorpoolError('DOCKER_ERR_HOST', `blkid ${device} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const type = r.stdout.trim();
  return type === '' ? undefined : type;
}

export async function makeFilesystem(device: string, fs: Filesystem, label: string): Promise<void> {
  // Labels: ext4 ≤ 16 bytes, xfs ≤ 12.
  if (fs === 'ext4') await must('mkfs.ext4', ['-q', '-F', '-L', label.slice(0, 16), device], `mkfs of ${device}`);
  else await must('mkfs.xfs', ['-q', '-f', '-L', label.slice(0, 12), device], `mkfs of ${device}`);
}

export async function mountDevice(device: string, target: string): Promise<void> {
  await must('mount', [device, target], `mount of ${device}`);
}

export async function unmount(target: string): Promise<void> {
  await must('umount', [target], `unmount of ${target}`);
}

/** Whether `target` is a mount point in this mount namespace (by /proc/self/mountinfo, field 5). */
export async function isMounted(target: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const escaped = target.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return info.split('\n').some((line) => line.split(' ')[4] === escaped);
}
