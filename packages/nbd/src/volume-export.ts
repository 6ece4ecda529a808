/**
 * An NBD export over a storpool Volume. Writes through the client are durable on every replica
 * when they resolve, so FLUSH has nothing pending and FUA costs nothing:
 *
 * DURABILITY: when write/trim/writeZeroes resolve, the data (or zero marker) is on stable storage
 * of every replica of the object (the storage servers fdatasync before answering the client).
 * A crash of this process after that loses nothing; a crash before leaves the request unanswered
 * and the NBD client retries or reports it. flush() therefore only returns.
 */
import { StorpoolError } from '@storpool/errors';
import type { Volume } from '@storpool/client';
import { BLOCK_BYTES, BLOCK_DATA, OBJECT_BYTES } from '@storpool/protocol';
import { NBD_STATE_HOLE, NBD_STATE_ZERO, type Extent } from './protocol.js';
import type { NbdExport, WriteZeroesOptions } from './types.js';

export interface VolumeExportOptions {
  name: string;
  description?: string;
  /** Refuse writes (snapshots, read-only attachments). Default: the volume spec's readOnly. */
  readOnly?: boolean;
}

export function volumeExport(volume: Volume, options: VolumeExportOptions): NbdExport {
  const readOnly = options.readOnly ?? volume.spec.readOnly === true;
  return {
    name: options.name,
    ...(options.description !== undefined ? { description: options.description } : {}),
    sizeBytes: volume.sizeBytes,
    readOnly,
    read: (offset, length) => volume.read(offset, length),
    write: (offset, data) => volume.write(offset, data),
    trim: (offset, length) => volume.trim(offset, length),
    writeZeroes: (offset, length, o) => writeZeroes(volume, offset, length, o),
    flush: () => volume.flush(),
    cache: async () => {},
    blockStatus: async (offset, length) => allocationExtents(offset, length, await volume.allocation(offset, length)),
  };
}

async function writeZeroes(volume: Volume, offset: number, length: number, o: WriteZeroesOptions): Promise<void> {
  if (!o.noHole) return volume.writeZeroes(offset, length);
  // NO_HOLE: the range must stay allocated, so real zeros are written; that is not fast.
  if (o.fast) throw new StorpoolError('WIRE_ERR_UNSUPPORTED_OP', 'fast zeroing with NO_HOLE is not supported');
  const zeros = Buffer.alloc(Math.min(length, OBJECT_BYTES));
  for (let at = 0; at < length; at += zeros.length) {
    const n = Math.min(zeros.length, length - at);
    await volume.write(offset + at, zeros.subarray(0, n));
  }
}

/**
 * base:allocation from the volume's allocation map (one byte per 4 KiB block of the
 * block-aligned range around [offset, offset+length)): data blocks are allocated; holes and
 * zero markers read as zeros and hold no data, so they are HOLE|ZERO.
 */
export function allocationExtents(offset: number, length: number, map: Uint8Array): Extent[] {
  const firstBlock = Math.floor(offset / BLOCK_BYTES);
  const end = offset + length;
  const extents: Extent[] = [];
  for (let i = 0; i < map.length; i++) {
    const from = Math.max(offset, (firstBlock + i) * BLOCK_BYTES);
    const to = Math.min(end, (firstBlock + i + 1) * BLOCK_BYTES);
    if (to <= from) continue;
    const flags = map[i] === BLOCK_DATA ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
    const last = extents[extents.length - 1];
    if (last !== undefined && last.flags === flags) last.length += to - from;
    else extents.push({ length: to - from, flags });
  }
  return extents;
}

/** An in-memory export (tests, examples): sparse by 4 KiB block. */
export function memoryExport(options: { name: string; sizeBytes: number; readOnly?: boolean; description?: string }): NbdExport & { blocks: Map<number, Buffer> } {
  const blocks = new Map<number, Buffer>();
  const forEachBlock = (offset: number, length: number, fn: (block: number, from: number, to: number, at: number) => void): void => {
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / BLOCK_BYTES);
      const from = pos - block * BLOCK_BYTES;
      const to = Math.min(BLOCK_BYTES, offset + length - block * BLOCK_BYTES);
      fn(block, from, to, pos - offset);
      pos += to - from;
    }
  };
  const zero = (offset: number, length: number): void =>
    forEachBlock(offset, length, (block, from, to) => {
      if (from === 0 && to === BLOCK_BYTES) blocks.delete(block);
      else blocks.get(block)?.fill(0, from, to);
    });
  return {
    name: options.name,
    ...(options.description !== undefined ? { description: options.description } : {}),
    sizeBytes: options.sizeBytes,
    readOnly: options.readOnly === true,
    blocks,
    read: async (offset, length) => {
      const out = Buffer.alloc(length);
      forEachBlock(offset, length, (block, from, to, at) => blocks.get(block)?.copy(out, at, from, to));
      return out;
    },
    write: async (offset, data) => {
      forEachBlock(offset, data.length, (block, from, to, at) => {
        let b = blocks.get(block);
        if (b === undefined) blocks.set(block, (b = Buffer.alloc(BLOCK_BYTES)));
        data.copy(b, from, at, at + to - from);
      });
    },
    trim: async (offset, length) => zero(offset, length),
    writeZeroes: async (offset, length) => zero(offset, length),
    flush: async () => {},
    blockStatus: async (offset, length) => {
      const first = Math.floor(offset / BLOCK_BYTES);
      const map = new Uint8Array(Math.ceil((offset + length) / BLOCK_BYTES) - first);
      for (let i = 0; i < map.length; i++) map[i] = blocks.has(first + i) ? BLOCK_DATA : 0;
      return allocationExtents(offset, length, map);
    },
  };
}
