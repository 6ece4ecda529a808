/**
 * Human output: aligned tables (bold header on a colour terminal), key/value listings for single
 * objects. Batch mode (`-B`) prints tab-separated rows with raw numbers instead.
 */
import type { Format } from './grammar.js';
import { formatSize } from './values.js';

export interface Column<R> {
  header: string;
  get(row: R): unknown;
  /** Bytes: shown as `10 GiB` unless in batch mode. */
  size?: boolean;
}

function cell(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (Array.isArray(value)) return value.map(cell).join(',');
  if (typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>).map(([k, v]) => `${k}=${cell(v)}`).join(',');
  }
  return String(value);
}

export function table<R>(rows: readonly R[], columns: readonly Column<R>[], format: Format): string {
  const text = rows.map((row) => columns.map((c) => (c.size === true && !format.batch ? formatSize(c.get(row)) : cell(c.get(row)))));
  const headers = columns.map((c) => c.header);
  if (format.batch) return [headers, ...text].map((r) => r.join('\t')).join('\n');
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? '').length)));
  const numeric = columns.map((_, i) => text.length > 0 && text.every((r) => /^-?[\d.]+( [KMGTP]?i?B)?$|^-$|^$/.test(r[i] ?? '')));
  const line = (r: readonly string[]): string =>
    r.map((v, i) => (numeric[i] === true ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  const head = line(headers);
  return [format.color ? `\x1b[1m${head}\x1b[0m` : head, ...text.map(line)].join('\n');
}

/** One object as `key  value` lines; nested values as compact JSON. */
export function keyValues(object: unknown, format: Format): string {
  if (typeof object !== 'object' || object === null) return cell(object);
  const entries = Object.entries(object as Record<string, unknown>);
  const width = Math.max(0, ...entries.map(([k]) => k.length));
  return entries
    .map(([k, v]) => {
      const value = typeof v === 'object' && v !== null ? JSON.stringify(v) : cell(v);
      return format.batch ? `${k}\t${value}` : `${k.padEnd(width)}  ${value}`;
    })
    .join('\n');
}

/** Rows of a map-object answer (`{ "<id>": {...} }`), in key order (numeric keys numerically). */
export function mapRows<V>(map: unknown): V[] {
  if (typeof map !== 'object' || map === null) return [];
  return Object.entries(map as Record<string, V>)
    .sort(([a], [b]) => (/^\d+$/.test(a) && /^\d+$/.test(b) ? Number(a) - Number(b) : a < b ? -1 : a > b ? 1 : 0))
    .map(([, v]) => v);
}

export function timestamp(seconds: unknown): string {
  return typeof seconds === 'number' && seconds > 0 ? new Date(seconds * 1000).toISOString().replace('.000Z', 'Z') : '';
}
