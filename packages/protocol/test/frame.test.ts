import fc from 'fast-check';
import { StorpoolError } from '@storpool/errors';
import { describe, expect, it } from 'vitest';
import {
  FRAME_PAYLOAD_BYTES_MAX,
  Op,
  ReplyDecoder,
  RequestDecoder,
  chunkCrcs,
  crc32c,
  dataPayloadBytes,
  decodeRequestHeader,
  encodeCrcs,
  encodeParents,
  encodeReply,
  encodeRequest,
  splitDataPayload,
  type RequestHeader,
} from '../src/index.js';

const base: Omit<RequestHeader, 'payloadBytes'> = {
  op: Op.READ, flags: 0, requestId: 7, epoch: 3, group: 2, parentCount: 0, volumeId: 0x1_0000_0005, objectIndex: 9, offset: 4096, length: 8192, version: 0, placementId: 0x2_0000_0006, shard: 11,
};

describe('request header layout', () => {
  it('puts every field at the documented offset', () => {
    const b = encodeRequest(base);
    expect(b.length).toBe(72);
    expect(b.subarray(0, 4).toString('latin1')).toBe('SPRQ');
    expect(b.readUInt16LE(4)).toBe(Op.READ);
    expect(b.readUInt16LE(6)).toBe(0);
    expect(b.readUInt32LE(8)).toBe(7);
    expect(b.readUInt32LE(12)).toBe(0);
    expect(b.readUInt32LE(16)).toBe(3);
    expect(b.readUInt16LE(20)).toBe(2);
    expect(b.readUInt16LE(22)).toBe(0);
    expect(b.readUInt32LE(24)).toBe(5);
    expect(b.readUInt32LE(28)).toBe(1);
    expect(b.readUInt32LE(32)).toBe(9);
    expect(b.readUInt32LE(36)).toBe(4096);
    expect(b.readUInt32LE(40)).toBe(8192);
    expect(b.readUInt32LE(44)).toBe(0);
    expect(b.readBigUInt64LE(48)).toBe(0n);
    expect(b.readBigUInt64LE(56)).toBe(0x2_0000_0006n);
    expect(b.readUInt32LE(64)).toBe(11);
    expect(b.readUInt32LE(68)).toBe(crc32c(b.subarray(0, 68)));
    expect(decodeRequestHeader(b)).toEqual({ ...base, payloadBytes: 0 });
  });

  it('matches a pinned byte vector (layout must never drift)', () => {
    const hex = encodeRequest({ ...base, op: Op.WRITE, length: 10, offset: 0 }, [Buffer.from('0123456789'), encodeCrcs(chunkCrcs(Buffer.from('0123456789')))]).toString('hex');
    expect(hex.slice(0, 144)).toBe(
      '53505251' + '0b00' + '0000' + '07000000' + '0e000000' + '03000000' + '0200' + '0000' + '0500000001000000' + '09000000' + '00000000' + '0a000000' + '00000000' + '0000000000000000' + '0600000002000000' + '0b000000' + hex.slice(136, 144),
    );
    expect(hex.slice(144, 164)).toBe(Buffer.from('0123456789').toString('hex'));
    expect(Buffer.from(hex.slice(164), 'hex').readUInt32LE(0)).toBe(crc32c(Buffer.from('0123456789')));
  });

  it('rejects bad magic, header CRC, unknown op/flags, reserved bytes, oversize and mismatched payloads', () => {
    const good = encodeRequest(base);
    const mutate = (at: number, v: number, fixCrc = true): Buffer => {
      const b = Buffer.from(good);
      b[at] = v;
      if (fixCrc) b.writeUInt32LE(crc32c(b.subarray(0, 68)), 68);
      return b;
    };
    const codeOf = (b: Buffer): string => {
      try {
        decodeRequestHeader(b);
        return 'ok';
      } catch (err) {
        expect(err).toBeInstanceOf(StorpoolError);
        return (err as StorpoolError).code;
      }
    };
    expect(codeOf(mutate(0, 0))).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(mutate(9, 1, false))).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(mutate(4, 99))).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(mutate(6, 0x80))).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(mutate(44, 1))).toBe('WIRE_ERR_FRAME_INVALID'); // reserved
    expect(codeOf(mutate(22, 1))).toBe('WIRE_ERR_FRAME_INVALID'); // a parent announced, none carried
    expect(codeOf(mutate(63, 0xff))).toBe('WIRE_ERR_FRAME_INVALID'); // placementId >= 2^53
    expect(codeOf(mutate(15, 0xff))).toBe('WIRE_ERR_FRAME_INVALID'); // payloadBytes huge
    expect(codeOf(mutate(31, 0xff))).toBe('WIRE_ERR_FRAME_INVALID'); // volumeId >= 2^53
    expect(codeOf(mutate(43, 0x10))).toBe('WIRE_ERR_FRAME_INVALID'); // length beyond the object
    expect(codeOf(mutate(12, 1))).toBe('WIRE_ERR_FRAME_INVALID'); // READ with a payload
    const write = encodeRequest({ ...base, op: Op.WRITE, length: 4096 }, [Buffer.alloc(4096), Buffer.alloc(3)]);
    expect(codeOf(encodeRequest({ ...base, op: Op.FLUSH, length: 0, parentCount: 1 }, [encodeParents([5])]))).toBe('WIRE_ERR_FRAME_INVALID');
    expect(codeOf(write)).toBe('WIRE_ERR_FRAME_INVALID');
  });
});

