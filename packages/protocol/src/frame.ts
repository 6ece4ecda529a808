/**
 * storpool wire protocol: length-prefixed binary frames over TCP, little-endian, fixed-size
 * self-checking headers (magic + CRC32C of the header), data followed by one CRC32C per 4 KiB.
 * Layouts are in docs/wire-protocol.md; the byte tests in test/frame.test.ts pin them.
 * Pure codecs: no sockets here.
 */
import { StorpoolError } from '@storpool/errors';
import { crc32c, chunkCount } from './crc.js';
import { COMPARE_AND_WRITE_BYTES_MAX, CRC_BYTES, FRAME_PAYLOAD_BYTES_MAX, OBJECT_BYTES } from './limits.js';
import { isScrubCommand } from './scrub.js';

export const REQUEST_MAGIC = 0x51525053; // "SPRQ" little-endian
export const REPLY_MAGIC = 0x53525053; // "SPRS" little-endian
export const REQUEST_HEADER_BYTES = 72;
export const REPLY_HEADER_BYTES = 32;

export const Op = {
  HELLO: 1,
  PING: 2,
  STATS: 3,
  /** Client ops, sent to the shard's primary. */
  READ: 10,
  WRITE: 11,
  TRIM: 12,
  WRITE_ZEROES: 13,
  FLUSH: 14,
  BLOCK_STATUS: 15,
  /**
   * Atomic compare-and-write of a range within one object, executed at the shard primary under
   * the object's range lock: cluster-wide atomic (SCSI COMPARE AND WRITE, VMware ATS). Payload:
   * compare bytes + their CRCs, write bytes + their CRCs, parents. `version` carries the client's
   * attempt token (same on retries). Reply payload: CompareAndWriteResult (8 bytes).
   */
  COMPARE_AND_WRITE: 16,
  /** Peer ops, primary -> replica, whole 4 KiB blocks only. */
  REPLICA_WRITE: 20,
  REPLICA_TRIM: 21,
  /** Reads this disk's own copy: no forwarding, no repair (replica checks, repair source). */
  REPLICA_READ: 22,
  /**
   * Reads this disk's own copy wherever the map places the object (no shard check, no repair):
   * the scrubber's repair source. The requester checks the bytes against its own stored CRCs.
   */
  COPY_READ: 23,
  /** Recovery: list objects (with versions) this disk holds. */
  OBJECT_LIST: 30,
  /** Deletes every object of a data id (a deleted volume or snapshot) on this disk. */
  PURGE: 31,
  /** Scrubber control of this disk: `offset` = ScrubCommand; the reply is the scrub status (JSON). */
  SCRUB: 32,
  /**
   * Catch-up, sent by the management service to a shard primary: copy the given shards to a target
   * disk (a joining one) and keep it current while doing so. Payload: ShardSyncRequest as JSON;
   * reply payload: ShardSyncResult as JSON.
   */
  SHARD_SYNC: 33,
  /**
   * Sent by the management service to a disk that no longer holds some shards (they moved away and
   * are in sync on enough other disks): forget its objects of them. Payload: ShardReleaseRequest as
   * JSON; reply payload: ShardReleaseResult as JSON.
   */
  SHARD_RELEASE: 34,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];
const OP_CODES: ReadonlySet<number> = new Set(Object.values(Op));

export function opName(op: number): string {
  for (const [name, code] of Object.entries(Op)) if (code === op) return name;
  return `OP_${op}`;
}

/** Ops that may carry the volume's ancestor chain. */
export function opTakesParents(op: number): boolean {
  return op === Op.READ || op === Op.WRITE || op === Op.TRIM || op === Op.WRITE_ZEROES || op === Op.BLOCK_STATUS || op === Op.COMPARE_AND_WRITE;
}

/** Ops whose request payload is data followed by per-4 KiB CRCs. */
export function opCarriesData(op: number): boolean {
  return op === Op.WRITE || op === Op.REPLICA_WRITE;
}

