/**
 * libiscsi's conformance suite (`iscsi-test-cu`, Debian libiscsi-bin) run test by test, each in its
 * own process (a failing test can leave a session or a reservation behind that poisons the rest of
 * a single-process run). A test counts as skipped when it only reports [SKIPPED], as failed when
 * CUnit counts a failure, it crashes or it times out.
 */
import { spawn } from 'node:child_process';
import { DEBIAN_PATH } from './helpers.js';

export interface ConformanceResult {
  passed: string[];
  skipped: string[];
  failed: string[];
  ms: number;
  /** Milliseconds per test. */
  times: Map<string, number>;
}

export async function listTests(filter: RegExp = /./): Promise<string[]> {
  const out = await run(['-l'], 30_000);
  return out.stdout.split('\n').map((l) => l.trim()).filter((l) => /^ALL\.[^.]+\.[^.]+$/.test(l) && filter.test(l)).map((l) => l.slice(4));
}

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn('iscsi-test-cu', args, { env: { ...process.env, PATH: DEBIAN_PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let timedOut = false;
    const add = (d: Buffer): void => { if (stdout.length < 1_000_000) stdout += d.toString(); };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, timedOut });
    });
  });
}

export type Verdict = 'passed' | 'skipped' | 'failed';

export function classify(stdout: string, code: number | null, timedOut: boolean): Verdict {
  if (timedOut || code === null) return 'failed';
  const m = /tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(stdout);
  if (m === null) return 'failed';
  const [ran, , failed] = [Number(m[2]), Number(m[3]), Number(m[4])];
  if (failed > 0) return 'failed';
  if (ran === 0 || /\[SKIPPED\]|Skipping test/i.test(stdout)) return 'skipped';
  return 'passed';
}

/**
 * Runs `tests` one after the other against `url` (and `url2`, the second path for MultipathIO).
 * `onTest` sees each verdict (for logging).
 */
export async function runConformance(o: {
  tests: string[];
  url: string;
  url2?: string;
  initiator?: string;
  initiator2?: string;
  timeoutMs?: number;
  deadline?: number;
  onTest?: (name: string, v: Verdict, out: string) => void;
}): Promise<ConformanceResult> {
  const started = Date.now();
  const res: ConformanceResult = { passed: [], skipped: [], failed: [], ms: 0, times: new Map() };
  for (const t of o.tests) {
    if (o.deadline !== undefined && Date.now() > o.deadline) {
      res.failed.push(`${t} (not run: deadline)`);
      continue;
    }
    const args = ['-d', '-n', '-t', `ALL.${t}`];
    if (o.initiator !== undefined) args.push('-i', o.initiator);
    if (o.initiator2 !== undefined) args.push('-I', o.initiator2);
    args.push(o.url);
    if (o.url2 !== undefined) args.push(o.url2);
    const t0 = Date.now();
    const r = await run(args, o.timeoutMs ?? 30_000);
    res.times.set(t, Date.now() - t0);
    const v = classify(r.stdout, r.code, r.timedOut);
    res[v].push(t);
    o.onTest?.(t, v, r.stdout);
  }
  res.ms = Date.now() - started;
  return res;
}
