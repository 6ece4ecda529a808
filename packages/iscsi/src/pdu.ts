/**
 * iSCSI PDU codec (RFC 7143 §11): the 48-byte Basic Header Segment, Additional Header Segments,
 * the data segment padded to 4 bytes, and optional CRC32C header/data digests. Pure bytes, no I/O.
 *
 * Decoding is a byte machine (`PduDecoder.push(chunk)`): limits are enforced from the BHS before
 * anything is buffered, so a hostile length cannot make the target allocate.
 */
import { crc32c } from '@storpool/protocol';

export const BHS_BYTES = 48;
/** AHS length is a byte in 4-byte words. */
export const AHS_BYTES_MAX = 255 * 4;

/** Opcodes sent by initiators (RFC 7143 §11.2.1.2). */
export const IOp = {
  NOP_OUT: 0x00,
  SCSI_CMD: 0x01,
  TASK_MGMT: 0x02,
  LOGIN: 0x03,
  TEXT: 0x04,
  DATA_OUT: 0x05,
  LOGOUT: 0x06,
  SNACK: 0x10,
} as const;

/** Opcodes sent by targets. */
export const TOp = {
  NOP_IN: 0x20,
  SCSI_RESP: 0x21,
  TASK_MGMT_RESP: 0x22,
  LOGIN_RESP: 0x23,
  TEXT_RESP: 0x24,
  DATA_IN: 0x25,
  LOGOUT_RESP: 0x26,
  R2T: 0x31,
  ASYNC: 0x32,
  REJECT: 0x3f,
} as const;

export const RejectReason = {
  DATA_DIGEST: 0x02,
  SNACK: 0x03,
  PROTOCOL_ERROR: 0x04,
  COMMAND_NOT_SUPPORTED: 0x05,
  IMMEDIATE_REJECT: 0x06,
  TASK_IN_PROGRESS: 0x07,
  INVALID_PDU_FIELD: 0x09,
  LONG_OP: 0x0a,
  WAITING_FOR_LOGOUT: 0x0c,
} as const;

export const RESERVED_TAG = 0xffffffff;

/** One decoded PDU: the raw BHS plus its AHS and data segment (digests checked and stripped). */
export interface Pdu {
  readonly bhs: Buffer;
  readonly ahs: Buffer;
  readonly data: Buffer;
}

export class PduError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PduError';
  }
}

// ---- field access on a BHS
export const opcode = (p: Pdu | Buffer): number => (Buffer.isBuffer(p) ? p : p.bhs)[0]! & 0x3f;
export const immediate = (p: Pdu): boolean => (p.bhs[0]! & 0x40) !== 0;
export const finalBit = (p: Pdu): boolean => (p.bhs[1]! & 0x80) !== 0;
export const itt = (p: Pdu): number => p.bhs.readUInt32BE(16);
export const ttt = (p: Pdu): number => p.bhs.readUInt32BE(20);
export const cmdSN = (p: Pdu): number => p.bhs.readUInt32BE(24);
export const expStatSN = (p: Pdu): number => p.bhs.readUInt32BE(28);
export const dataSegmentLength = (bhs: Buffer): number => bhs.readUIntBE(5, 3);
export const lunField = (p: Pdu): Buffer => p.bhs.subarray(8, 16);

/** SAM-5 single level LUN (peripheral or flat addressing) of a LUN field; -1 if unsupported. */
export function decodeLun(field: Buffer): number {
  const method = field[0]! >> 6;
  if (field.readUInt32BE(4) !== 0 || field.readUInt16BE(2) !== 0) return -1;
  if (method === 0) return field[0] === 0 ? field[1]! : -1;
  if (method === 1) return ((field[0]! & 0x3f) << 8) | field[1]!;
  return -1;
}

export function encodeLun(lun: number): Buffer {
  const b = Buffer.alloc(8);
  if (lun < 256) b[1] = lun;
  else b.writeUInt16BE(0x4000 | lun, 0);
  return b;
}

export interface ScsiCommand {
  lun: Buffer;
  itt: number;
  read: boolean;
  write: boolean;
  final: boolean;
  attr: number;
  expectedLength: number;
  cmdSN: number;
  expStatSN: number;
  cdb: Buffer;
}

