/**
 * SCSI block commands of one LUN, byte by byte: CDBs in, status / sense / data out (ScsiLun over
 * an in-memory backend, no session).
 */
import { describe, expect, it } from 'vitest';
import { BLOCK, MemoryReservationStore, Mutex, ScsiLun, memoryBackend, type LunBackend } from '@storpool/iscsi';

const LUN_BLOCKS = 65536 * 2; // 64 MiB: more than MAXIMUM WRITE SAME LENGTH (32768)

function lun(backend: LunBackend = memoryBackend({ id: 'unit.lun', sizeBytes: LUN_BLOCKS * BLOCK })): ScsiLun {
  return new ScsiLun({
    backend, lunId: backend.id, lunNumbers: [0], targetName: 'iqn.2026-11.test:scsi', nexus: 'iqn.2026-11.test:init,i,0x1', relativePort: 1,
    reservations: new MemoryReservationStore(), cawLock: new Mutex(), mode: { dSense: false, swp: false }, prevent: new Set(),
  });
}

function cdb(bytes: number[], length: number): Buffer {
  const b = Buffer.alloc(length);
  Buffer.from(bytes).copy(b);
  return b;
}
function ws10(lba: number, count: number, flags = 0): Buffer {
  const b = cdb([0x41, flags], 10);
  b.writeUInt32BE(lba >>> 0, 2);
  b.writeUInt16BE(count, 7);
  return b;
}
function ws16(lba: bigint, count: number, flags = 0): Buffer {
  const b = cdb([0x93, flags], 16);
  b.writeBigUInt64BE(lba, 2);
  b.writeUInt32BE(count, 10);
  return b;
}
function read16(lba: number, count: number): Buffer {
  const b = cdb([0x88], 16);
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(count, 10);
  return b;
}
function write16(lba: number, count: number): Buffer {
  const b = cdb([0x8a], 16);
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(count, 10);
  return b;
}

/** [sense key, ASC, ASCQ] of a CHECK CONDITION, and the sense-key specific field pointer. */
function sense(r: { status: number; sense?: Buffer }): { key: number; asc: number; ascq: number; field?: { byte: number; bit?: number } } {
  expect(r.status).toBe(2);
  const s = r.sense!;
  const sksv = (s[15]! & 0x80) !== 0;
  return {
    key: s[2]! & 0x0f, asc: s[12]!, ascq: s[13]!,
    ...(sksv ? { field: { byte: s.readUInt16BE(16), ...((s[15]! & 0x08) !== 0 ? { bit: s[15]! & 7 } : {}) } } : {}),
  };
}

describe('WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 (WSNZ=0: through the last LBA, SBC-4)', () => {
  it('Block Limits VPD: WSNZ clear, MAXIMUM WRITE SAME LENGTH set', async () => {
    const r = await lun().execute(cdb([0x12, 0x01, 0xb0, 0, 64, 0], 6), Buffer.alloc(0));
    expect(r.status).toBe(0);
    expect(r.data![1]).toBe(0xb0);
    expect(r.data![4]! & 0x01).toBe(0); // WSNZ
    expect(Number(r.data!.readBigUInt64BE(36))).toBe(32768);
  });

  it('0 blocks near the end writes from the LBA through the last one, and nothing before it', async () => {
    const l = lun();
    const before = Buffer.alloc(8 * BLOCK, 0x11);
    expect((await l.execute(write16(LUN_BLOCKS - 108, 8), before)).status).toBe(0);
    for (const [c, lba] of [[ws10(LUN_BLOCKS - 100, 0), LUN_BLOCKS - 100], [ws16(BigInt(LUN_BLOCKS - 50), 0), LUN_BLOCKS - 50]] as const) {
      const block = Buffer.alloc(BLOCK, lba & 0xff);
      expect((await l.execute(c, block)).status).toBe(0);
      const back = (await l.execute(read16(lba, LUN_BLOCKS - lba), Buffer.alloc(0))).data!;
      expect(back.equals(Buffer.concat(Array.from({ length: LUN_BLOCKS - lba }, () => block)))).toBe(true);
    }
    expect((await l.execute(read16(LUN_BLOCKS - 108, 8), Buffer.alloc(0))).data!.equals(before)).toBe(true);
    // exactly MAXIMUM WRITE SAME LENGTH blocks to the end: allowed
    expect((await l.execute(ws16(BigInt(LUN_BLOCKS - 32768), 0), Buffer.alloc(BLOCK, 1))).status).toBe(0);
  });

  it('0 blocks with more than MAXIMUM WRITE SAME LENGTH to the end: INVALID FIELD IN CDB at NUMBER OF LOGICAL BLOCKS', async () => {
    const l = lun();
    expect(sense(await l.execute(ws10(0, 0), Buffer.alloc(BLOCK)))).toEqual({ key: 5, asc: 0x24, ascq: 0, field: { byte: 7 } });
    expect(sense(await l.execute(ws16(BigInt(LUN_BLOCKS - 32769), 0), Buffer.alloc(BLOCK)))).toEqual({ key: 5, asc: 0x24, ascq: 0, field: { byte: 10 } });
  });

  it('0 blocks at or past the end, at 2^31, at -1: LBA OUT OF RANGE', async () => {
    const l = lun();
    for (const c of [ws10(LUN_BLOCKS, 0), ws10(LUN_BLOCKS + 1, 0), ws10(0x80000000, 0), ws10(0xffffffff, 0), ws16(BigInt(LUN_BLOCKS), 0), ws16(0xffffffffffffffffn, 0)]) {
      expect(sense(await l.execute(c, Buffer.alloc(BLOCK)))).toEqual({ key: 5, asc: 0x21, ascq: 0 });
    }
  });

  it('UNMAP=1 deallocates whatever the block holds (reads zeros: LBPRZ); UNMAP=0 writes it', async () => {
    const l = lun();
    const ff = Buffer.alloc(BLOCK, 0xff);
    expect((await l.execute(write16(LUN_BLOCKS - 16, 1), ff)).status).toBe(0);
    expect((await l.execute(ws10(LUN_BLOCKS - 16, 0, 0x08), ff)).status).toBe(0);
    expect((await l.execute(read16(LUN_BLOCKS - 16, 16), Buffer.alloc(0))).data!.every((x) => x === 0)).toBe(true);
    expect((await l.execute(ws10(LUN_BLOCKS - 16, 0), ff)).status).toBe(0);
    expect((await l.execute(read16(LUN_BLOCKS - 16, 16), Buffer.alloc(0))).data!.every((x) => x === 0xff)).toBe(true);
  });
});
