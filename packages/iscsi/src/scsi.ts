/**
 * The SCSI block command set (SBC-3/SPC-4 subset) of one LUN over a LunBackend. `execute` takes
 * a CDB and the data the initiator sent, and returns status, sense and data for the initiator.
 * 512-byte logical blocks on 4 KiB physical blocks (the store's CRC granule).
 */
import { createHash } from 'node:crypto';
import { Asc, SenseKey, Status, check, conflict, good, invalidCdb, invalidParam, outOfRange, type ScsiResult } from './sense.js';
import { conflicts, legacyReserve, prIn, prOut, takeUa } from './reservations.js';
import type { LunBackend, ReservationStore } from './types.js';

export const BLOCK = 512;
const PHYS_EXP = 3; // 4 KiB physical blocks
/** Largest transfer per command, in blocks (16 MiB). */
export const MAX_TRANSFER_BLOCKS = 32768;
/** MAXIMUM COMPARE AND WRITE LENGTH (the CDB's one-byte count); a storpool backend checks it fits one object. */
export const MAX_CAW_BLOCKS = 255;
const MAX_UNMAP_BLOCKS = 0xffffffff;
const MAX_UNMAP_DESCRIPTORS = 256;
/** ORWRITE chunks retried after a concurrent change (each retry reads afresh; OR is idempotent). */
const ORWRITE_RETRIES = 64;
const MAX_WRITE_SAME_BLOCKS = 32768; // = MAX_TRANSFER_BLOCKS: initiators check WRITE SAME results with one READ
const VENDOR = 'STORPOOL';
const PRODUCT = 'iSCSI volume';
const REVISION = '0001';

export interface LunContext {
  backend: LunBackend;
  /** Key of this LUN's reservations (the volume's globalId). */
  lunId: string;
  lunNumbers: readonly number[];
  targetName: string;
  /** I_T nexus of the issuing session. */
  nexus: string;
  /** Relative target port identifier (the portal group tag). */
  relativePort: number;
  reservations: ReservationStore;
  /** Serializes COMPARE AND WRITE where the backend has no atomic one. */
  cawLock: { run<T>(fn: () => Promise<T>): Promise<T> };
  /** Changeable mode state shared by the LUN's sessions. */
  mode: { dSense: boolean; swp: boolean };
  /** PREVENT ALLOW MEDIUM REMOVAL state (reported; a disk has no medium to keep). */
  prevent: Set<string>;
}

/** A tiny promise queue: one holder at a time. */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#tail.then(fn, fn);
    this.#tail = p.catch(() => undefined);
    return p;
  }
}

/** NAA IEEE Registered Extended (type 6) id from the volume id: stable across portals and restarts. */
export function naaId(id: string): Buffer {
  const h = createHash('sha256').update(`storpool:${id}`).digest();
  const b = Buffer.alloc(16);
  // 6 | OUI 0x001405 (Linux-IO's, as several open targets use) | 100 bits of the hash
  b[0] = 0x60;
  b[1] = 0x01;
  b[2] = 0x40;
  b[3] = 0x50 | (h[0]! & 0x0f);
  h.copy(b, 4, 1, 13);
  return b;
}

/** Data-out bytes a CDB needs (what the session collects before `execute`); 0 when none. */
export function dataOutLength(cdb: Buffer): number | undefined {
  const op = cdb[0]!;
  switch (op) {
    case 0x0a: return (cdb[4] === 0 ? 256 : cdb[4]!) * BLOCK;
    case 0x2a: case 0x2e: return cdb.readUInt16BE(7) * BLOCK;
    case 0xaa: case 0xae: return cdb.readUInt32BE(6) * BLOCK;
    case 0x8a: case 0x8e: return cdb.readUInt32BE(10) * BLOCK;
    case 0x2f: return (cdb[1]! & 0x06) !== 0 ? cdb.readUInt16BE(7) * BLOCK : 0;
    case 0xaf: return (cdb[1]! & 0x06) !== 0 ? cdb.readUInt32BE(6) * BLOCK : 0;
    case 0x8f: return (cdb[1]! & 0x06) !== 0 ? cdb.readUInt32BE(10) * BLOCK : 0;
    case 0x41: case 0x93: return (cdb[1]! & 0x01) !== 0 ? 0 : BLOCK;
    case 0x89: return cdb[13]! * 2 * BLOCK;
    case 0x8b: return cdb.readUInt32BE(10) * BLOCK;
    case 0x42: return cdb.readUInt16BE(7);
    case 0x5f: return cdb.readUInt32BE(5);
    case 0x15: return cdb[4]!;
    case 0x55: return cdb.readUInt16BE(7);
    default: return undefined;
  }
}

/**
 * The ALLOCATION LENGTH of a CDB whose command returns parameter data (SPC-4 §4.2.5.6): the most
 * the command transfers, whatever it has. Undefined for commands without one.
 */
export function allocationLength(cdb: Buffer): number | undefined {
  if (cdb.length < cdbLength(cdb[0]!)) return undefined;
  switch (cdb[0]!) {
    case 0x03: case 0x1a: return cdb[4]!; // REQUEST SENSE, MODE SENSE(6)
    case 0x12: return cdb.readUInt16BE(3); // INQUIRY
    case 0x5a: case 0x5e: return cdb.readUInt16BE(7); // MODE SENSE(10), PERSISTENT RESERVE IN
    case 0xa0: case 0xa3: return cdb.readUInt32BE(6); // REPORT LUNS, MAINTENANCE IN
    case 0x9e: return cdb.readUInt32BE(10); // SERVICE ACTION IN(16)
    default: return undefined;
  }
}

