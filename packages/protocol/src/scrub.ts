/**
 * The SCRUB op: control of a disk's scrubber (start a pass, stop it, or just ask), and the status
 * document its reply carries (also under `scrub` in STATS). Pure codecs: no I/O here.
 *
 * Request: header `offset` = ScrubCommand, every other field as for STATS; no payload.
 * Reply: the ScrubStatus as UTF-8 JSON.
 */
import { StorpoolError } from '@storpool/errors';
import { z } from 'zod';

export const ScrubCommand = {
  /** Only report. */
  STATUS: 0,
  /** Start a full pass now (a running pass goes on: starting is idempotent). */
  START: 1,
  /** Abort the running pass (the next one starts from the beginning). */
  STOP: 2,
} as const;
export type ScrubCommandCode = (typeof ScrubCommand)[keyof typeof ScrubCommand];

export function isScrubCommand(value: number): value is ScrubCommandCode {
  return value === ScrubCommand.STATUS || value === ScrubCommand.START || value === ScrubCommand.STOP;
}

export function scrubCommandName(value: ScrubCommandCode): 'status' | 'start' | 'stop' {
  return value === ScrubCommand.START ? 'start' : value === ScrubCommand.STOP ? 'stop' : 'status';
}

/** Most unrepairable blocks a status lists (the newest); the counters count them all. */
export const SCRUB_UNREPAIRABLE_LISTED_MAX = 64;

const count = z.number().int().min(0);
const time = z.number().int().min(0).nullable();

const countersSchema = z.object({
  /** Objects read through. */
  objects: count,
  /** Bytes of data blocks read and checked. */
  bytes: count,
  /** Blocks whose data failed their CRC32C. */
  errorsFound: count,
  /** Of those: replaced by a good copy from another disk (verified by reading it back). */
  repaired: count,
  /** Of those: no disk had a good copy; left as they are (reads of them fail) and listed. */
  unrepairable: count,
});

const scrubStatusSchema = z.object({
  diskId: count,
  running: z.boolean(),
  /** Throttle, bytes per second (0 = unthrottled). */
  bandwidthBytesPerSecond: count,
  /** A full pass starts this long after the previous one ended (0 = only on demand). */
  intervalMs: count,
  /** Passes that reached the end of the disk. */
  passesCompleted: count,
  /** The running pass, else the last one. Times are UNIX milliseconds. */
  pass: countersSchema.extend({
    startedAt: time,
    finishedAt: time,
    /** Objects on the disk when the pass started (counted in its first moments; 0 until then). */
    objectsTotal: count,
    /** Data bytes on the disk when the pass started: what progress is measured against. */
    bytesTotal: count,
    /** bytes / bytesTotal, 0..1 (1 when the pass completed). */
    progress: z.number().min(0).max(1),
    /** Bytes per second this pass achieved so far. */
    rateBytesPerSecond: z.number().min(0),
    /** How the last pass ended: stopped on request or by shutdown instead of reaching the end. */
    aborted: z.boolean(),
  }),
  /** Since the server started. */
  total: countersSchema,
  lastCompletedAt: time,
  nextScheduledAt: time,
  unrepairableBlocks: z.array(z.object({ volumeId: count, objectIndex: count, block: count, at: count })).max(SCRUB_UNREPAIRABLE_LISTED_MAX),
});

export type ScrubCounters = z.infer<typeof countersSchema>;
export type ScrubStatus = z.infer<typeof scrubStatusSchema>;

export function encodeScrubStatus(status: ScrubStatus): Buffer {
  return Buffer.from(JSON.stringify(status), 'utf8');
}

/** Validates a peer's status document (WIRE_ERR_FRAME_INVALID when it is not one). */
export function decodeScrubStatus(payload: Uint8Array): ScrubStatus {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString('utf8'));
  } catch {
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', 'scrub status is not JSON');
  }
  return parseScrubStatus(value);
}

/** Validates a status already parsed (e.g. the `scrub` member of a STATS document). */
export function parseScrubStatus(value: unknown): ScrubStatus {
  const parsed = scrubStatusSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `scrub status: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}
