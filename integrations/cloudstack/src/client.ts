/**
 * A CloudStack API client: signed GET requests (HMAC-SHA1, signatureVersion 3 with `expires`),
 * JSON responses (`<command>response`), CloudStack's error bodies turned into errors.
 */
import { StorpoolError } from '@storpool/errors';
import { expiresAt, flatten, sign, csEncode, type CloudStackParams } from './signature.js';

/** How long a signed request stays valid (python3-cs default: 10 minutes). */
export const EXPIRES_SECONDS_DEFAULT = 600;
export const REQUEST_TIMEOUT_MS_DEFAULT = 30_000;

export interface CloudStackOptions {
  /** e.g. http://mgmt:8080/client/api */
  endpoint: string;
  apiKey: string;
  secretKey: string;
  expiresSeconds?: number;
  timeoutMs?: number;
  /** Clock for `expires` (tests). */
  now?: () => Date;
}

export class CloudStackError extends Error {
  readonly command: string;
  readonly httpStatus: number;
  readonly errorCode: number | undefined;
  constructor(command: string, httpStatus: number, errorCode: number | undefined, message: string) {
    super(`${command}: ${message}`);
    this.name = 'CloudStackError';
    this.command = command;
    this.httpStatus = httpStatus;
    this.errorCode = errorCode;
  }
}

export class CloudStackClient {
  readonly endpoint: string;
  readonly #o: CloudStackOptions;

  constructor(o: CloudStackOptions) {
    if (o.apiKey === '' || o.secretKey === '') throw new StorpoolError('CONFIG_ERR_INVALID', 'CloudStack API key and secret key are required');
    this.#o = o;
    this.endpoint = o.endpoint;
  }

  /** The signed query string of one call (without the leading `?`). */
  signedQuery(command: string, params: Record<string, unknown> = {}): string {
    const p: CloudStackParams = {
      ...flatten(params), apiKey: this.#o.apiKey, command, response: 'json', signatureVersion: '3',
      expires: expiresAt(new Date((this.#o.now?.() ?? new Date()).getTime() + (this.#o.expiresSeconds ?? EXPIRES_SECONDS_DEFAULT) * 1000)),
    };
    const signature = sign(p, this.#o.secretKey);
    return [...Object.keys(p).sort().map((k) => `${k}=${csEncode(p[k]!)}`), `signature=${csEncode(signature)}`].join('&');
  }

  /** One call; resolves to the content of `<command>response`. */
  async call<T = Record<string, unknown>>(command: string, params: Record<string, unknown> = {}): Promise<T> {
    const url = `${this.endpoint}?${this.signedQuery(command, params)}`;
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.#o.timeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT) });
    } catch (err) {
      throw new StorpoolError('CLIENT_ERR_CONNECTION', `cannot reach CloudStack at ${this.endpoint}: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new CloudStackError(command, res.status, undefined, `HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
    }
    const key = Object.keys(body).find((k) => k === `${command.toLowerCase()}response`) ?? Object.keys(body)[0];
    const content = (key === undefined ? {} : body[key]) as Record<string, unknown>;
    if (res.status !== 200 || typeof content['errorcode'] === 'number') {
      const code = typeof content['errorcode'] === 'number' ? content['errorcode'] : undefined;
      throw new CloudStackError(command, res.status, code, String(content['errortext'] ?? `HTTP ${res.status}`));
    }
    return content as T;
  }
}
