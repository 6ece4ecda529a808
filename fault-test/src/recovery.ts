/**
 * What fault tests ask about recovery: how many bytes the catch-up copies moved (each primary
 * counts what it sent, in its STATS), and whether every disk is back in sync (the shard-map file
 * lists no joining disk and each given disk holds shards again).
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FaultCluster } from './cluster.js';

/**
 * Catch-up bytes sent by every running server so far: to `target` only when given (another disk
 * that flapped under load and caught up meanwhile is not what a test of `target` measures).
 */
export async function bytesCopied(c: FaultCluster, target?: number): Promise<number> {
  let sum = 0;
  for (const s of c.servers) {
    if (s.proc === undefined) continue;
    const stats = (await c.diskStats(s.diskId)) as { sync?: { bytesPushed?: number; bytesPushedTo?: Record<string, number> } };
    sum += target === undefined ? (stats.sync?.bytesPushed ?? 0) : (stats.sync?.bytesPushedTo?.[String(target)] ?? 0);
  }
  return sum;
}

/** Every running server's catch-up and peering counters, for a failure message. */
export async function syncCounters(c: FaultCluster): Promise<Record<number, unknown>> {
  const out: Record<number, unknown> = {};
  for (const s of c.servers) {
    if (s.proc === undefined) continue;
    out[s.diskId] = ((await c.diskStats(s.diskId)) as { sync?: unknown }).sync;
  }
  return out;
}

/** Until no disk joins any shard and each of `diskIds` is in sync somewhere. */
export async function waitCaughtUp(c: FaultCluster, diskIds: readonly number[], timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const map = JSON.parse(await readFile(c.mapFile, 'utf8')) as { groups: { shards: number[][]; joining?: number[][] }[] };
    const joining = map.groups.flatMap((g) => (g.joining ?? []).flat());
    const inSync = new Set(map.groups.flatMap((g) => g.shards.flat()));
    if (joining.length === 0 && diskIds.every((d) => inSync.has(d))) return;
    if (Date.now() > deadline) throw new Error(`disks ${diskIds.join(',')} not caught up after ${timeoutMs} ms: joining ${JSON.stringify([...new Set(joining)])}, in sync ${JSON.stringify([...inSync])}`);
    await sleep(500);
  }
}
