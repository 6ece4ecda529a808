/**
 * NetnsLab (packages/testkit/src/netns.ts) on its own: hosts reach each other and the root
 * namespace, spawn/kill track processes, partitions cut what they say, destroy() leaves nothing in
 * `ip netns list`, `ip link` or the root `iptables -S`, and the sweeper removes what a SIGKILLed
 * run left behind (namespaces, root veth, processes inside).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NetnsLab, NETNS_STATE_DIR_DEFAULT } from '@storpool/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { DEBIAN_PYTHON } from '../src/index.js';

const CRASH_CHILD = fileURLToPath(new URL('./netns-crash-child.ts', import.meta.url));
const CRASH_PREFIX = 'spfcrash';
const PORT = 7100;
const labs: NetnsLab[] = [];

async function sh(cmd: string, args: string[]): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => execFile(cmd, args, { encoding: 'utf8' }, (err, out) => (err === null ? resolve(out) : reject(err))));
}

/** Running (a zombie waiting for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

afterAll(async () => {
  for (const lab of labs) await lab.destroy();
  await NetnsLab.sweep({ prefix: CRASH_PREFIX });
}, 60_000);

describe('NetnsLab', () => {
  it('hosts on a bridge, processes by pid, partitions, and destroy() leaves nothing behind', async () => {
    const iptablesBefore = await sh('iptables', ['-S']);
    const lab = await NetnsLab.create({ hosts: 3 });
    labs.push(lab);
    expect(lab.hosts.map((h) => h.ip)).toEqual([11, 12, 13].map((o) => `${lab.subnet}.${o}`));
    const listener = `import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', ${PORT}))\ns.listen(16)\nwhile True:\n    s.accept()[0].close()\n`;
    const procs = lab.hosts.map((h) => lab.spawn(h, DEBIAN_PYTHON, ['-c', listener]));
    const up = async (from: 'root' | number, to: number): Promise<boolean> => {
      for (let i = 0; i < 50; i++) {
        if (await lab.canConnect(from, lab.host(to).ip, PORT)) return true;
        if (from === 'root') await new Promise((r) => setTimeout(r, 100));
        else return false;
      }
      return false;
    };
    for (const h of [1, 2, 3]) expect(await up('root', h)).toBe(true);
    expect(await up(2, 1)).toBe(true);
    // Hosts reach the root namespace at rootIp.
    const rootListener = (await import('node:net')).createServer((s) => s.destroy());
    await new Promise<void>((r) => rootListener.listen(0, lab.rootIp, () => r()));
    const rootPort = (rootListener.address() as { port: number }).port;
    try {
      expect(await lab.canConnect(3, lab.rootIp, rootPort)).toBe(true);
      await lab.partition(3, { from: ['root'] });
      expect(await lab.canConnect(3, lab.rootIp, rootPort)).toBe(false);
      expect(await lab.canConnect(3, lab.host(1).ip, PORT)).toBe(true);
      await lab.heal(3);
      expect(await lab.canConnect(3, lab.rootIp, rootPort)).toBe(true);
    } finally {
      rootListener.close();
    }
    await lab.partition(1);
    expect(await lab.canConnect('root', lab.host(1).ip, PORT)).toBe(false);
    expect(await lab.canConnect(2, lab.host(1).ip, PORT)).toBe(false);
    expect(await lab.canConnect(2, lab.host(3).ip, PORT)).toBe(true);
    await lab.heal(1);
    expect(await lab.canConnect('root', lab.host(1).ip, PORT)).toBe(true);

    await lab.kill(procs[0]!, 'SIGKILL');
    expect((await procs[0]!.exited).signal).toBe('SIGKILL');
    expect(lab.processes(1)).toEqual([]);
    expect(lab.processes().map((p) => p.pid).sort()).toEqual([procs[1]!.pid, procs[2]!.pid].sort());
    await lab.kill(lab.host(2));
    expect(lab.processes(2)).toEqual([]);

    await lab.destroy();
    expect(alive(procs[2]!.pid)).toBe(false);
    expect(await sh('ip', ['netns', 'list'])).not.toContain(`-${lab.id}-`);
    expect(await sh('ip', ['link'])).not.toContain(lab.rootLink);
    expect(await sh('iptables', ['-S'])).toBe(iptablesBefore);
    expect(existsSync(`${NETNS_STATE_DIR_DEFAULT}/${lab.prefix}-${lab.id}.json`)).toBe(false);
    expect(existsSync(`${NETNS_STATE_DIR_DEFAULT}/net-${lab.subnet}`)).toBe(false);
  }, 120_000);

  it('sweep() removes the namespaces, root veth and processes of a run that was SIGKILLed', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CRASH_CHILD, CRASH_PREFIX], { stdio: ['ignore', 'pipe', 'inherit'] });
    const info = await new Promise<{ id: string; rootLink: string; namespaces: string[]; sleeper: number; rootSleeper: number; dir: string }>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!));
      });
      child.once('exit', (code) => reject(new Error(`crash child exited early (${code})`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(await sh('ip', ['netns', 'list'])).toContain(info.namespaces[1]);
    expect(alive(info.sleeper)).toBe(true);
    expect(alive(info.rootSleeper)).toBe(true);
    expect(existsSync(info.dir)).toBe(true);

    const removed = await NetnsLab.sweep({ prefix: CRASH_PREFIX });
    expect(removed.sort()).toEqual([...info.namespaces, info.rootLink].sort());
    const netns = await sh('ip', ['netns', 'list']);
    for (const ns of info.namespaces) expect(netns).not.toContain(ns);
    expect(await sh('ip', ['link'])).not.toContain(info.rootLink);
    for (let i = 0; i < 50 && alive(info.sleeper); i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive(info.sleeper)).toBe(false);
    // The orphaned root-namespace sleeper is reparented, not our child: poll until it is gone.
    for (let i = 0; i < 50 && alive(info.rootSleeper); i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive(info.rootSleeper)).toBe(false);
    expect(existsSync(info.dir)).toBe(false);

    // A lab whose owner (this process) lives is left alone.
    const live = await NetnsLab.create({ hosts: 1, prefix: CRASH_PREFIX });
    labs.push(live);
    expect(await NetnsLab.sweep({ prefix: CRASH_PREFIX })).toEqual([]);
    expect(await sh('ip', ['netns', 'list'])).toContain(live.hosts[0]!.netns);
    await live.destroy();
  }, 120_000);
});
