/**
 * Persistent reservations (SPC-4 §5.13) and RESERVE/RELEASE(6) as pure functions over a PrState,
 * so that the same state kept in the metadata store gives the same answers on every portal.
 */
import { Asc, SenseKey, Status, check, conflict, good, invalidCdb, invalidParam, type ScsiResult } from './sense.js';
import type { PrState, ReservationStore } from './types.js';

export const PrType = {
  WRITE_EXCLUSIVE: 1,
  EXCLUSIVE_ACCESS: 3,
  WE_REGISTRANTS_ONLY: 5,
  EA_REGISTRANTS_ONLY: 6,
  WE_ALL_REGISTRANTS: 7,
  EA_ALL_REGISTRANTS: 8,
} as const;

const VALID_TYPES = new Set<number>(Object.values(PrType));
const allRegistrants = (t: number): boolean => t === PrType.WE_ALL_REGISTRANTS || t === PrType.EA_ALL_REGISTRANTS;
const registrantsType = (t: number): boolean => t >= 5;

export const emptyPr = (): PrState => ({ generation: 0, registrations: [] });

const clone = (s: PrState): PrState => ({
  generation: s.generation,
  registrations: s.registrations.map((r) => ({ ...r })),
  reservation: s.reservation === undefined ? undefined : { ...s.reservation },
  legacy: s.legacy,
  resets: s.resets,
  ua: s.ua === undefined ? undefined : Object.fromEntries(Object.entries(s.ua).map(([k, v]) => [k, [...v]])),
});

const keyOf = (s: PrState, nexus: string): string | undefined => s.registrations.find((r) => r.nexus === nexus)?.key;

export function isHolder(s: PrState, nexus: string): boolean {
  const r = s.reservation;
  if (r === undefined) return false;
  if (allRegistrants(r.type)) return keyOf(s, nexus) !== undefined;
  return r.holder === nexus;
}

function addUa(s: PrState, nexus: string, asc: number): void {
  s.ua ??= {};
  const list = (s.ua[nexus] ??= []);
  if (!list.includes(asc) && list.length < 8) list.push(asc);
}

/** Opcodes any I_T nexus may run whatever the reservation (SPC-4 table 69 "Allowed" rows). */
const ALWAYS_ALLOWED = new Set([0x12, 0xa0, 0x03, 0x5e, 0x5f, 0x25, 0x00, 0x1b, 0x1a, 0x5a, 0x35, 0x91]);
const READ_OPS = new Set([0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f, 0x34, 0x90]);

/** Whether `cdb` from `nexus` conflicts with the reservations in `s`. */
export function conflicts(s: PrState, nexus: string, cdb: Buffer): boolean {
  const op = cdb[0]!;
  if (s.legacy !== undefined && s.legacy !== nexus) {
    // RESERVE(6): only INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE(6) pass (SPC-2 §5.5.1).
    return !(op === 0x12 || op === 0xa0 || op === 0x03 || op === 0x17 || (op === 0x9e && (cdb[1]! & 0x1f) === 0x10) || op === 0x25);
  }
  if (op === 0x16 || op === 0x17) return s.reservation !== undefined && !isHolder(s, nexus);
  const r = s.reservation;
  if (r === undefined || isHolder(s, nexus)) return false;
  if (op === 0x9e && (cdb[1]! & 0x1f) === 0x10) return false;
  if (op === 0xa3) return false;
  const registered = keyOf(s, nexus) !== undefined;
  const exclusiveAccess = r.type === PrType.EXCLUSIVE_ACCESS || r.type === PrType.EA_REGISTRANTS_ONLY || r.type === PrType.EA_ALL_REGISTRANTS;
  if (registrantsType(r.type) && registered) return false;
  if (op === 0x1a || op === 0x5a) return exclusiveAccess;
  if (ALWAYS_ALLOWED.has(op)) return false;
  if (READ_OPS.has(op)) return exclusiveAccess;
  return true;
}

function hexKey(b: Buffer, at: number): string {
  return b.subarray(at, at + 8).toString('hex');
}

const ZERO_KEY = '0000000000000000';