export interface RequestHeader {
  op: OpCode;
  flags: number;
  requestId: number;
  /** Bytes following the header. */
  payloadBytes: number;
  /** Shard-map epoch the sender routed this request with. */
  epoch: number;
  /** Shard group (placement policy) the volume belongs to. */
  group: number;
  /** Ancestor data ids carried after the data (u64 each): reads fall through them, nearest first. */
  parentCount: number;
  /** Data id of the volume or snapshot whose objects this op addresses. */
  volumeId: number;
  objectIndex: number;
  /** Byte offset within the object. */
  offset: number;
  /** Bytes of the object the op covers. */
  length: number;
  /** Object version assigned by the primary (replica ops), else 0. */
  version: number;
  /** Lineage id the object hashes to a shard by (shared by a volume, its snapshots and clones). */
  placementId: number;
  shard: number;
}

export interface ReplyHeader {
  /** 0 on success, else a wire status from @storpool/errors. */
  status: number;
  flags: number;
  requestId: number;
  payloadBytes: number;
  version: number;
  /** The replying server's shard-map epoch: a client behind it refreshes. */
  epoch: number;
}

export interface RequestFrame {
  header: RequestHeader;
  payload: Buffer;
}
export interface ReplyFrame {
  header: ReplyHeader;
  payload: Buffer;
}

/** Request flags. */
export const RequestFlag = {
  /** READ: do not fetch a good copy from a replica on a checksum failure (report it). */
  NO_REPAIR: 1,
  /** REPLICA_TRIM: leave zero markers (the volume has parents) instead of holes. */
  ZERO_MARKERS: 2,
  /** REPLICA_WRITE/REPLICA_TRIM: part of a catch-up copy of the whole object (the primary holds its lock). */
  SYNC: 4,
  /**
   * With SYNC, on the last piece of a copied object: after applying the piece the target sets the
   * object's version to exactly the piece's version, so the object ends with the primary's content
   * and version even where the target had a higher one (an unacknowledged write of an old primary's
   * term). Earlier pieces only overwrite blocks: a copy cut short loses nothing the target held.
   * Version 0 on a whole-object trim drops the object (a copy the primary does not hold).
   */
  REPLACE: 8,
} as const;
const REQUEST_FLAGS_KNOWN = RequestFlag.NO_REPAIR | RequestFlag.ZERO_MARKERS | RequestFlag.SYNC | RequestFlag.REPLACE;

/** Deepest snapshot chain a request may carry; bounds the payload and the fall-through work. */
export const PARENTS_MAX = 256;
export const PARENT_ID_BYTES = 8;

function invalid(message: string): StorpoolError {
  return new StorpoolError('WIRE_ERR_FRAME_INVALID', message);
}

function writeU64(b: Buffer, at: number, value: number): void {
  b.writeUInt32LE(value % 0x1_0000_0000, at);
  b.writeUInt32LE(Math.floor(value / 0x1_0000_0000), at + 4);
}

/** u64 read as a JS number; values ≥ 2^53 are refused (no id, offset or version gets there). */
function readU64(b: Buffer, at: number, field: string): number {
  const high = b.readUInt32LE(at + 4);
  if (high >= 0x20_0000) throw invalid(`${field} exceeds 2^53`);
  return high * 0x1_0000_0000 + b.readUInt32LE(at);
}

/**
 * Request header, 72 bytes:
 *  0 u32 magic  4 u16 op  6 u16 flags  8 u32 requestId  12 u32 payloadBytes  16 u32 epoch
 * 20 u16 group  22 u16 parentCount  24 u64 volumeId  32 u32 objectIndex  36 u32 offset
 * 40 u32 length  44 u32 reserved(0)  48 u64 version  56 u64 placementId  64 u32 shard
 * 68 u32 crc32c(bytes 0..67)
 * Payload: WRITE / REPLICA_WRITE: data, one u32 CRC32C per 4 KiB chunk, then parents;
 * COMPARE_AND_WRITE: compare data + its CRCs, write data + its CRCs (each as for WRITE), parents;
 * READ, TRIM, WRITE_ZEROES, BLOCK_STATUS: parents (u64 each); HELLO: 32 bytes; others: none.
 */
