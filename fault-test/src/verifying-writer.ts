/**
 * VerifyingWriter: writes seeded, self-describing 4 KiB blocks through an NBD export with a real
 * NBD client, remembers every acknowledged write, and verify() reads everything back against it.
 *
 * The client is libnbd (Debian's python3-libnbd, the library behind nbdinfo/nbdcopy/nbdsh) driven
 * by nbd-writer.py under /usr/bin/python3 (the first python3 on PATH may be a pyenv one without
 * Debian's modules). Chosen over fio's verify because fio cannot say which writes were
 * acknowledged when some fail, nor accept "old or new" for a write whose outcome is unknown; here
 * the rule is exact (see nbd-writer.py): a block holds its last acknowledged generation, or — only
 * if a later write to it failed — one of those failed generations; anything else is a loss or a
 * corruption. The seed is in every block and in every message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const WRITER_SCRIPT = fileURLToPath(new URL('./nbd-writer.py', import.meta.url));
/** Debian's python (python3-libnbd), not whatever python3 comes first on PATH. */
export const DEBIAN_PYTHON = '/usr/bin/python3';
export const BLOCK_BYTES = 4096;
const STOP_TIMEOUT_MS = 200_000;

export interface VerifyingWriterOptions {
  /** The NBD unix socket (the block service's `<runtimeDir>/nbd/<volume>.sock`). */
  socketPath: string;
  /** Where the acknowledged state is kept (JSON; survives between runs of the writer). */
  stateFile: string;
  /** Blocks [firstBlock, firstBlock + blocks) of 4 KiB are written. */
  blocks: number;
  firstBlock?: number;
  /** Default: FAULT_SEED from the environment, else random. */
  seed?: number;
  /** Operations in flight (default 16). */
  queueDepth?: number;
  /**
   * Percent of operations that are reads of a block not being written, each checked at once
   * against the acknowledged state (default 0: writes only).
   */
  readPercent?: number;
}

export interface WriterProgress {
  writes: number;
  acked: number;
  /** Failed writes. */
  errors: number;
  reads: number;
  readErrors: number;
  /** Reads that returned something else than the acknowledged state allows. */
  readMismatches: number;
  inflight: number;
  maxLatencyMs: number;
  nextGen: number;
}

export interface IoErrorRecord { block: number; gen: number; error: string; t: number }
export interface ReadErrorRecord { block: number; error: string; t: number }
export interface ReadMismatchRecord { block: number; found: number | null; acknowledged: number; unknownOutcome: number[]; problem: string; t: number }

export interface WriteSummary extends WriterProgress {
  seed: number;
  ioErrors: IoErrorRecord[];
  readErrorList: ReadErrorRecord[];
  readMismatchList: ReadMismatchRecord[];
  /** Blocks whose last write has an unknown outcome. */
  uncertainBlocks: number;
  flushError?: string;
}

export interface VerifyReport {
  seed: number;
  checked: number;
  badCount: number;
  bad: { block: number; offset: number; found: number | null; acknowledged: number; unknownOutcome: number[]; problem: string }[];
  counts: { zero: number; acked: number; unacked: number };
}

interface StateFile {
  seed: number;
  firstBlock: number;
  blocks: number;
  nextGen: number;
  acked?: Record<string, number>;
  uncertain?: Record<string, number[]>;
  ioErrors?: IoErrorRecord[];
  ioErrorCount?: number;
  readErrors?: ReadErrorRecord[];
  readErrorCount?: number;
  readMismatches?: ReadMismatchRecord[];
  readMismatchCount?: number;
  flushError?: string;
}

function seedFromEnv(): number | undefined {
  const text = process.env['FAULT_SEED'];
  if (text === undefined || text === '') return undefined;
  if (!/^\d+$/.test(text)) throw new Error(`FAULT_SEED=${text} is not a number`);
  return Number(text);
}

export class VerifyingWriter {
  readonly seed: number;
  readonly #o: VerifyingWriterOptions;
  #proc: ChildProcess | undefined;
  #exited: Promise<number | null> = Promise.resolve(0);
  #progress: WriterProgress = { writes: 0, acked: 0, errors: 0, reads: 0, readErrors: 0, readMismatches: 0, inflight: 0, maxLatencyMs: 0, nextGen: 1 };
  #stderr = '';
  #initialized = false;

  constructor(options: VerifyingWriterOptions) {
    this.#o = options;
    this.seed = options.seed ?? seedFromEnv() ?? randomInt(1, 2 ** 47);
  }

