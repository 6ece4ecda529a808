/**
 * `docker volume create -d storpool -o KEY=VALUE ...` options → a VolumeCreate request. Pure: no
 * I/O, so every rejection is unit-tested. Unknown keys are refused (a typo would otherwise be
 * silently ignored and leave the user with a default-sized volume).
 */
import type { VolumeCreateDesc } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';

export const FILESYSTEMS = ['ext4', 'xfs'] as const;
export type Filesystem = (typeof FILESYSTEMS)[number];

/** Tag marking a volume as a Docker volume; its value is the file system made on first mount. */
export const FS_TAG = 'dockerFs';

/** Docker's own volume-name rule (daemon/names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`), a subset of StorPool's. */
const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,198}$/;
const TEMPLATE_RE = /^[A-Za-z0-9_-]{1,199}$/;
const SNAPSHOT_RE = /^(\*?[A-Za-z0-9_\-.:@]{1,199}|~[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+)$/;
const KNOWN_OPTIONS = ['size', 'template', 'replication', 'fs', 'snapshot', 'parent'] as const;
const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export interface CreateDefaults {
  /** Bytes, used when neither `size` nor a parent snapshot is given. */
  sizeBytes: number;
  /** Template used when neither `template` nor `replication` is given. */
  template: string;
  fs: Filesystem;
}

export interface CreatePlan {
  request: VolumeCreateDesc;
  fs: Filesystem;
}

function invalid(message: string): StorpoolError {
  return new StorpoolError('DOCKER_ERR_INVALID_OPTION', message);
}

/** `10G`, `512M`, `1.5T`, `1073741824`, `10GiB`/`10GB` (binary units, like StorPool's CLI) → bytes, a multiple of 512. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  if (m === null) throw invalid(`size=${text}: expected a number with an optional K/M/G/T/P suffix, e.g. size=10G`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes < 512) throw invalid(`size=${text}: must be at least 512 bytes`);
  if (bytes % 512 !== 0) throw invalid(`size=${text}: must be a multiple of 512 bytes`);
  return bytes;
}

export function checkVolumeName(name: unknown): string {
  if (typeof name !== 'string' || !VOLUME_NAME_RE.test(name)) {
    throw invalid(`invalid volume name ${JSON.stringify(name)}: use letters, digits, '_', '.', '-' (at most 199, starting with a letter or digit)`);
  }
  return name;
}

export function planCreate(name: string, opts: Record<string, unknown> | null | undefined, defaults: CreateDefaults): CreatePlan {
  checkVolumeName(name);
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts ?? {})) {
    if (!(KNOWN_OPTIONS as readonly string[]).includes(k)) throw invalid(`unknown option '${k}': known options are ${KNOWN_OPTIONS.join(', ')}`);
    if (typeof v !== 'string') throw invalid(`option '${k}' must be a string`);
    o[k] = v;
  }
  if (o['snapshot'] !== undefined && o['parent'] !== undefined && o['snapshot'] !== o['parent']) throw invalid('give only one of snapshot= and parent= (they are the same option)');
  const parent = o['snapshot'] ?? o['parent'];
  const fs = (o['fs'] ?? defaults.fs) as Filesystem;
  if (!FILESYSTEMS.includes(fs)) throw invalid(`fs=${o['fs']}: expected one of ${FILESYSTEMS.join(', ')}`);
  const request: VolumeCreateDesc = { name, tags: { [FS_TAG]: fs } };
  if (parent !== undefined) {
    if (!SNAPSHOT_RE.test(parent)) throw invalid(`snapshot=${parent}: not a valid snapshot name`);
    request.parent = parent;
  }
  if (o['size'] !== undefined) request.size = parseSize(o['size']);
  else if (parent === undefined) request.size = defaults.sizeBytes;
  if (o['replication'] !== undefined) {
    if (!/^[1-3]$/.test(o['replication'])) throw invalid(`replication=${o['replication']}: expected 1, 2 or 3`);
    request.replication = Number(o['replication']);
  }
  if (o['template'] !== undefined) {
    if (!TEMPLATE_RE.test(o['template'])) throw invalid(`template=${o['template']}: not a valid template name`);
    request.template = o['template'];
  } else if (parent === undefined || request.replication !== undefined) {
    // A clone inherits its parent's placement; anything else needs one, from the default template.
    request.template = defaults.template;
  }
  return { request, fs };
}