export function encodeRequestHeader(h: RequestHeader, b: Buffer, at = 0): void {
  encodeRequestFields(h, h.requestId, h.payloadBytes, b, at);
}

/** A request header's fields but the two the connection assigns. */
export type RequestFields = Omit<RequestHeader, 'requestId' | 'payloadBytes'>;

/**
 * encodeRequestHeader with requestId and payloadBytes given apart: a connection fills them in
 * without building a new header object per request (an object spread per request cost the
 * client ~5% of its CPU in V8 map transitions).
 */
export function encodeRequestFields(h: RequestFields, requestId: number, payloadBytes: number, b: Buffer, at = 0): void {
  b.writeUInt32LE(REQUEST_MAGIC, at);
  b.writeUInt16LE(h.op, at + 4);
  b.writeUInt16LE(h.flags, at + 6);
  b.writeUInt32LE(requestId, at + 8);
  b.writeUInt32LE(payloadBytes, at + 12);
  b.writeUInt32LE(h.epoch, at + 16);
  b.writeUInt16LE(h.group, at + 20);
  b.writeUInt16LE(h.parentCount, at + 22);
  writeU64(b, at + 24, h.volumeId);
  b.writeUInt32LE(h.objectIndex, at + 32);
  b.writeUInt32LE(h.offset, at + 36);
  b.writeUInt32LE(h.length, at + 40);
  b.writeUInt32LE(0, at + 44);
  writeU64(b, at + 48, h.version);
  writeU64(b, at + 56, h.placementId);
  b.writeUInt32LE(h.shard, at + 64);
  b.writeUInt32LE(crc32c(b.subarray(at, at + 68)), at + 68);
}

/** Decodes and validates a request header: every field a peer could get wrong is checked here. */
export function decodeRequestHeader(b: Buffer, at = 0): RequestHeader {
  if (b.readUInt32LE(at) !== REQUEST_MAGIC) throw invalid('bad request magic');
  if (crc32c(b.subarray(at, at + 68)) !== b.readUInt32LE(at + 68)) throw invalid('request header CRC mismatch');
  const op = b.readUInt16LE(at + 4);
  if (!OP_CODES.has(op)) throw invalid(`unknown op ${op}`);
  const flags = b.readUInt16LE(at + 6);
  if ((flags & ~REQUEST_FLAGS_KNOWN) !== 0) throw invalid(`unknown request flags 0x${flags.toString(16)}`);
  if (b.readUInt32LE(at + 44) !== 0) throw invalid('reserved bytes are not zero');
  const h: RequestHeader = {
    op: op as OpCode,
    flags,
    requestId: b.readUInt32LE(at + 8),
    payloadBytes: b.readUInt32LE(at + 12),
    epoch: b.readUInt32LE(at + 16),
    group: b.readUInt16LE(at + 20),
    parentCount: b.readUInt16LE(at + 22),
    volumeId: readU64(b, at + 24, 'volumeId'),
    objectIndex: b.readUInt32LE(at + 32),
    offset: b.readUInt32LE(at + 36),
    length: b.readUInt32LE(at + 40),
    version: readU64(b, at + 48, 'version'),
    placementId: readU64(b, at + 56, 'placementId'),
    shard: b.readUInt32LE(at + 64),
  };
  if (h.payloadBytes > FRAME_PAYLOAD_BYTES_MAX) throw invalid(`payload of ${h.payloadBytes} bytes exceeds ${FRAME_PAYLOAD_BYTES_MAX}`);
  if (h.offset > OBJECT_BYTES || h.length > OBJECT_BYTES - h.offset) throw invalid(`range ${h.offset}+${h.length} outside the object`);
  if (h.parentCount > PARENTS_MAX) throw invalid(`${h.parentCount} parents exceed ${PARENTS_MAX}`);
  if (h.op === Op.SCRUB && !isScrubCommand(h.offset)) throw invalid(`unknown scrub command ${h.offset}`);
  if (h.parentCount > 0 && !opTakesParents(h.op)) throw invalid(`${opName(h.op)} takes no parents`);
  const parentBytes = h.parentCount * PARENT_ID_BYTES;
  if (opCarriesData(h.op)) {
    if (h.payloadBytes !== dataPayloadBytes(h.length) + parentBytes) throw invalid(`payload ${h.payloadBytes} != ${h.length} data bytes + CRCs + ${h.parentCount} parents`);
  } else if (h.op === Op.COMPARE_AND_WRITE) {
    if (h.length === 0 || h.length > COMPARE_AND_WRITE_BYTES_MAX) throw invalid(`COMPARE_AND_WRITE of ${h.length} bytes (1..${COMPARE_AND_WRITE_BYTES_MAX})`);
    if (h.payloadBytes !== 2 * dataPayloadBytes(h.length) + parentBytes) throw invalid(`payload ${h.payloadBytes} != 2 x (${h.length} data bytes + CRCs) + ${h.parentCount} parents`);
  } else if (h.op === Op.HELLO) {
    if (h.payloadBytes !== 32) throw invalid(`HELLO payload of ${h.payloadBytes} bytes`);
  } else if (h.op === Op.SHARD_SYNC || h.op === Op.SHARD_RELEASE) {
    if (h.payloadBytes === 0) throw invalid(`${opName(h.op)} needs a payload`);
  } else if (h.payloadBytes !== parentBytes) {
    throw invalid(`${opName(h.op)} payload of ${h.payloadBytes} bytes, expected ${h.parentCount} parents`);
  }
  return h;
}