const CDB_LENGTH: Record<number, number> = { 0: 6, 1: 10, 2: 10, 4: 16, 5: 12 };
export function cdbLength(op: number): number {
  return CDB_LENGTH[op >> 5] ?? 16;
}

/** Commands answered even while a unit attention is pending (SAM-5 §5.14). */
const UA_EXEMPT = new Set([0x12, 0xa0, 0x03]);

export interface SupportedOp { op: number; sa?: number; len: number }
const SUPPORTED: SupportedOp[] = [
  { op: 0x00, len: 6 }, { op: 0x03, len: 6 }, { op: 0x08, len: 6 }, { op: 0x0a, len: 6 }, { op: 0x12, len: 6 }, { op: 0x15, len: 6 },
  { op: 0x16, len: 6 }, { op: 0x17, len: 6 }, { op: 0x1a, len: 6 }, { op: 0x1b, len: 6 }, { op: 0x1e, len: 6 }, { op: 0x25, len: 10 },
  { op: 0x28, len: 10 }, { op: 0x2a, len: 10 }, { op: 0x2e, len: 10 }, { op: 0x2f, len: 10 }, { op: 0x34, len: 10 }, { op: 0x35, len: 10 },
  { op: 0x41, len: 10 }, { op: 0x42, len: 10 }, { op: 0x55, len: 10 }, { op: 0x5a, len: 10 },
  { op: 0x5e, sa: 0, len: 10 }, { op: 0x5e, sa: 1, len: 10 }, { op: 0x5e, sa: 2, len: 10 }, { op: 0x5e, sa: 3, len: 10 },
  { op: 0x5f, sa: 0, len: 10 }, { op: 0x5f, sa: 1, len: 10 }, { op: 0x5f, sa: 2, len: 10 }, { op: 0x5f, sa: 3, len: 10 },
  { op: 0x5f, sa: 4, len: 10 }, { op: 0x5f, sa: 5, len: 10 }, { op: 0x5f, sa: 6, len: 10 },
  { op: 0x88, len: 16 }, { op: 0x89, len: 16 }, { op: 0x8a, len: 16 }, { op: 0x8b, len: 16 }, { op: 0x8e, len: 16 }, { op: 0x8f, len: 16 }, { op: 0x90, len: 16 },
  { op: 0x91, len: 16 }, { op: 0x93, len: 16 }, { op: 0x9e, sa: 0x10, len: 16 }, { op: 0x9e, sa: 0x12, len: 16 }, { op: 0xa0, len: 12 },
  { op: 0xa3, sa: 0x0c, len: 12 }, { op: 0xa3, sa: 0x0d, len: 12 }, { op: 0xa8, len: 12 }, { op: 0xaa, len: 12 }, { op: 0xae, len: 12 }, { op: 0xaf, len: 12 },
];

export class ScsiLun {
  /** LU resets this session has been told about (undefined until its first command). */
  #resetsSeen: number | undefined;

  constructor(readonly ctx: LunContext) {}

  /** A LOGICAL UNIT RESET: every session of the LU, this one too, gets a unit attention (SAM-5 §6.3.3). */
  async reset(): Promise<void> {
    const c = this.ctx;
    const n = await c.reservations.update(c.lunId, (s) => {
      const next = (s.resets ?? 0) + 1;
      return { state: { ...s, resets: next }, result: next };
    });
    this.#resetsSeen ??= n - 1;
  }

  get blocks(): number {
    return Math.floor(this.ctx.backend.sizeBytes / BLOCK);
  }