describe('data payload', () => {
  it('carries one CRC per 4 KiB chunk, the last one short', () => {
    expect(dataPayloadBytes(4096)).toBe(4100);
    expect(dataPayloadBytes(4097)).toBe(4105);
    expect(dataPayloadBytes(512)).toBe(516);
    const data = Buffer.alloc(5000, 7);
    const crcs = chunkCrcs(data);
    const split = splitDataPayload(Buffer.concat([data, encodeCrcs(crcs)]), 5000);
    expect(split.data.equals(data)).toBe(true);
    expect(Array.from(split.crcs)).toEqual([crc32c(data.subarray(0, 4096)), crc32c(data.subarray(4096))]);
  });
});

const headerArb = fc.record({
  op: fc.constantFrom(Op.READ, Op.WRITE, Op.TRIM, Op.FLUSH, Op.REPLICA_WRITE, Op.PING),
  requestId: fc.nat({ max: 0xffffffff }),
  epoch: fc.nat({ max: 0xffffffff }),
  group: fc.nat({ max: 0xffff }),
  volumeId: fc.nat({ max: Number.MAX_SAFE_INTEGER - 8 }),
  objectIndex: fc.nat({ max: 0xffffffff }),
  offset: fc.nat({ max: 4 * 1024 * 1024 - 1 }),
  len: fc.nat({ max: 20000 }),
  version: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  shard: fc.nat({ max: 0xffffffff }),
});

type HeaderCase = typeof headerArb extends fc.Arbitrary<infer T> ? T : never;

function frameOf(h: HeaderCase): Buffer {
  const length = Math.min(h.len, 4 * 1024 * 1024 - h.offset);
  const payload: Buffer[] = [];
  if (h.op === Op.WRITE || h.op === Op.REPLICA_WRITE) {
    const data = Buffer.alloc(length, h.requestId & 0xff);
    payload.push(data, encodeCrcs(chunkCrcs(data)));
  }
  const parentCount = h.op === Op.READ || h.op === Op.WRITE || h.op === Op.TRIM ? h.shard % 4 : 0;
  payload.push(encodeParents(Array.from({ length: parentCount }, (_, i) => h.volumeId + i + 1)));
  return encodeRequest({ op: h.op, flags: 0, requestId: h.requestId, epoch: h.epoch, group: h.group, parentCount, volumeId: h.volumeId, objectIndex: h.objectIndex, offset: h.offset, length, version: h.version, placementId: h.volumeId, shard: h.shard }, payload);
}

describe('frame decoder (fuzz)', () => {
  it('decode(split(encode(frames))) == frames for any split', () => {
    fc.assert(
      fc.property(fc.array(headerArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat({ max: 30000 }), { maxLength: 10 }), (headers, cuts) => {
        const frames = headers.map(frameOf);
        const stream = Buffer.concat(frames);
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const decoder = new RequestDecoder();
        const out: Buffer[] = [];
        let last = 0;
        for (const p of [...points, stream.length]) {
          for (const f of decoder.push(stream.subarray(last, p))) {
            out.push(f.payload);
            expect(f.header.requestId).toBe(headers[out.length - 1]!.requestId);
          }
          last = p;
        }
        expect(out.length).toBe(frames.length);
        out.forEach((payload, i) => expect(payload.equals(frames[i]!.subarray(72))).toBe(true));
        expect(decoder.bufferedBytes).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('random bytes either decode or throw WIRE_ERR_FRAME_INVALID, never buffering past the limit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 4096 }), (bytes) => {
        const decoder = new RequestDecoder();
        try {
          decoder.push(Buffer.from(bytes));
        } catch (err) {
          expect((err as StorpoolError).code).toBe('WIRE_ERR_FRAME_INVALID');
        }
        expect(decoder.bufferedBytes).toBeLessThanOrEqual(72 + FRAME_PAYLOAD_BYTES_MAX);
      }),
      { numRuns: 3000 },
    );
  });

  it('mutated valid frames are rejected or decode to a self-consistent header', () => {
    fc.assert(
      fc.property(headerArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (h, where, xor) => {
        const frame = frameOf(h);
        const at = where % frame.length;
        frame[at] = frame[at]! ^ xor;
        const decoder = new RequestDecoder();
        try {
          for (const f of decoder.push(frame)) expect(f.payload.length).toBe(f.header.payloadBytes);
          // A flipped header byte is always caught by the header CRC; payload bytes are the data CRCs' job.
          expect(at).toBeGreaterThanOrEqual(72);
        } catch (err) {
          expect((err as StorpoolError).code).toBe('WIRE_ERR_FRAME_INVALID');
          expect(at).toBeLessThan(72);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('reply decoder round-trips and refuses garbage', () => {
    const replies = [encodeReply({ status: 0, flags: 0, requestId: 1, version: 5, epoch: 2 }, [Buffer.from('abc')]), encodeReply({ status: 40, flags: 0, requestId: 2, version: 0, epoch: 9 })];
    const d = new ReplyDecoder();
    const out = d.push(Buffer.concat(replies));
    expect(out.map((f) => [f.header.requestId, f.header.status, f.payload.toString()])).toEqual([
      [1, 0, 'abc'],
      [2, 40, ''],
    ]);
    expect(() => new ReplyDecoder().push(Buffer.alloc(64))).toThrowError(StorpoolError);
  });
});
