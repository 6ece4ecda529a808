/**
 * COMPARE_AND_WRITE frames byte for byte: the request (header + compare half + write half +
 * parents), what its header decoder refuses, and the 8-byte result of the reply.
 */
import { StorpoolError } from '@storpool/errors';
import { describe, expect, it } from 'vitest';
import {
  COMPARE_AND_WRITE_BYTES_MAX,
  Op,
  RequestDecoder,
  chunkCrcs,
  crc32c,
  dataPayloadBytes,
  decodeCompareAndWriteResult,
  decodeParents,
  decodeRequestHeader,
  encodeCompareAndWriteResult,
  encodeCrcs,
  encodeParents,
  encodeRequest,
  opName,
  opTakesParents,
  splitCompareAndWritePayload,
  type RequestHeader,
} from '../src/index.js';

const base: Omit<RequestHeader, 'payloadBytes'> = {
  op: Op.COMPARE_AND_WRITE, flags: 0, requestId: 0x0102_0304, epoch: 5, group: 1, parentCount: 0, volumeId: 42, objectIndex: 3, offset: 512, length: 512, version: 0x1234_5678_9abc, placementId: 40, shard: 17,
};

function half(data: Buffer): Buffer[] {
  return [data, encodeCrcs(chunkCrcs(data))];
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(StorpoolError);
    return (err as StorpoolError).code;
  }
}

