import assert from 'node:assert/strict';

/**
 * Unit of checksumming and of allocation on disk. Every 4 KiB carries its own CRC32C from the
 * client to the platter and back; a partial-block write is a read-modify-write at the primary.
 */
export const BLOCK_BYTES = 4096;

/**
 * Volumes are cut into objects of this size; an object lives whole in one shard. 4 MiB keeps the
 * per-object index small while spreading a volume's I/O over many shards (and so disks).
 * A request never spans objects, so this also bounds one frame's data.
 */
export const OBJECT_BYTES = 4 * 1024 * 1024;
export const BLOCKS_PER_OBJECT = OBJECT_BYTES / BLOCK_BYTES;

/** Per-block states, as BLOCK_STATUS replies and the store report them (one byte per block). */
export const BLOCK_HOLE = 0;
export const BLOCK_DATA = 1;
/** A zero marker: reads as zeros and, unlike a hole, hides the parent snapshots' data. */
export const BLOCK_ZERO = 2;

/** One u32 CRC32C per 4 KiB chunk of data. */
export const CRC_BYTES = 4;

/** Largest data payload one frame carries: a whole object plus its CRCs. Checked at header decode. */
export const FRAME_PAYLOAD_BYTES_MAX = OBJECT_BYTES + (OBJECT_BYTES / BLOCK_BYTES) * CRC_BYTES;

/**
 * Largest COMPARE_AND_WRITE range. SCSI's COMPARE AND WRITE carries at most 255 logical blocks
 * (storpool-iscsi offers 255 x 512 B) and VMware's ATS uses one; 1 MiB bounds the bytes read and
 * compared under the object's range lock, and keeps the request (both halves) within one frame.
 */
export const COMPARE_AND_WRITE_BYTES_MAX = 1024 * 1024;

/** Requests one connection may have in flight; bounds server memory at depth x payload max. */
export const CONNECTION_REQUESTS_IN_FLIGHT_MAX = 256;

/** Wire protocol version spoken by this build; the handshake refuses any other. */
export const PROTOCOL_VERSION = 1;

/** Largest volume: 2^48 bytes (256 TiB) keeps object indexes in u32 and offsets exact in a double. */
export const VOLUME_BYTES_MAX = 2 ** 48;

export const CONNECT_TIMEOUT_MS = 5_000;

assert(OBJECT_BYTES % BLOCK_BYTES === 0);
assert(BLOCKS_PER_OBJECT <= 0xffff, 'block index within an object must fit u16');
assert(VOLUME_BYTES_MAX / OBJECT_BYTES <= 0xffffffff, 'object index must fit u32');
assert(FRAME_PAYLOAD_BYTES_MAX < 2 ** 32);
assert(COMPARE_AND_WRITE_BYTES_MAX <= OBJECT_BYTES, 'a compare-and-write lies inside one object');
assert(2 * (COMPARE_AND_WRITE_BYTES_MAX + (COMPARE_AND_WRITE_BYTES_MAX / BLOCK_BYTES) * CRC_BYTES) <= FRAME_PAYLOAD_BYTES_MAX, 'both halves of a compare-and-write fit one frame');
