/**
 * LUN backends: a storpool Volume (the service), and an in-memory one (tests, examples).
 */
import assert from 'node:assert/strict';
import type { Volume } from '@storpool/client';
import { BLOCK_BYTES, BLOCK_DATA, COMPARE_AND_WRITE_BYTES_MAX, OBJECT_BYTES } from '@storpool/protocol';
import { BLOCK, MAX_CAW_BLOCKS } from './scsi.js';
import type { LunBackend } from './types.js';

// The Block Limits VPD's MAXIMUM COMPARE AND WRITE LENGTH must fit what one storpool
// compare-and-write can do: one request, inside one object.
assert(MAX_CAW_BLOCKS * BLOCK <= COMPARE_AND_WRITE_BYTES_MAX);
assert(MAX_CAW_BLOCKS * BLOCK <= OBJECT_BYTES);

/**
 * A storpool volume as a LUN. Thin: UNMAP releases blocks, GET LBA STATUS reads the object map.
 * COMPARE AND WRITE runs at the object's shard primary: atomic against every other portal.
 */
export function volumeBackend(volume: Volume, o: { id: string; readOnly?: boolean }): LunBackend {
  return {
    id: o.id,
    sizeBytes: volume.sizeBytes,
    readOnly: o.readOnly ?? volume.spec.readOnly === true,
    thin: true,
    read: (offset, length) => volume.read(offset, length),
    write: (offset, data) => volume.write(offset, data),
    unmap: (offset, length) => volume.trim(offset, length),
    writeZeroes: (offset, length) => volume.writeZeroes(offset, length),
    flush: () => volume.flush(),
    compareAndWrite: (offset, compare, data) => volume.compareAndWrite(offset, compare, data),
    compareAndWriteBoundaryBytes: OBJECT_BYTES,
    allocation: async (offset, length) => {
      const map = await volume.allocation(offset, length);
      return map.map((b) => (b === BLOCK_DATA ? 1 : 0));
    },
  };
}

/** Sparse in-memory LUN by 4 KiB block. */
export function memoryBackend(o: { id: string; sizeBytes: number; readOnly?: boolean; thin?: boolean }): LunBackend & { blocks: Map<number, Buffer> } {
  const blocks = new Map<number, Buffer>();
  const each = (offset: number, length: number, fn: (block: number, from: number, to: number, at: number) => void): void => {
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / BLOCK_BYTES);
      const from = pos - block * BLOCK_BYTES;
      const to = Math.min(BLOCK_BYTES, offset + length - block * BLOCK_BYTES);
      fn(block, from, to, pos - offset);
      pos += to - from;
    }
  };
  const check = (offset: number, length: number): void => {
    if (offset < 0 || length < 0 || offset + length > o.sizeBytes) throw Object.assign(new Error('out of range'), { code: 'STORE_ERR_OUT_OF_RANGE' });
  };
  const zero = async (offset: number, length: number): Promise<void> => {
    check(offset, length);
    each(offset, length, (block, from, to) => {
      if (from === 0 && to === BLOCK_BYTES) blocks.delete(block);
      else blocks.get(block)?.fill(0, from, to);
    });
  };
  return {
    id: o.id,
    sizeBytes: o.sizeBytes,
    readOnly: o.readOnly === true,
    thin: o.thin !== false,
    blocks,
    read: async (offset, length) => {
      check(offset, length);
      const out = Buffer.alloc(length);
      each(offset, length, (block, from, to, at) => blocks.get(block)?.copy(out, at, from, to));
      return out;
    },
    write: async (offset, data) => {
      check(offset, data.length);
      each(offset, data.length, (block, from, to, at) => {
        let b = blocks.get(block);
        if (b === undefined) blocks.set(block, (b = Buffer.alloc(BLOCK_BYTES)));
        data.copy(b, from, at, at + to - from);
      });
    },
    unmap: zero,
    writeZeroes: zero,
    flush: async () => {},
    allocation: async (offset, length) => {
      const first = Math.floor(offset / BLOCK_BYTES);
      const map = new Uint8Array(Math.ceil((offset + length) / BLOCK_BYTES) - first);
      for (let i = 0; i < map.length; i++) map[i] = blocks.has(first + i) ? 1 : 0;
      return map;
    },
  };
}
