/**
 * Boots a guest image in QEMU (TCG, or KVM when a probe shows it works), with slirp user
 * networking (the guest reaches the host's 127.0.0.1 at 10.0.2.2), reads the serial console and
 * parses the result markers the guest's init prints:
 *   @@BOOTED <uptime>          init finished setup and starts /test.sh
 *   @@RESULT ok                /test.sh exited 0
 *   @@RESULT fail <reason>     /test.sh failed (or called `fail`)
 * Every run is bounded by a timeout; QEMU is killed by PID on failure, timeout or process exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultCacheDir, initrdWithScript, type GuestImage } from './image.js';

export type Accel = 'tcg' | 'kvm';

export interface RunVmOptions {
  image: GuestImage;
  /** Shell script run by the guest's init as /test.sh (`. /lib/vmtest.sh` for fail/step/run). */
  script?: string;
  /** More files for the per-test archive: guest path (relative, e.g. "etc/x") → content. */
  files?: Record<string, string | Uint8Array>;
  /** Whole run, boot to power-off. */
  timeoutMs: number;
  accel?: Accel;
  memoryMb?: number;
  cpus?: number;
  /**
   * Host directories shared into the guest over 9p (virtio): mount one in the script with
   * `share TAG DIR` (from /lib/vmtest.sh). Read-only unless `writable`.
   */
  shares?: { path: string; tag: string; writable?: boolean }[];
  /** Disks the guest sees as /dev/vda, /dev/vdb, … in order: a file, or any QEMU block URI (nbd://, nbd+unix://). */
  drives?: { file: string; format?: string; readOnly?: boolean }[];
  /** Extra kernel command line. */
  append?: string;
  extraArgs?: string[];
  /** Each console line as it arrives (e.g. to print, or to act on @@STEP markers). */
  onLine?: (line: string) => void;
  /** Aborts the run (QEMU is killed, result "aborted"). */
  signal?: AbortSignal;
}

export interface VmResult {
  ok: boolean;
  /** Why it failed: the guest's reason, "timeout", "aborted", or "qemu exited ... without a result". */
  reason?: string;
  /** The whole serial console. */
  log: string;
  lines: string[];
  accel: Accel;
  /** From spawn to the guest's @@BOOTED marker (undefined if it never booted). */
  bootMs?: number;
  durationMs: number;
  timedOut: boolean;
  exitCode: number | null;
}

const live = new Set<ChildProcess>();
let exitHooked = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => {
      for (const c of live) if (c.pid !== undefined) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    });
  }
}

function killByPid(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

export async function runVm(options: RunVmOptions): Promise<VmResult> {
  const accel = options.accel ?? (await selectAccel(options.image));
  const work = await mkdtemp(join(tmpdir(), 'storpool-vm-'));
  try {
    const initrd = options.script !== undefined || options.files !== undefined
      ? await initrdWithScript(options.image, options.script ?? 'exit 0\n', join(work, 'initrd'), options.files ?? {})
      : options.image.initrd;
    const args = [
      '-accel', accel,
      '-cpu', accel === 'kvm' ? 'host' : 'max',
      '-m', String(options.memoryMb ?? 512),
      '-smp', String(options.cpus ?? 1),
      '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', options.image.kernel,
      '-initrd', initrd,
      '-append', `console=ttyS0 panic=-1 loglevel=4 ${options.append ?? ''}`.trim(),
      '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
      ...(options.shares ?? []).flatMap((sh) => ['-virtfs', `local,path=${sh.path},mount_tag=${sh.tag},security_model=none,multidevs=remap${sh.writable === true ? '' : ',readonly=on'}`]),
      ...(options.drives ?? []).flatMap((d) => ['-drive', `file=${d.file},format=${d.format ?? 'raw'},if=virtio,cache=none${d.readOnly === true ? ',readonly=on' : ''}`]),
      ...(options.extraArgs ?? []),
    ];
    const t0 = Date.now();
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    const lines: string[] = [];
    let partial = '';
    let bootMs: number | undefined;
    let result: { ok: boolean; reason?: string } | undefined;
    let stderr = '';
    const onData = (chunk: Buffer): void => {
      partial += chunk.toString('utf8');
      const parts = partial.split(/\r?\n/);
      partial = parts.pop()!;
      for (const raw of parts) {
        const line = raw.replace(/\r/g, '');
        lines.push(line);
        options.onLine?.(line);
        if (bootMs === undefined && line.startsWith('@@BOOTED')) bootMs = Date.now() - t0;
        const m = /^@@RESULT (ok|fail)\s*(.*)$/.exec(line);
        if (m && result === undefined) {
          result = m[1] === 'ok' ? { ok: true } : { ok: false, reason: m[2] || 'fail' };
          // init powers off next; don't wait forever for it
          setTimeout(() => killByPid(child), 15_000).unref();
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString('utf8'); });
    let timedOut = false;
    let aborted = false;
    const timer = setTimeout(() => { timedOut = true; killByPid(child); }, options.timeoutMs);
    const onAbort = (): void => { aborted = true; killByPid(child); };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const exitCode = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => resolve(code));
    }).finally(() => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      killByPid(child);
    });
    if (partial !== '') lines.push(partial);
    const log = lines.join('\n') + (stderr ? `\n[qemu stderr]\n${stderr}` : '');
    const base = { log, lines, accel, durationMs: Date.now() - t0, timedOut, exitCode, ...(bootMs !== undefined ? { bootMs } : {}) };
    if (result !== undefined) return { ...base, ...result };
    const reason = aborted ? 'aborted' : timedOut ? `timeout after ${options.timeoutMs} ms` : `qemu exited (${exitCode}) without a result${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
    return { ...base, ok: false, reason };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

const accelChoice = new Map<string, Promise<Accel>>();

/**
 * TCG unless KVM is usable: STORPOOL_VM_ACCEL=tcg|kvm decides; otherwise, when /dev/kvm is
 * accessible, one short probe boot under KVM (remembered per host boot in the cache dir).
 */
export function selectAccel(image: GuestImage, cacheDir = defaultCacheDir()): Promise<Accel> {
  const forced = process.env.STORPOOL_VM_ACCEL;
  if (forced === 'tcg' || forced === 'kvm') return Promise.resolve(forced);
  let choice = accelChoice.get(image.dir);
  if (choice === undefined) {
    choice = probeKvm(image, cacheDir);
    accelChoice.set(image.dir, choice);
  }
  return choice;
}

async function probeKvm(image: GuestImage, cacheDir: string): Promise<Accel> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'tcg';
  }
  const bootId = existsSync('/proc/sys/kernel/random/boot_id') ? (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim() : 'unknown';
  const memo = join(cacheDir, `kvm-probe-${bootId}-${image.kernelVersion}.json`);
  if (existsSync(memo)) return (JSON.parse(await readFile(memo, 'utf8')) as { accel: Accel }).accel;
  const probe = await runVm({ image, accel: 'kvm', timeoutMs: 20_000, memoryMb: 256 }).catch(() => undefined);
  const accel: Accel = probe?.ok === true ? 'kvm' : 'tcg';
  await mkdir(cacheDir, { recursive: true });
  await writeFile(memo, JSON.stringify({ accel, reason: probe?.reason ?? null, log: probe?.log.slice(-2000) ?? null }, null, 2));
  return accel;
}
