/**
 * Disk scrubbing as the API shows it: DiskScrubStart sends the SCRUB op to the disk's server; the
 * `scrubbing*` fields of DiskSummary (API.md §5.15) and the `scrub` tasks of TasksList are read from
 * the scrub status in each disk's live STATS. Nothing about a scrub is kept in the metadata store:
 * the server owns the pass, and a down disk shows none.
 */
import { parseScrubStatus, type ScrubStatus } from '@storpool/protocol';
import type { Logger } from 'pino';
import { ApiError } from './api-error.js';
import type { DiskStatus, LiveView } from './live.js';
import type { Json } from './views.js';

/** The scrub status in a disk's STATS document; undefined when it has none (or not a valid one). */
export function scrubStatusOf(raw: Record<string, unknown> | undefined): ScrubStatus | undefined {
  if (raw?.['scrub'] === undefined) return undefined;
  try {
    return parseScrubStatus(raw['scrub']);
  } catch {
    return undefined;
  }
}

/** DiskSummary's scrubbing fields, plus `scrubStatus` (storpool extension: the server's whole status). */
export function scrubFields(status: ScrubStatus | undefined, now = Date.now()): Json | undefined {
  if (status === undefined) return undefined;
  const { pass } = status;
  const running = status.running && pass.startedAt !== null;
  const rate = pass.rateBytesPerSecond;
  return {
    scrubbingStartedBefore: running ? Math.max(0, Math.floor((now - pass.startedAt!) / 1000)) : 0,
    scrubbedBytes: running ? pass.bytes : 0,
    scrubbingBW: running ? Math.round(rate) : 0,
    scrubbingFinishAfter: running && rate > 0 ? Math.ceil(Math.max(0, pass.bytesTotal - pass.bytes) / rate) : 0,
    scrubbingPausedFor: 0,
    scrubbingPaused: false,
    lastScrubCompleted: status.lastCompletedAt === null ? 0 : Math.floor(status.lastCompletedAt / 1000),
    scrubStatus: status,
  };
}

/** TasksList entries (kind `scrub`) of the disks whose scrub pass is running. */
export function scrubTasks(live: ReadonlyMap<number, DiskStatus>): Json[] {
  const out: Json[] = [];
  for (const [diskId, d] of [...live].sort((a, b) => a[0] - b[0])) {
    const s = scrubStatusOf(d.raw);
    if (s === undefined || !s.running) continue;
    const all = Math.max(s.pass.objectsTotal, s.pass.objects);
    out.push({
      diskId, transactionId: 0, allObjects: all, completedObjects: s.pass.objects, dispatchedObjects: Math.min(all, s.pass.objects + 1), unresolvedObjects: 0,
      kind: 'scrub', state: 'running', globalId: '', progress: s.pass.progress, errorsFound: s.pass.errorsFound, repaired: s.pass.repaired, unrepairable: s.pass.unrepairable,
    });
  }
  return out;
}

/**
 * Asks the disk's server to start a pass. The disk must be up: a scrub that cannot start is an
 * error (transient), not an ApiOk that nothing follows.
 */
export async function startDiskScrub(live: LiveView, diskId: number, log?: Logger): Promise<ScrubStatus> {
  const client = await live.client();
  if (client === undefined || client.router.disk(diskId) === undefined) throw new ApiError('notReady', `disk ${diskId} is not in the shard map (no storage server serves it)`, true);
  try {
    const status = await client.scrub(diskId, 'start');
    log?.info({ diskId, bytesTotal: status.pass.bytesTotal }, 'scrub started');
    return status;
  } catch (err) {
    throw new ApiError('notReady', `disk ${diskId} did not start a scrub: ${(err as Error).message}`, true);
  }
}
