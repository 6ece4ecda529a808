/**
 * One NBD connection as a pure state machine: bytes in, effects out, no sockets.
 *
 *   handshake --client flags--> options --EXPORT_NAME / GO--> transmission --DISC / EOF--> closed
 *        \------------------ bad magic, hostile lengths, ABORT -----------------------------/
 *
 * In transmission, every request that needs the backend becomes an `io` effect with an id; the
 * runner answers with `complete(id, result)`, in any order, and the reply goes out then (replies
 * out of order, many in flight). Decoding stops while `requestsInFlightMax` requests are in
 * flight, so the runner's backpressure (pausing the socket) bounds memory.
 *
 *   requests:  | replied | in flight (pending map, <= max) | buffered, undecoded (ByteQueue) |
 *
 * Malformed input never throws out of here: it becomes a `close` effect with the reason.
 */
import assert from 'node:assert/strict';
import { StorpoolError } from '@storpool/errors';
import { ByteQueue } from './internal/byte-queue.js';
import {
  BLOCK_BYTES_PREFERRED,
  CLIENT_FLAGS_BYTES,
  META_CONTEXT_BASE_ALLOCATION,
  NBD_CLIENT_FLAGS_KNOWN,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REPLY_FLAG_DONE,
  NbdCmd,
  NbdErrno,
  NbdInfo,
  NbdOpt,
  NbdRep,
  OPTION_HEADER_BYTES,
  PAYLOAD_BYTES_MAX,
  REQUEST_HEADER_BYTES,
  STRING_BYTES_MAX,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeOptionReply,
  encodeRepServer,
  encodeSimpleReply,
  type Extent,
  type RequestHeader,
} from './protocol.js';
import type { NbdCatalog, NbdEffect, NbdExportInfo, NbdIo, NbdIoResult } from './types.js';

export type NbdState = 'handshake' | 'options' | 'transmission' | 'closed';

/** Requests in flight per connection; bounds memory at depth x PAYLOAD_BYTES_MAX for writes. */
export const REQUESTS_IN_FLIGHT_MAX = 64;
/** One BLOCK_STATUS answers at most this much (the spec lets us answer less than asked). */
export const BLOCK_STATUS_BYTES_MAX = 1024 * 1024 * 1024;
/** Context id of base:allocation in SET_META_CONTEXT replies and BLOCK_STATUS chunks. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

export interface NbdSessionOptions {
  catalog: NbdCatalog;
  /** Export chosen by the empty name ("default export"); without it "" is unknown. */
  defaultExportName?: string;
  /** NBD_INFO_BLOCK_SIZE minimum: 1 (any alignment) or 512 (misaligned requests get EINVAL). */
  minimumBlockBytes?: 1 | 512;
  requestsInFlightMax?: number;
}

interface Pending {
  handle: bigint;
  type: number;
  offset: number;
  length: number;
  flags: number;
}

const HANDSHAKE_FLAGS = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;

/** Command flags each command accepts; FUA is accepted everywhere (clients are known to set it). */
const ALLOWED_FLAGS = new Map<number, number>([
  [NbdCmd.READ, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF],
  [NbdCmd.WRITE, NBD_CMD_FLAG_FUA],
  [NbdCmd.FLUSH, NBD_CMD_FLAG_FUA],
  [NbdCmd.TRIM, NBD_CMD_FLAG_FUA],
  [NbdCmd.CACHE, NBD_CMD_FLAG_FUA],
  [NbdCmd.WRITE_ZEROES, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO],
  [NbdCmd.BLOCK_STATUS, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE],
]);

const MODIFYING = new Set<number>([NbdCmd.WRITE, NbdCmd.TRIM, NbdCmd.WRITE_ZEROES]);

/** Closes the session: thrown inside the decoder, caught at the entry points. */
class CloseSession extends Error {
  readonly peerError: boolean;
  constructor(reason: string, peerError: boolean) {
    super(reason);
    this.peerError = peerError;
  }
}

export class NbdSession {
  readonly #o: Required<Omit<NbdSessionOptions, 'defaultExportName'>> & { defaultExportName: string | undefined };
  readonly #in = new ByteQueue();
  readonly #pending = new Map<number, Pending>();
  #state: NbdState = 'handshake';
  #started = false;
  #noZeroes = false;
  #structured = false;
  /** Export name the last SET_META_CONTEXT was for, if it selected base:allocation. */
  #metaExportName: string | undefined;
  #export: NbdExportInfo | undefined;
  #allocationContext = false;
  #draining = false;
  #nextId = 1;

