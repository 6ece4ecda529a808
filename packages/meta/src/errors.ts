import { StorpoolError, type ErrorCode } from '@storpool/errors';

/**
 * Error kinds of this package. They are proposed as registry codes; until the registry has them
 * each one is raised as the nearest existing code, and the message starts with the kind so that
 * logs and tests can tell them apart (`error.message.startsWith('META_ERR_LOCKED')`).
 */
export const META_ERROR_CODES = {
  /** Another process has the embedded store's directory open. */
  META_ERR_LOCKED: 'CONFIG_ERR_INVALID',
  /** etcd could not be reached (no endpoint answered). */
  META_ERR_UNAVAILABLE: 'CLIENT_ERR_CONNECTION',
  /** A call got no answer before its deadline. */
  META_ERR_TIMEOUT: 'CLIENT_ERR_TIMEOUT',
  /** The store was closed. */
  META_ERR_CLOSED: 'CLIENT_ERR_CLOSED',
  /** A watch asked for history that is no longer kept. */
  META_ERR_COMPACTED: 'CONFIG_ERR_INVALID',
  /** A lease expired, was revoked by someone else, or could not be kept alive. */
  META_ERR_LEASE_LOST: 'CLIENT_ERR_CONNECTION',
  /** A put named a lease that does not exist (any more). */
  META_ERR_LEASE_NOT_FOUND: 'CONFIG_ERR_INVALID',
  /** `update()` lost the compare-and-swap race UPDATE_ATTEMPTS_MAX times. */
  META_ERR_CONFLICT: 'SERVER_ERR_OVERLOADED',
  /** Bad argument or configuration. */
  CONFIG_ERR_INVALID: 'CONFIG_ERR_INVALID',
  /** A bug, or an unexpected answer from the backend. */
  INTERNAL_ERR: 'INTERNAL_ERR',
} as const satisfies Record<string, ErrorCode>;

export type MetaErrorKind = keyof typeof META_ERROR_CODES;

export function metaError(kind: MetaErrorKind, message: string, cause?: unknown): StorpoolError {
  const text = kind === 'CONFIG_ERR_INVALID' || kind === 'INTERNAL_ERR' ? message : `${kind}: ${message}`;
  return cause === undefined
    ? new StorpoolError(META_ERROR_CODES[kind], text)
    : new StorpoolError(META_ERROR_CODES[kind], text, { cause });
}

export function isMetaError(error: unknown, kind: MetaErrorKind): boolean {
  return error instanceof StorpoolError && error.code === META_ERROR_CODES[kind] &&
    (kind === 'CONFIG_ERR_INVALID' || kind === 'INTERNAL_ERR' || error.message.startsWith(`${kind}:`));
}
