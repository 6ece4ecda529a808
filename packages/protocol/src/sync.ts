/**
 * SHARD_SYNC payloads (JSON): the management service asks a shard primary to bring a target disk
 * up to date for some shards of one group. The store keys objects by data id, not by placement, so
 * the request carries the data ids of the group with their lineage's placementId: the primary
 * needs them to tell which of its objects belong to the shards being copied.
 */
import { StorpoolError } from '@storpool/errors';
import { z } from 'zod';

export interface ShardSyncRequest {
  /** Disk to bring up to date (joining these shards). */
  target: number;
  group: number;
  shards: number[];
  /** [dataId, placementId] of every volume and snapshot whose objects live in this group. */
  dataIds: [number, number][];
  /** Copy throttle (data bytes per second); absent or 0 = unthrottled. */
  maxBytesPerSec?: number;
}

export interface ShardSyncResult {
  /** Objects of the shards on the primary, each compared with the target's version. */
  objectsCompared: number;
  /** Objects copied whole to the target (missing or a different version there). */
  objectsPushed: number;
  /** Objects the target had that the primary does not: released on the target. */
  objectsReleased: number;
  /** Data bytes sent (allocated blocks of pushed objects). */
  bytesPushed: number;
}

const id = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const requestSchema = z.object({
  target: z.number().int().min(1).max(0xffffffff),
  group: z.number().int().min(0).max(0xffff),
  shards: z.array(z.number().int().min(0).max(1 << 20)).min(1),
  dataIds: z.array(z.tuple([id, id])),
  maxBytesPerSec: z.number().int().min(0).optional(),
});

export function encodeShardSyncRequest(r: ShardSyncRequest): Buffer {
  return Buffer.from(JSON.stringify(r));
}

export function decodeShardSyncRequest(payload: Buffer): ShardSyncRequest {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `SHARD_SYNC payload is not JSON: ${(err as Error).message}`);
  }
  const parsed = requestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `SHARD_SYNC payload: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data as ShardSyncRequest;
}

export function decodeShardSyncResult(payload: Buffer): ShardSyncResult {
  const value = JSON.parse(payload.toString('utf8')) as ShardSyncResult;
  for (const k of ['objectsCompared', 'objectsPushed', 'objectsReleased', 'bytesPushed'] as const) {
    if (typeof value[k] !== 'number') throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `SHARD_SYNC reply lacks ${k}`);
  }
  return value;
}
