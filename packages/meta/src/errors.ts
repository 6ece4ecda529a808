import { StorpoolError, type ErrorCode } from '@storpool/errors';

/** Error kinds this package raises, each a code of the @storpool/errors registry. */
export const META_ERROR_CODES = {
  /** Another process has the embedded store's directory open. */
  META_ERR_LOCKED: 'META_ERR_LOCKED',
  /** etcd could not be reached (no endpoint answered). */
  META_ERR_UNAVAILABLE: 'META_ERR_UNAVAILABLE',
  /** A call got no answer before its deadline. */
  META_ERR_TIMEOUT: 'META_ERR_TIMEOUT',
  /** The store was closed. */
  META_ERR_CLOSED: 'META_ERR_CLOSED',
  /** A watch asked for history that is no longer kept. */
  META_ERR_COMPACTED: 'META_ERR_COMPACTED',
  /** A lease expired, was revoked by someone else, or could not be kept alive. */
  META_ERR_LEASE_LOST: 'META_ERR_LEASE_LOST',
  /** A put named a lease that does not exist (any more). */
  META_ERR_LEASE_NOT_FOUND: 'META_ERR_LEASE_NOT_FOUND',
  /** `update()` lost the compare-and-swap race UPDATE_ATTEMPTS_MAX times. */
  META_ERR_CONFLICT: 'META_ERR_CONFLICT',
  /** Bad argument or configuration. */
  CONFIG_ERR_INVALID: 'CONFIG_ERR_INVALID',
  /** A bug, or an unexpected answer from the backend. */
  INTERNAL_ERR: 'INTERNAL_ERR',
} as const satisfies Record<string, ErrorCode>;

export type MetaErrorKind = keyof typeof META_ERROR_CODES;

export function metaError(kind: MetaErrorKind, message: string, cause?: unknown): StorpoolError {
  return cause === undefined
    ? new StorpoolError(META_ERROR_CODES[kind], message)
    : new StorpoolError(META_ERROR_CODES[kind], message, { cause });
}

export function isMetaError(error: unknown, kind: MetaErrorKind): boolean {
  return error instanceof StorpoolError && error.code === META_ERROR_CODES[kind];
}
