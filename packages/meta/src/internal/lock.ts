import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { metaError } from '../errors.js';

export const LOCK_FILE_NAME = 'LOCK';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Takes `dir/LOCK` (O_EXCL create, our PID inside). A lock whose PID is no longer running was
 * left by a crash and is taken over. Returns the function that releases it.
 */
export function lockDirectory(dir: string): () => void {
  const path = join(dir, LOCK_FILE_NAME);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        if (readPid(path) === process.pid) unlinkSync(path);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readPid(path);
    if (holder !== undefined && processAlive(holder)) {
      const who = holder === process.pid ? 'this process (opened twice)' : `process ${holder}`;
      throw metaError('META_ERR_LOCKED', `metadata directory ${dir} is in use by ${who}; only one process may open it (lock file ${path})`);
    }
    try {
      unlinkSync(path); // stale: its holder is gone
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw metaError('META_ERR_LOCKED', `could not take the lock file ${path}: another process keeps racing for it`);
}
