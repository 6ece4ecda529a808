/**
 * Binary encodings of the index keys and values. Keys are big-endian so that LMDB's memcmp order
 * is (volumeId, objectIndex, blockInObject) order and range scans walk an object's blocks in order.
 *
 *   block key   (14 B): volumeId u64 BE | objectIndex u32 BE | blockInObject u16 BE
 *   block value (8 B):  physical block u32 LE | crc32c u32 LE
 *   object key  (12 B): volumeId u64 BE | objectIndex u32 BE
 *   object value(12 B): version u64 LE (JS-safe) | allocated-block count u32 LE
 */
import { BLOCKS_PER_OBJECT } from '@storpool/protocol';
import { StorpoolError } from '@storpool/errors';
import assert from 'node:assert/strict';
import { VOLUME_ID_MAX } from './limits.js';

export interface ObjectKey {
  readonly volumeId: number;
  readonly objectIndex: number;
}

export const BLOCK_KEY_BYTES = 14;
export const OBJECT_KEY_BYTES = 12;
export const BLOCK_VALUE_BYTES = 8;
export const OBJECT_VALUE_BYTES = 12;
const TWO_32 = 2 ** 32;

/** Typed error for a key the caller got wrong (a peer or a bug upstream, not our invariant). */
export function checkObjectKey(key: ObjectKey): void {
  const { volumeId, objectIndex } = key;
  if (!Number.isSafeInteger(volumeId) || volumeId < 0 || volumeId > VOLUME_ID_MAX) {
    throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `volumeId ${volumeId} must be an integer in [0, 2^53)`);
  }
  if (!Number.isInteger(objectIndex) || objectIndex < 0 || objectIndex > 0xffff_ffff) {
    throw new StorpoolError('STORE_ERR_OUT_OF_RANGE', `objectIndex ${objectIndex} must be a u32`);
  }
}

function writeObjectPart(buf: Buffer, key: ObjectKey): void {
  buf.writeUInt32BE(Math.floor(key.volumeId / TWO_32), 0);
  buf.writeUInt32BE(key.volumeId >>> 0, 4);
  buf.writeUInt32BE(key.objectIndex, 8);
}

export function objectKeyBytes(key: ObjectKey): Buffer {
  const buf = Buffer.allocUnsafe(OBJECT_KEY_BYTES);
  writeObjectPart(buf, key);
  return buf;
}

export function blockKeyBytes(key: ObjectKey, block: number): Buffer {
  assert(block >= 0 && block <= BLOCKS_PER_OBJECT, 'block index (or range end) within the object');
  const buf = Buffer.allocUnsafe(BLOCK_KEY_BYTES);
  writeObjectPart(buf, key);
  buf.writeUInt16BE(block, 12);
  return buf;
}

export function decodeObjectKey(buf: Uint8Array): ObjectKey {
  assert(buf.length === OBJECT_KEY_BYTES || buf.length === BLOCK_KEY_BYTES);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  return { volumeId: b.readUInt32BE(0) * TWO_32 + b.readUInt32BE(4), objectIndex: b.readUInt32BE(8) };
}

export function decodeBlockInObject(buf: Uint8Array): number {
  assert.equal(buf.length, BLOCK_KEY_BYTES);
  return ((buf[12] as number) << 8) | (buf[13] as number);
}

export interface BlockValue {
  physical: number;
  crc: number;
}

export function encodeBlockValue(physical: number, crc: number): Buffer {
  const buf = Buffer.allocUnsafe(BLOCK_VALUE_BYTES);
  buf.writeUInt32LE(physical, 0);
  buf.writeUInt32LE(crc >>> 0, 4);
  return buf;
}

export function decodeBlockValue(buf: Uint8Array): BlockValue {
  assert.equal(buf.length, BLOCK_VALUE_BYTES, 'block index value size');
  // Byte reads, not a Buffer view: `.buffer` of a small (on-heap) typed array is a slow path.
  return { physical: u32le(buf, 0), crc: u32le(buf, 4) };
}

function u32le(b: Uint8Array, at: number): number {
  return ((b[at] as number) | ((b[at + 1] as number) << 8) | ((b[at + 2] as number) << 16)) + (b[at + 3] as number) * 0x100_0000;
}

export interface ObjectValue {
  version: number;
  allocatedBlocks: number;
}

export function encodeObjectValue(v: ObjectValue): Buffer {
  assert(Number.isSafeInteger(v.version) && v.version >= 0);
  assert(v.allocatedBlocks >= 0 && v.allocatedBlocks <= BLOCKS_PER_OBJECT);
  const buf = Buffer.allocUnsafe(OBJECT_VALUE_BYTES);
  buf.writeUInt32LE(v.version >>> 0, 0);
  buf.writeUInt32LE(Math.floor(v.version / TWO_32), 4);
  buf.writeUInt32LE(v.allocatedBlocks, 8);
  return buf;
}

export function decodeObjectValue(buf: Uint8Array): ObjectValue {
  assert.equal(buf.length, OBJECT_VALUE_BYTES, 'object index value size');
  const version = u32le(buf, 4) * TWO_32 + u32le(buf, 0);
  const allocatedBlocks = u32le(buf, 8);
  assert(allocatedBlocks <= BLOCKS_PER_OBJECT);
  return { version, allocatedBlocks };
}
