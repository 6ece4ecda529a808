/**
 * PDU codec byte layouts (RFC 7143 §11), CRC32C digests (the RFC's B.4 examples), text keys, and
 * the connection state machine driven without a socket: login (None and CHAP), SCSI write/read,
 * and hostile input — random and mutated PDUs close the connection, never throw out of it; a
 * real server survives them and still serves a real initiator.
 */
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SeededRandom } from '@storpool/testkit';
import { describe, expect, it } from 'vitest';
import { IscsiConnection, IscsiServer, MemoryReservationStore, Mutex, chapResponse, memoryBackend, pdu, type TargetCatalog, type TargetEnv } from '@storpool/iscsi';
import { pino } from 'pino';
import { ok } from './helpers.js';

const { BHS_BYTES, IOp, TOp, PduDecoder, encodeTextKeys, frame, loginResponse, parseTextKeys, dataIn, scsiResponse, r2t, decodeScsiCommand, decodeLogin } = pdu;
const TARGET = 'iqn.2026-11.test:unit';

function catalog(o: Partial<TargetCatalog> = {}): TargetCatalog {
  const t = { name: TARGET, luns: [{ lun: 0, backend: memoryBackend({ id: 'unit.lun', sizeBytes: 8 * 1024 * 1024 }) }] };
  return { targets: new Map([[TARGET, t]]), initiators: new Map(), portalGroups: new Map(), open: true, ...o };
}

function env(cat: TargetCatalog): TargetEnv {
  let tsih = 0;
  return {
    catalog: () => cat, portalGroupTag: 1, localPortal: { host: '127.0.0.1', port: 3260 }, remoteAddress: '127.0.0.1',
    reservations: new MemoryReservationStore(), lunShared: () => ({ mode: { dSense: false, swp: false }, cawLock: new Mutex(), prevent: new Set() }),
    allocTsih: () => ++tsih, registerSession: () => {}, unregisterSession: () => {}, log: pino({ level: 'silent' }),
  };
}

/** A connection with its outputs collected and decoded. */
function harness(cat = catalog()) {
  const out: pdu.Pdu[] = [];
  const dec = new PduDecoder({ maxDataSegment: 1 << 24 });
  let closed: { reason: string; error: boolean } | undefined;
  const conn = new IscsiConnection(env(cat), {
    send: (bufs) => out.push(...dec.push(Buffer.concat(bufs))),
    close: (reason, error) => { closed = { reason, error }; },
  });
  return { conn, out, closed: () => closed };
}

function loginPdu(o: { csg: number; nsg: number; transit: boolean; keys: [string, string][]; itt?: number; cmdSN?: number }): Buffer {
  const data = encodeTextKeys(o.keys);
  const b = Buffer.alloc(BHS_BYTES);
  b[0] = 0x40 | IOp.LOGIN;
  b[1] = (o.transit ? 0x80 : 0) | (o.csg << 2) | o.nsg;
  b.writeUIntBE(data.length, 5, 3);
  Buffer.from([0x80, 0, 0, 0x12, 0x34, 0x56]).copy(b, 8); // ISID
  b.writeUInt32BE(o.itt ?? 1, 16);
  b.writeUInt32BE(o.cmdSN ?? 1, 24);
  return Buffer.concat(frame({ bhs: b, data }, { header: false, data: false }));
}

function scsiPdu(o: { itt: number; cmdSN: number; cdb: number[]; read?: boolean; write?: boolean; edtl: number; data?: Buffer }): Buffer {
  const b = Buffer.alloc(BHS_BYTES);
  b[0] = IOp.SCSI_CMD;
  b[1] = 0x80 | (o.read === true ? 0x40 : 0) | (o.write === true ? 0x20 : 0) | 1;
  b.writeUIntBE(o.data?.length ?? 0, 5, 3);
  b.writeUInt32BE(o.itt, 16);
  b.writeUInt32BE(o.edtl, 20);
  b.writeUInt32BE(o.cmdSN, 24);
  Buffer.from(o.cdb).copy(b, 32);
  return Buffer.concat(frame({ bhs: b, data: o.data }, { header: false, data: false }));
}

