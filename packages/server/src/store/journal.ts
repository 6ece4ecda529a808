/**
 * The index journal: a ring in the disk file (between the superblocks and the data area) that
 * holds, for every group-commit cycle, the index changes the cycle makes. It is written with the
 * cycle's data and made durable by the SAME fdatasync, so a cycle costs one flush on its critical
 * path; the LMDB index is then committed without waiting for its own flush (which overlaps later
 * cycles). On open, records newer than the index's recorded journal sequence are replayed.
 *
 * Record (little-endian, padded with zeros to a multiple of 4 KiB):
 *   0 u32 magic "SPJR"   4 u32 bodyBytes   8 u64 seq   16 u32 crc32c(body)   20 u32 crc32c(bytes 0..19)
 *   24 body: u32 opCount, then per op: u8 kind, u8 0, u16 firstBlock, u16 blockCount, u16 0,
 *            u64 volumeId, u32 objectIndex, u64 version, and for write/repair blockCount x
 *            (u32 physical block, u32 crc32c)
 * Both CRCs start from a per-disk salt (a CRC of the disk's uuid), so records left by an earlier
 * format of the same file never validate. A record is valid when both CRCs match and its seq is the
 * one expected next; the first invalid record ends replay (it was not made durable, so nothing in
 * it was acknowledged).
 */
import assert from 'node:assert/strict';
import { crc32c } from '@storpool/protocol';
import type { ObjectKey } from './keys.js';

export const JOURNAL_OFFSET = 64 * 1024;
/** Ring size: the gap up to the 1 MiB data offset. A full cycle's record is at most ~300 KiB. */
export const JOURNAL_BYTES = 1024 * 1024 - JOURNAL_OFFSET;
const RECORD_MAGIC = 0x524a5053; // "SPJR"
export const RECORD_HEADER_BYTES = 24;
const RECORD_ALIGN = 4096;
const OP_FIXED_BYTES = 28;

// Append only: a kind's index is its byte on disk. 'version' sets an object's version exactly (no blocks).
export const JOURNAL_KINDS = ['write', 'trim', 'zero', 'repair', 'forget', 'version'] as const;
export type JournalKind = (typeof JOURNAL_KINDS)[number];

export interface JournalOp {
  kind: JournalKind;
  key: ObjectKey;
  firstBlock: number;
  blockCount: number;
  version: number;
  /** write/repair */
  phys: Uint32Array | null;
  crcs: Uint32Array | null;
}

export interface JournalRecord {
  seq: number;
  ops: JournalOp[];
}

function bodyBytes(ops: readonly JournalOp[]): number {
  let n = 4;
  for (const op of ops) n += OP_FIXED_BYTES + (op.phys === null ? 0 : op.blockCount * 8);
  return n;
}

function writeU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x1_0000_0000, at);
  b.writeUInt32LE(Math.floor(v / 0x1_0000_0000), at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at + 4) * 0x1_0000_0000 + b.readUInt32LE(at);
}

/** One record, padded to 4 KiB. */
export function encodeRecord(rec: JournalRecord, salt: number): Buffer {
  const body = bodyBytes(rec.ops);
  const total = Math.ceil((RECORD_HEADER_BYTES + body) / RECORD_ALIGN) * RECORD_ALIGN;
  assert(total <= JOURNAL_BYTES, 'a cycle record fits the journal');
  const b = Buffer.alloc(total);
  let at = RECORD_HEADER_BYTES;
  b.writeUInt32LE(rec.ops.length, at);
  at += 4;
  for (const op of rec.ops) {
    b.writeUInt8(JOURNAL_KINDS.indexOf(op.kind), at);
    b.writeUInt16LE(op.firstBlock, at + 2);
    b.writeUInt16LE(op.blockCount, at + 4);
    writeU64(b, at + 8, op.key.volumeId);
    b.writeUInt32LE(op.key.objectIndex, at + 16);
    writeU64(b, at + 20, op.version);
    at += OP_FIXED_BYTES;
    if (op.phys !== null) {
      assert(op.crcs !== null && op.phys.length === op.blockCount && op.crcs.length === op.blockCount);
      for (let i = 0; i < op.blockCount; i++) {
        b.writeUInt32LE(op.phys[i]!, at);
        b.writeUInt32LE(op.crcs[i]!, at + 4);
        at += 8;
      }
    }
  }
  assert.equal(at, RECORD_HEADER_BYTES + body);
  b.writeUInt32LE(RECORD_MAGIC, 0);
  b.writeUInt32LE(body, 4);
  writeU64(b, 8, rec.seq);
  b.writeUInt32LE(crc32c(b.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + body), salt), 16);
  b.writeUInt32LE(crc32c(b.subarray(0, 20), salt), 20);
  return b;
}

