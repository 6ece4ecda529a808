/**
 * NBD wire format (NetworkBlockDevice doc/proto.md, fixed newstyle): constants and pure
 * encoders/decoders of every frame the server sends or receives, plus the client-side encoders
 * and reply decoders the tests and the fuzzer use. No I/O. All integers are big-endian.
 */
import assert from 'node:assert/strict';
import { StorpoolError } from '@storpool/errors';

// ---- magics ----
export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- handshake flags (server, 16 bits) and client flags (32 bits) ----
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const NBD_CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// ---- transmission flags (16 bits) ----
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- options ----
export const NbdOpt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

// ---- option reply types ----
const REP_ERR = 0x80000000;
export const NbdRep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR + 1,
  ERR_POLICY: REP_ERR + 2,
  ERR_INVALID: REP_ERR + 3,
  ERR_PLATFORM: REP_ERR + 4,
  ERR_TLS_REQD: REP_ERR + 5,
  ERR_UNKNOWN: REP_ERR + 6,
  ERR_SHUTDOWN: REP_ERR + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR + 8,
  ERR_TOO_BIG: REP_ERR + 9,
} as const;

// ---- NBD_REP_INFO types ----
export const NbdInfo = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

// ---- commands and command flags ----
export const NbdCmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7, RESIZE: 8 } as const;
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// ---- structured replies ----
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NbdReply = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;

// ---- base:allocation ----
export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---- errno values allowed on the wire ----
export const NbdErrno = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

// ---- sizes and limits ----
export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const EXPORT_NAME_REPLY_ZEROES_BYTES = 124;
/** Strings (export names, queries, messages) MUST be no longer than 4096 bytes (proto.md). */
export const STRING_BYTES_MAX = 4096;
/**
 * Largest option payload we buffer. The largest legitimate one is a meta-context query list;
 * 64 KiB holds 15 maximal strings. A client sending more is hostile and is disconnected.
 */
export const OPTION_DATA_BYTES_MAX = 64 * 1024;
/** Largest read or write payload: NBD_INFO_BLOCK_SIZE maximum (32 MiB, proto.md's usual cap). Bounds per-request memory. */
export const PAYLOAD_BYTES_MAX = 32 * 1024 * 1024;
/** Preferred I/O size reported in NBD_INFO_BLOCK_SIZE: our checksum and allocation unit. */
export const BLOCK_BYTES_PREFERRED = 4096;

assert(PAYLOAD_BYTES_MAX % BLOCK_BYTES_PREFERRED === 0);
assert(OPTION_DATA_BYTES_MAX > 3 * STRING_BYTES_MAX);

function invalid(message: string): StorpoolError {
  return new StorpoolError('WIRE_ERR_FRAME_INVALID', `nbd: ${message}`);
}

