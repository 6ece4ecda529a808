import { crc32c as crc32cNative } from '@node-rs/crc32';
import { BLOCK_BYTES } from './limits.js';

/** CRC32C (Castagnoli), hardware-accelerated (SSE4.2 / ARMv8 CRC) through @node-rs/crc32. */
export function crc32c(data: Uint8Array, initial = 0): number {
  return crc32cNative(data, initial) >>> 0;
}

/** Number of 4 KiB chunks (the last may be short) that `length` bytes of data are checksummed in. */
export function chunkCount(length: number): number {
  return Math.ceil(length / BLOCK_BYTES);
}

/**
 * CRC32C of each 4 KiB chunk of `data`, chunks counted from the start of `data` (the last may be
 * short). For block-aligned data these are exactly the per-block CRCs kept on disk.
 */
export function chunkCrcs(data: Uint8Array, out: Uint32Array = new Uint32Array(chunkCount(data.length))): Uint32Array {
  const n = chunkCount(data.length);
  for (let i = 0; i < n; i++) {
    const start = i * BLOCK_BYTES;
    out[i] = crc32c(data.subarray(start, Math.min(start + BLOCK_BYTES, data.length)));
  }
  return out;
}

/** Index of the first chunk whose CRC differs from `crcs`, or -1 when all match. */
export function firstBadChunk(data: Uint8Array, crcs: Uint32Array): number {
  const n = chunkCount(data.length);
  if (crcs.length !== n) return 0;
  for (let i = 0; i < n; i++) {
    const start = i * BLOCK_BYTES;
    if (crc32c(data.subarray(start, Math.min(start + BLOCK_BYTES, data.length))) !== crcs[i]) return i;
  }
  return -1;
}

/** CRC32C of an all-zero 4 KiB block: what a hole reads back as. */
export const ZERO_BLOCK_CRC = crc32c(new Uint8Array(BLOCK_BYTES));