/**
 * Reply header, 32 bytes:
 *  0 u32 magic  4 u16 status  6 u16 flags  8 u32 requestId  12 u32 payloadBytes
 * 16 u64 version  24 u32 epoch  28 u32 crc32c(bytes 0..27)
 */
export function encodeReplyHeader(h: ReplyHeader, b: Buffer, at = 0): void {
  b.writeUInt32LE(REPLY_MAGIC, at);
  b.writeUInt16LE(h.status, at + 4);
  b.writeUInt16LE(h.flags, at + 6);
  b.writeUInt32LE(h.requestId, at + 8);
  b.writeUInt32LE(h.payloadBytes, at + 12);
  writeU64(b, at + 16, h.version);
  b.writeUInt32LE(h.epoch, at + 24);
  b.writeUInt32LE(crc32c(b.subarray(at, at + 28)), at + 28);
}

export function decodeReplyHeader(b: Buffer, at = 0): ReplyHeader {
  if (b.readUInt32LE(at) !== REPLY_MAGIC) throw invalid('bad reply magic');
  if (crc32c(b.subarray(at, at + 28)) !== b.readUInt32LE(at + 28)) throw invalid('reply header CRC mismatch');
  const h: ReplyHeader = {
    status: b.readUInt16LE(at + 4),
    flags: b.readUInt16LE(at + 6),
    requestId: b.readUInt32LE(at + 8),
    payloadBytes: b.readUInt32LE(at + 12),
    version: readU64(b, at + 16, 'version'),
    epoch: b.readUInt32LE(at + 24),
  };
  if (h.flags !== 0) throw invalid(`unknown reply flags 0x${h.flags.toString(16)}`);
  // A reply may carry a stats document or an object listing, somewhat larger than data frames.
  if (h.payloadBytes > FRAME_PAYLOAD_BYTES_MAX) throw invalid(`payload of ${h.payloadBytes} bytes exceeds ${FRAME_PAYLOAD_BYTES_MAX}`);
  return h;
}

/** Data bytes plus one CRC32C per 4 KiB chunk. */
export function dataPayloadBytes(length: number): number {
  return length + chunkCount(length) * CRC_BYTES;
}

