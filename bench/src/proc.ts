/** What the benchmarks read of processes from /proc: CPU used, children, the load average. */
import { readFileSync } from 'node:fs';

/** CPU ms (user + system) a process has used so far (0 once it is gone). */
export function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** Child process ids of a process (none once it is gone). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The 1-minute load average. */
export const load1 = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/**
 * Samples the CPU of a process and of its children (fio forks its jobs) every 100 ms while it runs;
 * stop() returns their CPU ms in total (each process as last seen: its CPU at exit is not readable).
 */
export function sampleTreeCpu(rootPid: number): { stop: () => number } {
  const seen = new Map<number, number>();
  const sample = (): void => {
    for (const pid of [rootPid, ...childPids(rootPid)]) {
      const ms = cpuMs(pid);
      if (ms > 0) seen.set(pid, ms);
    }
  };
  const timer = setInterval(sample, 100);
  return {
    stop: () => {
      clearInterval(timer);
      return [...seen.values()].reduce((a, b) => a + b, 0);
    },
  };
}

/** CPU ms this process and each of `pids` use while `body` runs (from process.cpuUsage and /proc). */
export async function cpuDuring<T>(pids: readonly number[], body: () => Promise<T>): Promise<{ value: T; selfMs: number; pidsMs: number[] }> {
  const before = pids.map(cpuMs);
  const self = process.cpuUsage();
  const value = await body();
  const used = process.cpuUsage(self);
  return { value, selfMs: (used.user + used.system) / 1000, pidsMs: pids.map((pid, i) => cpuMs(pid) - before[i]!) };
}
