/**
 * Names, ids and scalar limits of API.md §3. Every check throws `invalidParam` naming the field.
 */
import { invalid } from './api-error.js';
import {
  CLIENT_ID_MAX, DISK_ID_MAX, OBJECT_NAME_LENGTH_MAX, PLACEMENT_GROUP_NAME_LENGTH_MAX, SECTOR_BYTES, TAG_LENGTH_MAX, TAGS_PER_OBJECT_MAX,
  TEMPLATE_NAME_LENGTH_MAX, VOLUME_SIZE_BYTES_MAX,
} from './limits.js';

const VOLUME_NAME = /^#?[A-Za-z0-9_\-.:]+$/;
const SNAPSHOT_NAME = /^\*?[A-Za-z0-9_\-.:@]+$/;
const GLOBAL_ID_REF = /^~([a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+)$/;
export const GLOBAL_ID = /^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$/;
export const CLUSTER_ID = /^[a-z0-9]+\.[a-z0-9]+$/;
const POLICY_NAME = /^[A-Za-z0-9_\-]+$/;
const TAG_NAME = /^[A-Za-z0-9_\-.:]+$/;
const TAG_VALUE = /^[A-Za-z0-9_\-.:]*$/;
const RESERVED = new Set(['list', 'status']);

export function isVolumeName(name: string): boolean {
  return VOLUME_NAME.test(name) && name.length <= OBJECT_NAME_LENGTH_MAX && !RESERVED.has(name);
}

export function isSnapshotName(name: string): boolean {
  return SNAPSHOT_NAME.test(name) && name.length <= OBJECT_NAME_LENGTH_MAX && !RESERVED.has(name);
}

/** The global id inside a `~<globalId>` reference, or undefined for a plain name. */
export function globalIdOfRef(ref: string): string | undefined {
  return GLOBAL_ID_REF.exec(ref)?.[1];
}

export function checkVolumeName(name: string, field = 'name'): string {
  if (!isVolumeName(name)) throw invalid(`${field}: ${JSON.stringify(name)} is not a valid volume name (^#?[A-Za-z0-9_\\-.:]+$, at most ${OBJECT_NAME_LENGTH_MAX} characters, not "list" or "status")`);
  return name;
}

export function checkSnapshotName(name: string, field = 'name'): string {
  if (!isSnapshotName(name) || name.startsWith('*')) {
    throw invalid(`${field}: ${JSON.stringify(name)} is not a valid snapshot name (^[A-Za-z0-9_\\-.:@]+$, at most ${OBJECT_NAME_LENGTH_MAX} characters, not "list" or "status")`);
  }
  return name;
}

/** A path or body reference to a volume: a volume name or `~<globalId>`. */
export function checkVolumeRef(ref: string, field = 'volume'): string {
  if (globalIdOfRef(ref) === undefined && !isVolumeName(ref)) throw invalid(`${field}: ${JSON.stringify(ref)} is not a volume name or ~globalId`);
  return ref;
}

export function checkSnapshotRef(ref: string, field = 'snapshot'): string {
  if (globalIdOfRef(ref) === undefined && !isSnapshotName(ref)) throw invalid(`${field}: ${JSON.stringify(ref)} is not a snapshot name or ~globalId`);
  return ref;
}

/** Volume or snapshot reference (attachments, the shared namespace). */
export function checkObjectRef(ref: string, field: string): string {
  if (globalIdOfRef(ref) === undefined && !isSnapshotName(ref) && !isVolumeName(ref)) throw invalid(`${field}: ${JSON.stringify(ref)} is not a volume/snapshot name or ~globalId`);
  return ref;
}

export function checkTemplateName(name: string, field = 'name'): string {
  if (!POLICY_NAME.test(name) || name.length > TEMPLATE_NAME_LENGTH_MAX || name === 'list') {
    throw invalid(`${field}: ${JSON.stringify(name)} is not a valid template name (^[A-Za-z0-9_\\-]+$, at most ${TEMPLATE_NAME_LENGTH_MAX} characters, not "list")`);
  }
  return name;
}

export function checkPlacementGroupName(name: string, field = 'name'): string {
  if (!POLICY_NAME.test(name) || name.length > PLACEMENT_GROUP_NAME_LENGTH_MAX || name === 'list') {
    throw invalid(`${field}: ${JSON.stringify(name)} is not a valid placement group name (^[A-Za-z0-9_\\-]+$, at most ${PLACEMENT_GROUP_NAME_LENGTH_MAX} characters, not "list")`);
  }
  return name;
}

/** Checks a tag map; values may be empty (an empty value deletes the tag on update). */
export function checkTags(tags: Record<string, string>, field = 'tags'): Record<string, string> {
  const entries = Object.entries(tags);
  if (entries.length > TAGS_PER_OBJECT_MAX) throw invalid(`${field}: at most ${TAGS_PER_OBJECT_MAX} tags`);
  for (const [key, value] of entries) {
    if (!TAG_NAME.test(key) || key.length > TAG_LENGTH_MAX) throw invalid(`${field}: tag name ${JSON.stringify(key)} is not valid (^[A-Za-z0-9_\\-.:]+$, at most ${TAG_LENGTH_MAX} characters)`);
    if (typeof value !== 'string' || !TAG_VALUE.test(value) || value.length > TAG_LENGTH_MAX) {
      throw invalid(`${field}: value of tag ${key} (${JSON.stringify(value)}) is not valid (^[A-Za-z0-9_\\-.:]*$, at most ${TAG_LENGTH_MAX} characters)`);
    }
  }
  return tags;
}

/** A volume size: a positive multiple of 512 bytes, at most the data path's largest volume. */
export function checkSize(size: number, field = 'size'): number {
  if (!Number.isSafeInteger(size) || size < SECTOR_BYTES || size % SECTOR_BYTES !== 0 || size > VOLUME_SIZE_BYTES_MAX) {
    throw invalid(`${field}: ${size} is not a valid size (a positive multiple of ${SECTOR_BYTES} bytes, at most ${VOLUME_SIZE_BYTES_MAX})`);
  }
  return size;
}

export function checkReplication(replication: number, field = 'replication'): number {
  if (!Number.isInteger(replication) || replication < 1 || replication > 3) throw invalid(`${field}: ${replication} must be 1, 2 or 3`);
  return replication;
}

export function checkClientId(id: number, field = 'client'): number {
  if (!Number.isInteger(id) || id < 1 || id > CLIENT_ID_MAX) throw invalid(`${field}: client id ${id} must be 1..${CLIENT_ID_MAX}`);
  return id;
}

export function checkDiskId(id: number, field = 'diskId'): number {
  if (!Number.isInteger(id) || id < 0 || id > DISK_ID_MAX) throw invalid(`${field}: disk id ${id} must be 0..${DISK_ID_MAX}`);
  return id;
}

/** Parses an integer id given as a JSON number or a numeric string (API.md §1.7). */
export function parseIntId(value: unknown, field: string): number {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'string' && /^\d{1,9}$/.test(value)) return Number(value);
  throw invalid(`${field}: ${JSON.stringify(value)} is not an integer id`);
}