/** PERSISTENT RESERVE IN. */
export function prIn(s: PrState, cdb: Buffer, nexusName: (nexus: string) => string): ScsiResult {
  const sa = cdb[1]! & 0x1f;
  switch (sa) {
    case 0: { // READ KEYS
      const b = Buffer.alloc(8 + 8 * s.registrations.length);
      b.writeUInt32BE(s.generation >>> 0, 0);
      b.writeUInt32BE(8 * s.registrations.length, 4);
      s.registrations.forEach((r, i) => Buffer.from(r.key, 'hex').copy(b, 8 + 8 * i));
      return good(b);
    }
    case 1: { // READ RESERVATION
      const r = s.reservation;
      const b = Buffer.alloc(r === undefined ? 8 : 24);
      b.writeUInt32BE(s.generation >>> 0, 0);
      if (r !== undefined) {
        b.writeUInt32BE(16, 4);
        const key = allRegistrants(r.type) ? ZERO_KEY : (keyOf(s, r.holder) ?? ZERO_KEY);
        Buffer.from(key, 'hex').copy(b, 8);
        b[21] = r.type & 0x0f;
      }
      return good(b);
    }
    case 2: { // REPORT CAPABILITIES
      const b = Buffer.alloc(8);
      b.writeUInt16BE(8, 0);
      b[2] = 0x10; // CRH: RESERVE/RELEASE(6) handled as SPC-3 says when PRs exist
      b[3] = 0x80; // TMV: the type mask is valid
      b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
      b[5] = 0x01;
      return good(b);
    }
    case 3: { // READ FULL STATUS
      const parts: Buffer[] = [];
      for (const reg of s.registrations) {
        const name = Buffer.from(nexusName(reg.nexus), 'utf8');
        const idLen = (name.length + 1 + 3) & ~3;
        const tid = Buffer.alloc(4 + idLen);
        tid[0] = 0x05; // iSCSI, format 0
        tid.writeUInt16BE(idLen, 2);
        name.copy(tid, 4);
        const d = Buffer.alloc(24);
        Buffer.from(reg.key, 'hex').copy(d, 0);
        const holder = isHolder(s, reg.nexus);
        d[12] = 0x02 | (holder ? 0x01 : 0); // ALL_TG_PT: registrations apply through every portal
        if (holder) d[13] = s.reservation!.type & 0x0f;
        d.writeUInt32BE(tid.length, 20);
        parts.push(d, tid);
      }
      const body = Buffer.concat(parts);
      const b = Buffer.alloc(8);
      b.writeUInt32BE(s.generation >>> 0, 0);
      b.writeUInt32BE(body.length, 4);
      return good(Buffer.concat([b, body]));
    }
    default:
      return invalidCdb(1, 4);
  }
}

export interface PrOutResult {
  state: PrState | undefined;
  result: ScsiResult;
}

