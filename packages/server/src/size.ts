import { StorpoolError } from '@storpool/errors';

const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** "10G", "512M", "4096", "1.5T" (binary units, as storpool's CLI) -> bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTPB]?)(?:i?B)?$/i.exec(text.trim());
  const unit = m === null ? undefined : UNITS[m[2]!.toUpperCase()];
  if (m === null || unit === undefined) throw new StorpoolError('CONFIG_ERR_INVALID', `size ${JSON.stringify(text)} is not a size like 4096, 512M, 10G or 2T`);
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new StorpoolError('CONFIG_ERR_INVALID', `size ${JSON.stringify(text)} is too large`);
  return bytes;
}
