/**
 * The one-command local cluster as a user runs it: spawn the launcher with a temp STORPOOL_DATA
 * and a free port, use the API, SIGTERM it, check that no child process is left, start it again
 * and find the data (volumes, token, disks) reused.
 */
import { freePort } from '@storpool/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readConf } from '../src/index.js';

const BIN = fileURLToPath(new URL('../bin/storpool-local.js', import.meta.url));
const started: ChildProcess[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const child of started) {
    for (const pid of childrenOf(child.pid!)) tryKill(pid, 'SIGKILL');
    child.kill('SIGKILL');
  }
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** PIDs whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts the launcher; resolves with its API base once it printed STORPOOL_API=. */
async function launch(dataDir: string, port: number, token?: string): Promise<{ child: ChildProcess; api: string; output: () => string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, STORPOOL_DATA: dataDir, SP_API_HTTP_PORT: String(port), STORPOOL_DISK_SIZE: String(256 * 1024 * 1024), STORPOOL_LOG_LEVEL: 'warn' };
  delete env['SP_AUTH_TOKEN'];
  if (token !== undefined) env['SP_AUTH_TOKEN'] = token;
  const child = spawn(process.execPath, [BIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let text = '';
  child.stdout!.on('data', (d: Buffer) => { text += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { text += d.toString(); });
  const api = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`launcher not up after 60 s:\n${text}`)), 60_000);
    const check = (): void => {
      const m = /STORPOOL_API=(\S+)/.exec(text);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`launcher exited (${code}):\n${text}`));
    });
  });
  return { child, api, output: () => text };
}

async function call(api: string, token: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(`${api}${path}`, { method: body === undefined ? 'GET' : 'POST', headers: { Authorization: `Storpool v1:${token}` }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  return response.json();
}

const serverCmd = new Map<number, string>();

async function stop(child: ChildProcess): Promise<number[]> {
  const children = childrenOf(child.pid!);
  for (const pid of children) {
    try {
      serverCmd.set(pid, readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    } catch {
      // exited meanwhile
    }
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  return children;
}

/**
 * The storage servers are waited for by the launcher: gone at its exit. tsx's esbuild helper exits
 * by itself when its stdin pipe closes with the launcher: allow it a moment.
 */
async function expectGone(children: number[]): Promise<void> {
  for (const pid of children) if (serverCmd.get(pid)?.includes('storpool-server.js')) expect(alive(pid), `server ${pid} still running`).toBe(false);
  const deadline = Date.now() + 5_000;
  while (children.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of children) expect(alive(pid), `child ${pid} (${serverCmd.get(pid) ?? '?'}) still running`).toBe(false);
}

describe('storpool-local (npm start)', () => {
  it('starts 3 servers and the API, writes storpool.conf, stops every child on SIGTERM, and reuses its data', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'storpool-local-test-'));
    dirs.push(dataDir);
    const port = await freePort();
    const first = await launch(dataDir, port, 'test-token-1');
    expect(first.api).toBe(`http://127.0.0.1:${port}/ctrl/1.0/`);
    expect(first.output()).toContain("curl -s -H 'Authorization: Storpool v1:test-token-1'");
    const conf = await readConf(join(dataDir, 'storpool.conf'));
    expect(conf).toMatchObject({ SP_API_HTTP_HOST: '127.0.0.1', SP_API_HTTP_PORT: String(port), SP_AUTH_TOKEN: 'test-token-1', SP_OURID: '1', SP_CLUSTER_ID: expect.stringMatching(/^[a-z0-9]+\.[a-z0-9]+$/) });
    const token = conf['SP_AUTH_TOKEN']!;
    const disks = await call(first.api, token, 'DisksList');
    expect(Object.values(disks.data).map((d) => (d as { generationLeft: number }).generationLeft)).toEqual([-1, -1, -1]);
    expect((await call(first.api, token, 'VolumeTemplatesList')).data.map((t: { name: string; replication: number }) => [t.name, t.replication])).toEqual([['default', 3]]);
    expect(Object.keys((await call(first.api, token, 'PlacementGroupsList')).data)).toEqual(['default']);
    expect((await call(first.api, token, 'VolumeCreate', { name: 'keep', size: 64 * 1024 * 1024, template: 'default' })).data.ok).toBe(true);
    expect((await call(first.api.replace('1.0/', '1.0/'), 'wrong', 'VolumesList')).error.name).toBe('authError');
    const children = await stop(first.child);
    // The 3 storage servers (plus tsx's esbuild helper); none may survive the launcher.
    expect(children.filter((pid) => serverCmd.get(pid)?.includes('storpool-server.js'))).toHaveLength(3);
    await expectGone(children);

    // Second run: same data directory, token kept from storpool.conf, volume still there.
    const second = await launch(dataDir, port);
    const again = await call(second.api, token, 'Volume/keep');
    expect(again.data[0]).toMatchObject({ name: 'keep', size: 64 * 1024 * 1024 });
    expect(second.output()).not.toContain('formatting disk');
    expect(Object.values((await call(second.api, token, 'DisksList')).data).map((d) => (d as { generationLeft: number }).generationLeft)).toEqual([-1, -1, -1]);
    await expectGone(await stop(second.child));
  }, 120_000);
});
