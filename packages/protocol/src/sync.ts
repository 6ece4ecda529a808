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
  return parseJsonPayload('SHARD_SYNC', payload, requestSchema) as ShardSyncRequest;
}

function parseJsonPayload(op: string, payload: Buffer, schema: z.ZodTypeAny): unknown {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `${op} payload is not JSON: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `${op} payload: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

export function decodeShardSyncResult(payload: Buffer): ShardSyncResult {
  const value = JSON.parse(payload.toString('utf8')) as ShardSyncResult;
  for (const k of ['objectsCompared', 'objectsPushed', 'objectsReleased', 'bytesPushed'] as const) {
    if (typeof value[k] !== 'number') throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `SHARD_SYNC reply lacks ${k}`);
  }
  return value;
}

/**
 * SHARD_RELEASE: a disk forgets its objects of shards it no longer holds. The disk itself checks,
 * on its own map at the request's epoch or later, that the shards are in sync on at least
 * `replication` other disks and that it neither holds nor joins them; else it keeps them.
 */
export interface ShardReleaseRequest {
  group: number;
  shards: number[];
  /** As in ShardSyncRequest: [dataId, placementId] of the group's volumes and snapshots. */
  dataIds: [number, number][];
}

export interface ShardReleaseResult {
  objectsReleased: number;
  /** Data bytes those objects held. */
  bytesReleased: number;
}

const releaseSchema = z.object({
  group: z.number().int().min(0).max(0xffff),
  shards: z.array(z.number().int().min(0).max(1 << 20)).min(1),
  dataIds: z.array(z.tuple([id, id])),
});

export function encodeShardReleaseRequest(r: ShardReleaseRequest): Buffer {
  return Buffer.from(JSON.stringify(r));
}

export function decodeShardReleaseRequest(payload: Buffer): ShardReleaseRequest {
  return parseJsonPayload('SHARD_RELEASE', payload, releaseSchema) as ShardReleaseRequest;
}

export function decodeShardReleaseResult(payload: Buffer): ShardReleaseResult {
  const value = JSON.parse(payload.toString('utf8')) as ShardReleaseResult;
  for (const k of ['objectsReleased', 'bytesReleased'] as const) {
    if (typeof value[k] !== 'number') throw new StorpoolError('WIRE_ERR_FRAME_INVALID', `SHARD_RELEASE reply lacks ${k}`);
  }
  return value;
}