/** SCSI Command (§11.3), with an extended CDB AHS (type 1) appended to the 16 bytes of the BHS. */
export function decodeScsiCommand(p: Pdu): ScsiCommand {
  let cdb = p.bhs.subarray(32, 48);
  for (let at = 0; at + 4 <= p.ahs.length; ) {
    const len = p.ahs.readUInt16BE(at);
    const type = p.ahs[at + 2]!;
    if (at + 3 + len > p.ahs.length) throw new PduError('AHS overruns its segment');
    if (type === 1) cdb = Buffer.concat([cdb, p.ahs.subarray(at + 4, at + 3 + len)]);
    at += (3 + len + 3) & ~3;
  }
  const f = p.bhs[1]!;
  return {
    lun: Buffer.from(lunField(p)), itt: itt(p), final: (f & 0x80) !== 0, read: (f & 0x40) !== 0, write: (f & 0x20) !== 0, attr: f & 7,
    expectedLength: p.bhs.readUInt32BE(20), cmdSN: cmdSN(p), expStatSN: expStatSN(p), cdb,
  };
}

export interface LoginRequest {
  transit: boolean;
  cont: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionMin: number;
  isid: Buffer;
  tsih: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

export function decodeLogin(p: Pdu): LoginRequest {
  const b = p.bhs;
  return {
    transit: (b[1]! & 0x80) !== 0, cont: (b[1]! & 0x40) !== 0, csg: (b[1]! >> 2) & 3, nsg: b[1]! & 3, versionMax: b[2]!, versionMin: b[3]!,
    isid: Buffer.from(b.subarray(8, 14)), tsih: b.readUInt16BE(14), itt: b.readUInt32BE(16), cid: b.readUInt16BE(20), cmdSN: b.readUInt32BE(24), expStatSN: b.readUInt32BE(28),
  };
}

// ---- encoding target PDUs
/** Sequence numbers every target response carries at 24/28/32. */
export interface Sns {
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

function header(op: number, flags: number, dataLength: number): Buffer {
  if (dataLength > 0xffffff) throw new PduError(`data segment of ${dataLength} bytes is too long`);
  const b = Buffer.alloc(BHS_BYTES);
  b[0] = op;
  b[1] = flags;
  b.writeUIntBE(dataLength, 5, 3);
  return b;
}

function sns(b: Buffer, s: Sns): void {
  b.writeUInt32BE(s.statSN >>> 0, 24);
  b.writeUInt32BE(s.expCmdSN >>> 0, 28);
  b.writeUInt32BE(s.maxCmdSN >>> 0, 32);
}

/** An outgoing PDU before digests and padding are added by `frame`. */
export interface OutPdu {
  bhs: Buffer;
  data?: Buffer | undefined;
}

export function loginResponse(o: { transit: boolean; csg: number; nsg: number; versionActive: number; isid: Buffer; tsih: number; itt: number; statusClass: number; statusDetail: number; data: Buffer } & Sns): OutPdu {
  const b = header(TOp.LOGIN_RESP, (o.transit ? 0x80 : 0) | (o.csg << 2) | (o.transit ? o.nsg : 0), o.data.length);
  b[2] = 0;
  b[3] = o.versionActive;
  o.isid.copy(b, 8, 0, 6);
  b.writeUInt16BE(o.tsih, 14);
  b.writeUInt32BE(o.itt >>> 0, 16);
  sns(b, o);
  b[36] = o.statusClass;
  b[37] = o.statusDetail;
  return { bhs: b, data: o.data };
}

export function textResponse(o: { final: boolean; cont: boolean; lun: Buffer; itt: number; ttt: number; data: Buffer } & Sns): OutPdu {
  const b = header(TOp.TEXT_RESP, (o.final ? 0x80 : 0) | (o.cont ? 0x40 : 0), o.data.length);
  o.lun.copy(b, 8);
  b.writeUInt32BE(o.itt >>> 0, 16);
  b.writeUInt32BE(o.ttt >>> 0, 20);
  sns(b, o);
  return { bhs: b, data: o.data };
}

export function scsiResponse(o: { itt: number; status: number; response?: number; overflow?: number; underflow?: number; sense?: Buffer; expDataSN?: number } & Sns): OutPdu {
  const data = o.sense === undefined ? undefined : Buffer.concat([Buffer.from([o.sense.length >> 8, o.sense.length & 0xff]), o.sense]);
  const residualFlag = o.overflow !== undefined && o.overflow > 0 ? 0x04 : o.underflow !== undefined && o.underflow > 0 ? 0x02 : 0;
  const b = header(TOp.SCSI_RESP, 0x80 | residualFlag, data?.length ?? 0);
  b[2] = o.response ?? 0;
  b[3] = o.status;
  b.writeUInt32BE(o.itt >>> 0, 16);
  sns(b, o);
  b.writeUInt32BE(o.expDataSN ?? 0, 36);
  b.writeUInt32BE(residualFlag === 0x04 ? o.overflow! : residualFlag === 0x02 ? o.underflow! : 0, 44);
  return { bhs: b, data };
}

/** Data-In; with `status` set it carries the command's status (S bit) and takes a StatSN. */
export function dataIn(o: { final: boolean; lun: Buffer; itt: number; dataSN: number; offset: number; data: Buffer; status?: number; overflow?: number; underflow?: number } & Sns): OutPdu {
  const hasStatus = o.status !== undefined;
  const residualFlag = !hasStatus ? 0 : o.overflow !== undefined && o.overflow > 0 ? 0x04 : o.underflow !== undefined && o.underflow > 0 ? 0x02 : 0;
  const b = header(TOp.DATA_IN, (o.final ? 0x80 : 0) | residualFlag | (hasStatus ? 0x01 : 0), o.data.length);
  if (hasStatus) b[3] = o.status!;
  o.lun.copy(b, 8);
  b.writeUInt32BE(o.itt >>> 0, 16);
  b.writeUInt32BE(RESERVED_TAG, 20);
  sns(b, hasStatus ? o : { ...o, statSN: 0 });
  b.writeUInt32BE(o.dataSN >>> 0, 36);
  b.writeUInt32BE(o.offset >>> 0, 40);
  b.writeUInt32BE(residualFlag === 0x04 ? o.overflow! : residualFlag === 0x02 ? o.underflow! : 0, 44);
  return { bhs: b, data: o.data };
}

export function r2t(o: { lun: Buffer; itt: number; ttt: number; r2tSN: number; offset: number; length: number } & Sns): OutPdu {
  const b = header(TOp.R2T, 0x80, 0);
  o.lun.copy(b, 8);
  b.writeUInt32BE(o.itt >>> 0, 16);
  b.writeUInt32BE(o.ttt >>> 0, 20);
  sns(b, o);
  b.writeUInt32BE(o.r2tSN >>> 0, 36);
  b.writeUInt32BE(o.offset >>> 0, 40);
  b.writeUInt32BE(o.length >>> 0, 44);
  return { bhs: b };
}

export function nopIn(o: { lun: Buffer; itt: number; ttt: number; data?: Buffer } & Sns): OutPdu {
  const b = header(TOp.NOP_IN, 0x80, o.data?.length ?? 0);
  o.lun.copy(b, 8);
  b.writeUInt32BE(o.itt >>> 0, 16);
  b.writeUInt32BE(o.ttt >>> 0, 20);
  sns(b, o);
  return { bhs: b, data: o.data };
}

export function taskMgmtResponse(o: { itt: number; response: number } & Sns): OutPdu {
  const b = header(TOp.TASK_MGMT_RESP, 0x80, 0);
  b[2] = o.response;
  b.writeUInt32BE(o.itt >>> 0, 16);
  sns(b, o);
  return { bhs: b };
}

export function logoutResponse(o: { itt: number; response: number } & Sns): OutPdu {
  const b = header(TOp.LOGOUT_RESP, 0x80, 0);
  b[2] = o.response;
  b.writeUInt32BE(o.itt >>> 0, 16);
  sns(b, o);
  return { bhs: b };
}

/** Reject (§11.17): the data segment is the offending BHS. */
export function reject(o: { reason: number; rejected: Buffer } & Sns): OutPdu {
  const b = header(TOp.REJECT, 0x80, BHS_BYTES);
  b[2] = o.reason;
  b.writeUInt32BE(RESERVED_TAG, 16);
  sns(b, o);
  return { bhs: b, data: Buffer.from(o.rejected.subarray(0, BHS_BYTES)) };
}

/** Async Message (§11.9): event 1 asks the initiator to log out; 3 says the session is being dropped. */
export function asyncMessage(o: { event: number; param1?: number; param2?: number; param3?: number } & Sns): OutPdu {
  const b = header(TOp.ASYNC, 0x80, 0);
  b.writeUInt32BE(RESERVED_TAG, 16);
  sns(b, o);
  b[36] = o.event;
  b.writeUInt16BE(o.param1 ?? 0, 38);
  b.writeUInt16BE(o.param2 ?? 0, 40);
  b.writeUInt16BE(o.param3 ?? 0, 42);
  return { bhs: b };
}

const PAD = Buffer.alloc(4);

/** The wire bytes of one PDU: BHS [+ header digest] [+ data + padding [+ data digest]]. */
export function frame(p: OutPdu, digests: { header: boolean; data: boolean }): Buffer[] {
  const out: Buffer[] = [p.bhs];
  if (digests.header) out.push(crcBytes(crc32c(p.bhs)));
  const data = p.data;
  if (data !== undefined && data.length > 0) {
    out.push(data);
    const pad = (4 - (data.length & 3)) & 3;
    if (pad > 0) out.push(PAD.subarray(0, pad));
    if (digests.data) {
      let crc = crc32c(data);
      if (pad > 0) crc = crc32c(PAD.subarray(0, pad), crc);
      out.push(crcBytes(crc));
    }
  }
  return out;
}

/** iSCSI digests are CRC32C sent least significant byte first (RFC 7143 §13.1, the examples of B.4). */
function crcBytes(crc: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(crc >>> 0, 0);
  return b;
}

export interface DecoderLimits {
  /** Our MaxRecvDataSegmentLength: longer data segments are a protocol error. */
  maxDataSegment: number;
}

/**
 * Incremental PDU decoder. Digests are switched on after login (`setDigests`) for the PDUs that
 * follow. A bad header digest or an oversized segment throws PduError (the connection must go:
 * at ErrorRecoveryLevel 0 framing cannot be trusted afterwards); a bad data digest is reported
 * on the PDU so that the session can Reject it (§7.8).
 */
export class PduDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #headerDigest = false;
  #dataDigest = false;
  limits: DecoderLimits;

