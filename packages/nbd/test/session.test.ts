/**
 * The codec against proto.md's byte layouts, and the session state machine driven by bytes
 * alone (no sockets): negotiation, transmission, errors, and a fuzzer.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NbdSession, memoryExport, nbdProtocol as P, type NbdEffect, type NbdExport } from '../src/index.js';

const mem = memoryExport({ name: 'disk', sizeBytes: 1024 * 1024, description: 'a disk' });
const ro = memoryExport({ name: 'snap', sizeBytes: 65536, readOnly: true });
const catalog = { get: (n: string): NbdExport | undefined => [mem, ro].find((e) => e.name === n), list: () => [mem, ro] };

function sent(effects: NbdEffect[]): Buffer {
  return Buffer.concat(effects.flatMap((e) => (e.type === 'send' ? e.data : [])));
}

function optionReplies(b: Buffer): P.OptionReply[] {
  const out: P.OptionReply[] = [];
  for (let at = 0; at < b.length; ) {
    const r = P.decodeOptionReply(b, at);
    if (r === undefined) throw new Error('truncated option reply');
    out.push(r.reply);
    at += r.bytes;
  }
  return out;
}

/** A session past the handshake, optionally with structured replies and base:allocation, in transmission. */
function transmission(name: string, structured: boolean): { s: NbdSession; effects: NbdEffect[] } {
  const s = new NbdSession({ catalog });
  s.start();
  s.onBytes(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES));
  if (structured) {
    s.onBytes(P.encodeOption(P.NbdOpt.STRUCTURED_REPLY));
    s.onBytes(P.encodeOption(P.NbdOpt.SET_META_CONTEXT, P.encodeMetaContextRequest(name, ['base:allocation'])));
  }
  const effects = s.onBytes(P.encodeOption(P.NbdOpt.GO, P.encodeInfoRequest(name, [P.NbdInfo.BLOCK_SIZE])));
  expect(s.state).toBe('transmission');
  return { s, effects };
}

describe('protocol byte layouts (doc/proto.md)', () => {
  it('greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags', () => {
    const g = P.encodeGreeting(3);
    expect(g.toString('hex')).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
    expect(P.decodeGreeting(g).handshakeFlags).toBe(3);
  });
  it('option request and reply headers', () => {
    expect(P.encodeOption(7, Buffer.from('ab')).toString('hex')).toBe('49484156454f5054' + '00000007' + '00000002' + '6162');
    expect(P.encodeOptionReply(7, P.NbdRep.ERR_UNSUP).toString('hex')).toBe('0003e889045565a9' + '00000007' + '80000001' + '00000000');
    expect(() => P.decodeOptionHeader(Buffer.alloc(16))).toThrow(/IHAVEOPT/);
  });
  it('EXPORT_NAME reply: size, flags, 124 zeroes unless NO_ZEROES', () => {
    expect(P.encodeExportNameReply(4096, 0x0d, false).length).toBe(134);
    expect(P.encodeExportNameReply(4096, 0x0d, true).toString('hex')).toBe('0000000000001000' + '000d');
  });
  it('NBD_INFO_EXPORT / BLOCK_SIZE / NAME payloads', () => {
    expect(P.encodeInfoExport(1 << 20, 1).toString('hex')).toBe('0000' + '0000000000100000' + '0001');
    expect(P.encodeInfoBlockSize(1, 4096, 1 << 25).toString('hex')).toBe('0003' + '00000001' + '00001000' + '02000000');
    expect(P.encodeInfoString(P.NbdInfo.NAME, 'x').toString('hex')).toBe('0001' + '78');
  });
  it('request header: magic, flags, type, handle, offset, length', () => {
    const r = P.encodeRequest({ flags: 1, type: 1, handle: 0x0102030405060708n, offset: 512n, length: 4 }, Buffer.from('data'));
    expect(r.subarray(0, 28).toString('hex')).toBe('25609513' + '0001' + '0001' + '0102030405060708' + '0000000000000200' + '00000004');
    expect(P.decodeRequestHeader(r)).toEqual({ flags: 1, type: 1, handle: 0x0102030405060708n, offset: 512n, length: 4 });
    expect(() => P.decodeRequestHeader(P.encodeRequest({ flags: 0, type: 1, handle: 0n, offset: 0n, length: P.PAYLOAD_BYTES_MAX + 1 }))).toThrow(/exceeds/);
  });
  it('simple reply and structured chunks', () => {
    expect(P.encodeSimpleReply(22, 9n).toString('hex')).toBe('67446698' + '00000016' + '0000000000000009');
    expect(P.encodeOffsetDataHead(1, 9n, 4096, 512).toString('hex')).toBe('668e33ef' + '0001' + '0001' + '0000000000000009' + '00000208' + '0000000000001000');
    expect(P.encodeOffsetHole(0, 9n, 0, 4096).toString('hex')).toBe('668e33ef' + '0000' + '0002' + '0000000000000009' + '0000000c' + '0000000000000000' + '00001000');
    expect(P.encodeBlockStatusChunk(1, 9n, 1, [{ length: 4096, flags: 3 }]).toString('hex')).toBe('668e33ef' + '0001' + '0005' + '0000000000000009' + '0000000c' + '00000001' + '00001000' + '00000003');
    expect(P.encodeErrorChunk(9n, 5, 'x').toString('hex')).toBe('668e33ef' + '0001' + '8001' + '0000000000000009' + '00000007' + '00000005' + '0001' + '78');
    expect(P.encodeNoneChunk(9n).toString('hex')).toBe('668e33ef' + '0001' + '0000' + '0000000000000009' + '00000000');
  });
  it('INFO and meta-context requests round-trip; malformed ones are rejected', () => {
    expect(P.decodeInfoRequest(P.encodeInfoRequest('vol', [1, 3]))).toEqual({ name: 'vol', infos: [1, 3] });
    expect(P.decodeInfoRequest(Buffer.concat([P.encodeInfoRequest('vol', [1]), Buffer.from([0])]))).toBeUndefined();
    expect(P.decodeMetaContextRequest(P.encodeMetaContextRequest('v', ['base:allocation', 'x:y']))).toEqual({ name: 'v', queries: ['base:allocation', 'x:y'] });
    expect(P.decodeMetaContextRequest(P.encodeMetaContextRequest('v', ['a']).subarray(0, 10))).toBeUndefined();
  });
});