// =============================== handshake ===============================

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(GREETING_BYTES);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function decodeGreeting(b: Buffer): { handshakeFlags: number } {
  if (b.length < GREETING_BYTES) throw invalid('short greeting');
  if (b.readBigUInt64BE(0) !== NBD_MAGIC || b.readBigUInt64BE(8) !== NBD_IHAVEOPT) throw invalid('bad greeting magic');
  return { handshakeFlags: b.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.allocUnsafe(CLIENT_FLAGS_BYTES);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

// =============================== options ===============================

export interface OptionHeader {
  option: number;
  length: number;
}

/** Decodes an option header; bad magic or a length over the limit is a hostile client. */
export function decodeOptionHeader(b: Buffer, at = 0): OptionHeader {
  assert(b.length - at >= OPTION_HEADER_BYTES);
  if (b.readBigUInt64BE(at) !== NBD_IHAVEOPT) throw invalid('option without IHAVEOPT magic');
  const option = b.readUInt32BE(at + 8);
  const length = b.readUInt32BE(at + 12);
  if (length > OPTION_DATA_BYTES_MAX) throw invalid(`option ${option} carries ${length} bytes, more than ${OPTION_DATA_BYTES_MAX}`);
  return { option, length };
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_BYTES);
  return b;
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_BYTES);
  return b;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** Client side: one option reply at `at`, or undefined if incomplete. */
export function decodeOptionReply(b: Buffer, at = 0): { reply: OptionReply; bytes: number } | undefined {
  if (b.length - at < OPTION_REPLY_HEADER_BYTES) return undefined;
  if (b.readBigUInt64BE(at) !== NBD_OPTION_REPLY_MAGIC) throw invalid('bad option reply magic');
  const length = b.readUInt32BE(at + 16);
  if (b.length - at < OPTION_REPLY_HEADER_BYTES + length) return undefined;
  const data = b.subarray(at + OPTION_REPLY_HEADER_BYTES, at + OPTION_REPLY_HEADER_BYTES + length);
  return { reply: { option: b.readUInt32BE(at + 8), type: b.readUInt32BE(at + 12), data }, bytes: OPTION_REPLY_HEADER_BYTES + length };
}

/** NBD_OPT_EXPORT_NAME's reply: size, transmission flags and (unless NO_ZEROES) 124 zero bytes. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES_BYTES));
  b.writeBigUInt64BE(BigInt(sizeBytes), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** NBD_REP_SERVER data: name length, name, then optional human-readable details. */
export function encodeRepServer(name: string, details = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(details, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NbdInfo.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

export function encodeInfoString(type: typeof NbdInfo.NAME | typeof NbdInfo.DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NbdInfo.BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export function encodeMetaContextReply(contextId: number, name: string): Buffer {
  const s = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + s.length);
  b.writeUInt32BE(contextId >>> 0, 0);
  s.copy(b, 4);
  return b;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: export name and the NBD_INFO_* types requested. */
export interface InfoRequest {
  name: string;
  infos: number[];
}

/** Returns undefined when the option data is malformed (the caller answers NBD_REP_ERR_INVALID). */
export function decodeInfoRequest(data: Buffer): InfoRequest | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > STRING_BYTES_MAX || 4 + nameLength + 2 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { name, infos };
}

export function encodeInfoRequest(name: string, infos: readonly number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 4 + n.length + 2 + 2 * i));
  return b;
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function decodeMetaContextRequest(data: Buffer): MetaContextRequest | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > STRING_BYTES_MAX || 4 + nameLength + 4 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  let at = 4 + nameLength + 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    if (length > STRING_BYTES_MAX || at + 4 + length > data.length) return undefined;
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  return at === data.length ? { name, queries } : undefined;
}

export function encodeMetaContextRequest(name: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name, 'utf8');
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(n.length, 0);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(head, n, count);
  for (const q of queries) {
    const s = Buffer.from(q, 'utf8');
    const l = Buffer.allocUnsafe(4);
    l.writeUInt32BE(s.length, 0);
    parts.push(l, s);
  }
  return Buffer.concat(parts);
}

// =============================== transmission ===============================

export interface RequestHeader {
  flags: number;
  type: number;
  handle: bigint;
  offset: bigint;
  length: number;
}

/** Decodes a request header. Bad magic, or a WRITE payload over the limit, disconnects. */
export function decodeRequestHeader(b: Buffer, at = 0): RequestHeader {
  assert(b.length - at >= REQUEST_HEADER_BYTES);
  const magic = b.readUInt32BE(at);
  if (magic !== NBD_REQUEST_MAGIC) throw invalid(`bad request magic 0x${magic.toString(16)}`);
  const header = {
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    handle: b.readBigUInt64BE(at + 8),
    offset: b.readBigUInt64BE(at + 16),
    length: b.readUInt32BE(at + 24),
  };
  if (header.type === NbdCmd.WRITE && header.length > PAYLOAD_BYTES_MAX) throw invalid(`write of ${header.length} bytes exceeds the ${PAYLOAD_BYTES_MAX}-byte maximum`);
  return header;
}

export function encodeRequest(h: RequestHeader, data?: Buffer): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_BYTES + (data?.length ?? 0));
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.handle, 8);
  b.writeBigUInt64BE(h.offset, 16);
  b.writeUInt32BE(h.length >>> 0, 24);
  data?.copy(b, REQUEST_HEADER_BYTES);
  return b;
}

export function encodeSimpleReply(error: number, handle: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(handle, 8);
  return b;
}

export function encodeChunkHeader(flags: number, type: number, handle: bigint, length: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeChunkHeader(b, flags, type, handle, length);
  return b;
}

