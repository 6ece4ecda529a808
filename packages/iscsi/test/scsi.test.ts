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

function orwrite16(lba: bigint, count: number, flags = 0): Buffer {
  const b = cdb([0x8b, flags], 16);
  b.writeBigUInt64BE(lba, 2);
  b.writeUInt32BE(count, 10);
  return b;
}
const pattern = (n: number, f: (i: number) => number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => f(i) & 0xff));

/** The in-memory backend with an atomic compare-and-write, as a storpool volume has (atomic per `boundary`). */
function casBackend(o: { boundary: number; before?: (offset: number, calls: number) => Promise<void> | void; alwaysMiscompare?: boolean }) {
  const mem = memoryBackend({ id: 'unit.cas', sizeBytes: LUN_BLOCKS * BLOCK });
  const calls: { offset: number; length: number }[] = [];
  const backend: LunBackend = {
    ...mem,
    compareAndWriteBoundaryBytes: o.boundary,
    compareAndWrite: async (offset, compare, data) => {
      calls.push({ offset, length: data.length });
      await o.before?.(offset, calls.length);
      const have = await mem.read(offset, compare.length);
      if (o.alwaysMiscompare === true || !have.equals(compare)) return 0;
      await mem.write(offset, data);
      return -1;
    },
  };
  return { backend, mem, calls };
}

describe('ORWRITE(16) (SBC-3 5.8): old data OR the data-out, atomically per range', () => {
  it('ORs the data-out into the blocks, nothing outside them; 0 blocks changes nothing', async () => {
    const l = lun();
    const old = pattern(10 * BLOCK, (i) => i * 7);
    expect((await l.execute(write16(99, 10), old)).status).toBe(0);
    const d = pattern(8 * BLOCK, (i) => (i * 13) ^ 0xa5);
    expect((await l.execute(orwrite16(100n, 8), d)).status).toBe(0);
    const back = (await l.execute(read16(99, 10), Buffer.alloc(0))).data!;
    const want = Buffer.from(old);
    for (let i = 0; i < d.length; i++) want[BLOCK + i] = old[BLOCK + i]! | d[i]!;
    expect(back.equals(want)).toBe(true);
    expect((await l.execute(orwrite16(100n, 0), Buffer.alloc(0))).status).toBe(0);
    expect((await l.execute(read16(99, 10), Buffer.alloc(0))).data!.equals(want)).toBe(true);
    // the last blocks of the LU, over unwritten (zero) blocks: the data itself
    expect((await l.execute(orwrite16(BigInt(LUN_BLOCKS - 2), 2), d.subarray(0, 2 * BLOCK))).status).toBe(0);
    expect((await l.execute(read16(LUN_BLOCKS - 2, 2), Buffer.alloc(0))).data!.equals(d.subarray(0, 2 * BLOCK))).toBe(true);
  });

  it('bad CDBs: ORPROTECT, past the end, too long, write protected', async () => {
    const l = lun();
    for (let p = 1; p < 8; p++) expect(sense(await l.execute(orwrite16(0n, 1, p << 5), Buffer.alloc(BLOCK)))).toEqual({ key: 5, asc: 0x24, ascq: 0, field: { byte: 1, bit: 7 } });
    for (const [lba, n] of [[BigInt(LUN_BLOCKS - 1), 2], [BigInt(LUN_BLOCKS + 1), 0], [1n << 63n, 0], [0xffffffffffffffffn, 1]] as const) {
      expect(sense(await l.execute(orwrite16(lba, n), Buffer.alloc(n * BLOCK)))).toEqual({ key: 5, asc: 0x21, ascq: 0 });
    }
    expect(sense(await l.execute(orwrite16(0n, 32769), Buffer.alloc(0)))).toEqual({ key: 5, asc: 0x24, ascq: 0, field: { byte: 10 } });
    const ro = lun(memoryBackend({ id: 'unit.ro', sizeBytes: LUN_BLOCKS * BLOCK, readOnly: true }));
    expect(sense(await ro.execute(orwrite16(0n, 1), Buffer.alloc(BLOCK)))).toEqual({ key: 7, asc: 0x27, ascq: 0 });
    // DPO and FUA are accepted (the mode pages say DPOFUA)
    expect((await l.execute(orwrite16(0n, 1, 0x18), Buffer.alloc(BLOCK, 1))).status).toBe(0);
  });

  it('is advertised by REPORT SUPPORTED OPERATION CODES (all, and one command with its CDB usage)', async () => {
    const l = lun();
    const all = (await l.execute(cdb([0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], 12), Buffer.alloc(0))).data!;
    const ops: number[] = [];
    for (let at = 4; at < 4 + all.readUInt32BE(0); at += 8) ops.push(all[at]!);
    expect(ops).toContain(0x8b);
    const one = (await l.execute(cdb([0xa3, 0x0c, 0x01, 0x8b, 0, 0, 0, 0, 0x10, 0, 0, 0], 12), Buffer.alloc(0))).data!;
    expect(one[1]! & 0x07).toBe(3); // supported, as the standard says
    expect(one.readUInt16BE(2)).toBe(16);
    expect(one[4]).toBe(0x8b);
    expect(one[5]! & 0x18).toBe(0x18); // DPO, FUA
  });

  it('through an atomic compare-and-write: pieces inside one boundary, retried when another writer came in between', async () => {
    let injected = false;
    const { backend, mem, calls } = casBackend({
      boundary: 64 * 1024,
      before: async (offset) => {
        // another portal writes a bit into the first piece after ORWRITE read it, once
        if (!injected) {
          injected = true;
          await mem.write(offset, Buffer.alloc(1, 0x01));
        }
      },
    });
    const l = lun(backend);
    const lba = 64 * 1024 / BLOCK - 3; // crosses the 64 KiB boundary after 3 blocks
    const d = Buffer.alloc(300 * BLOCK, 0x80);
    expect((await l.execute(orwrite16(BigInt(lba), 300), d)).status).toBe(0);
    const back = await mem.read(lba * BLOCK, 300 * BLOCK);
    expect(back[0]).toBe(0x81); // the concurrent bit survived
    expect(back.subarray(1).every((x) => x === 0x80)).toBe(true);
    for (const c of calls) {
      expect(Math.floor(c.offset / 65536)).toBe(Math.floor((c.offset + c.length - 1) / 65536));
      expect(c.length).toBeLessThanOrEqual(255 * BLOCK);
    }
    expect(calls[0]).toEqual({ offset: lba * BLOCK, length: 3 * BLOCK });
    expect(calls[1]).toEqual(calls[0]); // the retry
    expect(calls.reduce((s, c) => s + c.length, 0)).toBe(300 * BLOCK + 3 * BLOCK);
  });

  it('a range that keeps changing under it ends in BUSY, not a lost update', async () => {
    const { backend } = casBackend({ boundary: 4 * 1024 * 1024, alwaysMiscompare: true });
    const r = await lun(backend).execute(orwrite16(0n, 1), Buffer.alloc(BLOCK, 1));
    expect(r.status).toBe(0x08);
  });
});
