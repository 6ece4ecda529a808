import { describe, expect, it } from 'vitest';
import {
  Op,
  decodeRequestHeader,
  decodeShardReleaseRequest,
  decodeShardReleaseResult,
  decodeShardSyncRequest,
  encodeRequest,
  encodeShardReleaseRequest,
  encodeShardSyncRequest,
  type RequestHeader,
} from '../src/index.js';

const header = (op: RequestHeader['op']): Omit<RequestHeader, 'payloadBytes'> => ({
  op, flags: 0, requestId: 1, epoch: 9, group: 1, parentCount: 0, volumeId: 0, objectIndex: 0, offset: 0, length: 0, version: 0, placementId: 0, shard: 0,
});

describe('SHARD_SYNC and SHARD_RELEASE payloads', () => {
  it('round-trip their JSON requests', () => {
    const release = { group: 3, shards: [0, 5, 63], dataIds: [[12, 12], [13, 12]] as [number, number][] };
    expect(decodeShardReleaseRequest(encodeShardReleaseRequest(release))).toEqual(release);
    const sync = { target: 4, group: 3, shards: [1], dataIds: [[12, 12]] as [number, number][], maxBytesPerSec: 1000 };
    expect(decodeShardSyncRequest(encodeShardSyncRequest(sync))).toEqual(sync);
    expect(decodeShardReleaseResult(Buffer.from('{"objectsReleased":3,"bytesReleased":12288}'))).toEqual({ objectsReleased: 3, bytesReleased: 12288 });
  });

  it('refuse malformed requests with WIRE_ERR_FRAME_INVALID naming the field', () => {
    const bad: [string, RegExp][] = [
      ['not json', /SHARD_RELEASE payload is not JSON/],
      ['{"group":1,"shards":[],"dataIds":[]}', /shards/],
      ['{"group":-1,"shards":[1],"dataIds":[]}', /group/],
      ['{"group":1,"shards":[1],"dataIds":[[1]]}', /dataIds/],
      ['{"group":1,"shards":[1.5],"dataIds":[]}', /shards/],
    ];
    for (const [text, message] of bad) {
      expect(() => decodeShardReleaseRequest(Buffer.from(text)), text).toThrow(message);
      try {
        decodeShardReleaseRequest(Buffer.from(text));
      } catch (err) {
        expect((err as { code: string }).code).toBe('WIRE_ERR_FRAME_INVALID');
      }
    }
    expect(() => decodeShardReleaseResult(Buffer.from('{"objectsReleased":1}'))).toThrow(/bytesReleased/);
  });

  it('frames: a SHARD_RELEASE carries its payload; one without is invalid', () => {
    const payload = encodeShardReleaseRequest({ group: 1, shards: [2], dataIds: [] });
    const h = decodeRequestHeader(encodeRequest(header(Op.SHARD_RELEASE), [payload]));
    expect(h.op).toBe(34);
    expect(h.payloadBytes).toBe(payload.length);
    expect(() => decodeRequestHeader(encodeRequest(header(Op.SHARD_RELEASE)))).toThrow(/SHARD_RELEASE needs a payload/);
  });
});