/** The body size announced by a record header, or -1 when the header is not a valid record header. */
export function recordBodyBytes(header: Buffer, salt: number): number {
  if (header.length < RECORD_HEADER_BYTES || header.readUInt32LE(0) !== RECORD_MAGIC) return -1;
  if (crc32c(header.subarray(0, 20), salt) !== header.readUInt32LE(20)) return -1;
  const body = header.readUInt32LE(4);
  return RECORD_HEADER_BYTES + body <= JOURNAL_BYTES ? body : -1;
}

/** Padded size of a record with `body` body bytes. */
export function recordBytes(body: number): number {
  return Math.ceil((RECORD_HEADER_BYTES + body) / RECORD_ALIGN) * RECORD_ALIGN;
}

/** Decodes a whole record (header + body); undefined when it is not a valid record. */
export function decodeRecord(b: Buffer, salt: number): JournalRecord | undefined {
  const body = recordBodyBytes(b, salt);
  if (body < 0 || b.length < RECORD_HEADER_BYTES + body) return undefined;
  if (crc32c(b.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + body), salt) !== b.readUInt32LE(16)) return undefined;
  const seq = readU64(b, 8);
  let at = RECORD_HEADER_BYTES;
  const count = b.readUInt32LE(at);
  at += 4;
  const ops: JournalOp[] = [];
  for (let i = 0; i < count; i++) {
    const kind = JOURNAL_KINDS[b.readUInt8(at)];
    if (kind === undefined) return undefined;
    const blockCount = b.readUInt16LE(at + 4);
    const op: JournalOp = { kind, key: { volumeId: readU64(b, at + 8), objectIndex: b.readUInt32LE(at + 16) }, firstBlock: b.readUInt16LE(at + 2), blockCount, version: readU64(b, at + 20), phys: null, crcs: null };
    at += OP_FIXED_BYTES;
    if (kind === 'write' || kind === 'repair') {
      op.phys = new Uint32Array(blockCount);
      op.crcs = new Uint32Array(blockCount);
      for (let j = 0; j < blockCount; j++) {
        op.phys[j] = b.readUInt32LE(at);
        op.crcs[j] = b.readUInt32LE(at + 4);
        at += 8;
      }
    }
    ops.push(op);
  }
  return at === RECORD_HEADER_BYTES + body ? { seq, ops } : undefined;
}

/** The per-disk CRC seed of journal records. */
export function journalSalt(diskUuid: string): number {
  return crc32c(Buffer.from(diskUuid.replaceAll('-', ''), 'hex'));
}

interface Extent {
  seq: number;
  start: number;
  end: number;
}

/**
 * Where the next record goes in the ring, and which ring space is still needed: a record may be
 * overwritten only once an index transaction that includes it has been flushed.
 */
export class JournalRing {
  #pos: number;
  #live: Extent[] = [];
  #flushedSeq = 0;

  constructor(pos: number) {
    assert(pos >= 0 && pos < JOURNAL_BYTES && pos % RECORD_ALIGN === 0);
    this.#pos = pos;
  }

  /** Ring offset for a record of `bytes`, or undefined when the space is still needed (wait for a flush). */
  place(bytes: number): number | undefined {
    const start = this.#pos + bytes <= JOURNAL_BYTES ? this.#pos : 0;
    const end = start + bytes;
    for (const e of this.#live) if (e.start < end && start < e.end) return undefined;
    return start;
  }

  /** Records that a record was written at [start, start + bytes). */
  written(seq: number, start: number, bytes: number): void {
    this.#live.push({ seq, start, end: start + bytes });
    this.#pos = (start + bytes) % JOURNAL_BYTES;
  }

  /** Bytes of the ring held by records the index does not hold durably yet. */
  get liveBytes(): number {
    let bytes = 0;
    for (const e of this.#live) bytes += e.end - e.start;
    return bytes;
  }

  get position(): number {
    return this.#pos;
  }

  /** The index is durable up to `seq`: the space of those records can be reused. */
  flushedThrough(seq: number): void {
    this.#flushedSeq = Math.max(this.#flushedSeq, seq);
    this.#live = this.#live.filter((e) => e.seq > seq);
  }

  /** The highest sequence the index holds durably (as far as this process knows). */
  get flushedSeq(): number {
    return this.#flushedSeq;
  }
}
