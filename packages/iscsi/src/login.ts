/**
 * Login-phase key negotiation (RFC 7143 §6, §13) and CHAP (RFC 1994 as iSCSI uses it, §12.1.3).
 * Pure functions over the keys an initiator sent: what to answer and what was agreed.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface SessionParams {
  headerDigest: boolean;
  dataDigest: boolean;
  initialR2T: boolean;
  immediateData: boolean;
  /** What the initiator can receive: our Data-In segments stay within it. */
  maxSendDataSegment: number;
  maxBurst: number;
  firstBurst: number;
  maxOutstandingR2T: number;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
}

/** Our declared MaxRecvDataSegmentLength. */
export const TARGET_MAX_RECV_DATA_SEGMENT = 262144;
const TARGET_MAX_BURST = 16776192;
const TARGET_FIRST_BURST = 16776192;

export const defaultParams = (): SessionParams => ({
  headerDigest: false, dataDigest: false, initialR2T: true, immediateData: true, maxSendDataSegment: 8192,
  maxBurst: 262144, firstBurst: 65536, maxOutstandingR2T: 1, defaultTime2Wait: 2, defaultTime2Retain: 20,
});

/** Keys that are declarations or handled elsewhere: never answered as negotiations. */
const DECLARATIVE = new Set(['InitiatorName', 'InitiatorAlias', 'TargetName', 'SessionType', 'MaxRecvDataSegmentLength', 'TargetAlias', 'TargetAddress', 'TargetPortalGroupTag']);
const AUTH_KEYS = new Set(['AuthMethod', 'CHAP_A', 'CHAP_I', 'CHAP_C', 'CHAP_N', 'CHAP_R']);

const num = (v: string, min: number, max: number): number | undefined => {
  if (!/^(\d+|0x[0-9a-fA-F]+)$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
};
const bool = (v: string): boolean | undefined => (v === 'Yes' ? true : v === 'No' ? false : undefined);

export interface Negotiation {
  reply: [string, string][];
  /** A key value the initiator may not send: the login fails (initiator error). */
  error?: string;
}

/** Answers operational keys; updates `p`. */
export function negotiateOperational(keys: readonly [string, string][], p: SessionParams, discovery: boolean): Negotiation {
  const reply: [string, string][] = [];
  for (const [k, v] of keys) {
    if (DECLARATIVE.has(k)) {
      if (k === 'MaxRecvDataSegmentLength') {
        const n = num(v, 512, 16777215);
        if (n === undefined) return { reply, error: `MaxRecvDataSegmentLength=${v}` };
        p.maxSendDataSegment = n;
      }
      continue;
    }
    if (AUTH_KEYS.has(k)) continue;
    if (v === 'NotUnderstood' || v === 'Irrelevant' || v === 'Reject') continue;
    switch (k) {
      case 'HeaderDigest':
      case 'DataDigest': {
        const choices = v.split(',');
        const pick = choices.find((c) => c === 'CRC32C' || c === 'None');
        if (pick === undefined) { reply.push([k, 'Reject']); break; }
        if (k === 'HeaderDigest') p.headerDigest = pick === 'CRC32C';
        else p.dataDigest = pick === 'CRC32C';
        reply.push([k, pick]);
        break;
      }
      case 'MaxConnections': {
        const n = num(v, 1, 65535);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        reply.push([k, '1']);
        break;
      }
      case 'InitialR2T':
      case 'ImmediateData':
      case 'DataPDUInOrder':
      case 'DataSequenceInOrder':
      case 'IFMarker':
      case 'OFMarker': {
        const b = bool(v);
        if (b === undefined) return { reply, error: `${k}=${v}` };
        if (discovery && (k === 'InitialR2T' || k === 'ImmediateData')) { reply.push([k, 'Irrelevant']); break; }
        let r: boolean;
        if (k === 'InitialR2T') r = b; // OR with our No
        else if (k === 'ImmediateData') r = b; // AND with our Yes
        else if (k === 'DataPDUInOrder' || k === 'DataSequenceInOrder') r = true; // OR with our Yes
        else r = false; // markers: AND with our No
        if (k === 'InitialR2T') p.initialR2T = r;
        if (k === 'ImmediateData') p.immediateData = r;
        reply.push([k, r ? 'Yes' : 'No']);
        break;
      }
      case 'OFMarkInt':
      case 'IFMarkInt':
        reply.push([k, 'Irrelevant']);
        break;
      case 'MaxBurstLength':
      case 'FirstBurstLength': {
        const n = num(v, 512, 16777215);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        if (discovery) { reply.push([k, 'Irrelevant']); break; }
        if (k === 'MaxBurstLength') {
          p.maxBurst = Math.min(n, TARGET_MAX_BURST);
          p.firstBurst = Math.min(p.firstBurst, p.maxBurst);
          reply.push([k, String(p.maxBurst)]);
        } else {
          p.firstBurst = Math.min(n, TARGET_FIRST_BURST, p.maxBurst);
          reply.push([k, String(Math.min(n, TARGET_FIRST_BURST))]);
        }
        break;
      }
      case 'DefaultTime2Wait':
      case 'DefaultTime2Retain': {
        const n = num(v, 0, 3600);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        const r = k === 'DefaultTime2Wait' ? Math.max(n, 2) : Math.min(n, 20);
        if (k === 'DefaultTime2Wait') p.defaultTime2Wait = r;
        else p.defaultTime2Retain = r;
        reply.push([k, String(r)]);
        break;
      }
      case 'MaxOutstandingR2T': {
        const n = num(v, 1, 65535);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        if (discovery) { reply.push([k, 'Irrelevant']); break; }
        p.maxOutstandingR2T = 1;
        reply.push([k, '1']);
        break;
      }
      case 'ErrorRecoveryLevel': {
        const n = num(v, 0, 2);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        reply.push([k, '0']);
        break;
      }
      case 'TaskReporting':
        reply.push([k, 'RFC3720']);
        break;
      case 'iSCSIProtocolLevel': {
        const n = num(v, 0, 31);
        if (n === undefined) return { reply, error: `${k}=${v}` };
        reply.push([k, String(Math.min(n, 1))]);
        break;
      }
      default:
        reply.push([k, 'NotUnderstood']);
    }
  }
  p.firstBurst = Math.min(p.firstBurst, p.maxBurst);
  return { reply };
}

// ---- CHAP
export const CHAP_MD5 = 5;

export function chapResponse(id: number, secret: string, challenge: Buffer): Buffer {
  return createHash('md5').update(Buffer.from([id & 0xff])).update(Buffer.from(secret, 'utf8')).update(challenge).digest();
}

/** CHAP binary values: `0x<hex>` or `0b<base64>` (RFC 7143 §6.1). */
export function decodeChapValue(v: string): Buffer | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(v) && v.length % 2 === 0) return Buffer.from(v.slice(2), 'hex');
  if (/^0[xX][0-9a-fA-F]+$/.test(v)) return Buffer.from(`0${v.slice(2)}`, 'hex');
  if (/^0[bB][A-Za-z0-9+/=]+$/.test(v)) return Buffer.from(v.slice(2), 'base64');
  return undefined;
}

export function newChallenge(): { id: number; challenge: Buffer } {
  const r = randomBytes(17);
  return { id: r[0]!, challenge: r.subarray(1) };
}

export function chapMatches(expected: Buffer, got: Buffer): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got);
}
