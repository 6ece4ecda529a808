import { metaError } from '../errors.js';
import { LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, META_KEY_BYTES_MAX, META_VALUE_BYTES_MAX } from '../limits.js';
import type { MetaValue, TxnCompare, TxnOp, TxnRequest } from '../types.js';

export function checkKey(key: string, what = 'key'): void {
  if (typeof key !== 'string' || key.length === 0) throw metaError('CONFIG_ERR_INVALID', `${what} must be a non-empty string`);
  if (Buffer.byteLength(key) > META_KEY_BYTES_MAX) {
    throw metaError('CONFIG_ERR_INVALID', `${what} is longer than ${META_KEY_BYTES_MAX} bytes: ${key.slice(0, 64)}...`);
  }
}

/** A prefix may be empty (everything in the store or namespace). */
export function checkPrefix(prefix: string): void {
  if (typeof prefix !== 'string') throw metaError('CONFIG_ERR_INVALID', 'prefix must be a string');
  if (Buffer.byteLength(prefix) > META_KEY_BYTES_MAX) throw metaError('CONFIG_ERR_INVALID', `prefix is longer than ${META_KEY_BYTES_MAX} bytes`);
}

export function toBuffer(value: MetaValue): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw metaError('CONFIG_ERR_INVALID', 'value must be a string or a Uint8Array');
}

export function checkValue(value: MetaValue): Buffer {
  const bytes = toBuffer(value);
  if (bytes.length > META_VALUE_BYTES_MAX) throw metaError('CONFIG_ERR_INVALID', `value of ${bytes.length} bytes is larger than ${META_VALUE_BYTES_MAX}`);
  return bytes;
}

export function checkTtl(ttlMs: number): void {
  if (!Number.isInteger(ttlMs) || ttlMs < LEASE_TTL_MS_MIN || ttlMs > LEASE_TTL_MS_MAX) {
    throw metaError('CONFIG_ERR_INVALID', `lease TTL must be an integer between ${LEASE_TTL_MS_MIN} and ${LEASE_TTL_MS_MAX} ms, got ${ttlMs}`);
  }
}

export function checkRevision(revision: number, what: string): void {
  if (!Number.isSafeInteger(revision) || revision < 0) throw metaError('CONFIG_ERR_INVALID', `${what} must be a non-negative integer, got ${revision}`);
}

export function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return 0;
  if (!Number.isSafeInteger(limit) || limit < 0) throw metaError('CONFIG_ERR_INVALID', `limit must be a non-negative integer, got ${limit}`);
  return limit;
}

function checkOp(op: TxnOp): void {
  switch (op.type) {
    case 'put': checkKey(op.key); checkValue(op.value); return;
    case 'delete': checkKey(op.key); return;
    case 'deletePrefix': checkPrefix(op.prefix); return;
    default: throw metaError('CONFIG_ERR_INVALID', `unknown txn op ${JSON.stringify(op)}`);
  }
}

function checkCompare(compare: TxnCompare): void {
  checkKey(compare.key, 'compare key');
  if ('revision' in compare) checkRevision(compare.revision, 'compare revision');
  else if ('value' in compare) checkValue(compare.value);
  else if ('exists' in compare) {
    if (typeof compare.exists !== 'boolean') throw metaError('CONFIG_ERR_INVALID', 'compare exists must be a boolean');
  } else throw metaError('CONFIG_ERR_INVALID', `compare needs revision, value or exists: ${JSON.stringify(compare)}`);
}

export function checkTxn(request: TxnRequest): void {
  for (const compare of request.compare) checkCompare(compare);
  for (const op of request.success) checkOp(op);
  for (const op of request.failure ?? []) checkOp(op);
}

/** Smallest key greater than every key with this prefix (etcd's range_end); undefined = no end. */
export function prefixEnd(prefix: Buffer): Buffer | undefined {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return undefined;
}
