/**
 * Errors of the API client. An answer of the API carrying `{"error":{...}}` is a StorpoolApiError;
 * failures to reach it (refused, reset, timeout, garbage) and configuration problems are
 * StorpoolErrors with registry codes (CLIENT_ERR_CONNECTION, CLIENT_ERR_TIMEOUT, CONFIG_ERR_INVALID).
 */
import { StorpoolError } from '@storpool/errors';
import type { ApiErrorBody } from './types.js';

const API_BRAND = Symbol.for('storpool.api-error');
const CONNECTION_BRAND = Symbol.for('storpool.api-client.connection-error');
const CONFIG_BRAND = Symbol.for('storpool.api-client.config-error');

function branded(value: unknown, brand: symbol): boolean {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
}

export interface StorpoolApiErrorInit extends ApiErrorBody {
  /** HTTP status of the reply (the reference server answers 500 for every error). */
  status: number;
  method: 'GET' | 'POST';
  /** Request path below the host, e.g. `/ctrl/1.0/VolumeDescribe/v1`. */
  path: string;
  /** The reply body exactly as received (the CLI's `-j` prints it). */
  body: string;
}

/** The API refused the call: `name` is StorPool's error name (`objectDoesNotExist`, `busy`, ...). */
export class StorpoolApiError extends Error {
  override readonly name: string;
  readonly descr: string;
  readonly transient: boolean;
  readonly status: number;
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body: string;
  readonly [API_BRAND] = true;

  constructor(init: StorpoolApiErrorInit) {
    super(`${init.name}: ${init.descr}`);
    this.name = init.name;
    this.descr = init.descr;
    this.transient = init.transient;
    this.status = init.status;
    this.method = init.method;
    this.path = init.path;
    this.body = init.body;
  }

  /** Works across bundled copies of this package. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return branded(value, API_BRAND);
  }
}

/** The API could not be reached or did not answer in time; `address` is `host:port`. */
export class StorpoolConnectionError extends StorpoolError {
  readonly address: string;
  readonly [CONNECTION_BRAND] = true;

  constructor(code: 'CLIENT_ERR_CONNECTION' | 'CLIENT_ERR_TIMEOUT', address: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.address = address;
  }

  /** StorpoolError's own check matches every StorpoolError; narrow it to this class. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return branded(value, CONNECTION_BRAND);
  }
}

/** Configuration files or options are missing or malformed. */
export class StorpoolConfigError extends StorpoolError {
  readonly [CONFIG_BRAND] = true;

  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_ERR_INVALID', message, options);
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return branded(value, CONFIG_BRAND);
  }
}
