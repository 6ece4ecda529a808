/**
 * Parsing and checking of the CLI's value words (sizes, durations, tags, ids) and formatting of
 * sizes for tables. Every failure is a UsageError naming the keyword and the value.
 */
import { StorpoolError } from '@storpool/errors';

const USAGE_BRAND = Symbol.for('storpool.cli.usage-error');

/** A bad command line: exit status 2 (CONFIG_ERR_INVALID: "invalid configuration or argument"). */
export class UsageError extends StorpoolError {
  readonly [USAGE_BRAND] = true;

  constructor(message: string) {
    super('CONFIG_ERR_INVALID', message);
  }

  /** StorpoolError's brand check would match every StorpoolError; this one matches usage errors only. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[USAGE_BRAND] === true;
  }
}

/** API sizes are bytes, positive multiples of 512 (API.md §3 "Size"). */
export const SECTOR_BYTES = 512;

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/**
 * `10G`, `512M`, `1T`, `1.5G`, `4096` (plain bytes, as CloudStack sends); suffixes K M G T P are
 * powers of 1024, case-insensitive, optionally followed by `B` or `iB`. The result must be a
 * positive multiple of 512 bytes.
 */
export function parseSize(text: string, keyword = 'size'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i.exec(text);
  const bad = (why: string): UsageError => new UsageError(`bad ${keyword} '${text}': ${why}`);
  if (m === null) throw bad('expected a number with an optional unit K, M, G, T or P (e.g. 10G, 512M, 1T)');
  const unit = UNITS[(m[2] ?? '').toUpperCase()] ?? 1;
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) throw bad('not a whole number of bytes or too large');
  if (bytes <= 0) throw bad('must be positive');
  if (bytes % SECTOR_BYTES !== 0) throw bad(`must be a multiple of ${SECTOR_BYTES} bytes`);
  return bytes;
}

const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

/** `<n>[s|m|h|d]` in seconds (`deleteAfter`). */
export function parseDuration(text: string, keyword: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text);
  if (m === null) throw new UsageError(`bad ${keyword} '${text}': expected <n>[s|m|h|d], e.g. 30m or 2d`);
  return Number(m[1]) * (DURATION_UNITS[m[2] ?? ''] ?? 1);
}

export function parseIntIn(text: string, keyword: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`bad ${keyword} '${text}': expected an integer ${min}..${max}`);
  return n;
}

/** An integer limit or `-` for unlimited (`iops`, `bw`). */
export function parseLimit(text: string, keyword: string): number | '-' {
  if (text === '-' || text === 'unlimited') return '-';
  return parseIntIn(text, keyword, 0, Number.MAX_SAFE_INTEGER);
}

export function parseYesNo(text: string, keyword: string): boolean {
  if (text === 'yes' || text === 'true' || text === 'on') return true;
  if (text === 'no' || text === 'false' || text === 'off') return false;
  throw new UsageError(`bad ${keyword} '${text}': expected yes or no`);
}

export function parseChoice<C extends string>(text: string, keyword: string, choices: readonly C[]): C {
  if ((choices as readonly string[]).includes(text)) return text as C;
  throw new UsageError(`bad ${keyword} '${text}': expected one of ${choices.join(', ')}`);
}

const TAG_NAME = /^[A-Za-z0-9_\-.:]+$/;
const TAG_VALUE = /^[A-Za-z0-9_\-.:]*$/;

/** `k=v` pairs; an empty value (`k=`) deletes the tag on update (API.md §1.7 rule 9). */
export function parseTags(pairs: readonly string[]): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    if (eq < 0 || !TAG_NAME.test(name) || !TAG_VALUE.test(value)) {
      throw new UsageError(`bad tag '${pair}': expected name=value (letters, digits, _ - . : only)`);
    }
    tags[name] = value;
  }
  return tags;
}

/** Disk ids for placement groups: repeated words or comma-separated lists. */
export function parseDiskIds(words: readonly string[], keyword: string): number[] {
  return words.flatMap((w) => w.split(',')).map((w) => parseIntIn(w, keyword, 0, 4095));
}

/** Bytes as `10 GiB`, `512 MiB`, `1.5 TiB`; `-` and non-numbers pass through. */
export function formatSize(value: unknown): string {
  if (typeof value !== 'number') return value === undefined || value === null ? '' : String(value);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = value;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${text} ${units[i] ?? 'B'}`;
}