  async execute(cdb: Buffer, dataOut: Buffer): Promise<ScsiResult> {
    const op = cdb[0]!;
    if (cdb.length < cdbLength(op)) return invalidCdb(0);
    const c = this.ctx;
    // NACA / link bits of the control byte are not supported
    if ((cdb[cdbLength(op) - 1]! & 0x05) !== 0) return invalidCdb(cdbLength(op) - 1);
    const pr = c.reservations.cached?.(c.lunId) ?? await c.reservations.get(c.lunId, false);
    const resets = pr.resets ?? 0;
    if (this.#resetsSeen === undefined || this.#resetsSeen > resets) this.#resetsSeen = resets;
    if (!UA_EXEMPT.has(op) && resets > this.#resetsSeen) {
      this.#resetsSeen = resets;
      return check(SenseKey.UNIT_ATTENTION, Asc.BUS_DEVICE_RESET);
    }
    if (!UA_EXEMPT.has(op) && (pr.ua?.[c.nexus]?.length ?? 0) > 0) {
      const ua = await c.reservations.update(c.lunId, (s) => takeUa(s, c.nexus));
      if (ua !== undefined) return check(SenseKey.UNIT_ATTENTION, ua);
    }
    if (conflicts(pr, c.nexus, cdb)) return conflict();
    try {
      return await this.#dispatch(op, cdb, dataOut);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'STORE_ERR_OUT_OF_RANGE') return outOfRange();
      if (code === 'STORE_ERR_NO_SPACE') return check(SenseKey.DATA_PROTECT, 0x2707);
      const asc = op === 0x08 || op === 0x28 || op === 0xa8 || op === 0x88 ? Asc.UNRECOVERED_READ_ERROR : Asc.WRITE_ERROR;
      return check(SenseKey.MEDIUM_ERROR, asc);
    }
  }

  #dispatch(op: number, cdb: Buffer, d: Buffer): Promise<ScsiResult> | ScsiResult {
    switch (op) {
      case 0x00: return good();
      case 0x03: return this.#requestSense(cdb);
      case 0x12: return this.#inquiry(cdb);
      case 0xa0: return this.#reportLuns(cdb);
      case 0x25: return this.#readCapacity10(cdb);
      case 0x9e:
        if ((cdb[1]! & 0x1f) === 0x10) return this.#readCapacity16(cdb);
        if ((cdb[1]! & 0x1f) === 0x12) return this.#getLbaStatus(cdb);
        return invalidCdb(1, 4);
      case 0x08: {
        const lba = cdb.readUIntBE(1, 3) & 0x1fffff;
        return this.#read(lba, cdb[4] === 0 ? 256 : cdb[4]!);
      }
      case 0x28: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt16BE(7), d, 'read');
      case 0xa8: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt32BE(6), d, 'read');
      case 0x88: return this.#rw(cdb, readU64(cdb, 2), cdb.readUInt32BE(10), d, 'read');
      case 0x0a: {
        const lba = cdb.readUIntBE(1, 3) & 0x1fffff;
        return this.#write(lba, cdb[4] === 0 ? 256 : cdb[4]!, d);
      }
      case 0x2a: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt16BE(7), d, 'write');
      case 0xaa: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt32BE(6), d, 'write');
      case 0x8a: return this.#rw(cdb, readU64(cdb, 2), cdb.readUInt32BE(10), d, 'write');
      case 0x2e: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt16BE(7), d, 'writeVerify');
      case 0xae: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt32BE(6), d, 'writeVerify');
      case 0x8e: return this.#rw(cdb, readU64(cdb, 2), cdb.readUInt32BE(10), d, 'writeVerify');
      case 0x2f: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt16BE(7), d, 'verify');
      case 0xaf: return this.#rw(cdb, cdb.readUInt32BE(2), cdb.readUInt32BE(6), d, 'verify');
      case 0x8f: return this.#rw(cdb, readU64(cdb, 2), cdb.readUInt32BE(10), d, 'verify');
      case 0x34: return this.#prefetch(cdb.readUInt32BE(2), cdb.readUInt16BE(7));
      case 0x90: return this.#prefetch(readU64(cdb, 2), cdb.readUInt32BE(10));
      case 0x35: return this.#sync(cdb.readUInt32BE(2), cdb.readUInt16BE(7));
      case 0x91: return this.#sync(readU64(cdb, 2), cdb.readUInt32BE(10));
      case 0x41: return this.#writeSame(cdb, cdb.readUInt32BE(2), cdb.readUInt16BE(7), d);
      case 0x93: return this.#writeSame(cdb, readU64(cdb, 2), cdb.readUInt32BE(10), d);
      case 0x42: return this.#unmap(cdb, d);
      case 0x89: return this.#compareAndWrite(cdb, d);
      case 0x8b: return this.#orWrite(cdb, d);
      case 0x1a: return this.#modeSense(cdb, false);
      case 0x5a: return this.#modeSense(cdb, true);
      case 0x15: return this.#modeSelect(cdb, d, false);
      case 0x55: return this.#modeSelect(cdb, d, true);
      case 0xa3:
        if ((cdb[1]! & 0x1f) === 0x0c) return this.#reportOpcodes(cdb);
        if ((cdb[1]! & 0x1f) === 0x0d) return this.#reportTmfs(cdb);
        return invalidCdb(1, 4);
      case 0x5e: return this.#prIn(cdb);
      case 0x5f: return this.#prOut(cdb, d);
      case 0x16: return this.#legacy(true);
      case 0x17: return this.#legacy(false);
      case 0x1b: return this.#startStop(cdb);
      case 0x1e: return this.#preventAllow(cdb);
      default:
        return check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_OPCODE);
    }
  }

  #range(lba: number, count: number): ScsiResult | undefined {
    if (lba + count > this.blocks || lba > this.blocks) return outOfRange();
    return undefined;
  }

  #writable(): ScsiResult | undefined {
    if (this.ctx.backend.readOnly || this.ctx.mode.swp) return check(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    return undefined;
  }

  async #read(lba: number, count: number): Promise<ScsiResult> {
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    if (count > MAX_TRANSFER_BLOCKS) return invalidCdb(7);
    if (count === 0) return good();
    return good(await this.ctx.backend.read(lba * BLOCK, count * BLOCK));
  }

  async #write(lba: number, count: number, d: Buffer): Promise<ScsiResult> {
    const wp = this.#writable();
    if (wp !== undefined) return wp;
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    if (count > MAX_TRANSFER_BLOCKS) return invalidCdb(7);
    // An Expected Data Transfer Length shorter than the CDB's writes only what came (the
    // response reports the overflow residual), as iSCSI initiators expect (RFC 7143 §11.4.5).
    const n = Math.min(count, Math.floor(d.length / BLOCK));
    if (n === 0) return good();
    await this.ctx.backend.write(lba * BLOCK, d.subarray(0, n * BLOCK));
    return good();
  }

  async #rw(cdb: Buffer, lba: number, count: number, d: Buffer, kind: 'read' | 'write' | 'writeVerify' | 'verify'): Promise<ScsiResult> {
    // RDPROTECT/WRPROTECT/VRPROTECT: no protection information on these LUNs
    if ((cdb[1]! & 0xe0) !== 0) return invalidCdb(1, 7);
    if (kind === 'read') return this.#read(lba, count);
    if (kind === 'write' || kind === 'writeVerify') return this.#write(lba, count, d);
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    const bytchk = (cdb[1]! >> 1) & 3;
    if (bytchk === 0 || count === 0) return good();
    if (bytchk === 2) return invalidCdb(1, 2);
    const have = await this.ctx.backend.read(lba * BLOCK, count * BLOCK);
    const want = bytchk === 3 ? Buffer.concat(Array.from({ length: count }, () => d.subarray(0, BLOCK))) : d.subarray(0, count * BLOCK);
    const at = firstDifference(have, want);
    if (at >= 0) return check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, { information: at });
    return good();
  }

  #prefetch(lba: number, count: number): ScsiResult {
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    return { status: Status.CONDITION_MET };
  }

  async #sync(lba: number, count: number): Promise<ScsiResult> {
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    await this.ctx.backend.flush();
    return good();
  }

  async #writeSame(cdb: Buffer, lba: number, count: number, d: Buffer): Promise<ScsiResult> {
    const unmap = (cdb[1]! & 0x08) !== 0;
    const ndob = cdb[0] === 0x93 && (cdb[1]! & 0x01) !== 0;
    if ((cdb[1]! & 0xe0) !== 0) return invalidCdb(1, 7);
    if ((cdb[1]! & 0x10) !== 0) return invalidCdb(1, 4); // ANCHOR
    if (cdb[0] === 0x41 && (cdb[1]! & 0x01) !== 0) return invalidCdb(1, 0);
    const wp = this.#writable();
    if (wp !== undefined) return wp;
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    if (count === 0) {
      // NUMBER OF LOGICAL BLOCKS 0 with WSNZ=0: from the LBA through the last one (SBC-4 §5.49),
      // subject to MAXIMUM WRITE SAME LENGTH like any other count.
      if (lba >= this.blocks) return outOfRange();
      count = this.blocks - lba;
    }
    if (count > MAX_WRITE_SAME_BLOCKS) return invalidCdb(cdb[0] === 0x41 ? 7 : 10);
    if (!ndob && d.length !== BLOCK) return invalidCdb(cdb[0] === 0x41 ? 7 : 10);
    const block = ndob ? Buffer.alloc(BLOCK) : d.subarray(0, BLOCK);
    const b = this.ctx.backend;
    // UNMAP=1, ANCHOR=0 on a thin LU: deallocate each LBA (SBC-4 WRITE SAME, UNMAP/ANCHOR table),
    // whatever the block holds; they then read as zeros (LBPRZ).
    if (unmap && b.thin) {
      await b.unmap(lba * BLOCK, count * BLOCK);
      return good();
    }
    if (block.every((x) => x === 0)) {
      await b.writeZeroes(lba * BLOCK, count * BLOCK);
      return good();
    }
    const chunkBlocks = Math.min(count, 2048);
    const chunk = Buffer.concat(Array.from({ length: chunkBlocks }, () => block));
    for (let done = 0; done < count; done += chunkBlocks) {
      const n = Math.min(chunkBlocks, count - done);
      await b.write((lba + done) * BLOCK, chunk.subarray(0, n * BLOCK));
    }
    return good();
  }

  async #unmap(cdb: Buffer, d: Buffer): Promise<ScsiResult> {
    if ((cdb[1]! & 0x01) !== 0) return invalidCdb(1, 0); // ANCHOR
    const wp = this.#writable();
    if (wp !== undefined) return wp;
    const listLen = cdb.readUInt16BE(7);
    if (listLen === 0) return good();
    if (listLen < 8 || d.length < 8) return check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
    const descLen = d.readUInt16BE(2);
    const n = Math.floor(Math.min(descLen, d.length - 8) / 16);
    if (n > MAX_UNMAP_DESCRIPTORS) return invalidParam(2);
    const ranges: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      const lba = readU64(d, 8 + 16 * i);
      const count = d.readUInt32BE(16 + 16 * i);
      if (lba + count > this.blocks) return outOfRange();
      ranges.push([lba, count]);
    }
    for (const [lba, count] of ranges) if (count > 0) await this.ctx.backend.unmap(lba * BLOCK, count * BLOCK);
    return good();
  }

  async #compareAndWrite(cdb: Buffer, d: Buffer): Promise<ScsiResult> {
    if ((cdb[1]! & 0xe0) !== 0) return invalidCdb(1, 7);
    const lba = readU64(cdb, 2);
    const count = cdb[13]!;
    const wp = this.#writable();
    if (wp !== undefined) return wp;
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    const len = count * BLOCK;
    // The Data-Out must be exactly the compare and the write blocks (a count that wrapped to 0 too).
    if (d.length !== 2 * len) return invalidCdb(13);
    if (count === 0) return good();
    if (count > MAX_CAW_BLOCKS) return invalidCdb(13);
    const compare = d.subarray(0, len);
    const data = d.subarray(len, 2 * len);
    const b = this.ctx.backend;
    const boundary = b.compareAndWrite === undefined ? undefined : b.compareAndWriteBoundaryBytes;
    // Refused rather than run non-atomically: no initiator's ATS lock record crosses 4 MiB.
    if (boundary !== undefined && Math.floor((lba * BLOCK) / boundary) !== Math.floor(((lba + count) * BLOCK - 1) / boundary)) return invalidCdb(2);
    const at = b.compareAndWrite !== undefined
      ? await b.compareAndWrite(lba * BLOCK, compare, data)
      : await this.ctx.cawLock.run(async () => {
        const i = firstDifference(await b.read(lba * BLOCK, len), compare);
        if (i < 0) await b.write(lba * BLOCK, data);
        return i;
      });
    if (at >= 0) return check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, { information: at });
    return good();
  }

  /**
   * ORWRITE(16) (SBC-3 §5.8): each block becomes its old contents OR the data-out, atomically
   * against every other command of the range. Where the backend has an atomic compare-and-write
   * (a storpool volume: executed at the shard primary, so across every portal), each piece of at
   * most MAXIMUM COMPARE AND WRITE LENGTH inside one boundary is read, ORed and written with a
   * compare-and-write of what was read, retried if another writer came in between; otherwise
   * (the in-memory LUN) under the same per-LUN lock as COMPARE AND WRITE.
   */
  async #orWrite(cdb: Buffer, d: Buffer): Promise<ScsiResult> {
    if ((cdb[1]! & 0xe0) !== 0) return invalidCdb(1, 7); // ORPROTECT: no protection information
    const wp = this.#writable();
    if (wp !== undefined) return wp;
    const lba = readU64(cdb, 2);
    const count = cdb.readUInt32BE(10);
    const bad = this.#range(lba, count);
    if (bad !== undefined) return bad;
    if (count > MAX_TRANSFER_BLOCKS) return invalidCdb(10);
    // As WRITE: an Expected Data Transfer Length short of the CDB's acts on what came.
    const n = Math.min(count, Math.floor(d.length / BLOCK));
    if (n === 0) return good();
    const b = this.ctx.backend;
    const start = lba * BLOCK;
    const data = d.subarray(0, n * BLOCK);
    const cas = b.compareAndWrite?.bind(b);
    if (cas === undefined) {
      await this.ctx.cawLock.run(async () => {
        const old = await b.read(start, data.length);
        await b.write(start, orInto(Buffer.from(old), data));
      });
      return good();
    }
    const boundary = b.compareAndWriteBoundaryBytes;
    for (let at = start; at < start + data.length; ) {
      let end = Math.min(start + data.length, at + MAX_CAW_BLOCKS * BLOCK);
      if (boundary !== undefined) end = Math.min(end, (Math.floor(at / boundary) + 1) * boundary);
      const piece = data.subarray(at - start, end - start);
      for (let attempt = 0; ; attempt++) {
        const old = await b.read(at, end - at);
        const next = orInto(Buffer.from(old), piece);
        if (next.equals(old)) break; // every bit already set: nothing to write
        if (await cas(at, old, next) < 0) break;
        // Another writer changed the range since it was read: the initiator may retry the
        // whole command (ORing again what is done changes nothing).
        if (attempt >= ORWRITE_RETRIES) return { status: Status.BUSY };
      }
      at = end;
    }
    return good();
  }

  #requestSense(cdb: Buffer): ScsiResult {
    if ((cdb[1]! & 0x01) !== 0) {
      const s = Buffer.alloc(8);
      s[0] = 0x72;
      s[7] = 0;
      return good(s);
    }
    const s = Buffer.alloc(18);
    s[0] = 0x70;
    s[7] = 10;
    return good(s);
  }

  #inquiry(cdb: Buffer): ScsiResult {
    const evpd = (cdb[1]! & 0x01) !== 0;
    const page = cdb[2]!;
    if ((cdb[1]! & 0xfe) !== 0) return invalidCdb(1, 1);
    if (!evpd) {
      if (page !== 0) return invalidCdb(2);
      const b = Buffer.alloc(96);
      b[0] = 0x00; // direct access block device
      b[2] = 0x06; // SPC-4
      b[3] = 0x12; // HiSup, response data format 2
      b[4] = 96 - 5;
      b[5] = 0x00; // 3PC=0, TPGS=0 (all portals active, no ALUA)
      b[6] = 0x00;
      b[7] = 0x02; // CmdQue
      b.write(VENDOR.padEnd(8), 8, 'ascii');
      b.write(PRODUCT.padEnd(16), 16, 'ascii');
      b.write(REVISION.padEnd(4), 32, 'ascii');
      // version descriptors: SAM-5, iSCSI, SPC-4, SBC-3
      [0x00a0, 0x0960, 0x0460, 0x04c0].forEach((v, i) => b.writeUInt16BE(v, 58 + 2 * i));
      return good(b);
    }
    const page0 = (body: Buffer): ScsiResult => {
      const h = Buffer.alloc(4);
      h[1] = page;
      h.writeUInt16BE(body.length, 2);
      return good(Buffer.concat([h, body]));
    };
    const be = this.ctx.backend;
    switch (page) {
      case 0x00: return page0(Buffer.from([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]));
      case 0x80: return page0(Buffer.from(be.id.slice(0, 250), 'ascii'));
      case 0x83: return page0(this.#deviceIds());
      case 0xb0: {
        const b = Buffer.alloc(0x3c);
        b[0] = 0x00; // WSNZ=0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 writes through the last LBA
        b[1] = MAX_CAW_BLOCKS;
        b.writeUInt16BE(1 << PHYS_EXP, 2); // optimal transfer length granularity
        b.writeUInt32BE(MAX_TRANSFER_BLOCKS, 4);
        b.writeUInt32BE(MAX_TRANSFER_BLOCKS, 8);
        if (be.thin) {
          b.writeUInt32BE(MAX_UNMAP_BLOCKS, 16);
          b.writeUInt32BE(MAX_UNMAP_DESCRIPTORS, 20);
          b.writeUInt32BE(1 << PHYS_EXP, 24);
          b.writeUInt32BE(0x80000000, 28); // UGAVALID, alignment 0
        }
        b.writeBigUInt64BE(BigInt(MAX_WRITE_SAME_BLOCKS), 32);
        return page0(b);
      }
      case 0xb1: {
        const b = Buffer.alloc(0x3c);
        b.writeUInt16BE(1, 0); // non-rotating medium
        return page0(b);
      }
      case 0xb2: {
        const b = Buffer.alloc(4);
        b[0] = 0;
        // LBPU, LBPWS, LBPWS10, LBPRZ when thin
        b[1] = be.thin ? 0x80 | 0x40 | 0x20 | 0x04 : 0;
        b[2] = be.thin ? 0x02 : 0x00;
        return page0(b);
      }
      default:
        return invalidCdb(2);
    }
  }

  #deviceIds(): Buffer {
    const c = this.ctx;
    const parts: Buffer[] = [];
    const desc = (b0: number, b1: number, body: Buffer): void => {
      const h = Buffer.from([b0, b1, 0, body.length]);
      parts.push(h, body);
    };
    desc(0x01, 0x03, naaId(c.backend.id)); // binary, LU, NAA
    desc(0x02, 0x01, Buffer.from(`${VENDOR}${c.backend.id}`, 'ascii')); // ascii, LU, T10 vendor id
    const port = Buffer.alloc(4);
    port.writeUInt16BE(c.relativePort & 0xffff, 2);
    desc(0x51, 0x94, port); // iSCSI, PIV, target port, relative target port
    const tpg = Buffer.alloc(4);
    tpg.writeUInt16BE(c.relativePort & 0xffff, 2);
    desc(0x51, 0x95, tpg); // target port group
    let name = Buffer.from(`${c.targetName}\0`, 'utf8');
    name = Buffer.concat([name, Buffer.alloc((4 - (name.length & 3)) & 3)]);
    desc(0x53, 0xa8, name); // UTF-8, target device, SCSI name string
    return Buffer.concat(parts);
  }

  #reportLuns(cdb: Buffer): ScsiResult {
    const select = cdb[2]!;
    if (select > 2 && select !== 0x10 && select !== 0x11 && select !== 0x12) return invalidCdb(2);
    const alloc = cdb.readUInt32BE(6);
    if (alloc < 16) return invalidCdb(6);
    const luns = select === 1 ? [] : this.ctx.lunNumbers;
    const b = Buffer.alloc(8 + 8 * luns.length);
    b.writeUInt32BE(8 * luns.length, 0);
    luns.forEach((l, i) => {
      if (l < 256) b[8 + 8 * i + 1] = l;
      else b.writeUInt16BE(0x4000 | l, 8 + 8 * i);
    });
    return good(b);
  }

  #readCapacity10(cdb: Buffer): ScsiResult {
    if ((cdb[8]! & 0x01) === 0 && cdb.readUInt32BE(2) !== 0) return invalidCdb(2);
    const b = Buffer.alloc(8);
    b.writeUInt32BE(Math.min(this.blocks - 1, 0xffffffff) >>> 0, 0);
    b.writeUInt32BE(BLOCK, 4);
    return good(b);
  }

  #readCapacity16(_cdb: Buffer): ScsiResult {
    const b = Buffer.alloc(32);
    b.writeBigUInt64BE(BigInt(this.blocks - 1), 0);
    b.writeUInt32BE(BLOCK, 8);
    b[13] = PHYS_EXP;
    if (this.ctx.backend.thin) b[14] = 0x80 | 0x40; // LBPME, LBPRZ
    return good(b);
  }

  async #getLbaStatus(cdb: Buffer): Promise<ScsiResult> {
    const lba = readU64(cdb, 2);
    const alloc = cdb.readUInt32BE(10);
    if (lba >= this.blocks) return outOfRange();
    const be = this.ctx.backend;
    // Up to 1024 descriptors over at most 4 MiB from lba, from the 4 KiB allocation map.
    const span = Math.min(this.blocks - lba, MAX_TRANSFER_BLOCKS);
    const descs: [number, number, number][] = [];
    if (be.allocation === undefined || !be.thin) {
      descs.push([lba, span, 0]);
    } else {
      const offset = lba * BLOCK;
      const map = await be.allocation(offset, span * BLOCK);
      const first4k = Math.floor(offset / 4096);
      for (let b = lba; b < lba + span; ) {
        const idx = Math.floor((b * BLOCK) / 4096) - first4k;
        const state = map[idx] === undefined || map[idx] === 0 ? 1 : 0; // 1: deallocated
        const next = Math.min(lba + span, ((idx + first4k + 1) * 4096) / BLOCK);
        const last = descs[descs.length - 1];
        if (last !== undefined && last[2] === state) last[1] += next - b;
        else descs.push([b, next - b, state]);
        b = next;
      }
    }
    const max = Math.max(0, Math.floor((alloc - 8) / 16));
    const list = descs.slice(0, Math.max(1, Math.min(max, 1024)));
    const out = Buffer.alloc(8 + 16 * list.length);
    out.writeUInt32BE(4 + 16 * list.length, 0);
    list.forEach(([l, n, st], i) => {
      out.writeBigUInt64BE(BigInt(l), 8 + 16 * i);
      out.writeUInt32BE(n, 16 + 16 * i);
      out[20 + 16 * i] = st;
    });
    return good(out);
  }

  #modePages(pc: number): Map<number, Buffer> {
    const changeable = pc === 1;
    const pages = new Map<number, Buffer>();
    const caching = Buffer.alloc(20);
    caching[0] = 0x08;
    caching[1] = 18;
    // WCE=0: a write is on every replica's disk when it is acknowledged; nothing to write back.
    pages.set(0x08, caching);
    const control = Buffer.alloc(12);
    control[0] = 0x0a;
    control[1] = 10;
    if (changeable) {
      control[2] = 0x04 | 0x08; // D_SENSE, SWP... (byte 4 bit 3 is SWP)
      control[2] = 0x04;
      control[4] = 0x08;
    } else {
      control[2] = this.ctx.mode.dSense ? 0x04 : 0;
      control[3] = 0x10; // QERR=0, queue algorithm modifier 1 (unrestricted)
      control[4] = this.ctx.mode.swp ? 0x08 : 0;
      control.writeUInt16BE(0xffff, 10); // busy timeout period: unlimited
    }
    pages.set(0x0a, control);
    const ie = Buffer.alloc(12);
    ie[0] = 0x1c;
    ie[1] = 10;
    pages.set(0x1c, ie);
    return pages;
  }

  #modeSense(cdb: Buffer, ten: boolean): ScsiResult {
    const dbd = (cdb[1]! & 0x08) !== 0;
    const llbaa = ten && (cdb[1]! & 0x10) !== 0;
    const pc = cdb[2]! >> 6;
    const page = cdb[2]! & 0x3f;
    const sub = cdb[3]!;
    if (pc === 3) return check(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
    const pages = this.#modePages(pc);
    let body: Buffer;
    if (page === 0x3f) {
      if (sub !== 0 && sub !== 0xff) return invalidCdb(3);
      body = Buffer.concat([...pages.values()]);
    } else {
      const p = pages.get(page);
      if (p === undefined || sub !== 0) return invalidCdb(2, 5);
      body = p;
    }
    const blocks = this.blocks;
    let bd = Buffer.alloc(0);
    if (!dbd) {
      if (llbaa) {
        bd = Buffer.alloc(16);
        bd.writeBigUInt64BE(BigInt(blocks), 0);
        bd.writeUInt32BE(BLOCK, 12);
      } else {
        bd = Buffer.alloc(8);
        bd.writeUInt32BE(blocks > 0xffffffff ? 0xffffffff : blocks, 0);
        bd.writeUInt32BE(BLOCK, 4);
      }
    }
    const wp = this.ctx.backend.readOnly || this.ctx.mode.swp ? 0x80 : 0;
    const dsp = wp | 0x10; // DPOFUA
    if (ten) {
      const h = Buffer.alloc(8);
      h.writeUInt16BE(6 + bd.length + body.length, 0);
      h[3] = dsp;
      h[4] = llbaa ? 1 : 0;
      h.writeUInt16BE(bd.length, 6);
      return good(Buffer.concat([h, bd, body]));
    }
    const h = Buffer.alloc(4);
    h[0] = Math.min(255, 3 + bd.length + body.length);
    h[2] = dsp;
    h[3] = bd.length;
    return good(Buffer.concat([h, bd, body]));
  }

  #modeSelect(cdb: Buffer, d: Buffer, ten: boolean): ScsiResult {
    const pf = (cdb[1]! & 0x10) !== 0;
    const sp = (cdb[1]! & 0x01) !== 0;
    if (sp) return check(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
    if (!pf) return invalidCdb(1, 4);
    const listLen = ten ? cdb.readUInt16BE(7) : cdb[4]!;
    if (listLen === 0) return good();
    const hdr = ten ? 8 : 4;
    if (d.length < hdr) return check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
    const bdl = ten ? d.readUInt16BE(6) : d[3]!;
    let at = hdr + bdl;
    const current = this.#modePages(0);
    const mask = this.#modePages(1);
    const next = { ...this.ctx.mode };
    while (at < d.length) {
      if (at + 2 > d.length) return check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
      const code = d[at]! & 0x3f;
      const spf = (d[at]! & 0x40) !== 0;
      if (spf) return invalidParam(at);
      const len = d[at + 1]!;
      const cur = current.get(code);
      const m = mask.get(code);
      if (cur === undefined || m === undefined || len !== cur.length - 2 || at + 2 + len > d.length) return invalidParam(at);
      for (let i = 2; i < cur.length; i++) {
        if (((d[at + i]! ^ cur[i]!) & ~m[i]!) !== 0) return invalidParam(at + i);
      }
      if (code === 0x0a) {
        next.dSense = (d[at + 2]! & 0x04) !== 0;
        next.swp = (d[at + 4]! & 0x08) !== 0;
      }
      at += 2 + len;
    }
    Object.assign(this.ctx.mode, next);
    return good();
  }

  #reportOpcodes(cdb: Buffer): ScsiResult {
    const options = cdb[2]! & 0x07;
    const rctd = (cdb[2]! & 0x80) !== 0;
    const reqOp = cdb[3]!;
    const reqSa = cdb.readUInt16BE(4);
    const timeouts = (): Buffer => {
      const t = Buffer.alloc(12);
      t.writeUInt16BE(10, 0);
      t.writeUInt32BE(30, 4);
      t.writeUInt32BE(30, 8);
      return t;
    };
    if (options === 0) {
      const parts = SUPPORTED.map((s) => {
        const d = Buffer.alloc(8);
        d[0] = s.op;
        d.writeUInt16BE(s.sa ?? 0, 2);
        d[5] = (s.sa !== undefined ? 0x01 : 0) | (rctd ? 0x02 : 0);
        d.writeUInt16BE(s.len, 6);
        return rctd ? Buffer.concat([d, timeouts()]) : d;
      });
      const body = Buffer.concat(parts);
      const h = Buffer.alloc(4);
      h.writeUInt32BE(body.length, 0);
      return good(Buffer.concat([h, body]));
    }
    if (options > 3) return invalidCdb(2);
    const hasSa = SUPPORTED.some((s) => s.op === reqOp && s.sa !== undefined);
    if (options === 1 && hasSa) return invalidCdb(3);
    if (options === 2 && !hasSa && SUPPORTED.some((s) => s.op === reqOp)) return invalidCdb(3);
    const found = SUPPORTED.find((s) => s.op === reqOp && (options === 1 || options === 3 ? !hasSa || s.sa === reqSa : s.sa === reqSa));
    const h = Buffer.alloc(4);
    if (found === undefined) {
      h[1] = 0x01; // not supported
      return good(h);
    }
    h[1] = (rctd ? 0x80 : 0) | 0x03;
    h.writeUInt16BE(found.len, 2);
    const usage = Buffer.alloc(found.len, 0xff);
    usage[0] = found.op;
    if (found.sa !== undefined) usage[1] = 0x1f;
    usage[found.len - 1] = 0x00; // control byte: NACA/link unsupported
    return good(Buffer.concat(rctd ? [h, usage, timeouts()] : [h, usage]));
  }

  #reportTmfs(_cdb: Buffer): ScsiResult {
    const b = Buffer.alloc(4);
    b[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02; // ATS, ATSS, LURS, QTS=0..., TRS
    b[0] = 0xc8 | 0x10;
    b[1] = 0;
    return good(b);
  }

  async #prIn(cdb: Buffer): Promise<ScsiResult> {
    const s = await this.ctx.reservations.get(this.ctx.lunId, true);
    return prIn(s, cdb, (nexus) => nexus.split(',i,')[0] ?? nexus);
  }

  async #prOut(cdb: Buffer, d: Buffer): Promise<ScsiResult> {
    if ((cdb[2]! >> 4) !== 0 && [1, 2, 4, 5].includes(cdb[1]! & 0x1f)) return invalidCdb(2, 7);
    const c = this.ctx;
    return c.reservations.update(c.lunId, (s) => prOut(s, c.nexus, cdb, d));
  }

  async #legacy(reserve: boolean): Promise<ScsiResult> {
    const c = this.ctx;
    return c.reservations.update(c.lunId, (s) => legacyReserve(s, c.nexus, reserve));
  }

  #startStop(cdb: Buffer): ScsiResult {
    const loej = (cdb[4]! & 0x02) !== 0;
    const start = (cdb[4]! & 0x01) !== 0;
    if (loej && !start && this.ctx.prevent.size > 0) return check(SenseKey.ILLEGAL_REQUEST, Asc.MEDIUM_REMOVAL_PREVENTED);
    return good();
  }

  #preventAllow(cdb: Buffer): ScsiResult {
    const prevent = cdb[4]! & 0x03;
    if (prevent === 1) this.ctx.prevent.add(this.ctx.nexus);
    else if (prevent === 0) this.ctx.prevent.delete(this.ctx.nexus);
    else return invalidCdb(4);
    return good();
  }
}

function readU64(b: Buffer, at: number): number {
  const v = b.readBigUInt64BE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** `into[i] |= data[i]`; returns `into`. */
function orInto(into: Buffer, data: Buffer): Buffer {
  for (let i = 0; i < data.length; i++) into[i] = into[i]! | data[i]!;
  return into;
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

export const SCSI_STATUS = Status;