describe('NbdSession negotiation', () => {
  it('LIST, INFO with name/description/block size, unknown options, GO', () => {
    const s = new NbdSession({ catalog });
    expect(sent(s.start()).length).toBe(P.GREETING_BYTES);
    expect(s.onBytes(P.encodeClientFlags(1))).toEqual([]);
    const list = optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.LIST))));
    expect(list.map((r) => r.type)).toEqual([P.NbdRep.SERVER, P.NbdRep.SERVER, P.NbdRep.ACK]);
    expect(list[0]!.data.subarray(4, 8).toString()).toBe('disk');
    expect(optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.LIST, Buffer.from('x')))))[0]!.type).toBe(P.NbdRep.ERR_INVALID);
    for (const opt of [P.NbdOpt.STARTTLS, P.NbdOpt.EXTENDED_HEADERS, 99]) expect(optionReplies(sent(s.onBytes(P.encodeOption(opt))))[0]!.type).toBe(P.NbdRep.ERR_UNSUP);
    // Meta contexts need structured replies first.
    expect(optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.SET_META_CONTEXT, P.encodeMetaContextRequest('disk', ['base:allocation'])))))[0]!.type).toBe(P.NbdRep.ERR_INVALID);
    const info = optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.INFO, P.encodeInfoRequest('disk', [P.NbdInfo.NAME, P.NbdInfo.DESCRIPTION, P.NbdInfo.BLOCK_SIZE])))));
    expect(info.map((r) => [r.type, r.data.length > 0 ? r.data.readUInt16BE(0) : -1])).toEqual([[3, 0], [3, 1], [3, 2], [3, 3], [1, -1]]);
    expect(info[0]!.data.readBigUInt64BE(2)).toBe(1048576n);
    expect(info[2]!.data.subarray(2).toString()).toBe('a disk');
    expect(info[3]!.data.readUInt32BE(10)).toBe(P.PAYLOAD_BYTES_MAX);
    expect(optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.GO, P.encodeInfoRequest('nope', [])))))[0]!.type).toBe(P.NbdRep.ERR_UNKNOWN);
    expect(s.state).toBe('options');
    const go = s.onBytes(P.encodeOption(P.NbdOpt.GO, P.encodeInfoRequest('snap', [])));
    expect(go.some((e) => e.type === 'export' && e.export.name === 'snap')).toBe(true);
    const flags = optionReplies(sent(go))[0]!.data.readUInt16BE(10);
    expect(flags & P.NBD_FLAG_READ_ONLY).toBe(P.NBD_FLAG_READ_ONLY);
    expect(flags & P.NBD_FLAG_SEND_DF).toBe(0); // no structured replies negotiated
    expect(s.state).toBe('transmission');
  });

  it('LIST/SET_META_CONTEXT with base:allocation; EXPORT_NAME; ABORT', () => {
    const s = new NbdSession({ catalog, defaultExportName: 'disk' });
    s.start();
    s.onBytes(Buffer.concat([P.encodeClientFlags(3), P.encodeOption(P.NbdOpt.STRUCTURED_REPLY)]));
    const listed = optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.LIST_META_CONTEXT, P.encodeMetaContextRequest('disk', [])))));
    expect(listed.map((r) => [r.type, r.data.subarray(4).toString()])).toEqual([[4, 'base:allocation'], [1, '']]);
    const none = optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.SET_META_CONTEXT, P.encodeMetaContextRequest('disk', ['qemu:dirty-bitmap:x'])))));
    expect(none.map((r) => r.type)).toEqual([P.NbdRep.ACK]);
    const set = optionReplies(sent(s.onBytes(P.encodeOption(P.NbdOpt.SET_META_CONTEXT, P.encodeMetaContextRequest('disk', ['base:allocation'])))));
    expect(set[0]!.data.readUInt32BE(0)).toBe(1);
    const reply = sent(s.onBytes(P.encodeOption(P.NbdOpt.EXPORT_NAME, Buffer.from(''))));
    expect(reply.length).toBe(10); // NO_ZEROES negotiated
    expect(s.export?.name).toBe('disk');

    const a = new NbdSession({ catalog });
    a.start();
    const aborted = a.onBytes(Buffer.concat([P.encodeClientFlags(1), P.encodeOption(P.NbdOpt.ABORT)]));
    expect(optionReplies(sent(aborted))[0]!.type).toBe(P.NbdRep.ACK);
    expect(aborted.at(-1)).toMatchObject({ type: 'close', error: false });
  });

  it('hostile input closes with a reason: unknown client flags, bad magic, huge option, unknown EXPORT_NAME', () => {
    const cases: Buffer[] = [
      P.encodeClientFlags(0x80),
      Buffer.concat([P.encodeClientFlags(1), Buffer.alloc(16)]),
      Buffer.concat([P.encodeClientFlags(1), P.encodeOption(3).subarray(0, 12), Buffer.from([0xff, 0xff, 0xff, 0xff])]),
      Buffer.concat([P.encodeClientFlags(1), P.encodeOption(P.NbdOpt.EXPORT_NAME, Buffer.from('nope'))]),
    ];
    for (const bytes of cases) {
      const s = new NbdSession({ catalog });
      s.start();
      const effects = s.onBytes(bytes);
      expect(effects.at(-1)).toMatchObject({ type: 'close', error: true });
      expect(s.state).toBe('closed');
      expect(s.onBytes(Buffer.alloc(100))).toEqual([]);
    }
  });
});