function loggedIn() {
  const h = harness();
  h.conn.onBytes(loginPdu({ csg: 1, nsg: 3, transit: true, keys: [['InitiatorName', 'iqn.2026-11.test:init'], ['TargetName', TARGET], ['SessionType', 'Normal'], ['ImmediateData', 'Yes'], ['InitialR2T', 'No'], ['MaxRecvDataSegmentLength', '4096'], ['FirstBurstLength', '65536'], ['MaxBurstLength', '262144']] }));
  expect(h.conn.state).toBe('full');
  return h;
}

describe('PDU layouts', () => {
  it('Login Response: stages, ISID, TSIH, status, sequence numbers at RFC 7143 §11.13 offsets', () => {
    const p = loginResponse({ transit: true, csg: 1, nsg: 3, versionActive: 0, isid: Buffer.from('800000123456', 'hex'), tsih: 0x0102, itt: 0xdeadbeef, statusClass: 2, statusDetail: 1, data: Buffer.from('A=B\0'), statSN: 7, expCmdSN: 8, maxCmdSN: 9 });
    const b = p.bhs;
    expect(b.length).toBe(48);
    expect(b[0]).toBe(TOp.LOGIN_RESP);
    expect(b[1]).toBe(0x80 | (1 << 2) | 3);
    expect(b.readUIntBE(5, 3)).toBe(4);
    expect(b.subarray(8, 14).toString('hex')).toBe('800000123456');
    expect(b.readUInt16BE(14)).toBe(0x0102);
    expect(b.readUInt32BE(16)).toBe(0xdeadbeef);
    expect([b.readUInt32BE(24), b.readUInt32BE(28), b.readUInt32BE(32)]).toEqual([7, 8, 9]);
    expect([b[36], b[37]]).toEqual([2, 1]);
  });

  it('SCSI Response carries sense length + sense; residual flags and count (§11.4)', () => {
    const p = scsiResponse({ itt: 5, status: 2, sense: Buffer.alloc(18, 1), underflow: 512, statSN: 1, expCmdSN: 2, maxCmdSN: 3 });
    expect(p.bhs[0]).toBe(0x21);
    expect(p.bhs[1]).toBe(0x80 | 0x02);
    expect(p.bhs[3]).toBe(2);
    expect(p.bhs.readUInt32BE(44)).toBe(512);
    expect(p.data!.readUInt16BE(0)).toBe(18);
    expect(p.data!.length).toBe(20);
  });

  it('Data-In with status (S bit), R2T fields (§11.7, §11.8)', () => {
    const d = dataIn({ final: true, lun: Buffer.alloc(8), itt: 9, dataSN: 3, offset: 8192, data: Buffer.alloc(100), status: 0, overflow: 4, statSN: 10, expCmdSN: 11, maxCmdSN: 12 });
    expect(d.bhs[1]).toBe(0x80 | 0x04 | 0x01);
    expect(d.bhs.readUInt32BE(20)).toBe(0xffffffff);
    expect(d.bhs.readUInt32BE(36)).toBe(3);
    expect(d.bhs.readUInt32BE(40)).toBe(8192);
    expect(d.bhs.readUInt32BE(44)).toBe(4);
    const r = r2t({ lun: Buffer.alloc(8), itt: 1, ttt: 2, r2tSN: 3, offset: 4, length: 5, statSN: 6, expCmdSN: 7, maxCmdSN: 8 });
    expect(r.bhs[0]).toBe(0x31);
    expect([r.bhs.readUInt32BE(20), r.bhs.readUInt32BE(36), r.bhs.readUInt32BE(40), r.bhs.readUInt32BE(44)]).toEqual([2, 3, 4, 5]);
  });

  it('decodes SCSI Command and Login Request fields, and an extended CDB AHS', () => {
    const raw = scsiPdu({ itt: 0x11, cmdSN: 0x22, cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0], read: true, edtl: 4096 });
    const [p] = new PduDecoder({ maxDataSegment: 1 << 20 }).push(raw);
    const c = decodeScsiCommand(p!);
    expect([c.itt, c.cmdSN, c.expectedLength, c.read, c.write, c.cdb[0], c.cdb.length]).toEqual([0x11, 0x22, 4096, true, false, 0x28, 16]);
    const ahs = Buffer.alloc(20);
    ahs.writeUInt16BE(17, 0); // 16 bytes + reserved byte
    ahs[2] = 1;
    ahs.fill(0xab, 4, 20);
    const bhs = Buffer.from(raw.subarray(0, 48));
    bhs[4] = 5;
    const [q] = new PduDecoder({ maxDataSegment: 1 << 20 }).push(Buffer.concat([bhs, ahs]));
    expect(decodeScsiCommand(q!).cdb.length).toBe(32);
    const [l] = new PduDecoder({ maxDataSegment: 1 << 20 }).push(loginPdu({ csg: 0, nsg: 1, transit: true, keys: [['A', 'b']], itt: 3 }));
    expect(decodeLogin(l!)).toMatchObject({ csg: 0, nsg: 1, transit: true, itt: 3, isid: Buffer.from('800000123456', 'hex') });
  });

  it('CRC32C digests: RFC 7143 B.4 (32 bytes of zeros -> aa 36 91 8a), checked on decode', () => {
    const bhs = Buffer.alloc(48);
    bhs[0] = 0x20;
    const data = Buffer.alloc(32);
    const wire = Buffer.concat(frame({ bhs, data: Buffer.alloc(0) }, { header: true, data: true }));
    expect(wire.length).toBe(52);
    const withData = frame({ bhs: Buffer.from(bhs), data }, { header: false, data: true });
    expect(withData[withData.length - 1]!.toString('hex')).toBe('aa36918a');
    const dec = new PduDecoder({ maxDataSegment: 1024 });
    dec.setDigests(true, true);
    const b2 = Buffer.from(bhs);
    b2.writeUIntBE(32, 5, 3);
    const good = Buffer.concat(frame({ bhs: b2, data }, { header: true, data: true }));
    expect(dec.push(good)[0]!.data.length).toBe(32);
    const badData = Buffer.from(good);
    badData[60] = 1;
    expect(dec.push(badData)[0]!).toMatchObject({ dataDigestError: true });
    const badHeader = Buffer.from(good);
    badHeader[10] = 1;
    expect(() => dec.push(badHeader)).toThrow(/header digest/);
  });

  it('decoder survives any split of the byte stream and refuses oversized segments from the BHS', () => {
    const stream = Buffer.concat([loginPdu({ csg: 1, nsg: 3, transit: true, keys: [['X', 'y'.repeat(1000)]] }), scsiPdu({ itt: 1, cmdSN: 1, cdb: [0], edtl: 0 })]);
    for (const step of [1, 3, 47, 48, 49, 500]) {
      const dec = new PduDecoder({ maxDataSegment: 8192 });
      const got: pdu.Pdu[] = [];
      for (let i = 0; i < stream.length; i += step) got.push(...dec.push(stream.subarray(i, i + step)));
      expect(got.map((p) => p.bhs[0]! & 0x3f)).toEqual([IOp.LOGIN, IOp.SCSI_CMD]);
    }
    const big = Buffer.alloc(48);
    big.writeUIntBE(0xffffff, 5, 3);
    expect(() => new PduDecoder({ maxDataSegment: 8192 }).push(big)).toThrow(/MaxRecvDataSegmentLength/);
  });

  it('text keys: parse, encode, refuse malformed', () => {
    expect(parseTextKeys(Buffer.from('A=1\0B=x,y\0C=\0'))).toEqual([['A', '1'], ['B', 'x,y'], ['C', '']]);
    expect(encodeTextKeys([['K', 'v']]).toString()).toBe('K=v\0');
    expect(() => parseTextKeys(Buffer.from('novalue\0'))).toThrow();
    expect(() => parseTextKeys(Buffer.from(`${'k'.repeat(64)}=1\0`))).toThrow();
    expect(() => parseTextKeys(Buffer.from('bad key=1\0'))).toThrow();
  });
});

