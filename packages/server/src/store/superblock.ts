/**
 * The disk superblock: identity and geometry of one storpool disk.
 *
 * Invariants:
 * - Two identical copies live at SUPERBLOCK_OFFSETS (0 and 4096). Either valid copy is accepted;
 *   when both are valid they must agree (else the disk is refused).
 * - A copy is valid when its magic, version and CRC32C match and every reserved byte is zero.
 * - The superblock is written only by formatDisk(); the data path never rewrites it.
 *
 * Layout (little-endian, 4096 bytes):
 *   0  u8[8]  magic "SPOOLDSK"
 *   8  u32    crc32c of the 4096 bytes with this field zeroed
 *  12  u32    format version (1)
 *  16  u8[16] cluster id (uuid)
 *  32  u8[16] disk uuid (random per format; binds the index to this disk)
 *  48  u32    disk id
 *  52  u32    block size (4096)
 *  56  u64    disk size in bytes
 *  64  u64    data-area offset in bytes (1 MiB)
 *  72  u64    data block count
 *  80  u64    created-at (ms since the epoch)
 *  88  ...    reserved, zero
 */
import { BLOCK_BYTES, crc32c } from '@storpool/protocol';
import { StorpoolError } from '@storpool/errors';
import assert from 'node:assert/strict';
import { DATA_BLOCKS_MAX, DATA_BLOCKS_MIN, DATA_OFFSET_BYTES, FORMAT_VERSION, SUPERBLOCK_BYTES } from './limits.js';

export const SUPERBLOCK_MAGIC = Buffer.from('SPOOLDSK', 'ascii');
const CRC_OFFSET = 8;
const RESERVED_OFFSET = 88;

export interface Superblock {
  readonly formatVersion: number;
  /** Cluster uuid in canonical string form. */
  readonly clusterId: string;
  /** Random uuid generated at format time; the index records it too. */
  readonly diskUuid: string;
  readonly diskId: number;
  readonly blockBytes: number;
  readonly diskBytes: number;
  readonly dataOffset: number;
  readonly blockCount: number;
  readonly createdAtMs: number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

export function uuidToBytes(uuid: string): Buffer {
  assert(isUuid(uuid), 'uuid must be canonical lower-case');
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

export function bytesToUuid(bytes: Uint8Array): string {
  assert.equal(bytes.length, 16);
  const h = Buffer.from(bytes).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Block count a disk of `diskBytes` holds after the data offset. */
export function blockCountFor(diskBytes: number): number {
  return Math.floor((diskBytes - DATA_OFFSET_BYTES) / BLOCK_BYTES);
}

export function encodeSuperblock(sb: Superblock): Buffer {
  assert.equal(sb.blockBytes, BLOCK_BYTES);
  assert(sb.blockCount >= DATA_BLOCKS_MIN && sb.blockCount <= DATA_BLOCKS_MAX);
  assert(sb.dataOffset + sb.blockCount * sb.blockBytes <= sb.diskBytes, 'data area must fit the disk');
  const buf = Buffer.alloc(SUPERBLOCK_BYTES);
  SUPERBLOCK_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(sb.formatVersion, 12);
  uuidToBytes(sb.clusterId).copy(buf, 16);
  uuidToBytes(sb.diskUuid).copy(buf, 32);
  buf.writeUInt32LE(sb.diskId, 48);
  buf.writeUInt32LE(sb.blockBytes, 52);
  buf.writeBigUInt64LE(BigInt(sb.diskBytes), 56);
  buf.writeBigUInt64LE(BigInt(sb.dataOffset), 64);
  buf.writeBigUInt64LE(BigInt(sb.blockCount), 72);
  buf.writeBigUInt64LE(BigInt(sb.createdAtMs), 80);
  buf.writeUInt32LE(crc32c(buf), CRC_OFFSET);
  // Pair assertion: what we write must decode back to itself.
  assert.deepEqual(decodeSuperblock(buf), sb);
  return buf;
}

/** Decodes one copy; returns a reason string when the copy is not a valid superblock. */
export function decodeSuperblock(buf: Buffer): Superblock | string {
  assert.equal(buf.length, SUPERBLOCK_BYTES);
  if (!buf.subarray(0, 8).equals(SUPERBLOCK_MAGIC)) return 'bad magic';
  const stored = buf.readUInt32LE(CRC_OFFSET);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, CRC_OFFSET);
  if (crc32c(copy) !== stored) return 'bad checksum';
  const formatVersion = buf.readUInt32LE(12);
  if (formatVersion !== FORMAT_VERSION) return `unsupported format version ${formatVersion}`;
  for (let i = RESERVED_OFFSET; i < SUPERBLOCK_BYTES; i++) {
    if (buf[i] !== 0) return 'reserved bytes are not zero';
  }
  const sb: Superblock = {
    formatVersion,
    clusterId: bytesToUuid(buf.subarray(16, 32)),
    diskUuid: bytesToUuid(buf.subarray(32, 48)),
    diskId: buf.readUInt32LE(48),
    blockBytes: buf.readUInt32LE(52),
    diskBytes: Number(buf.readBigUInt64LE(56)),
    dataOffset: Number(buf.readBigUInt64LE(64)),
    blockCount: Number(buf.readBigUInt64LE(72)),
    createdAtMs: Number(buf.readBigUInt64LE(80)),
  };
  return checkGeometry(sb);
}

function checkGeometry(sb: Superblock): Superblock | string {
  if (sb.blockBytes !== BLOCK_BYTES) return `unsupported block size ${sb.blockBytes}`;
  if (sb.dataOffset !== DATA_OFFSET_BYTES) return `unsupported data offset ${sb.dataOffset}`;
  if (sb.blockCount < DATA_BLOCKS_MIN || sb.blockCount > DATA_BLOCKS_MAX) return `bad block count ${sb.blockCount}`;
  if (sb.dataOffset + sb.blockCount * sb.blockBytes > sb.diskBytes) return 'data area exceeds the disk size';
  return sb;
}

/**
 * Picks the superblock from the two copies: the first valid one. When both are valid they must be
 * identical (a difference means two formats were mixed). Throws STORE_ERR_DISK_INVALID otherwise.
 */
export function chooseSuperblock(path: string, copies: readonly Buffer[]): Superblock {
  assert.equal(copies.length, 2);
  const decoded = copies.map((c) => decodeSuperblock(c));
  const valid = decoded.filter((d): d is Superblock => typeof d !== 'string');
  if (valid.length === 0) {
    throw new StorpoolError(
      'STORE_ERR_DISK_INVALID',
      `${path} has no valid storpool superblock (copy 1: ${String(decoded[0])}; copy 2: ${String(decoded[1])}); ` +
        'run `storpool-server disk init` to format it',
    );
  }
  if (valid.length === 2) {
    const [a, b] = valid as [Superblock, Superblock];
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new StorpoolError('STORE_ERR_DISK_INVALID', `${path}: the two superblock copies disagree; re-run \`storpool-server disk init --force\` only if the data is not needed`);
    }
  }
  return valid[0] as Superblock;
}