describe('NbdSession transmission', () => {
  it('out-of-order completion, errors per spec, DISC drains in-flight requests', () => {
    const { s } = transmission('disk', false);
    const req = (type: number, handle: bigint, offset: number, length: number, flags = 0, data?: Buffer): NbdEffect[] =>
      s.onBytes(P.encodeRequest({ flags, type, handle, offset: BigInt(offset), length }, data));
    const io = (effects: NbdEffect[]): number => {
      const e = effects.find((x) => x.type === 'io');
      if (e?.type !== 'io') throw new Error('no io effect');
      return e.io.id;
    };
    const w = io(req(P.NbdCmd.WRITE, 1n, 0, 4, P.NBD_CMD_FLAG_FUA, Buffer.from('abcd')));
    const r = io(req(P.NbdCmd.READ, 2n, 0, 4));
    // Replies in completion order, not request order.
    expect(sent(s.complete(r, { ok: true, data: Buffer.from('wxyz') })).toString('hex')).toBe(P.encodeSimpleReply(0, 2n).toString('hex') + Buffer.from('wxyz').toString('hex'));
    expect(sent(s.complete(w, { ok: true }))).toEqual(P.encodeSimpleReply(0, 1n));
    expect(sent(req(P.NbdCmd.READ, 3n, 1024 * 1024 - 1, 2))).toEqual(P.encodeSimpleReply(P.NbdErrno.EINVAL, 3n));
    expect(sent(req(P.NbdCmd.WRITE, 4n, 1024 * 1024, 1, 0, Buffer.from('x')))).toEqual(P.encodeSimpleReply(P.NbdErrno.ENOSPC, 4n));
    expect(sent(req(P.NbdCmd.READ, 5n, 0, 1, 0x40))).toEqual(P.encodeSimpleReply(P.NbdErrno.EINVAL, 5n));
    expect(sent(req(42, 6n, 0, 0))).toEqual(P.encodeSimpleReply(P.NbdErrno.EINVAL, 6n));
    expect(sent(req(P.NbdCmd.BLOCK_STATUS, 7n, 0, 512))).toEqual(P.encodeSimpleReply(P.NbdErrno.EINVAL, 7n));
    expect(sent(req(P.NbdCmd.READ, 8n, 0, P.PAYLOAD_BYTES_MAX + 1))).toEqual(P.encodeSimpleReply(P.NbdErrno.EINVAL, 8n));
    const f = io(req(P.NbdCmd.FLUSH, 9n, 0, 0));
    expect(req(P.NbdCmd.DISC, 10n, 0, 0)).toEqual([]);
    expect(s.state).toBe('transmission');
    const last = s.complete(f, { ok: false, errno: 5, message: 'disk on fire' });
    expect(sent(last)).toEqual(P.encodeSimpleReply(5, 9n));
    expect(last.at(-1)).toMatchObject({ type: 'close', error: false });
  });

  it('structured replies: OFFSET_DATA, BLOCK_STATUS (clipped, REQ_ONE), error chunks, EPERM on a read-only export', () => {
    const { s } = transmission('disk', true);
    const one = (effects: NbdEffect[]): P.ReplyMessage => P.decodeReply(sent(effects))!.message;
    const io = (effects: NbdEffect[]): number => (effects.find((x) => x.type === 'io') as { io: { id: number } }).io.id;
    const r = io(s.onBytes(P.encodeRequest({ flags: P.NBD_CMD_FLAG_DF, type: P.NbdCmd.READ, handle: 1n, offset: 4096n, length: 3 })));
    const data = one(s.complete(r, { ok: true, data: Buffer.from('abc') }));
    expect(data).toMatchObject({ kind: 'chunk', flags: 1, type: P.NbdReply.OFFSET_DATA });
    expect(data.kind === 'chunk' && data.payload.toString('hex')).toBe('0000000000001000' + '616263');
    const b = io(s.onBytes(P.encodeRequest({ flags: 0, type: P.NbdCmd.BLOCK_STATUS, handle: 2n, offset: 0n, length: 10000 })));
    const bs = one(s.complete(b, { ok: true, extents: [{ length: 4096, flags: 3 }, { length: 4096, flags: 3 }, { length: 8192, flags: 0 }] }));
    expect(bs.kind === 'chunk' && bs.payload.toString('hex')).toBe('00000001' + '00002000' + '00000003' + '00000710' + '00000000');
    const b1 = io(s.onBytes(P.encodeRequest({ flags: P.NBD_CMD_FLAG_REQ_ONE, type: P.NbdCmd.BLOCK_STATUS, handle: 3n, offset: 0n, length: 10000 })));
    const bs1 = one(s.complete(b1, { ok: true, extents: [{ length: 4096, flags: 3 }, { length: 8192, flags: 0 }] }));
    expect(bs1.kind === 'chunk' && bs1.payload.length).toBe(12);
    const e = one(s.onBytes(P.encodeRequest({ flags: 0, type: P.NbdCmd.READ, handle: 4n, offset: 1n << 40n, length: 1 })));
    expect(e).toMatchObject({ kind: 'chunk', flags: 1, type: P.NbdReply.ERROR });
    expect(e.kind === 'chunk' && e.payload.readUInt32BE(0)).toBe(P.NbdErrno.EINVAL);

    const { s: r2 } = transmission('snap', true);
    for (const type of [P.NbdCmd.WRITE, P.NbdCmd.TRIM, P.NbdCmd.WRITE_ZEROES]) {
      const m = one(r2.onBytes(P.encodeRequest({ flags: 0, type, handle: 5n, offset: 0n, length: 1 }, type === P.NbdCmd.WRITE ? Buffer.from('x') : undefined)));
      expect(m.kind === 'chunk' && m.payload.readUInt32BE(0)).toBe(P.NbdErrno.EPERM);
    }
  });

  it('stops decoding at the in-flight limit and resumes on completion', () => {
    const s = new NbdSession({ catalog, requestsInFlightMax: 2 });
    s.start();
    s.onBytes(Buffer.concat([P.encodeClientFlags(1), P.encodeOption(P.NbdOpt.EXPORT_NAME, Buffer.from('disk'))]));
    const reqs = Buffer.concat([1n, 2n, 3n].map((h) => P.encodeRequest({ flags: 0, type: P.NbdCmd.READ, handle: h, offset: 0n, length: 8 })));
    const first = s.onBytes(reqs).filter((e) => e.type === 'io');
    expect(first.length).toBe(2);
    expect(s.saturated).toBe(true);
    const id = (first[0] as { io: { id: number } }).io.id;
    const next = s.complete(id, { ok: true, data: Buffer.alloc(8) });
    expect(next.filter((e) => e.type === 'io').length).toBe(1);
  });
});