describe('COMPARE_AND_WRITE request', () => {
  it('is op 16, a client op that carries the ancestor chain', () => {
    expect(Op.COMPARE_AND_WRITE).toBe(16);
    expect(opName(16)).toBe('COMPARE_AND_WRITE');
    expect(opTakesParents(Op.COMPARE_AND_WRITE)).toBe(true);
  });

  it('lays out header, compare bytes + CRCs, write bytes + CRCs, parents at fixed offsets', () => {
    const compare = Buffer.alloc(512, 0xaa);
    const data = Buffer.alloc(512, 0x55);
    const b = encodeRequest({ ...base, parentCount: 2 }, [...half(compare), ...half(data), encodeParents([7, 0x1_0000_0009])]);
    expect(b.length).toBe(72 + 516 + 516 + 16);
    expect(b.readUInt16LE(4)).toBe(16);
    expect(b.readUInt32LE(12)).toBe(516 + 516 + 16); // payloadBytes
    expect(b.readUInt16LE(22)).toBe(2); // parentCount
    expect(b.readUInt32LE(36)).toBe(512); // offset in the object
    expect(b.readUInt32LE(40)).toBe(512); // length of each half
    expect(b.readBigUInt64LE(48)).toBe(0x1234_5678_9abcn); // the attempt token rides in `version`
    expect(b.subarray(72, 72 + 512).equals(compare)).toBe(true);
    expect(b.readUInt32LE(72 + 512)).toBe(crc32c(compare));
    expect(b.subarray(72 + 516, 72 + 516 + 512).equals(data)).toBe(true);
    expect(b.readUInt32LE(72 + 516 + 512)).toBe(crc32c(data));
    expect(b.readBigUInt64LE(72 + 1032)).toBe(7n);
    expect(b.readBigUInt64LE(72 + 1040)).toBe(0x1_0000_0009n);

    const h = decodeRequestHeader(b);
    expect(h).toEqual({ ...base, parentCount: 2, payloadBytes: 1048 });
    const payload = b.subarray(72);
    const split = splitCompareAndWritePayload(payload, h.length, h.parentCount);
    expect(split.compare.equals(compare)).toBe(true);
    expect(split.data.equals(data)).toBe(true);
    expect(Array.from(split.compareCrcs)).toEqual([crc32c(compare)]);
    expect(Array.from(split.crcs)).toEqual([crc32c(data)]);
    expect(decodeParents(payload, 2)).toEqual([7, 0x1_0000_0009]);
  });

  it('matches a pinned byte vector (layout must never drift)', () => {
    const hex = encodeRequest({ ...base, offset: 0, length: 4, version: 9 }, [...half(Buffer.from('abcd')), ...half(Buffer.from('wxyz'))]).toString('hex');
    expect(hex.slice(0, 136)).toBe(
      '53505251' + '1000' + '0000' + '04030201' + '10000000' + '05000000' + '0100' + '0000' + '2a00000000000000' + '03000000' + '00000000' + '04000000' + '00000000' + '0900000000000000' + '2800000000000000' + '11000000',
    );
    const payload = Buffer.from(hex.slice(144), 'hex');
    expect(payload.subarray(0, 4).toString()).toBe('abcd');
    expect(payload.readUInt32LE(4)).toBe(crc32c(Buffer.from('abcd')));
    expect(payload.subarray(8, 12).toString()).toBe('wxyz');
    expect(payload.readUInt32LE(12)).toBe(crc32c(Buffer.from('wxyz')));
  });

  it('carries one CRC per 4 KiB chunk in each half, the last one short', () => {
    const compare = Buffer.alloc(5000, 1);
    const data = Buffer.alloc(5000, 2);
    const b = encodeRequest({ ...base, offset: 0, length: 5000 }, [...half(compare), ...half(data)]);
    expect(b.length - 72).toBe(2 * dataPayloadBytes(5000));
    expect(b.readUInt32LE(72 + 5000)).toBe(crc32c(compare.subarray(0, 4096)));
    expect(b.readUInt32LE(72 + 5004)).toBe(crc32c(compare.subarray(4096)));
    const split = splitCompareAndWritePayload(b.subarray(72), 5000, 0);
    expect(Array.from(split.crcs)).toEqual([crc32c(data.subarray(0, 4096)), crc32c(data.subarray(4096))]);
  });

  it('refuses an empty or oversized range and a payload that is not two halves + parents', () => {
    const one = Buffer.alloc(512);
    const ok = (o: Partial<RequestHeader>, payload: Buffer[]): string => codeOf(() => decodeRequestHeader(encodeRequest({ ...base, ...o }, payload)));
    expect(ok({}, [...half(one), ...half(one)])).toBe('ok');
    expect(ok({ length: 0 }, [])).toBe('WIRE_ERR_FRAME_INVALID');
    expect(ok({ length: 512 }, half(one))).toBe('WIRE_ERR_FRAME_INVALID'); // only one half
    expect(ok({ length: 512, parentCount: 1 }, [...half(one), ...half(one)])).toBe('WIRE_ERR_FRAME_INVALID'); // parent announced, none carried
    const big = COMPARE_AND_WRITE_BYTES_MAX + 4096;
    expect(ok({ offset: 0, length: big }, [...half(Buffer.alloc(big)), ...half(Buffer.alloc(big))])).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(() => splitCompareAndWritePayload(Buffer.alloc(1031), 512, 0))).toBe('WIRE_ERR_FRAME_INVALID');
  });

  it('decodes from a stream split anywhere', () => {
    const frame = encodeRequest(base, [...half(Buffer.alloc(512, 3)), ...half(Buffer.alloc(512, 4))]);
    for (const cut of [1, 71, 72, 73, 600, frame.length - 1]) {
      const d = new RequestDecoder();
      const frames = [...d.push(frame.subarray(0, cut)), ...d.push(frame.subarray(cut))];
      expect(frames).toHaveLength(1);
      expect(frames[0]!.header.op).toBe(Op.COMPARE_AND_WRITE);
      expect(frames[0]!.payload.equals(frame.subarray(72))).toBe(true);
    }
  });
});

describe('COMPARE_AND_WRITE result', () => {
  it('is 8 bytes: u32 outcome (0 written, 1 miscompare), u32 first differing byte offset', () => {
    expect(encodeCompareAndWriteResult({ written: true }).toString('hex')).toBe('0000000000000000');
    expect(encodeCompareAndWriteResult({ written: false, offset: 0x1ff }).toString('hex')).toBe('01000000ff010000');
    expect(decodeCompareAndWriteResult(Buffer.from('0000000000000000', 'hex'))).toEqual({ written: true });
    expect(decodeCompareAndWriteResult(Buffer.from('0100000007000000', 'hex'))).toEqual({ written: false, offset: 7 });
    expect(decodeCompareAndWriteResult(Buffer.from('0100000000000000', 'hex'))).toEqual({ written: false, offset: 0 });
  });

  it('refuses a wrong size, an unknown outcome, an offset with "written" and an impossible offset', () => {
    for (const hex of ['00000000', '000000000000000000', '0200000000000000', '0000000001000000', '0100000000001000']) {
      expect(codeOf(() => decodeCompareAndWriteResult(Buffer.from(hex, 'hex'))), hex).toBe('WIRE_ERR_FRAME_INVALID');
    }
  });
});