  constructor(options: NbdSessionOptions) {
    const requestsInFlightMax = options.requestsInFlightMax ?? REQUESTS_IN_FLIGHT_MAX;
    assert(Number.isInteger(requestsInFlightMax) && requestsInFlightMax >= 1);
    this.#o = { catalog: options.catalog, defaultExportName: options.defaultExportName, minimumBlockBytes: options.minimumBlockBytes ?? 1, requestsInFlightMax };
  }

  get state(): NbdState {
    return this.#state;
  }

  get export(): NbdExportInfo | undefined {
    return this.#export;
  }

  get structuredReplies(): boolean {
    return this.#structured;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  /** True while decoding is stopped for backpressure: the runner should stop reading. */
  get saturated(): boolean {
    return this.#state === 'transmission' && this.#pending.size >= this.#o.requestsInFlightMax;
  }

  get bufferedBytes(): number {
    return this.#in.length;
  }

  /** The server speaks first: the fixed-newstyle greeting. */
  start(): NbdEffect[] {
    assert(!this.#started && this.#state === 'handshake');
    this.#started = true;
    return [{ type: 'send', data: [encodeGreeting(HANDSHAKE_FLAGS)] }, ...this.#guarded(() => [])];
  }

  onBytes(chunk: Buffer): NbdEffect[] {
    if (this.#state === 'closed') return [];
    if (this.#draining) return []; // a client MUST NOT send anything after NBD_CMD_DISC
    this.#in.push(chunk);
    if (!this.#started) return [];
    return this.#guarded(() => []);
  }

  /** The peer closed its side: nothing more can be replied to. */
  onEnd(): NbdEffect[] {
    if (this.#state === 'closed') return [];
    return this.#close('client closed the connection', false);
  }

  /** Result of an `io` effect; returns the reply and any requests decoded meanwhile. */
  complete(id: number, result: NbdIoResult): NbdEffect[] {
    const p = this.#pending.get(id);
    if (p === undefined || this.#state === 'closed') return [];
    assert(this.#state === 'transmission');
    this.#pending.delete(id);
    const out: NbdEffect[] = [];
    if (result.ok) this.#replySuccess(out, p, result);
    else this.#replyError(out, p, result.errno, result.message);
    if (this.#draining && this.#pending.size === 0) return [...out, ...this.#close('client sent NBD_CMD_DISC', false)];
    return this.#guarded(() => out);
  }

  // ----------------------------------------------------------------- decoding

  /** Runs `first`, then decodes buffered input; a CloseSession becomes a close effect. */
  #guarded(first: () => NbdEffect[]): NbdEffect[] {
    const out = first();
    try {
      this.#decode(out);
    } catch (err) {
      if (err instanceof CloseSession) out.push(...this.#close(err.message, err.peerError));
      else if (err instanceof StorpoolError && err.code === 'WIRE_ERR_FRAME_INVALID') out.push(...this.#close(err.message, true));
      else throw err;
    }
    return out;
  }

  #decode(out: NbdEffect[]): void {
    for (;;) {
      switch (this.#state) {
        case 'handshake':
          if (this.#in.length < CLIENT_FLAGS_BYTES) return;
          this.#onClientFlags(this.#in.take(CLIENT_FLAGS_BYTES).readUInt32BE(0));
          break;
        case 'options': {
          if (this.#in.length < OPTION_HEADER_BYTES) return;
          const h = decodeOptionHeader(this.#in.peek(OPTION_HEADER_BYTES));
          if (this.#in.length < OPTION_HEADER_BYTES + h.length) return;
          this.#in.consume(OPTION_HEADER_BYTES);
          this.#onOption(out, h.option, this.#in.take(h.length));
          break;
        }
        case 'transmission': {
          if (this.#draining || this.#pending.size >= this.#o.requestsInFlightMax) return;
          if (this.#in.length < REQUEST_HEADER_BYTES) return;
          const h = decodeRequestHeader(this.#in.peek(REQUEST_HEADER_BYTES));
          const payloadLength = h.type === NbdCmd.WRITE ? h.length : 0;
          if (this.#in.length < REQUEST_HEADER_BYTES + payloadLength) return;
          this.#in.consume(REQUEST_HEADER_BYTES);
          this.#onRequest(out, h, this.#in.take(payloadLength));
          break;
        }
        case 'closed':
          return;
        default:
          assertNever(this.#state);
      }
    }
  }

  #onClientFlags(flags: number): void {
    assert(this.#state === 'handshake');
    if ((flags & ~NBD_CLIENT_FLAGS_KNOWN) !== 0) throw new CloseSession(`unknown client flags 0x${flags.toString(16)}`, true);
    this.#noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
    this.#state = 'options';
  }

  // ----------------------------------------------------------------- options

  #onOption(out: NbdEffect[], option: number, data: Buffer): void {
    assert(this.#state === 'options');
    const reply = (type: number, payload?: Buffer): void => {
      out.push({ type: 'send', data: [encodeOptionReply(option, type, payload)] });
    };
    const error = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'));
    switch (option) {
      case NbdOpt.EXPORT_NAME:
        return this.#onExportName(out, data);
      case NbdOpt.ABORT:
        reply(NbdRep.ACK);
        throw new CloseSession('client sent NBD_OPT_ABORT', false);
      case NbdOpt.LIST:
        if (data.length !== 0) return error(NbdRep.ERR_INVALID, 'NBD_OPT_LIST takes no data');
        for (const e of this.#o.catalog.list()) reply(NbdRep.SERVER, encodeRepServer(e.name, e.description ?? ''));
        return reply(NbdRep.ACK);
      case NbdOpt.INFO:
      case NbdOpt.GO:
        return this.#onInfo(out, option, data, error);
      case NbdOpt.STRUCTURED_REPLY:
        if (data.length !== 0) return error(NbdRep.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.#structured = true;
        return reply(NbdRep.ACK);
      case NbdOpt.LIST_META_CONTEXT:
      case NbdOpt.SET_META_CONTEXT:
        return this.#onMetaContext(option, data, reply, error);
      default:
        return error(NbdRep.ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  #resolve(name: string): NbdExportInfo | undefined {
    if (name === '' && this.#o.defaultExportName !== undefined) return this.#o.catalog.get(this.#o.defaultExportName);
    return this.#o.catalog.get(name);
  }

  #onExportName(out: NbdEffect[], data: Buffer): void {
    if (data.length > STRING_BYTES_MAX) throw new CloseSession(`export name of ${data.length} bytes`, true);
    const name = data.toString('utf8');
    const e = this.#resolve(name);
    // NBD_OPT_EXPORT_NAME cannot be answered with an error: the spec says to hang up.
    if (e === undefined) throw new CloseSession(`NBD_OPT_EXPORT_NAME: no export ${JSON.stringify(name)}`, true);
    out.push({ type: 'send', data: [encodeExportNameReply(e.sizeBytes, this.#transmissionFlags(e), this.#noZeroes)] });
    this.#enterTransmission(out, e);
  }

  #onInfo(out: NbdEffect[], option: number, data: Buffer, error: (type: number, message: string) => void): void {
    const request = decodeInfoRequest(data);
    if (request === undefined) return error(NbdRep.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data');
    const e = this.#resolve(request.name);
    if (e === undefined) return error(NbdRep.ERR_UNKNOWN, `no export ${JSON.stringify(request.name)}`);
    const info = (payload: Buffer): void => {
      out.push({ type: 'send', data: [encodeOptionReply(option, NbdRep.INFO, payload)] });
    };
    info(encodeInfoExport(e.sizeBytes, this.#transmissionFlags(e)));
    if (request.infos.includes(NbdInfo.NAME)) info(encodeInfoString(NbdInfo.NAME, e.name));
    if (request.infos.includes(NbdInfo.DESCRIPTION) && e.description !== undefined) info(encodeInfoString(NbdInfo.DESCRIPTION, e.description));
    info(encodeInfoBlockSize(this.#o.minimumBlockBytes, BLOCK_BYTES_PREFERRED, PAYLOAD_BYTES_MAX));
    out.push({ type: 'send', data: [encodeOptionReply(option, NbdRep.ACK)] });
    if (option === NbdOpt.GO) this.#enterTransmission(out, e);
  }

  #onMetaContext(option: number, data: Buffer, reply: (type: number, payload?: Buffer) => void, error: (type: number, message: string) => void): void {
    if (!this.#structured) return error(NbdRep.ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
    const request = decodeMetaContextRequest(data);
    if (request === undefined) return error(NbdRep.ERR_INVALID, 'malformed meta context request');
    const e = this.#resolve(request.name);
    if (e === undefined) return error(NbdRep.ERR_UNKNOWN, `no export ${JSON.stringify(request.name)}`);
    const listing = option === NbdOpt.LIST_META_CONTEXT;
    // base:allocation is our only context. LIST with no query lists everything; "base:" is the namespace.
    const matches = (listing && request.queries.length === 0) || request.queries.some((q) => q === META_CONTEXT_BASE_ALLOCATION || (listing && q === 'base:'));
    if (matches) reply(NbdRep.META_CONTEXT, encodeMetaContextReply(listing ? 0 : BASE_ALLOCATION_CONTEXT_ID, META_CONTEXT_BASE_ALLOCATION));
    if (!listing) this.#metaExportName = matches ? e.name : undefined;
    reply(NbdRep.ACK);
  }

  #transmissionFlags(e: NbdExportInfo): number {
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
    // Read-only exports advertise no write-like commands (they would only get EPERM).
    if (e.readOnly) flags |= NBD_FLAG_READ_ONLY;
    else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (this.#structured) flags |= NBD_FLAG_SEND_DF;
    return flags;
  }

  #enterTransmission(out: NbdEffect[], e: NbdExportInfo): void {
    assert(this.#state === 'options');
    this.#export = e;
    this.#allocationContext = this.#structured && this.#metaExportName === e.name;
    this.#state = 'transmission';
    out.push({ type: 'export', export: e });
  }

  // ----------------------------------------------------------------- transmission

  #onRequest(out: NbdEffect[], h: RequestHeader, payload: Buffer): void {
    const e = this.#export;
    assert(this.#state === 'transmission' && e !== undefined);
    if (h.type === NbdCmd.DISC) {
      this.#draining = true;
      this.#in.clear();
      if (this.#pending.size === 0) throw new CloseSession('client sent NBD_CMD_DISC', false);
      return;
    }
    const p: Pending = { handle: h.handle, type: h.type, offset: 0, length: h.length, flags: h.flags };
    const refusal = this.#check(h, e);
    if (refusal !== undefined) return this.#replyError(out, p, refusal.errno, refusal.message);
    p.offset = Number(h.offset);
    if (h.type === NbdCmd.BLOCK_STATUS) p.length = Math.min(h.length, BLOCK_STATUS_BYTES_MAX);
    if (p.length === 0 && h.type !== NbdCmd.FLUSH) return this.#replySuccess(out, p, { data: Buffer.alloc(0) });
    const id = this.#nextId++;
    this.#pending.set(id, p);
    out.push({ type: 'io', io: this.#io(id, p, payload) });
  }

  /** Spec errors for a request, or undefined if it may go to the backend. */
  #check(h: RequestHeader, e: NbdExportInfo): { errno: number; message: string } | undefined {
    const allowed = ALLOWED_FLAGS.get(h.type);
    if (allowed === undefined) return { errno: NbdErrno.EINVAL, message: `unknown command ${h.type}` };
    if ((h.flags & ~allowed) !== 0) return { errno: NbdErrno.EINVAL, message: `flags 0x${h.flags.toString(16)} not valid for command ${h.type}` };
    if ((h.flags & NBD_CMD_FLAG_DF) !== 0 && !this.#structured) return { errno: NbdErrno.EINVAL, message: 'DF without structured replies' };
    if (MODIFYING.has(h.type) && e.readOnly) return { errno: NbdErrno.EPERM, message: `export ${e.name} is read-only` };
    if (h.type === NbdCmd.FLUSH) return undefined;
    if (h.offset + BigInt(h.length) > BigInt(e.sizeBytes)) {
      return { errno: MODIFYING.has(h.type) ? NbdErrno.ENOSPC : NbdErrno.EINVAL, message: `range ${h.offset}+${h.length} is beyond the end of the ${e.sizeBytes}-byte export` };
    }
    const min = BigInt(this.#o.minimumBlockBytes);
    if (min > 1n && (h.offset % min !== 0n || BigInt(h.length) % min !== 0n)) return { errno: NbdErrno.EINVAL, message: `range ${h.offset}+${h.length} is not aligned to ${min} bytes` };
    if (h.type === NbdCmd.READ && h.length > PAYLOAD_BYTES_MAX) return { errno: NbdErrno.EINVAL, message: `read of ${h.length} bytes exceeds the ${PAYLOAD_BYTES_MAX}-byte maximum` };
    if (h.type === NbdCmd.BLOCK_STATUS && !this.#allocationContext) return { errno: NbdErrno.EINVAL, message: 'no metadata context was negotiated' };
    if (h.type === NbdCmd.BLOCK_STATUS && h.length === 0) return { errno: NbdErrno.EINVAL, message: 'zero-length block status' };
    return undefined;
  }

  #io(id: number, p: Pending, payload: Buffer): NbdIo {
    const fua = (p.flags & NBD_CMD_FLAG_FUA) !== 0;
    const { offset, length } = p;
    switch (p.type) {
      case NbdCmd.READ:
        return { id, op: 'read', offset, length };
      case NbdCmd.WRITE:
        assert(payload.length === length);
        return { id, op: 'write', offset, length, data: payload, fua };
      case NbdCmd.TRIM:
        return { id, op: 'trim', offset, length, fua };
      case NbdCmd.WRITE_ZEROES:
        return { id, op: 'writeZeroes', offset, length, fua, noHole: (p.flags & NBD_CMD_FLAG_NO_HOLE) !== 0, fast: (p.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 };
      case NbdCmd.FLUSH:
        return { id, op: 'flush' };
      case NbdCmd.CACHE:
        return { id, op: 'cache', offset, length };
      case NbdCmd.BLOCK_STATUS:
        return { id, op: 'blockStatus', offset, length };
      default:
        throw new Error(`unreachable: command ${p.type} passed the checks`);
    }
  }

  #replySuccess(out: NbdEffect[], p: Pending, result: { data?: Buffer; extents?: Extent[] }): void {
    if (p.type === NbdCmd.READ) {
      const data = result.data ?? Buffer.alloc(0);
      if (data.length !== p.length) return this.#replyError(out, p, NbdErrno.EIO, `backend returned ${data.length} of ${p.length} bytes`);
      if (!this.#structured) return void out.push({ type: 'send', data: [encodeSimpleReply(0, p.handle), data] });
      if (p.length === 0) return void out.push({ type: 'send', data: [encodeNoneChunk(p.handle)] });
      // One content chunk for the whole read: DF is always honoured.
      return void out.push({ type: 'send', data: [encodeOffsetDataHead(NBD_REPLY_FLAG_DONE, p.handle, p.offset, p.length), data] });
    }
    if (p.type === NbdCmd.BLOCK_STATUS) {
      const extents = normalizeExtents(result.extents ?? [], p.length, (p.flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
      return void out.push({ type: 'send', data: [encodeBlockStatusChunk(NBD_REPLY_FLAG_DONE, p.handle, BASE_ALLOCATION_CONTEXT_ID, extents)] });
    }
    out.push({ type: 'send', data: [encodeSimpleReply(0, p.handle)] });
  }

  #replyError(out: NbdEffect[], p: Pending, errno: number, message: string): void {
    const code = errno === 0 ? NbdErrno.EIO : errno;
    // With structured replies, errors go in an error chunk (which carries the message).
    if (this.#structured) out.push({ type: 'send', data: [encodeErrorChunk(p.handle, code, message)] });
    else out.push({ type: 'send', data: [encodeSimpleReply(code, p.handle)] });
  }

  #close(reason: string, peerError: boolean): NbdEffect[] {
    if (this.#state === 'closed') return [];
    this.#state = 'closed';
    this.#pending.clear();
    this.#in.clear();
    return [{ type: 'close', reason, error: peerError }];
  }
}

/**
 * Extents as the spec wants them: consecutive from the request offset, each nonzero, merged
 * where flags repeat, the total no more than the request, at least one, one with REQ_ONE.
 */
export function normalizeExtents(extents: readonly Extent[], length: number, reqOne: boolean): Extent[] {
  assert(length >= 1);
  const out: Extent[] = [];
  let total = 0;
  for (const e of extents) {
    const n = Math.min(e.length, length - total);
    if (n <= 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === e.flags) last.length += n;
    else out.push({ length: n, flags: e.flags >>> 0 });
    total += n;
    if (total >= length) break;
  }
  if (out.length === 0) return [{ length, flags: 0 }];
  return reqOne ? out.slice(0, 1) : out;
}

function assertNever(value: never): never {
  throw new Error(`unexpected state ${String(value)}`);
}
