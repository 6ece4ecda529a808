/** Runs the real `storpool` binary with a configuration file pointing at a given API port. */
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll } from 'vitest';

export const STORPOOL_BIN = fileURLToPath(new URL('../bin/storpool.js', import.meta.url));
export const TOKEN = '1556129910218014736';

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const confDirs: string[] = [];
// The config dirs a test file made are removed when that file's tests are done.
afterAll(() => {
  for (const dir of confDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A temp dir holding `storpool.conf` (API on 127.0.0.1:port, SP_OURID in this host's section). */
export async function writeConf(port: number, ourId = 12): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'storpool-cli-'));
  confDirs.push(dir);
  const path = join(dir, 'storpool.conf');
  await writeFile(path, `# test\nSP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=${port}\nSP_AUTH_TOKEN=${TOKEN}\n[${hostname()}]\nSP_OURID=${ourId}\n`);
  return path;
}

export async function storpool(args: readonly string[], conf: string, env: Record<string, string> = {}): Promise<CliResult> {
  const r = await execa('node', [STORPOOL_BIN, ...args], {
    reject: false,
    stripFinalNewline: false,
    env: { STORPOOL_CONF: conf, NO_COLOR: '1', SP_API_HTTP_HOST: '', SP_API_HTTP_PORT: '', SP_AUTH_TOKEN: '', SP_OURID: '', ...env },
    extendEnv: true,
    cwd: tmpdir(),
    timeout: 60_000,
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Lines of stderr (a failing command must print exactly one). */
export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}
