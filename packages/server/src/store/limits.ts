import assert from 'node:assert/strict';
import { BLOCK_BYTES, BLOCKS_PER_OBJECT, OBJECT_BYTES } from '@storpool/protocol';

/** One superblock copy: one 4 KiB block, so a single sector-aligned write replaces it whole. */
export const SUPERBLOCK_BYTES = BLOCK_BYTES;

/**
 * Byte offsets of the two superblock copies. Either valid copy is accepted, so a torn write of one
 * (or a bad sector under it) does not lose the disk.
 */
export const SUPERBLOCK_OFFSETS = [0, SUPERBLOCK_BYTES] as const;

/** Data blocks start here; the gap after the superblocks is reserved (zero) for future formats. */
export const DATA_OFFSET_BYTES = 1024 * 1024;

/** A disk must hold at least this many data blocks (two whole objects) or formatting is refused. */
export const DATA_BLOCKS_MIN = 2 * BLOCKS_PER_OBJECT;

/** Largest physical block number we address: a u32 in the index value keeps it at 16 TiB per disk. */
export const DATA_BLOCKS_MAX = 0xffff_fffe;

/**
 * Physical block number of a zero marker: an index entry saying "this block reads as zeros" that
 * does not fall through to a parent snapshot (a trim or write-zeroes in a clone). No data block.
 */
export const ZERO_MARKER_PHYSICAL = 0xffff_ffff;

/** On-disk format version written by this build; open() refuses any other. */
export const FORMAT_VERSION = 1;

/**
 * Most bytes one group-commit cycle takes from the queue. Bounds the memory pinned by one cycle and
 * the latency of the writes queued behind it; 64 MiB is 16 whole-object writes.
 */
export const CYCLE_BYTES_MAX = 64 * 1024 * 1024;

/** Most ops one cycle takes from the queue; bounds the length of the single LMDB transaction. */
export const CYCLE_OPS_MAX = 4096;

/**
 * A cycle with at most this many data bytes writes its data and journal record synchronously (into
 * the page cache) and only its fdatasync goes to the threadpool: one round trip instead of three.
 * Larger cycles write asynchronously, so a long copy never stalls the event loop.
 */
export const CYCLE_SYNC_WRITE_BYTES_MAX = 512 * 1024;

/** Buffers per writev call: Linux IOV_MAX. libuv splits larger arrays anyway; we stay below it. */
export const WRITEV_BUFFERS_MAX = 1024;

/** listObjects() returns at most this many entries per call; callers page with `after`. */
export const LIST_OBJECTS_LIMIT_MAX = 10_000;

/** Largest volume id: ids are JS numbers, exact below 2^53. */
export const VOLUME_ID_MAX = Number.MAX_SAFE_INTEGER;

assert(SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_BYTES <= DATA_OFFSET_BYTES);
assert(DATA_OFFSET_BYTES % BLOCK_BYTES === 0);
assert(CYCLE_BYTES_MAX >= OBJECT_BYTES, 'a whole-object write must fit one cycle');
assert(CYCLE_BYTES_MAX % BLOCK_BYTES === 0);

