/**
 * One store per disk: a pid file in the index directory plus an in-process set. LMDB itself allows
 * many processes, but two allocators over one data area would hand out the same blocks.
 * A lock whose pid is dead (a crashed server) is taken over.
 */
import { StorpoolError } from '@storpool/errors';
import fs from 'node:fs/promises';
import path from 'node:path';

export const LOCK_FILE = 'storpool.lock';
const heldInProcess = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

async function readHolder(file: string): Promise<number | null> {
  try {
    const pid = Number((await fs.readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return null;
    throw err;
  }
}

/** Throws STORE_ERR_DISK_IN_USE when a live process (or this one) holds the disk. */
export async function checkNotInUse(diskPath: string, indexDir: string): Promise<void> {
  const key = path.resolve(indexDir);
  if (heldInProcess.has(key)) {
    throw new StorpoolError('STORE_ERR_DISK_IN_USE', `${diskPath} is already open in this process; close it first`);
  }
  const pid = await readHolder(path.join(indexDir, LOCK_FILE));
  if (pid !== null && pid !== process.pid && pidAlive(pid)) {
    throw new StorpoolError('STORE_ERR_DISK_IN_USE', `${diskPath} is in use by process ${pid}; stop that storage server first`);
  }
}

export async function acquireDiskLock(diskPath: string, indexDir: string): Promise<() => Promise<void>> {
  await checkNotInUse(diskPath, indexDir);
  const key = path.resolve(indexDir);
  heldInProcess.add(key);
  const file = path.join(indexDir, LOCK_FILE);
  try {
    await fs.writeFile(file, `${process.pid}\n`);
  } catch (err) {
    heldInProcess.delete(key);
    throw err;
  }
  return async () => {
    heldInProcess.delete(key);
    await fs.rm(file, { force: true });
  };
}