/** PERSISTENT RESERVE OUT on `s` for `nexus` with parameter list `param`. */
export function prOut(s0: PrState, nexus: string, cdb: Buffer, param: Buffer): PrOutResult {
  const sa = cdb[1]! & 0x1f;
  const scope = cdb[2]! >> 4;
  const type = cdb[2]! & 0x0f;
  const listLength = cdb.readUInt32BE(5);
  if (sa === 7) return { state: undefined, result: invalidCdb(1, 4) }; // REGISTER AND MOVE: not supported
  if (sa > 7) return { state: undefined, result: invalidCdb(1, 4) };
  if (listLength !== 24 || param.length < 24) {
    return { state: undefined, result: check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR) };
  }
  const key = hexKey(param, 0);
  const saKey = hexKey(param, 8);
  const flags = param[20]!;
  if ((flags & 0x08) !== 0) return { state: undefined, result: invalidParam(20) }; // SPEC_I_PT unsupported
  const s = clone(s0);
  const mine = keyOf(s, nexus);
  const none = (result: ScsiResult): PrOutResult => ({ state: undefined, result });
  const changed = (result: ScsiResult = good()): PrOutResult => ({ state: s, result });
  if (s.legacy !== undefined && s.legacy !== nexus) return none(conflict());

  if (sa === 0 || sa === 6) { // REGISTER / REGISTER AND IGNORE EXISTING KEY
    if (mine === undefined) {
      if (sa === 0 && key !== ZERO_KEY) return none(conflict());
      if (saKey === ZERO_KEY) return none(good());
      s.registrations.push({ nexus, key: saKey });
      s.generation++;
      return changed();
    }
    if (sa === 0 && key !== mine) return none(conflict());
    if (saKey === ZERO_KEY) {
      const wasHolder = isHolder(s, nexus);
      s.registrations = s.registrations.filter((r) => r.nexus !== nexus);
      const r = s.reservation;
      if (r !== undefined && wasHolder && (!allRegistrants(r.type) || s.registrations.length === 0)) {
        s.reservation = undefined;
        if (registrantsType(r.type)) for (const o of s.registrations) addUa(s, o.nexus, Asc.RESERVATIONS_RELEASED);
      }
    } else {
      s.registrations.find((r) => r.nexus === nexus)!.key = saKey;
    }
    s.generation++;
    return changed();
  }
  if (mine === undefined || mine !== key) return none(conflict());
  switch (sa) {
    case 1: { // RESERVE
      if (scope !== 0) return none(invalidCdb(2, 7));
      if (!VALID_TYPES.has(type)) return none(invalidCdb(2, 3));
      const r = s.reservation;
      if (r !== undefined) {
        if (!isHolder(s, nexus)) return none(conflict());
        return none(r.type === type ? good() : conflict());
      }
      s.reservation = { holder: nexus, type };
      return changed();
    }
    case 2: { // RELEASE
      const r = s.reservation;
      if (r === undefined || !isHolder(s, nexus)) return none(good());
      if (scope !== 0 || r.type !== type) return none(check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_RELEASE_OF_PR));
      s.reservation = undefined;
      if (r.type !== PrType.WRITE_EXCLUSIVE && r.type !== PrType.EXCLUSIVE_ACCESS) {
        for (const o of s.registrations) if (o.nexus !== nexus) addUa(s, o.nexus, Asc.RESERVATIONS_RELEASED);
      }
      return changed();
    }
    case 3: { // CLEAR
      for (const o of s.registrations) if (o.nexus !== nexus) addUa(s, o.nexus, Asc.RESERVATIONS_PREEMPTED);
      s.registrations = [];
      s.reservation = undefined;
      s.generation++;
      return changed();
    }
    case 4:
    case 5: { // PREEMPT / PREEMPT AND ABORT
      if (!VALID_TYPES.has(type)) return none(invalidCdb(2, 3));
      if (scope !== 0) return none(invalidCdb(2, 7));
      const r = s.reservation;
      const preemptAll = r !== undefined && allRegistrants(r.type) && saKey === ZERO_KEY;
      if (preemptAll) {
        for (const o of s.registrations) if (o.nexus !== nexus) addUa(s, o.nexus, Asc.REGISTRATIONS_PREEMPTED);
        s.registrations = s.registrations.filter((o) => o.nexus === nexus);
        s.reservation = { holder: nexus, type };
        s.generation++;
        return changed();
      }
      if (saKey === ZERO_KEY) return none(invalidParam(8));
      const holderKey = r === undefined ? undefined : allRegistrants(r.type) ? undefined : keyOf(s, r.holder);
      const victims = s.registrations.filter((o) => o.key === saKey && o.nexus !== nexus);
      const preemptingHolder = r !== undefined && holderKey === saKey;
      if (victims.length === 0 && !(preemptingHolder && mine === saKey)) return none(conflict());
      for (const v of victims) addUa(s, v.nexus, Asc.REGISTRATIONS_PREEMPTED);
      s.registrations = s.registrations.filter((o) => !victims.includes(o));
      if (preemptingHolder) {
        const old = r;
        s.reservation = { holder: nexus, type };
        if (old.type !== type) for (const o of s.registrations) if (o.nexus !== nexus) addUa(s, o.nexus, Asc.RESERVATIONS_RELEASED);
      }
      s.generation++;
      return changed();
    }
    default:
      return none(invalidCdb(1, 4));
  }
}

/** RESERVE(6) / RELEASE(6) (SPC-2): refused while persistent reservations exist. */
export function legacyReserve(s0: PrState, nexus: string, reserve: boolean): PrOutResult {
  const s = clone(s0);
  if (reserve) {
    if (s.reservation !== undefined) return { state: undefined, result: conflict() };
    if (s.legacy !== undefined && s.legacy !== nexus) return { state: undefined, result: conflict() };
    if (s.legacy === nexus) return { state: undefined, result: good() };
    s.legacy = nexus;
    return { state: s, result: good() };
  }
  if (s.legacy !== nexus) return { state: undefined, result: good() };
  s.legacy = undefined;
  return { state: s, result: good() };
}

/** Takes the first unit attention pending for `nexus`, if any. */
export function takeUa(s0: PrState, nexus: string): { state: PrState | undefined; result: number | undefined } {
  const list = s0.ua?.[nexus];
  if (list === undefined || list.length === 0) return { state: undefined, result: undefined };
  const s = clone(s0);
  const [first, ...rest] = s.ua![nexus]!;
  if (rest.length === 0) delete s.ua![nexus];
  else s.ua![nexus] = rest;
  return { state: s, result: first };
}

/** Drops what a nexus holds when it is gone for good is not done: PRs persist across logins (SPC-4). */
export class MemoryReservationStore implements ReservationStore {
  readonly #states = new Map<string, PrState>();

  async get(lunId: string): Promise<PrState> {
    return this.#states.get(lunId) ?? emptyPr();
  }

  cached(lunId: string): PrState {
    return this.#states.get(lunId) ?? emptyPr();
  }

  async update<T>(lunId: string, fn: (s: PrState) => { state: PrState | undefined; result: T }): Promise<T> {
    const r = fn(this.#states.get(lunId) ?? emptyPr());
    if (r.state !== undefined) this.#states.set(lunId, r.state);
    return r.result;
  }
}

export const RESERVATION_CONFLICT = Status.RESERVATION_CONFLICT;
