/** Shared by the iSCSI tests: running real initiator tools and the storpool-iscsi binary. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:net';

export const ISCSI_BIN = fileURLToPath(new URL('../bin/storpool-iscsi.js', import.meta.url));
export const DEBIAN_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;

export interface Result { code: number; stdout: string; stderr: string }

export function sh(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, PATH: DEBIAN_PATH, ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function ok(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<string> {
  const r = await sh(cmd, args, env, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export async function waitPort(port: number, child: ChildProcess | undefined, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child !== undefined && (child.exitCode !== null || child.signalCode !== null)) throw new Error(`process exited before listening on ${port}`);
    const up = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(100);
  }
}

export interface Spawned { child: ChildProcess; exited: Promise<void> }

export function spawnLogged(cmd: string, args: string[], logPath: string, env: Record<string, string> = {}): Spawned {
  const log = createWriteStream(logPath, { flags: 'a' });
  const child = spawn(cmd, args, { env: { ...process.env, PATH: DEBIAN_PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, exited };
}

/** SIGTERM, then SIGKILL after `graceMs`; by PID only. */
export async function stop(p: Spawned | undefined, graceMs = 10_000): Promise<void> {
  if (p === undefined) return;
  const c = p.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  c.kill('SIGTERM');
  const done = await Promise.race([p.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) c.kill('SIGKILL');
  await p.exited;
}