describe('connection state machine', () => {
  it('login without security negotiates operational keys; unknown keys are NotUnderstood', () => {
    const h = harness();
    h.conn.onBytes(loginPdu({ csg: 1, nsg: 3, transit: true, keys: [['InitiatorName', 'iqn.x:y'], ['TargetName', TARGET], ['HeaderDigest', 'CRC32C,None'], ['MaxConnections', '4'], ['X-foo', 'bar'], ['ErrorRecoveryLevel', '2']] }));
    const resp = h.out[0]!;
    expect(resp.bhs[0]! & 0x3f).toBe(TOp.LOGIN_RESP);
    expect([resp.bhs[36], resp.bhs[37]]).toEqual([0, 0]);
    expect(resp.bhs.readUInt16BE(14)).not.toBe(0);
    const keys = new Map(parseTextKeys(resp.data));
    expect(keys.get('HeaderDigest')).toBe('CRC32C');
    expect(keys.get('MaxConnections')).toBe('1');
    expect(keys.get('X-foo')).toBe('NotUnderstood');
    expect(keys.get('ErrorRecoveryLevel')).toBe('0');
    expect(keys.get('TargetPortalGroupTag')).toBe('1');
    expect(h.conn.state).toBe('full');
  });

  it('an unknown target is refused with 0x0203 and the connection ends', () => {
    const h = harness();
    h.conn.onBytes(loginPdu({ csg: 1, nsg: 3, transit: true, keys: [['InitiatorName', 'iqn.x:y'], ['TargetName', 'iqn.nope:x']] }));
    expect([h.out[0]!.bhs[36], h.out[0]!.bhs[37]]).toEqual([2, 3]);
    expect(h.closed()).toMatchObject({ error: false });
  });

  it('CHAP: challenge, a wrong response is refused, the right one logs in', () => {
    const cat = catalog({ open: false, initiators: new Map([['iqn.x:chap', { name: 'iqn.x:chap', username: 'u', secret: 'secret123456', nets: [], targets: [{ target: TARGET, portalGroup: 'pg' }] }]]) });
    for (const right of [false, true]) {
      const h = harness(cat);
      h.conn.onBytes(loginPdu({ csg: 0, nsg: 1, transit: true, keys: [['InitiatorName', 'iqn.x:chap'], ['TargetName', TARGET], ['AuthMethod', 'CHAP,None']] }));
      expect(new Map(parseTextKeys(h.out[0]!.data)).get('AuthMethod')).toBe('CHAP');
      expect(h.out[0]!.bhs[1]! & 0x80).toBe(0); // no transit before authentication
      h.conn.onBytes(loginPdu({ csg: 0, nsg: 1, transit: true, keys: [['CHAP_A', '5']], itt: 2 }));
      const k = new Map(parseTextKeys(h.out[1]!.data));
      const id = Number(k.get('CHAP_I'));
      const challenge = Buffer.from(k.get('CHAP_C')!.slice(2), 'hex');
      const r = chapResponse(id, right ? 'secret123456' : 'wrong1234567', challenge);
      h.conn.onBytes(loginPdu({ csg: 0, nsg: 1, transit: true, keys: [['CHAP_N', 'u'], ['CHAP_R', `0x${r.toString('hex')}`]], itt: 3 }));
      const last = h.out[2]!;
      if (right) {
        expect([last.bhs[36], last.bhs[37]]).toEqual([0, 0]);
        expect(last.bhs[1]! & 0x80).toBe(0x80);
      } else {
        expect([last.bhs[36], last.bhs[37]]).toEqual([2, 1]);
        expect(h.closed()).toBeDefined();
      }
    }
  });

  it('WRITE with immediate data + R2T for the rest, then READ back through Data-In', async () => {
    const h = loggedIn();
    const data = Buffer.alloc(16384);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    // 16 KiB write: 4 KiB immediate (MaxRecvDataSegmentLength of the target is larger), unsolicited none (F=1)
    h.conn.onBytes(scsiPdu({ itt: 10, cmdSN: 1, cdb: [0x2a, 0, 0, 0, 0, 8, 0, 0, 32, 0], write: true, edtl: 16384, data: data.subarray(0, 4096) }));
    const r2tPdu = h.out.find((p) => (p.bhs[0]! & 0x3f) === TOp.R2T)!;
    expect(r2tPdu.bhs.readUInt32BE(40)).toBe(4096);
    expect(r2tPdu.bhs.readUInt32BE(44)).toBe(12288);
    const ttt = r2tPdu.bhs.readUInt32BE(20);
    const dout = Buffer.alloc(48);
    dout[0] = IOp.DATA_OUT;
    dout[1] = 0x80;
    dout.writeUIntBE(12288, 5, 3);
    dout.writeUInt32BE(10, 16);
    dout.writeUInt32BE(ttt, 20);
    dout.writeUInt32BE(4096, 40);
    h.conn.onBytes(Buffer.concat(frame({ bhs: dout, data: data.subarray(4096) }, { header: false, data: false })));
    await sleep(20);
    const resp = h.out.find((p) => (p.bhs[0]! & 0x3f) === TOp.SCSI_RESP)!;
    expect(resp.bhs[3]).toBe(0);
    h.conn.onBytes(scsiPdu({ itt: 11, cmdSN: 2, cdb: [0x28, 0, 0, 0, 0, 8, 0, 0, 32, 0], read: true, edtl: 16384 }));
    await sleep(20);
    const ins = h.out.filter((p) => (p.bhs[0]! & 0x3f) === TOp.DATA_IN);
    expect(ins.length).toBe(4); // the initiator's MaxRecvDataSegmentLength is 4096
    expect(ins[3]!.bhs[1]! & 0x01).toBe(1); // status in the last Data-In
    expect(Buffer.concat(ins.map((p) => p.data)).equals(data)).toBe(true);
  });

  it('data beyond the CDB allocation length is not an overflow: MODE SENSE(6) of 4 bytes, of 255 bytes (SPC-4 §4.2.5.6)', async () => {
    const h = loggedIn();
    // MODE SENSE(6), all pages, ALLOCATION LENGTH 4, Expected Data Transfer Length 4
    h.conn.onBytes(scsiPdu({ itt: 20, cmdSN: 1, cdb: [0x1a, 0, 0x3f, 0, 4, 0], read: true, edtl: 4 }));
    // ALLOCATION LENGTH 255, EDTL 255: fewer bytes exist, an underflow of the rest
    h.conn.onBytes(scsiPdu({ itt: 21, cmdSN: 2, cdb: [0x1a, 0, 0x3f, 0, 255, 0], read: true, edtl: 255 }));
    // ALLOCATION LENGTH 255 but EDTL 4: the command would send more than the initiator has room for
    h.conn.onBytes(scsiPdu({ itt: 22, cmdSN: 3, cdb: [0x1a, 0, 0x3f, 0, 255, 0], read: true, edtl: 4 }));
    await sleep(20);
    const of = (itt: number): pdu.Pdu => h.out.find((p) => (p.bhs[0]! & 0x3f) === TOp.DATA_IN && p.bhs.readUInt32BE(16) === itt)!;
    const small = of(20);
    expect(small.data.length).toBe(4);
    expect(small.bhs[1]! & 0x07).toBe(0x01); // S, neither O nor U
    expect(small.bhs.readUInt32BE(44)).toBe(0);
    const all = of(21);
    const len = all.data[0]! + 1; // MODE DATA LENGTH + 1
    expect(all.data.length).toBe(len);
    expect(len).toBeLessThan(255);
    expect(all.bhs[1]! & 0x07).toBe(0x03); // S, U
    expect(all.bhs.readUInt32BE(44)).toBe(255 - len);
    const cut = of(22);
    expect(cut.data.length).toBe(4);
    expect(cut.bhs[1]! & 0x07).toBe(0x05); // S, O
    expect(cut.bhs.readUInt32BE(44)).toBe(len - 4); // what the command had beyond the EDTL
  });

  it('Data-Out out of DataSN order fails the command with PROTOCOL SERVICE CRC ERROR; the connection goes on (RFC 7143 §7.8)', async () => {
    const h = loggedIn();
    const dataOut = (itt: number, ttt: number, dataSN: number, offset: number, final: boolean): Buffer => {
      const b = Buffer.alloc(48);
      b[0] = IOp.DATA_OUT;
      b[1] = final ? 0x80 : 0;
      b.writeUIntBE(512, 5, 3);
      b.writeUInt32BE(itt, 16);
      b.writeUInt32BE(ttt, 20);
      b.writeUInt32BE(dataSN, 36);
      b.writeUInt32BE(offset, 40);
      return Buffer.concat(frame({ bhs: b, data: Buffer.alloc(512, 0x5a) }, { header: false, data: false }));
    };
    const write = async (itt: number, cmdSN: number, sns: [number, number]): Promise<pdu.Pdu> => {
      // WRITE(10) of 2 blocks at LBA 100, no immediate data, F=1: the target asks with an R2T
      h.conn.onBytes(scsiPdu({ itt, cmdSN, cdb: [0x2a, 0, 0, 0, 0, 100, 0, 0, 2, 0], write: true, edtl: 1024 }));
      const r2tPdu = h.out.find((p) => (p.bhs[0]! & 0x3f) === TOp.R2T && p.bhs.readUInt32BE(16) === itt)!;
      const ttt = r2tPdu.bhs.readUInt32BE(20);
      h.conn.onBytes(dataOut(itt, ttt, sns[0], 0, false));
      h.conn.onBytes(dataOut(itt, ttt, sns[1], 512, true));
      await sleep(20);
      return h.out.find((p) => (p.bhs[0]! & 0x3f) === TOp.SCSI_RESP && p.bhs.readUInt32BE(16) === itt)!;
    };
    for (const [i, sns] of ([[0, 0], [1, 0], [0, 27], [0xffffffff, 1]] as [number, number][]).entries()) {
      const resp = await write(30 + i, 1 + i, sns);
      expect(resp.bhs[3], `DataSN ${sns.join(',')}`).toBe(2); // CHECK CONDITION
      const sense = resp.data.subarray(2);
      expect(sense[2]! & 0x0f).toBe(0x0b); // ABORTED COMMAND
      expect([sense[12], sense[13]]).toEqual([0x47, 0x05]);
    }
    expect(h.closed()).toBeUndefined();
    const good = await write(40, 5, [0, 1]);
    expect(good.bhs[3]).toBe(0);
    expect(h.closed()).toBeUndefined();
  });

  it('hostile input: random bytes and mutated PDUs close the connection, never throw (seeded fuzz)', async () => {
    const rnd = new SeededRandom(8);
    const valid = [
      loginPdu({ csg: 1, nsg: 3, transit: true, keys: [['InitiatorName', 'iqn.x:y'], ['TargetName', TARGET]] }),
      scsiPdu({ itt: 1, cmdSN: 1, cdb: [0x12, 0, 0, 0, 96, 0], read: true, edtl: 96 }),
      scsiPdu({ itt: 2, cmdSN: 2, cdb: [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], write: true, edtl: 512, data: Buffer.alloc(512) }),
    ];
    let closedWithError = 0;
    for (let round = 0; round < 800; round++) {
      const h = harness();
      const parts: Buffer[] = [];
      if (round % 2 === 0) {
        parts.push(Buffer.from(Array.from({ length: rnd.int(1, 400) }, () => rnd.int(0, 255))));
      } else {
        for (const v of valid) {
          const m = Buffer.from(v);
          for (let k = rnd.int(0, 4); k > 0; k--) m[rnd.int(0, m.length - 1)] = rnd.int(0, 255);
          parts.push(m);
        }
      }
      expect(() => { for (const p of parts) h.conn.onBytes(p); }).not.toThrow();
      if (h.closed()?.error === true) closedWithError++;
    }
    await sleep(50);
    expect(closedWithError).toBeGreaterThan(40);
  });

  it('a real server survives hostile connections and still serves a real initiator', async () => {
    const server = new IscsiServer({ catalog: catalog() });
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const rnd = new SeededRandom(3);
      for (let i = 0; i < 30; i++) {
        await new Promise<void>((resolve) => {
          const s = createConnection(port, '127.0.0.1', () => {
            s.write(Buffer.from(Array.from({ length: rnd.int(48, 2000) }, () => rnd.int(0, 255))));
            s.end();
          });
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.resume();
        });
      }
      const out = await ok('iscsi-inq', [`iscsi://127.0.0.1:${port}/${TARGET}/0`]);
      expect(out).toContain('Vendor:STORPOOL');
      expect(server.counters.protocolErrors).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
  });
});
