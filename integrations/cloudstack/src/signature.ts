/**
 * CloudStack's request signature (the one python3-cs and CloudStack's own clients compute):
 * every parameter but `signature`, sorted by name, joined as `name=encode(value)` with `&`,
 * lower-cased, HMAC-SHA1 with the secret key, base64. `encode` is java.net.URLEncoder's with
 * `%20` for spaces: every byte but `A-Z a-z 0-9 - _ . ~ *` percent-encoded (python3-cs:
 * `quote(value, safe="*")`). With signatureVersion 3 the request also carries `expires`.
 */
import { createHmac } from 'node:crypto';

/** What a signature covers: the parameter values as strings. */
export type CloudStackParams = Record<string, string>;

export function csEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The string that is signed (before lower-casing). */
export function canonicalQuery(params: CloudStackParams): string {
  return Object.keys(params)
    .filter((k) => k !== 'signature')
    .sort()
    .map((k) => `${k}=${csEncode(params[k]!)}`)
    .join('&');
}

export function sign(params: CloudStackParams, secretKey: string): string {
  return createHmac('sha1', secretKey).update(canonicalQuery(params).toLowerCase(), 'utf8').digest('base64');
}

/** `expires` as python3-cs writes it: `%Y-%m-%dT%H:%M:%S%z` in UTC, e.g. 2026-11-25T18:00:00+0000. */
export function expiresAt(date: Date): string {
  return `${date.toISOString().slice(0, 19)}+0000`;
}

/**
 * Flattens typed values the way python3-cs's `transform` does: numbers and booleans as text,
 * lists joined with commas, a map `tags: {k: v}` as `tags[0].k=v`; null/undefined dropped.
 */
export function flatten(params: Record<string, unknown>): CloudStackParams {
  const out: CloudStackParams = {};
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null) continue;
    if (typeof value === 'string') out[key] = value;
    else if (typeof value === 'number' || typeof value === 'bigint') out[key] = String(value);
    else if (typeof value === 'boolean') out[key] = value ? 'true' : 'false';
    else if (Array.isArray(value)) {
      if (value.length === 0) continue;
      if (typeof value[0] === 'object' && value[0] !== null) {
        value.forEach((item: Record<string, unknown>, i) => {
          for (const [k, v] of Object.entries(item)) out[`${key}[${i}].${k}`] = String(v);
        });
      } else out[key] = value.map(String).join(',');
    } else if (typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>);
      for (const [k, v] of entries) out[`${key}[0].${k}`] = String(v);
    }
  }
  return out;
}
