/**
 * A writer on an old shard map inside a host's namespace (stale-writer.ts): what a client that
 * only reaches a partitioned host would do. Its writes go to the old primary with the old epoch.
 */
import { copyFile, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FaultCluster, FaultVolume } from './cluster.js';

export const STALE_WRITER_SCRIPT = fileURLToPath(new URL('./stale-writer.ts', import.meta.url));
/** The repository root: `--import tsx` resolves from the working directory. */
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface StaleWriteJob {
  /** A frozen copy of an old shard map. */
  mapFile: string;
  group: number;
  volumeId: number;
  placementId: number;
  sizeBytes: number;
  objects: number[];
  /** Byte value filling each block written. */
  fill: number;
  /** How long one write may take (an old primary waits up to its replica timeout, 10 s). */
  requestTimeoutMs: number;
}

export interface StaleWriteResult {
  objectIndex: number;
  ok: boolean;
  code?: string;
  message?: string;
  ms: number;
}

/** Freezes the current map of mgmt (a copy that nothing updates) and returns its path and epoch. */
export async function freezeMap(c: FaultCluster, name: string): Promise<{ path: string; epoch: number }> {
  const path = `${c.dir}/frozen-${name}.json`;
  await copyFile(c.mapFile, path);
  return { path, epoch: (JSON.parse(await readFile(path, 'utf8')) as { epoch: number }).epoch };
}

/**
 * Runs one stale writer in host `host`'s namespace: one write attempt per object, at the start of
 * the object, routed by `mapFile`. Resolves with one result per object; killed (by PID) if it
 * outlives `timeoutMs`.
 */
export async function staleWrite(c: FaultCluster, host: number, vol: FaultVolume, mapFile: string, objects: number[], fill: number, timeoutMs = 60_000): Promise<StaleWriteResult[]> {
  const job: StaleWriteJob = { mapFile, group: vol.group, volumeId: vol.dataId, placementId: vol.placementId, sizeBytes: vol.size, objects, fill, requestTimeoutMs: 15_000 };
  const proc = c.lab.spawn(c.server(host).host, process.execPath, ['--import', 'tsx', STALE_WRITER_SCRIPT, JSON.stringify(job)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const done = await Promise.race([proc.exited.then((r) => r), sleep(timeoutMs).then(() => undefined)]);
  if (done === undefined) {
    await c.lab.kill(proc, 'SIGKILL');
    throw new Error(`stale writer in host ${host} still running after ${timeoutMs} ms; output so far: ${out}${err}`);
  }
  if (done.code !== 0) throw new Error(`stale writer in host ${host} exited ${done.code ?? done.signal}: ${err}${out}`);
  const results = out.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as StaleWriteResult);
  if (results.length !== objects.length) throw new Error(`stale writer in host ${host}: ${results.length} results for ${objects.length} objects: ${out}${err}`);
  return results.sort((a, b) => a.objectIndex - b.objectIndex);
}
