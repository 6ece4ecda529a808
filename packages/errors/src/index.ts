/**
 * One registry of storpool error codes, mapped once to every surface: the wire protocol's
 * status number, HTTP, NBD errno and CLI exit code. Codes follow `<AREA>_ERR_<WHAT>`.
 * A code's wire status never changes once released: peers of other versions rely on it.
 */

export interface ErrorSpec {
  /** u16 status carried in wire-protocol replies; 0 is success. */
  readonly wire: number;
  readonly http: number;
  /** errno reported to NBD clients (doc/proto.md: EPERM 1, EIO 5, ENOMEM 12, EINVAL 22, ENOSPC 28, EOVERFLOW 75, ENOTSUP 95, ESHUTDOWN 108). */
  readonly nbdErrno: number;
  readonly cliExit: number;
  /** A transient error may succeed if retried (after a map refresh or reconnect). */
  readonly transient: boolean;
  readonly summary: string;
}

export const ERRORS = {
  STORE_ERR_OUT_OF_RANGE: { wire: 1, http: 400, nbdErrno: 22, cliExit: 2, transient: false, summary: 'offset or length outside the object or volume' },
  STORE_ERR_NO_SPACE: { wire: 2, http: 507, nbdErrno: 28, cliExit: 6, transient: false, summary: 'the disk has no free blocks left' },
  STORE_ERR_CHECKSUM: { wire: 3, http: 500, nbdErrno: 5, cliExit: 6, transient: false, summary: 'stored data does not match its CRC32C and no good copy was found' },
  STORE_ERR_IO: { wire: 4, http: 500, nbdErrno: 5, cliExit: 6, transient: false, summary: 'the disk returned an I/O error' },
  STORE_ERR_DISK_INVALID: { wire: 5, http: 400, nbdErrno: 5, cliExit: 2, transient: false, summary: 'the disk has no valid storpool superblock or belongs to another cluster' },
  STORE_ERR_DISK_IN_USE: { wire: 6, http: 409, nbdErrno: 5, cliExit: 2, transient: false, summary: 'the disk already holds storpool data' },
  WIRE_ERR_FRAME_INVALID: { wire: 20, http: 400, nbdErrno: 22, cliExit: 2, transient: false, summary: 'malformed protocol frame' },
  WIRE_ERR_CHECKSUM: { wire: 21, http: 400, nbdErrno: 5, cliExit: 6, transient: true, summary: 'data arrived with a bad CRC32C (corrupted in transit)' },
  WIRE_ERR_VERSION: { wire: 22, http: 400, nbdErrno: 5, cliExit: 2, transient: false, summary: 'peer speaks an unsupported protocol version' },
  WIRE_ERR_CLUSTER_MISMATCH: { wire: 23, http: 400, nbdErrno: 5, cliExit: 2, transient: false, summary: 'peer belongs to another cluster' },
  WIRE_ERR_UNSUPPORTED_OP: { wire: 24, http: 400, nbdErrno: 95, cliExit: 2, transient: false, summary: 'operation not supported by this peer' },
  MAP_ERR_STALE_EPOCH: { wire: 40, http: 409, nbdErrno: 5, cliExit: 5, transient: true, summary: 'request carries an older shard-map epoch; refresh the map and retry' },
  MAP_ERR_NOT_PRIMARY: { wire: 41, http: 409, nbdErrno: 5, cliExit: 5, transient: true, summary: 'this disk is not the primary of the shard' },
  MAP_ERR_INVALID: { wire: 42, http: 400, nbdErrno: 22, cliExit: 2, transient: false, summary: 'the shard map is invalid' },
  MAP_ERR_NOT_REPLICA: { wire: 43, http: 409, nbdErrno: 5, cliExit: 5, transient: true, summary: 'this disk holds no replica of the shard' },
  MAP_ERR_NOT_SURPLUS: { wire: 44, http: 409, nbdErrno: 5, cliExit: 5, transient: true, summary: 'this disk still holds or joins the shard, or it is not fully replicated elsewhere: its copy stays' },
  REPL_ERR_REPLICA_FAILED: { wire: 60, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'a replica did not confirm the write' },
  REPL_ERR_TOO_FEW_REPLICAS: { wire: 61, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'the shard has fewer in-sync copies than its minimum: writes wait until a copy returns' },
  REPL_ERR_SYNC_FAILED: { wire: 62, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'a catch-up copy to a joining disk failed (it is retried)' },
  CLIENT_ERR_TIMEOUT: { wire: 80, http: 504, nbdErrno: 5, cliExit: 5, transient: true, summary: 'no answer before the deadline' },
  CLIENT_ERR_CONNECTION: { wire: 81, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'connection to the server failed or was lost' },
  CLIENT_ERR_CLOSED: { wire: 82, http: 503, nbdErrno: 108, cliExit: 5, transient: false, summary: 'the client was closed' },
  SERVER_ERR_SHUTTING_DOWN: { wire: 100, http: 503, nbdErrno: 108, cliExit: 5, transient: true, summary: 'the server is shutting down' },
  SERVER_ERR_OVERLOADED: { wire: 101, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'too many requests in flight' },
  META_ERR_LOCKED: { wire: 140, http: 409, nbdErrno: 5, cliExit: 2, transient: false, summary: 'another process has the embedded metadata store open' },
  META_ERR_UNAVAILABLE: { wire: 141, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'the metadata store (etcd) cannot be reached' },
  META_ERR_TIMEOUT: { wire: 142, http: 504, nbdErrno: 5, cliExit: 5, transient: true, summary: 'the metadata store did not answer in time' },
  META_ERR_CLOSED: { wire: 143, http: 503, nbdErrno: 108, cliExit: 5, transient: false, summary: 'the metadata store was closed' },
  META_ERR_COMPACTED: { wire: 144, http: 410, nbdErrno: 5, cliExit: 5, transient: false, summary: 'the requested metadata history was compacted away' },
  META_ERR_LEASE_LOST: { wire: 145, http: 503, nbdErrno: 5, cliExit: 5, transient: true, summary: 'a metadata-store lease expired or was revoked' },
  META_ERR_LEASE_NOT_FOUND: { wire: 146, http: 404, nbdErrno: 5, cliExit: 2, transient: false, summary: 'the named lease does not exist' },
  META_ERR_CONFLICT: { wire: 147, http: 409, nbdErrno: 5, cliExit: 5, transient: true, summary: 'a compare-and-swap kept losing to concurrent writers' },
  CONFIG_ERR_INVALID: { wire: 120, http: 400, nbdErrno: 22, cliExit: 2, transient: false, summary: 'invalid configuration or argument' },
  DOCKER_ERR_INVALID_OPTION: { wire: 260, http: 400, nbdErrno: 22, cliExit: 2, transient: false, summary: 'invalid docker volume option' },
  DOCKER_ERR_IN_USE: { wire: 261, http: 409, nbdErrno: 5, cliExit: 2, transient: false, summary: 'the docker volume is mounted by a container' },
  DOCKER_ERR_HOST: { wire: 262, http: 500, nbdErrno: 5, cliExit: 6, transient: false, summary: 'a host step (device, mkfs, mount) failed for a docker volume' },
  INTERNAL_ERR: { wire: 999, http: 500, nbdErrno: 5, cliExit: 70, transient: false, summary: 'internal error (a bug): see the log' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

const byWire = new Map<number, ErrorCode>();
for (const [code, spec] of Object.entries(ERRORS) as [ErrorCode, ErrorSpec][]) {
  if (byWire.has(spec.wire)) throw new Error(`duplicate wire status ${spec.wire}`);
  byWire.set(spec.wire, code);
}

const BRAND = Symbol.for('storpool.error');

export class StorpoolError extends Error {
  readonly code: ErrorCode;
  readonly [BRAND] = true;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].summary, options);
    this.name = 'StorpoolError';
    this.code = code;
  }

  get spec(): ErrorSpec {
    return ERRORS[this.code];
  }

  get transient(): boolean {
    return ERRORS[this.code].transient;
  }

  /** Works across bundled copies of this package (undici's Symbol.for branding). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // Subclasses inherit this method: they keep ordinary prototype-chain semantics.
    if (this !== StorpoolError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ERRORS, value);
}

/** The code for a wire status; unknown statuses (a newer peer) map to INTERNAL_ERR. */
export function codeFromWire(status: number): ErrorCode {
  return byWire.get(status) ?? 'INTERNAL_ERR';
}

export function wireStatus(code: ErrorCode): number {
  return ERRORS[code].wire;
}

/** Any thrown value as a StorpoolError; unexpected ones become INTERNAL_ERR with the cause kept. */
export function toStorpoolError(err: unknown): StorpoolError {
  if (err instanceof StorpoolError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const errno = (err as { code?: unknown } | null)?.code;
  if (errno === 'ENOSPC') return new StorpoolError('STORE_ERR_NO_SPACE', message, { cause: err });
  if (errno === 'EIO') return new StorpoolError('STORE_ERR_IO', message, { cause: err });
  return new StorpoolError('INTERNAL_ERR', message, { cause: err });
}
