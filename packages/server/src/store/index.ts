export { DiskStore } from './disk-store.js';
export type { DiskStoreOptions, ReadResult, ObjectInfo, StoreStats } from './disk-store.js';
export { formatDisk, DISK_BYTES_MIN } from './format.js';
export type { FormatOptions } from './format.js';
export type { ObjectKey } from './keys.js';
export type { Superblock } from './superblock.js';
export { DATA_OFFSET_BYTES, DATA_BLOCKS_MIN, FORMAT_VERSION, SUPERBLOCK_OFFSETS } from './limits.js';
