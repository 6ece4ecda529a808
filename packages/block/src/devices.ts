/**
 * Block devices for attached volumes. Two methods:
 *
 * - `nbd`: the kernel's nbd driver through `nbd-client` (where the module exists or `modprobe nbd`
 *   works), connected to the attachment's unix socket. NOT TESTED here (no nbd module).
 * - `nbdfuse`: `nbdfuse` exposes the export as a file in a FUSE mount under the runtime
 *   directory, and `losetup` makes a loop device of that file (works wherever FUSE and loop do).
 *
 * Both give a real block device (`/dev/nbdN`, `/dev/loopN`) that the service links as
 * `/dev/storpool/<name>` and `/dev/storpool-byid/<globalId>`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, readlink, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';

export type AttachMethod = 'nbd' | 'nbdfuse' | 'none';
const COMMAND_TIMEOUT_MS = 20_000;
const START_TIMEOUT_MS = 15_000;

export function run(cmd: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

function inPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((d) => d !== '' && existsSync(join(d, cmd)));
}

/** `auto`: the kernel nbd driver if usable, else nbdfuse + loop, else none (NBD exports only). */
export async function detectMethod(wanted: AttachMethod | 'auto', log: Logger): Promise<AttachMethod> {
  if (wanted !== 'auto') return wanted;
  if (inPath('nbd-client')) {
    if (existsSync('/sys/module/nbd')) return 'nbd';
    if (await run('modprobe', ['nbd']).then(() => true, () => false)) return 'nbd';
  }
  if (inPath('nbdfuse') && inPath('losetup') && existsSync('/dev/fuse')) return 'nbdfuse';
  log.warn('neither the kernel nbd driver (nbd-client) nor nbdfuse+losetup is usable: attachments get NBD exports only, no /dev/storpool devices');
  return 'none';
}

export interface DeviceRequest {
  /** Attachment slot (unique per client): names the FUSE mount directory. */
  pos: number;
  /** The attachment's unix socket (its default export is the volume). */
  socketPath: string;
  exportName: string;
  readOnly: boolean;
}

export interface Device {
  /** The real block device, e.g. /dev/loop3. */
  path: string;
  method: AttachMethod;
  /**
   * Removes the device. If it is still open (forced detach), the loop device is set to
   * auto-clear and the rest is released in the background once the last user closes it
   * (`released` resolves then).
   */
  remove(): Promise<{ released?: Promise<void> }>;
}

export async function createDevice(method: AttachMethod, runtimeDir: string, req: DeviceRequest, log: Logger): Promise<Device> {
  if (method === 'nbdfuse') return createFuseLoop(runtimeDir, req, log);
  if (method === 'nbd') return createKernelNbd(req, log);
  throw new Error('no attach method available (see the log at startup)');
}

// ---- nbdfuse + loop --------------------------------------------------------------------------

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return Promise.race([new Promise<boolean>((r) => child.once('exit', () => r(true))), sleep(ms).then(() => false)]);
}

async function createFuseLoop(runtimeDir: string, req: DeviceRequest, log: Logger): Promise<Device> {
  const dir = join(runtimeDir, 'fuse', String(req.pos));
  await unmountStale(dir, log);
  await mkdir(dir, { recursive: true });
  const pidFile = join(runtimeDir, 'fuse', `${req.pos}.pid`);
  await rm(pidFile, { force: true });
  const file = join(dir, 'disk');
  const args = [...(req.readOnly ? ['-r'] : []), '-P', pidFile, file, '--unix', req.socketPath];
  const child = spawn('nbdfuse', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const spawnError = new Promise<Error>((r) => child.once('error', r));
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (existsSync(pidFile)) break;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nbdfuse exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
    const failed = await Promise.race([spawnError, sleep(20).then(() => undefined)]);
    if (failed !== undefined) throw new Error(`cannot run nbdfuse: ${failed.message}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nbdfuse did not come up within ${START_TIMEOUT_MS} ms: ${stderr.trim()}`);
    }
  }
  let loop: string;
  try {
    loop = (await run('losetup', ['-f', '--show', ...(req.readOnly ? ['-r'] : []), file])).trim();
  } catch (err) {
    await stopFuse(dir, child, log);
    throw err;
  }
  log.info({ export: req.exportName, device: loop, fuse: file, nbdfusePid: child.pid }, 'loop device over nbdfuse attached');
  return {
    path: loop, method: 'nbdfuse',
    async remove() {
      await run('losetup', ['-d', loop]).catch((err: unknown) => log.warn({ err: (err as Error).message, device: loop }, 'losetup -d failed'));
      const release = async (): Promise<void> => {
        // Auto-clear: the loop device lets go of the file when its last user closes it.
        while (await loopBacking(loop) === file) await sleep(200);
        await stopFuse(dir, child, log);
      };
      if (await loopBacking(loop) === file) {
        log.warn({ device: loop }, 'loop device still open: it is released (and nbdfuse stopped) when its last user closes it');
        return { released: release().catch((err: unknown) => log.error({ err, device: loop }, 'releasing the loop device failed')) };
      }
      await stopFuse(dir, child, log);
      return {};
    },
  };
}

