/**
 * Process entry of `storpool`: moves leading global flags (`storpool -B -j volume list`) behind the
 * noun so oclif finds the command, rejects an unknown noun itself, and turns anything oclif throws
 * into one stderr line and an exit status.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run, settings } from '@oclif/core';
import { isGlobalFlag } from './grammar.js';
import { NOUNS } from './nouns.js';
import { EXIT_USAGE, errorLine, exitCodeFor } from './run.js';

const HELP_WORDS = new Set(['--help', '-h', 'help', '--version']);

/** argv as oclif should see it: the noun first. */
export function orderForOclif(argv: readonly string[]): string[] {
  const at = argv.findIndex((w) => !isGlobalFlag(w));
  if (at <= 0) return [...argv];
  return [argv[at] as string, ...argv.slice(0, at), ...argv.slice(at + 1)];
}

/**
 * `storpool libvirt ...` runs the `storpool-libvirt` binary of integrations/libvirt (the XML lives
 * there; the CLI does not depend on an integration): the workspace's copy if installed, else PATH.
 */
async function delegateLibvirt(args: string[]): Promise<number> {
  let bin: string[] = ['storpool-libvirt'];
  try {
    bin = [process.execPath, fileURLToPath(new URL('../bin/storpool-libvirt.js', import.meta.resolve('@storpool/libvirt')))];
  } catch { /* not in this install: try PATH */ }
  return await new Promise<number>((resolve) => {
    const child = spawn(bin[0]!, [...bin.slice(1), ...args], { stdio: 'inherit' });
    child.once('error', (err) => {
      process.stderr.write(`${errorLine(new Error(`storpool libvirt: cannot run storpool-libvirt: ${err.message}`))}\n`);
      resolve(1);
    });
    child.once('exit', (code) => resolve(code ?? 1));
  });
}

export async function main(argv: readonly string[] = process.argv.slice(2), packageRoot: string | URL = new URL('..', import.meta.url)): Promise<void> {
  // Sources run through tsx; oclif must not look for compiled output or ts-node.
  settings.enableAutoTranspile = false;
  const ordered = orderForOclif(argv);
  const noun = ordered[0];
  if (noun === 'libvirt') {
    process.exitCode = await delegateLibvirt(argv.slice(argv.indexOf('libvirt') + 1));
    return;
  }
  if (noun !== undefined && !HELP_WORDS.has(noun) && !Object.hasOwn(NOUNS, noun)) {
    process.stderr.write(`${errorLine(new Error(`unknown command '${noun}' (see: storpool --help)`)).replace('error:', 'usage:')}\n`);
    process.exitCode = EXIT_USAGE;
    return;
  }
  try {
    await run(noun === 'help' ? ['--help', ...ordered.slice(1)] : ordered, packageRoot instanceof URL ? packageRoot.pathname : packageRoot);
  } catch (err) {
    process.stderr.write(`${errorLine(err)}\n`);
    process.exitCode = exitCodeFor(err);
  }
}
