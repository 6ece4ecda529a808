/**
 * NetnsLab: storage "hosts" as Linux network namespaces on this machine, for fault tests (needs
 * root and iproute2 + iptables).
 *
 * Topology of one lab (id = 6 random hex digits, so parallel test files never collide):
 *
 *     root namespace                 <prefix>-<id>-sw              <prefix>-<id>-hN
 *     (tests, etcd, mgmt, block)     (the switch)                  (host N, N = 1, 2, ...)
 *     <prefix><id>r 10.A.B.1/24 ==== uplink --+-- br0 --+-- hN ====== eth0 10.A.B.(10+N)/24
 *
 * Only one veth end lives in the root namespace; the bridge and every other link live in the
 * lab's own namespaces and vanish with them. The /24 is chosen per lab and reserved by a file in
 * the state directory. Partitions are iptables DROP rules in a chain of the host's own namespace,
 * so the root namespace's rule set is never touched.
 *
 * Every lab writes `<stateDir>/<prefix>-<id>.json` with its owner's pid (and start time, against
 * pid reuse); `NetnsLab.sweep()` (also run by create()) removes the namespaces, links, processes
 * and files of labs whose owner is gone. destroy() is called from afterAll and, synchronously,
 * from a process 'exit' handler.
 */
import { spawn, execFile, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

export const NETNS_STATE_DIR_DEFAULT = '/run/storpool-netns';
const PREFIX_DEFAULT = 'spf';
/** Interface names are at most 15 bytes: <prefix><6 hex>r. */
const PREFIX_MAX = 8;
const HOST_OCTET_BASE = 10;
const HOSTS_MAX = 200;
const CHAIN = 'SPF-PARTITION';
const CMD_TIMEOUT_MS = 30_000;
const KILL_WAIT_MS = 10_000;

export interface NetnsLabOptions {
  /** Number of hosts to create now (more with addHost()). */
  hosts: number;
  /** Names start with this (letters and digits, at most 8): namespaces `<prefix>-<id>-*`. */
  prefix?: string;
  stateDir?: string;
}

export interface LabHost {
  /** 1-based. */
  readonly index: number;
  /** Namespace name. */
  readonly netns: string;
  readonly ip: string;
}

export interface LabProcess {
  readonly host: LabHost;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export type HostRef = number | LabHost;
/** Who a partition cuts a host off from: other hosts, 'root' (tests, mgmt, etcd, clients), or everyone. */
export type PartitionPeers = 'all' | (HostRef | 'root')[];

interface LabRecord {
  pid: number;
  pidStart: string;
  id: string;
  prefix: string;
  subnet: string;
  namespaces: string[];
  rootLink: string;
  /** Root-namespace processes (etcd, mgmt, ...) and temp dirs of the run, for the sweeper. */
  adopted?: { pid: number; start: string }[];
  dirs?: string[];
}

/** SIGKILLs recorded processes that are still the same processes (pid and start time). */
function killAdopted(list: { pid: number; start: string }[] | undefined): void {
  for (const a of list ?? []) {
    if (processStart(a.pid) !== a.start) continue;
    try {
      process.kill(a.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export interface CmdResult { code: number; stdout: string; stderr: string }

/** Runs a command; never rejects (the code says how it went). */
export function run(cmd: string, args: string[], timeoutMs = CMD_TIMEOUT_MS): Promise<CmdResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}${r.stdout.trim()}`);
  return r.stdout;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), or undefined when the pid is gone. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function ownerAlive(rec: Pick<LabRecord, 'pid' | 'pidStart'>): boolean {
  return processStart(rec.pid) === rec.pidStart;
}

function trySync(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: CMD_TIMEOUT_MS });
  } catch {
    return '';
  }
}

/** SIGKILLs every process in a namespace, then deletes it (synchronous: used from 'exit'). */
function removeNamespaceSync(netns: string): void {
  for (const pid of trySync('ip', ['netns', 'pids', netns]).split(/\s+/).filter((p) => /^\d+$/.test(p))) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  trySync('ip', ['netns', 'del', netns]);
}

const liveLabs = new Set<NetnsLab>();
process.once('exit', () => {
  for (const lab of liveLabs) lab.destroySync();
});

export class NetnsLab {
  readonly id: string;
  readonly prefix: string;
  /** e.g. 10.123.45 (the lab's /24 without the last octet). */
  readonly subnet: string;
  /** The root namespace's address in the lab: servers reach tests, etcd and mgmt here. */
  readonly rootIp: string;
  readonly rootLink: string;
  readonly switchNetns: string;
  readonly hosts: LabHost[] = [];
  readonly #stateDir: string;
  readonly #procs = new Set<LabProcess>();
  #adopted: { pid: number; start: string }[] = [];
  #dirs: string[] = [];
  #destroyed = false;

  private constructor(id: string, prefix: string, subnet: string, stateDir: string) {
    this.id = id;
    this.prefix = prefix;
    this.subnet = subnet;
    this.rootIp = `${subnet}.1`;
    this.rootLink = `${prefix}${id}r`;
    this.switchNetns = `${prefix}-${id}-sw`;
    this.#stateDir = stateDir;
  }

  static async create(options: NetnsLabOptions): Promise<NetnsLab> {
    const prefix = options.prefix ?? PREFIX_DEFAULT;
    if (!/^[a-z][a-z0-9]*$/.test(prefix) || prefix.length > PREFIX_MAX) throw new Error(`netns prefix ${JSON.stringify(prefix)}: 1-${PREFIX_MAX} lowercase letters and digits`);
    if (process.getuid?.() !== 0) throw new Error('NetnsLab needs root (ip netns, iptables)');
    const stateDir = options.stateDir ?? NETNS_STATE_DIR_DEFAULT;
    mkdirSync(stateDir, { recursive: true });
    await NetnsLab.sweep({ prefix, stateDir });
    const subnet = await reserveSubnet(stateDir);
    const lab = new NetnsLab(randomBytes(3).toString('hex'), prefix, subnet, stateDir);
    liveLabs.add(lab);
    try {
      lab.#writeRecord();
      await lab.#createSwitch();
      for (let i = 0; i < options.hosts; i++) await lab.addHost();
      return lab;
    } catch (err) {
      await lab.destroy();
      throw err;
    }
  }

  get #recordPath(): string {
    return `${this.#stateDir}/${this.prefix}-${this.id}.json`;
  }

  #writeRecord(): void {
    const rec: LabRecord = {
      pid: process.pid, pidStart: processStart(process.pid) ?? '', id: this.id, prefix: this.prefix, subnet: this.subnet,
      namespaces: [this.switchNetns, ...this.hosts.map((h) => h.netns)], rootLink: this.rootLink, adopted: this.#adopted, dirs: this.#dirs,
    };
    writeFileSync(this.#recordPath, JSON.stringify(rec));
  }

  async #createSwitch(): Promise<void> {
    const sw = this.switchNetns;
    // Recorded before it exists: a crash in between still leaves a record the sweeper can follow.
    await must('ip', ['netns', 'add', sw]);
    await must('ip', ['-n', sw, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', sw, 'link', 'set', 'br0', 'up']);
    await must('ip', ['link', 'add', this.rootLink, 'type', 'veth', 'peer', 'name', 'uplink', 'netns', sw]);
    await must('ip', ['-n', sw, 'link', 'set', 'dev', 'uplink', 'master', 'br0', 'up']);
    await must('ip', ['addr', 'add', `${this.rootIp}/24`, 'dev', this.rootLink]);
    await must('ip', ['link', 'set', this.rootLink, 'up']);
  }

  /** A new host on the bridge (its namespace, veth, address, an empty partition chain). */
  async addHost(): Promise<LabHost> {
    if (this.#destroyed) throw new Error('lab destroyed');
    const index = this.hosts.length + 1;
    if (index > HOSTS_MAX) throw new Error(`at most ${HOSTS_MAX} hosts`);
    const host: LabHost = { index, netns: `${this.prefix}-${this.id}-h${index}`, ip: `${this.subnet}.${HOST_OCTET_BASE + index}` };
    this.hosts.push(host);
    this.#writeRecord();
    const sw = this.switchNetns;
    const ns = host.netns;
    await must('ip', ['netns', 'add', ns]);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', sw, 'link', 'add', `h${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await must('ip', ['-n', sw, 'link', 'set', 'dev', `h${index}`, 'master', 'br0', 'up']);
    await must('ip', ['-n', ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    // Partition rules go into their own chain, jumped to first, so heal() is one flush.
    await this.#iptables(host, ['-N', CHAIN]);
    await this.#iptables(host, ['-I', 'INPUT', '1', '-j', CHAIN]);
    await this.#iptables(host, ['-I', 'OUTPUT', '1', '-j', CHAIN]);
    return host;
  }

  /**
   * Records a process this run started outside the lab (in the root namespace: etcd, mgmt, the
   * block service) so that destroy() and — after a crash — the sweeper SIGKILL it too.
   */
  adopt(pid: number | undefined): void {
    const start = pid === undefined ? undefined : processStart(pid);
    if (pid === undefined || start === undefined || this.#destroyed) return;
    this.#adopted.push({ pid, start });
    this.#writeRecord();
  }

  /** Records a temp directory of this run for the sweeper to remove after a crash (destroy() leaves it). */
  adoptDir(path: string): void {
    if (!path.startsWith(`${tmpdir()}/`) || this.#destroyed) throw new Error(`adoptDir: only directories under ${tmpdir()}/ (${path})`);
    this.#dirs.push(path);
    this.#writeRecord();
  }

  host(ref: HostRef): LabHost {
    const index = typeof ref === 'number' ? ref : ref.index;
    const host = this.hosts[index - 1];
    if (host === undefined || (typeof ref !== 'number' && host !== ref)) throw new Error(`no host ${index} in lab ${this.id}`);
    return host;
  }

  async #iptables(host: LabHost, args: string[]): Promise<void> {
    await must('ip', ['netns', 'exec', host.netns, 'iptables', '-w', '5', ...args]);
  }

  /**
   * Starts `cmd args` inside a host's namespace (same file system, same user; only the network
   * differs). The pid is the command's own (`ip netns exec` execs it) and is tracked for kill()
   * and destroy(). Pass `stdio` to get its output (default: ignored).
   */
  spawn(ref: HostRef, cmd: string, args: string[], options: SpawnOptions = {}): LabProcess {
    if (this.#destroyed) throw new Error('lab destroyed');
    const host = this.host(ref);
    // Output is dropped unless the caller asks for it (an unread pipe would block the child).
    const child = spawn('ip', ['netns', 'exec', host.netns, cmd, ...args], { stdio: 'ignore', ...options });
    if (child.pid === undefined) throw new Error(`cannot spawn ${cmd} in ${host.netns}`);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
      else child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const proc: LabProcess = { host, pid: child.pid, child, exited };
    this.#procs.add(proc);
    void exited.then(() => this.#procs.delete(proc));
    return proc;
  }

  /** Runs a short command inside a host's namespace and collects its output. */
  exec(ref: HostRef, cmd: string, args: string[], timeoutMs = CMD_TIMEOUT_MS): Promise<CmdResult> {
    return run('ip', ['netns', 'exec', this.host(ref).netns, cmd, ...args], timeoutMs);
  }

  /** Processes started with spawn() that are still running (of one host, or all). */
  processes(ref?: HostRef): LabProcess[] {
    const host = ref === undefined ? undefined : this.host(ref);
    return [...this.#procs].filter((p) => host === undefined || p.host === host);
  }

  /**
   * Signals a process (LabProcess or pid) or every process of a host (LabHost), and — for SIGKILL,
   * or when `wait` is set — waits until they are gone.
   */
  async kill(target: LabHost | LabProcess | number, signal: NodeJS.Signals = 'SIGKILL', wait = signal === 'SIGKILL'): Promise<void> {
    let procs: LabProcess[];
    if (typeof target === 'number') {
      procs = [...this.#procs].filter((p) => p.pid === target);
      if (procs.length === 0) throw new Error(`pid ${target} was not started by this lab`);
    } else if ('pid' in target) procs = [target];
    else procs = this.processes(target);
    for (const p of procs) p.child.kill(signal);
    if (wait) {
      const all = Promise.all(procs.map((p) => p.exited));
      const done = await Promise.race([all.then(() => true), sleep(KILL_WAIT_MS).then(() => false)]);
      if (!done) throw new Error(`processes ${procs.map((p) => p.pid).join(',')} still running ${KILL_WAIT_MS} ms after ${signal}`);
    }
  }

  /**
   * Cuts a host off (iptables DROP in its own namespace, both directions, established connections
   * too): from every peer and the root namespace ('all', the default), or from the listed hosts
   * and/or 'root'. Rules add up until heal().
   */
  async partition(ref: HostRef, options: { from?: PartitionPeers } = {}): Promise<void> {
    const host = this.host(ref);
    const from = options.from ?? 'all';
    if (from === 'all') {
      await this.#iptables(host, ['-A', CHAIN, '-i', 'eth0', '-j', 'DROP']);
      await this.#iptables(host, ['-A', CHAIN, '-o', 'eth0', '-j', 'DROP']);
      return;
    }
    for (const peer of from) {
      const ip = peer === 'root' ? this.rootIp : this.host(peer).ip;
      if (ip === host.ip) throw new Error(`cannot partition host ${host.index} from itself`);
      await this.#iptables(host, ['-A', CHAIN, '-s', ip, '-j', 'DROP']);
      await this.#iptables(host, ['-A', CHAIN, '-d', ip, '-j', 'DROP']);
    }
  }

  /** Removes a host's partition rules (every host's without an argument). */
  async heal(ref?: HostRef): Promise<void> {
    for (const host of ref === undefined ? this.hosts : [this.host(ref)]) await this.#iptables(host, ['-F', CHAIN]);
  }

  /** The DROP rules in effect on a host (for messages and checks). */
  async partitionRules(ref: HostRef): Promise<string[]> {
    const out = await must('ip', ['netns', 'exec', this.host(ref).netns, 'iptables', '-w', '5', '-S', CHAIN]);
    return out.split('\n').filter((l) => l.startsWith('-A '));
  }

  /**
   * Whether a TCP connection to ip:port opens within timeoutMs, from a host or from the root
   * namespace. A DROP shows as a timeout, a closed port as a refusal: both are false.
   */
  async canConnect(from: HostRef | 'root', ip: string, port: number, timeoutMs = 2_000): Promise<boolean> {
    if (!/^[\d.]+$/.test(ip) || !Number.isInteger(port)) throw new Error(`bad address ${ip}:${port}`);
    const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
    const probe = ['timeout', secs, 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${port}`];
    const r = from === 'root' ? await run(probe[0]!, probe.slice(1), timeoutMs + 5_000) : await this.exec(from, probe[0]!, probe.slice(1), timeoutMs + 5_000);
    return r.code === 0;
  }

  /** Kills every process, deletes the namespaces (with their links and rules) and the root veth. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const p of this.#procs) p.child.kill('SIGKILL');
    await Promise.race([Promise.all([...this.#procs].map((p) => p.exited)), sleep(KILL_WAIT_MS)]);
    this.destroySync();
  }

  /** destroy() without waiting for exit events (for the process 'exit' handler). */
  destroySync(): void {
    this.#destroyed = true;
    for (const p of this.#procs) p.child.kill('SIGKILL');
    killAdopted(this.#adopted);
    for (const ns of [...this.hosts.map((h) => h.netns), this.switchNetns]) removeNamespaceSync(ns);
    trySync('ip', ['link', 'del', this.rootLink]);
    rmSync(this.#recordPath, { force: true });
    rmSync(`${this.#stateDir}/net-${this.subnet}`, { force: true });
    liveLabs.delete(this);
  }

  /**
   * Removes what crashed runs left behind: labs whose owner pid is gone (by their record), and
   * namespaces / root links named with the prefix that no live lab's record claims.
   * Returns the names removed.
   */
  static async sweep(options: { prefix?: string; stateDir?: string } = {}): Promise<string[]> {
    const prefix = options.prefix ?? PREFIX_DEFAULT;
    const stateDir = options.stateDir ?? NETNS_STATE_DIR_DEFAULT;
    const removed: string[] = [];
    const liveIds = new Set<string>();
    let files: string[] = [];
    try {
      files = readdirSync(stateDir);
    } catch {
      // no state dir: nothing recorded
    }
    for (const f of files) {
      const m = /^(.+)-([0-9a-f]{6})\.json$/.exec(f);
      if (m === null || m[1] !== prefix) continue;
      let rec: LabRecord | undefined;
      try {
        rec = JSON.parse(readFileSync(`${stateDir}/${f}`, 'utf8')) as LabRecord;
      } catch {
        rec = undefined;
      }
      if (rec !== undefined && ownerAlive(rec)) {
        liveIds.add(m[2]!);
        continue;
      }
      if (rec !== undefined) {
        killAdopted(rec.adopted);
        for (const ns of rec.namespaces) removeNamespaceSync(ns);
        for (const dir of rec.dirs ?? []) {
          if (dir.startsWith(`${tmpdir()}/`)) rmSync(dir, { recursive: true, force: true });
        }
        trySync('ip', ['link', 'del', rec.rootLink]);
        rmSync(`${stateDir}/net-${rec.subnet}`, { force: true });
        removed.push(...rec.namespaces, rec.rootLink);
      }
      rmSync(`${stateDir}/${f}`, { force: true });
    }
    // Names without a live record (e.g. a record lost with a wiped /run). The record is read again:
    // a lab created since the listing above has written its record before naming anything.
    const claimed = (id: string): boolean => {
      if (liveIds.has(id)) return true;
      try {
        return ownerAlive(JSON.parse(readFileSync(`${stateDir}/${prefix}-${id}.json`, 'utf8')) as LabRecord);
      } catch {
        return false;
      }
    };
    const nsRe = new RegExp(`^${prefix}-([0-9a-f]{6})-(sw|h\\d+)$`);
    for (const line of (await run('ip', ['netns', 'list'])).stdout.split('\n')) {
      const name = line.split(' ')[0] ?? '';
      const m = nsRe.exec(name);
      if (m === null || claimed(m[1]!)) continue;
      removeNamespaceSync(name);
      removed.push(name);
    }
    const linkRe = new RegExp(`^${prefix}([0-9a-f]{6})r$`);
    for (const line of (await run('ip', ['-o', 'link', 'show'])).stdout.split('\n')) {
      const name = (line.split(': ')[1] ?? '').split('@')[0] ?? '';
      const m = linkRe.exec(name);
      if (m === null || claimed(m[1]!)) continue;
      trySync('ip', ['link', 'del', name]);
      removed.push(name);
    }
    // Subnet reservations whose lab is gone.
    const liveSubnets = new Set<string>();
    for (const f of files) {
      if (!f.endsWith('.json')) continue;
      try {
        const rec = JSON.parse(readFileSync(`${stateDir}/${f}`, 'utf8')) as LabRecord;
        if (ownerAlive(rec)) liveSubnets.add(rec.subnet);
      } catch {
        // removed above, or unreadable
      }
    }
    for (const f of files) {
      const m = /^net-(.+)$/.exec(f);
      if (m === null || liveSubnets.has(m[1]!)) continue;
      try {
        const owner = JSON.parse(readFileSync(`${stateDir}/${f}`, 'utf8')) as { pid: number; pidStart: string };
        if (ownerAlive(owner)) continue;
      } catch {
        // unreadable: stale
      }
      rmSync(`${stateDir}/${f}`, { force: true });
    }
    return removed;
  }
}

/** Picks a free 10.x.y.0/24: not routed here, and reserved by an O_EXCL file against other labs. */
async function reserveSubnet(stateDir: string): Promise<string> {
  const routes = (await run('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
  for (let attempt = 0; attempt < 100; attempt++) {
    const subnet = `10.${randomInt(64, 250)}.${randomInt(0, 256)}`;
    if (routes.includes(`${subnet}.`)) continue;
    try {
      const fd = openSync(`${stateDir}/net-${subnet}`, 'wx');
      writeFileSync(fd, JSON.stringify({ pid: process.pid, pidStart: processStart(process.pid) ?? '' }));
      closeSync(fd);
      return subnet;
    } catch {
      // taken by another lab: try another
    }
  }
  throw new Error('no free 10.x.y.0/24 for a netns lab');
}