function writeChunkHeader(b: Buffer, flags: number, type: number, handle: bigint, length: number): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeUInt32BE(length >>> 0, 16);
}

export function encodeNoneChunk(handle: bigint): Buffer {
  return encodeChunkHeader(NBD_REPLY_FLAG_DONE, NbdReply.NONE, handle, 0);
}

/** Header and offset of an OFFSET_DATA chunk; the data follows as its own buffer (no copy). */
export function encodeOffsetDataHead(flags: number, handle: bigint, offset: number, dataLength: number): Buffer {
  assert(dataLength >= 1 && dataLength <= PAYLOAD_BYTES_MAX);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeChunkHeader(b, flags, NbdReply.OFFSET_DATA, handle, 8 + dataLength);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_BYTES);
  return b;
}

export function encodeOffsetHole(flags: number, handle: bigint, offset: number, holeLength: number): Buffer {
  assert(holeLength >= 1 && holeLength <= 0xffffffff);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  writeChunkHeader(b, flags, NbdReply.OFFSET_HOLE, handle, 12);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt32BE(holeLength, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return b;
}

export interface Extent {
  length: number;
  flags: number;
}

export function encodeBlockStatusChunk(flags: number, handle: bigint, contextId: number, extents: readonly Extent[]): Buffer {
  assert(extents.length >= 1);
  const length = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + length);
  writeChunkHeader(b, flags, NbdReply.BLOCK_STATUS, handle, length);
  b.writeUInt32BE(contextId >>> 0, STRUCTURED_REPLY_HEADER_BYTES);
  extents.forEach((e, i) => {
    assert(e.length >= 1 && e.length <= 0xffffffff);
    b.writeUInt32BE(e.length, STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * i);
    b.writeUInt32BE(e.flags >>> 0, STRUCTURED_REPLY_HEADER_BYTES + 8 + 8 * i);
  });
  return b;
}

/** NBD_REPLY_TYPE_ERROR with DONE: errno and a human-readable message (cut to fit a string). */
export function encodeErrorChunk(handle: bigint, errno: number, message: string): Buffer {
  assert(errno !== 0);
  let m = Buffer.from(message, 'utf8');
  if (m.length > STRING_BYTES_MAX) m = m.subarray(0, STRING_BYTES_MAX);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + m.length);
  writeChunkHeader(b, NBD_REPLY_FLAG_DONE, NbdReply.ERROR, handle, 6 + m.length);
  b.writeUInt32BE(errno >>> 0, STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt16BE(m.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  m.copy(b, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return b;
}

/** A reply frame as a client sees it (tests and fuzzers). */
export type ReplyMessage =
  | { kind: 'simple'; error: number; handle: bigint }
  | { kind: 'chunk'; flags: number; type: number; handle: bigint; payload: Buffer };

/**
 * Client side: decodes one reply at `at`. A simple reply to a read carries `readLength` data
 * bytes the caller must skip (simple replies are not self-describing). Undefined if incomplete.
 */
export function decodeReply(b: Buffer, at = 0): { message: ReplyMessage; bytes: number } | undefined {
  if (b.length - at < 4) return undefined;
  const magic = b.readUInt32BE(at);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    if (b.length - at < SIMPLE_REPLY_HEADER_BYTES) return undefined;
    return { message: { kind: 'simple', error: b.readUInt32BE(at + 4), handle: b.readBigUInt64BE(at + 8) }, bytes: SIMPLE_REPLY_HEADER_BYTES };
  }
  if (magic !== NBD_STRUCTURED_REPLY_MAGIC) throw invalid(`bad reply magic 0x${magic.toString(16)}`);
  if (b.length - at < STRUCTURED_REPLY_HEADER_BYTES) return undefined;
  const length = b.readUInt32BE(at + 16);
  if (b.length - at < STRUCTURED_REPLY_HEADER_BYTES + length) return undefined;
  const payload = b.subarray(at + STRUCTURED_REPLY_HEADER_BYTES, at + STRUCTURED_REPLY_HEADER_BYTES + length);
  return { message: { kind: 'chunk', flags: b.readUInt16BE(at + 4), type: b.readUInt16BE(at + 6), handle: b.readBigUInt64BE(at + 8), payload }, bytes: STRUCTURED_REPLY_HEADER_BYTES + length };
}