/** Encodes a whole request (header + payload parts) into one buffer. */
export function encodeRequest(h: Omit<RequestHeader, 'payloadBytes'>, payload: readonly Uint8Array[] = []): Buffer {
  let payloadBytes = 0;
  for (const part of payload) payloadBytes += part.length;
  const b = Buffer.allocUnsafe(REQUEST_HEADER_BYTES + payloadBytes);
  encodeRequestHeader({ ...h, payloadBytes }, b, 0);
  let at = REQUEST_HEADER_BYTES;
  for (const part of payload) {
    b.set(part, at);
    at += part.length;
  }
  return b;
}

export function encodeReply(h: Omit<ReplyHeader, 'payloadBytes'>, payload: readonly Uint8Array[] = []): Buffer {
  let payloadBytes = 0;
  for (const part of payload) payloadBytes += part.length;
  const b = Buffer.allocUnsafe(REPLY_HEADER_BYTES + payloadBytes);
  encodeReplyHeader({ ...h, payloadBytes }, b, 0);
  let at = REPLY_HEADER_BYTES;
  for (const part of payload) {
    b.set(part, at);
    at += part.length;
  }
  return b;
}

/** Splits a data payload into its data and its CRCs (views, no copy); `extraBytes` may follow (parents). */
export function splitDataPayload(payload: Buffer, length: number, extraBytes = 0): { data: Buffer; crcs: Uint32Array } {
  const n = chunkCount(length);
  if (payload.length !== length + n * CRC_BYTES + extraBytes) throw invalid(`data payload of ${payload.length} bytes does not hold ${length} bytes + CRCs`);
  const data = payload.subarray(0, length);
  return { data, crcs: readCrcs(payload, length, n) };
}

/** The two halves of a COMPARE_AND_WRITE payload (views, no copy); the parents follow them. */
export function splitCompareAndWritePayload(payload: Buffer, length: number, parentCount: number): { compare: Buffer; compareCrcs: Uint32Array; data: Buffer; crcs: Uint32Array } {
  const half = dataPayloadBytes(length);
  if (payload.length !== 2 * half + parentCount * PARENT_ID_BYTES) throw invalid(`COMPARE_AND_WRITE payload of ${payload.length} bytes does not hold 2 x ${length} bytes + CRCs + ${parentCount} parents`);
  const first = splitDataPayload(payload.subarray(0, half), length);
  const second = splitDataPayload(payload.subarray(half, 2 * half), length);
  return { compare: first.data, compareCrcs: first.crcs, data: second.data, crcs: second.crcs };
}

/** What a COMPARE_AND_WRITE did: wrote the data, or nothing because the range differed at `offset`. */
export type CompareAndWriteResult = { written: true } | { written: false; offset: number };

export const COMPARE_AND_WRITE_RESULT_BYTES = 8;
const CAW_WRITTEN = 0;
const CAW_MISCOMPARE = 1;

/**
 * COMPARE_AND_WRITE reply payload, 8 bytes: 0 u32 outcome (0 written, 1 miscompare)
 * 4 u32 byte offset of the first difference within the request's range (0 when written).
 */
export function encodeCompareAndWriteResult(r: CompareAndWriteResult): Buffer {
  const b = Buffer.alloc(COMPARE_AND_WRITE_RESULT_BYTES);
  b.writeUInt32LE(r.written ? CAW_WRITTEN : CAW_MISCOMPARE, 0);
  b.writeUInt32LE(r.written ? 0 : r.offset, 4);
  return b;
}

export function decodeCompareAndWriteResult(b: Buffer): CompareAndWriteResult {
  if (b.length !== COMPARE_AND_WRITE_RESULT_BYTES) throw invalid(`COMPARE_AND_WRITE result of ${b.length} bytes`);
  const outcome = b.readUInt32LE(0);
  const offset = b.readUInt32LE(4);
  if (outcome === CAW_WRITTEN) {
    if (offset !== 0) throw invalid('COMPARE_AND_WRITE written with a miscompare offset');
    return { written: true };
  }
  if (outcome !== CAW_MISCOMPARE) throw invalid(`unknown COMPARE_AND_WRITE outcome ${outcome}`);
  if (offset >= COMPARE_AND_WRITE_BYTES_MAX) throw invalid(`miscompare offset ${offset} beyond any COMPARE_AND_WRITE range`);
  return { written: false, offset };
}

