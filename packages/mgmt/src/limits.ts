/**
 * Limits of the management API (API.md §3) and of the service, as named constants.
 */
import assert from 'node:assert/strict';
import { OBJECT_BYTES, VOLUME_BYTES_MAX } from '@storpool/protocol';

/** Volume and snapshot names are shorter than 200 characters (API.md §3). */
export const OBJECT_NAME_LENGTH_MAX = 199;
export const TEMPLATE_NAME_LENGTH_MAX = 199;
export const PLACEMENT_GROUP_NAME_LENGTH_MAX = 127;
export const TAG_LENGTH_MAX = 199;
/** Tags per object: bounds the record size in the metadata store. */
export const TAGS_PER_OBJECT_MAX = 64;
/** Sizes are bytes, in whole 512-byte sectors. */
export const SECTOR_BYTES = 512;
/** The data path's largest volume. */
export const VOLUME_SIZE_BYTES_MAX = VOLUME_BYTES_MAX;
/** Data is cut into objects of this size; `objectsCount` counts them. */
export const VOLUME_OBJECT_BYTES = OBJECT_BYTES;
/** Client (attachment) ids 1..4095; disk ids 0..4095; server ids 1..32767. */
export const CLIENT_ID_MAX = 4095;
export const DISK_ID_MAX = 4095;
export const SERVER_ID_MAX = 32767;
/** Attachments per client: slots 0..1023. */
export const ATTACHMENT_POS_MAX = 1023;
/** Allocation groups of the Cinder driver's capacity arithmetic (API.md §4.6). */
export const ALLOCATION_GROUP_BYTES = 512 * 1024 * 1024;
/** Largest accepted request body; every request of API.md is far below it. */
export const REQUEST_BODY_BYTES_MAX = 1024 * 1024;
/** Entries of a reassign request or a group snapshot. */
export const REQUEST_ENTRIES_MAX = 1024;
/** `objects` of VolumeDescribe lists at most this many object indexes (bounds the reply). */
export const DESCRIBE_OBJECTS_MAX = 65_536;
/** Compare-and-swap attempts of one mutation before it gives up with a transient error. */
export const MUTATION_ATTEMPTS_MAX = 32;
/** A deleted snapshot's ancestors that can be freed in one step (walks are bounded). */
export const LINEAGE_DEPTH_MAX = 4096;
/** Deadline of one live statistics request to a disk (DisksList, ServersList). */
export const DISK_STATS_TIMEOUT_MS = 1_500;
/** How long a scan of the disks' object lists (storedSize, spaceUsed) is reused. */
export const STORED_SCAN_CACHE_MS = 5_000;
/** Shards per shard group the service creates. */
export const SHARDS_PER_GROUP = 256;
/** Period of the leader's background pass (purges, scheduled snapshot deletion). */
export const BACKGROUND_INTERVAL_MS = 1_000;
/** Failure detection defaults (see recovery.ts and docs/resilience.md). */
export const PROBE_INTERVAL_MS = 1_000;
export const DOWN_AFTER_MS = 5_000;
export const RE_REPLICATE_AFTER_MS = 10 * 60_000;
/** TTL of the management instance's lease (liveness and leadership). */
export const MGMT_LEASE_TTL_MS = 5_000;

assert(VOLUME_OBJECT_BYTES % SECTOR_BYTES === 0);
assert(ALLOCATION_GROUP_BYTES % VOLUME_OBJECT_BYTES === 0);
assert(VOLUME_SIZE_BYTES_MAX % SECTOR_BYTES === 0);
