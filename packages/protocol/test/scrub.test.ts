import { StorpoolError } from '@storpool/errors';
import { describe, expect, it } from 'vitest';
import {
  Op,
  RequestDecoder,
  ScrubCommand,
  decodeRequestHeader,
  decodeScrubStatus,
  encodeRequest,
  encodeScrubStatus,
  parseScrubStatus,
  type RequestHeader,
  type ScrubStatus,
} from '../src/index.js';

const control: Omit<RequestHeader, 'payloadBytes'> = {
  op: Op.SCRUB, flags: 0, requestId: 5, epoch: 2, group: 0, parentCount: 0, volumeId: 0, objectIndex: 0, offset: ScrubCommand.START, length: 0, version: 0, placementId: 0, shard: 0,
};

const status: ScrubStatus = {
  diskId: 3,
  running: true,
  bandwidthBytesPerSecond: 8_000_000,
  intervalMs: 0,
  passesCompleted: 1,
  pass: { objects: 4, bytes: 3 * 4096, errorsFound: 2, repaired: 1, unrepairable: 1, startedAt: 1_700_000_000_000, finishedAt: null, objectsTotal: 5, bytesTotal: 16 * 4096, progress: 0.1875, rateBytesPerSecond: 1234.5, aborted: false },
  total: { objects: 9, bytes: 10 * 4096, errorsFound: 2, repaired: 1, unrepairable: 1 },
  lastCompletedAt: 1_699_999_000_000,
  nextScheduledAt: null,
  unrepairableBlocks: [{ volumeId: 0x1_0000_0002, objectIndex: 7, block: 1023, at: 1_700_000_000_500 }],
};

describe('SCRUB and COPY_READ frames', () => {
  it('carries the scrub command in offset, byte for byte, through a split stream', () => {
    const b = encodeRequest(control);
    expect(b.readUInt16LE(4)).toBe(32);
    expect(b.readUInt32LE(36)).toBe(ScrubCommand.START);
    const decoder = new RequestDecoder();
    const frames = [...decoder.push(b.subarray(0, 30)), ...decoder.push(b.subarray(30))];
    expect(frames).toHaveLength(1);
    expect(frames[0]!.header).toEqual({ ...control, payloadBytes: 0 });
    for (const offset of [ScrubCommand.STATUS, ScrubCommand.STOP]) expect(decodeRequestHeader(encodeRequest({ ...control, offset })).offset).toBe(offset);
  });

  it('refuses an unknown scrub command and a payload', () => {
    expect(() => decodeRequestHeader(encodeRequest({ ...control, offset: 3 }))).toThrow(/unknown scrub command 3/);
    const withPayload = encodeRequest(control, [Buffer.alloc(8)]);
    expect(() => decodeRequestHeader(withPayload)).toThrow(StorpoolError);
  });

  it('decodes COPY_READ like REPLICA_READ (no parents, no payload)', () => {
    const h = { ...control, op: Op.COPY_READ, offset: 8192, length: 4096, volumeId: 77, objectIndex: 3 };
    expect(decodeRequestHeader(encodeRequest(h))).toEqual({ ...h, payloadBytes: 0 });
    expect(() => decodeRequestHeader(encodeRequest({ ...h, parentCount: 1 }, [Buffer.alloc(8)]))).toThrow(/takes no parents/);
  });
});

describe('scrub status document', () => {
  it('round-trips', () => {
    expect(decodeScrubStatus(encodeScrubStatus(status))).toEqual(status);
    expect(parseScrubStatus(JSON.parse(JSON.stringify(status)))).toEqual(status);
  });

  it('refuses what is not a status, with WIRE_ERR_FRAME_INVALID', () => {
    const bad: unknown[] = [
      { ...status, running: 'yes' },
      { ...status, pass: { ...status.pass, progress: 1.5 } },
      { ...status, total: { ...status.total, repaired: -1 } },
      { ...status, unrepairableBlocks: Array.from({ length: 65 }, () => status.unrepairableBlocks[0]) },
    ];
    for (const value of bad) {
      let caught: unknown;
      try {
        parseScrubStatus(value);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(StorpoolError);
      expect((caught as StorpoolError).code).toBe('WIRE_ERR_FRAME_INVALID');
    }
    expect(() => decodeScrubStatus(Buffer.from('{not json'))).toThrow(/not JSON/);
  });
});
