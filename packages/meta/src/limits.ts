import assert from 'node:assert/strict';

/**
 * Longest key in UTF-8 bytes. lmdb-js' ordered-binary keys top out near 1978 bytes; etcd takes
 * more, but a key must mean the same thing on both backends. The etcd prefix is not counted.
 */
export const META_KEY_BYTES_MAX = 1024;

/** Largest value. etcd refuses requests above 1.5 MiB by default (--max-request-bytes). */
export const META_VALUE_BYTES_MAX = 1024 * 1024;

/** Deadline for one etcd call; after it the caller gets META_ERR_TIMEOUT naming the endpoints. */
export const ETCD_CALL_TIMEOUT_MS = 5_000;

/** Shortest deadline of one attempt of a call (a call gets up to 3 attempts, on different members). */
export const ETCD_ATTEMPT_TIMEOUT_MS_MIN = 500;

/** Time to connect and check the cluster in EtcdMetaStore.open(). */
export const ETCD_CONNECT_TIMEOUT_MS = 5_000;

/**
 * Revisions of history the embedded store keeps for `watch(prefix, fromRevision)`. Older
 * revisions answer META_ERR_COMPACTED, as etcd does after compaction. Costs one log record per
 * revision on disk and in memory (about the size of the writes it records).
 */
export const EMBEDDED_HISTORY_REVISIONS_MAX = 10_000;

/** CAS attempts in `update()` before giving up with META_ERR_CONFLICT. */
export const UPDATE_ATTEMPTS_MAX = 64;

/** Upper bound of the random pause between `update()` attempts (spreads contending writers). */
export const UPDATE_BACKOFF_MS_MAX = 20;

/** Shortest lease. etcd's own minimum is 1.5 x election timeout (2 s with default flags). */
export const LEASE_TTL_MS_MIN = 1_000;
export const LEASE_TTL_MS_MAX = 24 * 60 * 60 * 1000;

/** Keep-alives per TTL period (etcd's Go client uses 3). */
export const LEASE_KEEPALIVES_PER_TTL = 3;

assert(META_KEY_BYTES_MAX < 1978);
assert(META_VALUE_BYTES_MAX < 1.5 * 1024 * 1024);
assert(LEASE_TTL_MS_MIN < LEASE_TTL_MS_MAX);
assert(ETCD_CALL_TIMEOUT_MS > 0 && UPDATE_ATTEMPTS_MAX > 1);