async function loopBacking(loop: string): Promise<string | undefined> {
  const text = await readFile(`/sys/block/${basename(loop)}/loop/backing_file`, 'utf8').catch(() => undefined);
  return text?.trim();
}

async function stopFuse(dir: string, child: ChildProcess, log: Logger): Promise<void> {
  await run('umount', [dir]).catch(() => run('umount', ['-l', dir])).catch((err: unknown) => log.warn({ err: (err as Error).message, dir }, 'umount of the nbdfuse mount failed'));
  if (!(await waitExit(child, 3_000))) {
    child.kill('SIGTERM');
    if (!(await waitExit(child, 2_000))) child.kill('SIGKILL');
  }
}

/** Lazily unmounts a FUSE mount left at `dir` by an earlier run. */
async function unmountStale(dir: string, log: Logger): Promise<void> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  if (mounts.split('\n').some((l) => l.split(' ')[4] === dir)) {
    log.warn({ dir }, 'unmounting a stale nbdfuse mount');
    await run('umount', ['-l', dir]).catch(() => undefined);
  }
}

/**
 * Cleans what an earlier run left behind under the runtime directory: loop devices backed by
 * files there (detached, auto-clear) and FUSE mounts (lazily unmounted).
 */
export async function sweepStale(runtimeDir: string, log: Logger): Promise<void> {
  const fuseDir = join(runtimeDir, 'fuse');
  const loops = await readdir('/sys/block').catch(() => [] as string[]);
  for (const name of loops.filter((n) => n.startsWith('loop'))) {
    const backing = await loopBacking(`/dev/${name}`);
    if (backing?.startsWith(`${fuseDir}/`) === true) {
      log.warn({ device: `/dev/${name}`, backing }, 'detaching a stale loop device');
      await run('losetup', ['-d', `/dev/${name}`]).catch(() => undefined);
    }
  }
  const mounts = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const line of mounts.split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint?.startsWith(`${fuseDir}/`) === true) {
      log.warn({ dir: mountPoint }, 'unmounting a stale nbdfuse mount');
      await run('umount', ['-l', mountPoint]).catch(() => undefined);
    }
  }
}

// ---- kernel nbd ------------------------------------------------------------------------------

async function createKernelNbd(req: DeviceRequest, log: Logger): Promise<Device> {
  const names = (await readdir('/sys/block')).filter((n) => /^nbd\d+$/.test(n)).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const name of names) {
    if (existsSync(`/sys/block/${name}/pid`)) continue;
    const device = `/dev/${name}`;
    try {
      await run('nbd-client', ['-unix', req.socketPath, '-N', req.exportName, ...(req.readOnly ? ['-readonly'] : []), device]);
    } catch (err) {
      log.debug({ device, err: (err as Error).message }, 'nbd-client failed; trying the next device');
      continue;
    }
    log.info({ export: req.exportName, device }, 'kernel nbd device attached');
    return { path: device, method: 'nbd', remove: async () => { await run('nbd-client', ['-d', device]); return {}; } };
  }
  throw new Error('no free /dev/nbdN device');
}

// ---- open detection --------------------------------------------------------------------------

/**
 * Which of `devices` are in use: mounted (in this mount namespace), held by another block device
 * (dm, md), or open by any process (one scan of /proc/<pid>/fd for all of them).
 */
export async function openDevices(devices: readonly string[]): Promise<Set<string>> {
  const open = new Set<string>();
  if (devices.length === 0) return open;
  const mounts = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const mounted = new Set(mounts.split('\n').map((l) => l.split(' ')[2]));
  const wanted = new Set<string>();
  for (const device of devices) {
    const st = await stat(device).catch(() => undefined);
    if (st === undefined || !st.isBlockDevice()) continue;
    const rdev = BigInt(st.rdev);
    const major = Number((rdev >> 8n) & 0xfffn);
    const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
    if (mounted.has(`${major}:${minor}`)) open.add(device);
    else if ((await readdir(`/sys/class/block/${basename(device)}/holders`).catch(() => [] as string[])).length > 0) open.add(device);
    else wanted.add(device);
  }
  if (wanted.size === 0) return open;
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (wanted.has(target)) {
        open.add(target);
        wanted.delete(target);
        if (wanted.size === 0) return open;
      }
    }
  }
  return open;
}