function readCrcs(b: Buffer, at: number, n: number): Uint32Array {
  const crcs = new Uint32Array(n);
  for (let i = 0; i < n; i++) crcs[i] = b.readUInt32LE(at + i * CRC_BYTES);
  return crcs;
}

/** The ancestor data ids at the end of a request payload. */
export function decodeParents(payload: Buffer, parentCount: number): number[] {
  const out: number[] = [];
  const at = payload.length - parentCount * PARENT_ID_BYTES;
  if (at < 0) throw invalid('payload too short for its parents');
  for (let i = 0; i < parentCount; i++) out.push(readU64(payload, at + i * PARENT_ID_BYTES, 'parent id'));
  return out;
}

export function encodeParents(parents: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(parents.length * PARENT_ID_BYTES);
  parents.forEach((id, i) => writeU64(b, i * PARENT_ID_BYTES, id));
  return b;
}

export function encodeCrcs(crcs: Uint32Array): Buffer {
  const b = Buffer.allocUnsafe(crcs.length * CRC_BYTES);
  for (let i = 0; i < crcs.length; i++) b.writeUInt32LE(crcs[i]!, i * CRC_BYTES);
  return b;
}

const enum ReadState {
  HEADER,
  PAYLOAD,
}

/**
 * Turns a byte stream into frames; survives any split of the stream. The header is validated
 * (and the payload size bounded) before any payload is buffered. Throws WIRE_ERR_FRAME_INVALID on
 * the first bad frame: the caller must drop the connection, the stream cannot be resynchronised.
 */
class FrameDecoder<H extends { payloadBytes: number }> {
  #state = ReadState.HEADER;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #header: H | undefined;
  #failed = false;
  readonly #headerBytes: number;
  readonly #decodeHeader: (b: Buffer) => H;

  constructor(headerBytes: number, decodeHeader: (b: Buffer) => H) {
    this.#headerBytes = headerBytes;
    this.#decodeHeader = decodeHeader;
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  push(chunk: Buffer): { header: H; payload: Buffer }[] {
    if (this.#failed) throw invalid('decoder already failed');
    if (chunk.length > 0) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
    }
    const frames: { header: H; payload: Buffer }[] = [];
    try {
      for (;;) {
        if (this.#state === ReadState.HEADER) {
          if (this.#pendingBytes < this.#headerBytes) break;
          this.#header = this.#decodeHeader(this.#take(this.#headerBytes));
          this.#state = ReadState.PAYLOAD;
        }
        const header = this.#header!;
        if (this.#pendingBytes < header.payloadBytes) break;
        frames.push({ header, payload: this.#take(header.payloadBytes) });
        this.#header = undefined;
        this.#state = ReadState.HEADER;
      }
    } catch (err) {
      this.#failed = true;
      this.#pending = [];
      this.#pendingBytes = 0;
      throw err;
    }
    return frames;
  }

  /** Exactly n buffered bytes: a view when one chunk holds them, else one copy (each byte is copied at most once). */
  #take(n: number): Buffer {
    const first = this.#pending[0];
    if (n === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#pending.shift();
      else this.#pending[0] = first.subarray(n);
      this.#pendingBytes -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const part = this.#pending[0]!;
      const used = Math.min(part.length, n - filled);
      part.copy(out, filled, 0, used);
      filled += used;
      if (used === part.length) this.#pending.shift();
      else this.#pending[0] = part.subarray(used);
    }
    this.#pendingBytes -= n;
    return out;
  }
}

export class RequestDecoder extends FrameDecoder<RequestHeader> {
  constructor() {
    super(REQUEST_HEADER_BYTES, (b) => decodeRequestHeader(b));
  }
}

export class ReplyDecoder extends FrameDecoder<ReplyHeader> {
  constructor() {
    super(REPLY_HEADER_BYTES, (b) => decodeReplyHeader(b));
  }
}