describe('NbdSession fuzz', () => {
  const prefixes = [
    Buffer.alloc(0),
    P.encodeClientFlags(3),
    Buffer.concat([P.encodeClientFlags(3), P.encodeOption(P.NbdOpt.STRUCTURED_REPLY)]),
    Buffer.concat([P.encodeClientFlags(1), P.encodeOption(P.NbdOpt.STRUCTURED_REPLY), P.encodeOption(P.NbdOpt.SET_META_CONTEXT, P.encodeMetaContextRequest('disk', ['base:allocation'])), P.encodeOption(P.NbdOpt.GO, P.encodeInfoRequest('disk', []))]),
    Buffer.concat([P.encodeClientFlags(1), P.encodeOption(P.NbdOpt.EXPORT_NAME, Buffer.from('snap'))]),
  ];
  const option = fc.record({ opt: fc.integer({ min: 0, max: 12 }), data: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(P.encodeInfoRequest('disk', [1, 2, 3])), fc.constant(P.encodeMetaContextRequest('disk', ['base:', 'base:allocation']))) }).map(({ opt, data }) => P.encodeOption(opt, Buffer.from(data)));
  const request = fc
    .record({ flags: fc.integer({ min: 0, max: 0x3f }), type: fc.integer({ min: 0, max: 9 }), offset: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 21n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })), length: fc.oneof(fc.integer({ min: 0, max: 9000 }), fc.integer({ min: 0, max: 2 ** 32 - 1 })) })
    .map((h) => P.encodeRequest({ ...h, type: h.type === 2 ? 0 : h.type, handle: 1n }, h.type === P.NbdCmd.WRITE && h.length <= 9000 ? Buffer.alloc(h.length) : undefined));
  const message = fc.oneof(option, request, fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)));
  const mutate = (b: Buffer, at: number, byte: number): Buffer => {
    if (b.length === 0) return b;
    const c = Buffer.from(b);
    c[at % c.length] = byte;
    return c;
  };

  it('random and mutated option/request bytes, split anywhere: only effects or a clean close, never an exception', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: prefixes.length - 1 }), fc.array(message, { maxLength: 12 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }), fc.boolean(), (p, msgs, mutations, cuts, fail) => {
        let bytes: Buffer = Buffer.concat([prefixes[p]!, ...msgs]);
        for (const [at, byte] of mutations) bytes = mutate(bytes, at, byte);
        const s = new NbdSession({ catalog, requestsInFlightMax: 4 });
        const pending: number[] = [];
        const handle = (effects: NbdEffect[]): void => {
          for (const e of effects) {
            if (e.type === 'io') pending.push(e.io.id);
            if (e.type === 'io' && e.io.op === 'read') expect(e.io.length).toBeLessThanOrEqual(P.PAYLOAD_BYTES_MAX);
            if (e.type === 'close') expect(s.state).toBe('closed');
          }
        };
        handle(s.start());
        let at = 0;
        for (let i = 0; at < bytes.length; i++) {
          const n = cuts[i % cuts.length]!;
          handle(s.onBytes(bytes.subarray(at, at + n)));
          at += n;
          // Complete some I/O between chunks, successfully or not.
          const id = pending.shift();
          if (id !== undefined) handle(s.complete(id, fail ? { ok: false, errno: 5, message: 'x' } : { ok: true, data: Buffer.alloc(0), extents: [] }));
        }
        expect(s.bufferedBytes).toBeLessThanOrEqual(bytes.length);
        handle(s.onEnd());
        expect(s.state).toBe('closed');
      }),
      { numRuns: 3000 },
    );
  });
});