  /** Latest progress line of the running (or last) write phase. */
  get progress(): WriterProgress {
    return { ...this.#progress };
  }

  get running(): boolean {
    return this.#proc !== undefined;
  }

  /** "seed N": put it in every assertion message, so a failure can be replayed with FAULT_SEED=N. */
  describe(): string {
    return `VerifyingWriter seed ${this.seed} (replay: FAULT_SEED=${this.seed})`;
  }

  async #init(): Promise<void> {
    if (this.#initialized) return;
    const state: StateFile = { seed: this.seed, firstBlock: this.#o.firstBlock ?? 0, blocks: this.#o.blocks, nextGen: 1 };
    await writeFile(this.#o.stateFile, JSON.stringify(state));
    this.#initialized = true;
  }

  /** Starts a write phase: until stop(), or for durationMs. Phases continue the same state. */
  async start(options: { durationMs?: number } = {}): Promise<void> {
    if (this.#proc !== undefined) throw new Error('writer already running');
    await this.#init();
    const args = [WRITER_SCRIPT, 'write', '--socket', this.#o.socketPath, '--state', this.#o.stateFile, '--qd', String(this.#o.queueDepth ?? 16), '--read-pct', String(this.#o.readPercent ?? 0)];
    if (options.durationMs !== undefined) args.push('--duration-ms', String(options.durationMs));
    const proc = spawn(DEBIAN_PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    this.#stderr = '';
    let tail = '';
    proc.stdout!.on('data', (chunk: Buffer) => {
      tail += chunk.toString('utf8');
      const lines = tail.split('\n');
      tail = lines.pop()!;
      for (const line of lines) {
        try {
          const msg = JSON.parse(line) as WriterProgress & { type: string };
          if (msg.type === 'progress' || msg.type === 'done') {
            const { writes, acked, errors, reads, readErrors, readMismatches, inflight, maxLatencyMs, nextGen } = msg;
            this.#progress = { writes, acked, errors, reads, readErrors, readMismatches, inflight, maxLatencyMs, nextGen };
          }
        } catch {
          this.#stderr += `${line}\n`;
        }
      }
    });
    proc.stderr!.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-8192);
    });
    this.#exited = new Promise((resolve) => {
      proc.once('exit', (code) => {
        if (this.#proc === proc) this.#proc = undefined;
        resolve(code);
      });
    });
  }

  /** Resolves once at least `count` writes of this writer's life were acknowledged. */
  async waitAcked(count: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#progress.acked < count) {
      if (this.#proc === undefined) throw new Error(`${this.describe()}: writer exited with ${this.#progress.acked} acknowledged writes (< ${count}): ${this.#stderr}`);
      if (Date.now() > deadline) throw new Error(`${this.describe()}: only ${this.#progress.acked} of ${count} writes acknowledged after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /** Ends the write phase (SIGTERM: in-flight writes are drained), or waits for its duration. */
  async stop(options: { wait?: boolean } = {}): Promise<WriteSummary> {
    const proc = this.#proc;
    if (proc !== undefined && options.wait !== true) proc.kill('SIGTERM');
    const code = await Promise.race([this.#exited, sleep(STOP_TIMEOUT_MS).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      proc?.kill('SIGKILL');
      await this.#exited;
      throw new Error(`${this.describe()}: the writer did not stop within ${STOP_TIMEOUT_MS} ms`);
    }
    if (code !== 0) throw new Error(`${this.describe()}: writer exited with ${code}: ${this.#stderr}`);
    return this.summary();
  }

  /** The acknowledged state and I/O errors so far (from the state file of the last phase). */
  async summary(): Promise<WriteSummary> {
    const st = JSON.parse(await readFile(this.#o.stateFile, 'utf8')) as StateFile;
    return {
      ...this.#progress, seed: this.seed, ioErrors: st.ioErrors ?? [], errors: st.ioErrorCount ?? 0,
      readErrorList: st.readErrors ?? [], readErrors: st.readErrorCount ?? 0, readMismatchList: st.readMismatches ?? [], readMismatches: st.readMismatchCount ?? 0,
      uncertainBlocks: Object.keys(st.uncertain ?? {}).length, ...(st.flushError !== undefined ? { flushError: st.flushError } : {}),
    };
  }

  /** Reads every block back and checks it against the acknowledged state. */
  async verify(): Promise<VerifyReport> {
    if (this.#proc !== undefined) throw new Error('stop the writer before verify()');
    await this.#init();
    const out = await new Promise<string>((resolve, reject) => {
      const proc = spawn(DEBIAN_PYTHON, [WRITER_SCRIPT, 'verify', '--socket', this.#o.socketPath, '--state', this.#o.stateFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      proc.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8'); });
      proc.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8'); });
      proc.once('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${this.describe()}: verify exited with ${code}: ${stderr}`))));
    });
    const line = out.split('\n').find((l) => l.includes('"type": "verify"'));
    if (line === undefined) throw new Error(`${this.describe()}: no verify report in ${out}`);
    return JSON.parse(line) as VerifyReport;
  }

  /** Kills a running write phase outright (cleanup on failure). */
  async kill(): Promise<void> {
    this.#proc?.kill('SIGKILL');
    await this.#exited;
  }
}

/** One line per problem, for assertion messages. */
export function formatReport(report: VerifyReport): string {
  const head = `seed ${report.seed}: ${report.checked} blocks checked, ${report.badCount} bad (acked ${report.counts.acked}, unknown-outcome ${report.counts.unacked}, zero ${report.counts.zero})`;
  return [head, ...report.bad.map((b) => `  block ${b.block} @${b.offset}: ${b.problem}`)].join('\n');
}
