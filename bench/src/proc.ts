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