  constructor(limits: DecoderLimits) {
    this.limits = limits;
  }

  setDigests(header: boolean, data: boolean): void {
    this.#headerDigest = header;
    this.#dataDigest = data;
  }

  get buffered(): number {
    return this.#buffered;
  }

  push(chunk: Buffer): (Pdu & { dataDigestError?: boolean })[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: (Pdu & { dataDigestError?: boolean })[] = [];
    for (;;) {
      if (this.#buffered < BHS_BYTES) break;
      const bhs = this.#peek(BHS_BYTES);
      const ahsLen = bhs[4]! * 4;
      const dsl = dataSegmentLength(bhs);
      if (dsl > this.limits.maxDataSegment) throw new PduError(`data segment of ${dsl} bytes exceeds MaxRecvDataSegmentLength ${this.limits.maxDataSegment}`);
      const hd = this.#headerDigest ? 4 : 0;
      const padded = (dsl + 3) & ~3;
      const dd = this.#dataDigest && dsl > 0 ? 4 : 0;
      const total = BHS_BYTES + ahsLen + hd + padded + dd;
      if (this.#buffered < total) break;
      const all = this.#take(total);
      const head = all.subarray(0, BHS_BYTES + ahsLen);
      if (hd > 0) {
        const want = all.readUInt32LE(BHS_BYTES + ahsLen);
        if ((crc32c(head) >>> 0) !== want) throw new PduError('header digest mismatch');
      }
      const dataStart = BHS_BYTES + ahsLen + hd;
      const data = all.subarray(dataStart, dataStart + dsl);
      let dataDigestError = false;
      if (dd > 0) {
        const want = all.readUInt32LE(dataStart + padded);
        dataDigestError = (crc32c(all.subarray(dataStart, dataStart + padded)) >>> 0) !== want;
      }
      const pdu = { bhs: all.subarray(0, BHS_BYTES), ahs: all.subarray(BHS_BYTES, BHS_BYTES + ahsLen), data };
      out.push(dataDigestError ? { ...pdu, dataDigestError } : pdu);
    }
    return out;
  }

  #peek(n: number): Buffer {
    if (this.#chunks[0]!.length >= n) return this.#chunks[0]!.subarray(0, n);
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all];
    return all.subarray(0, n);
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.#chunks);
      out = all.subarray(0, n);
      this.#chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.#buffered -= n;
    return out;
  }
}

// ---- text keys (§6.1): key=value pairs separated by NUL
export const TEXT_KEY_BYTES_MAX = 63;
export const TEXT_VALUE_BYTES_MAX = 8192;
/** CHAP values may be long (a 1024-byte challenge is 2050 hex characters). */
const TEXT_PAIRS_MAX = 256;

export function parseTextKeys(data: Buffer): [string, string][] {
  const out: [string, string][] = [];
  const text = data.toString('utf8');
  for (const item of text.split('\0')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new PduError(`text item ${JSON.stringify(item.slice(0, 64))} has no key=value form`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (key.length > TEXT_KEY_BYTES_MAX) throw new PduError(`text key of ${key.length} bytes is too long`);
    if (!/^[A-Za-z0-9.\-+@_#]+$/.test(key)) throw new PduError(`text key ${JSON.stringify(key.slice(0, 64))} has invalid characters`);
    if (value.length > TEXT_VALUE_BYTES_MAX) throw new PduError(`value of ${key} is too long`);
    out.push([key, value]);
    if (out.length > TEXT_PAIRS_MAX) throw new PduError('too many text keys');
  }
  return out;
}

export function encodeTextKeys(pairs: readonly (readonly [string, string])[]): Buffer {
  return Buffer.from(pairs.map(([k, v]) => `${k}=${v}\0`).join(''), 'utf8');
}
