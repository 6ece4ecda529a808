/**
 * Errors of the management API: StorPool's error names (API.md §1.6), carried in the
 * `{"error":{name,descr,transient}}` envelope. Model code throws these; the HTTP layer maps them.
 */
import { StorpoolError } from '@storpool/errors';

export type ApiErrorName =
  | 'objectDoesNotExist'
  | 'objectExists'
  | 'invalidParam'
  | 'busy'
  | 'insufficientResources'
  | 'runIfVersionIsMismatch'
  | 'authError'
  | 'notImplemented'
  | 'notReady'
  | 'internalError';

/** HTTP status per name: 200 is success only; every error has a JSON envelope. */
const HTTP_STATUS: Record<ApiErrorName, number> = {
  objectDoesNotExist: 404,
  objectExists: 409,
  invalidParam: 400,
  busy: 409,
  insufficientResources: 507,
  runIfVersionIsMismatch: 409,
  authError: 401,
  notImplemented: 501,
  notReady: 503,
  internalError: 500,
};

const BRAND = Symbol.for('storpool.mgmt.apiError');

export class ApiError extends Error {
  readonly apiName: ApiErrorName;
  readonly transient: boolean;
  readonly [BRAND] = true;

  constructor(name: ApiErrorName, descr: string, transient = false) {
    super(descr);
    this.name = 'ApiError';
    this.apiName = name;
    this.transient = transient;
  }

  get httpStatus(): number {
    return HTTP_STATUS[this.apiName];
  }

  toJSON(): { name: ApiErrorName; descr: string; transient: boolean } {
    return { name: this.apiName, descr: this.message, transient: this.transient };
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

export const notFound = (what: string): ApiError => new ApiError('objectDoesNotExist', `${what} does not exist`);
export const exists = (what: string): ApiError => new ApiError('objectExists', `${what} already exists`);
export const invalid = (descr: string): ApiError => new ApiError('invalidParam', descr);

/** Any failure as an ApiError: metadata-store outages are transient, anything else internal. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof StorpoolError) {
    if (err.code === 'META_ERR_UNAVAILABLE' || err.code === 'META_ERR_TIMEOUT' || err.code === 'META_ERR_CONFLICT') {
      return new ApiError('notReady', `metadata store: ${err.message}`, true);
    }
    if (err.code === 'MAP_ERR_INVALID') return new ApiError('insufficientResources', err.message);
    return new ApiError('internalError', `${err.code}: ${err.message}`, err.transient);
  }
  return new ApiError('internalError', err instanceof Error ? err.message : String(err));
}
