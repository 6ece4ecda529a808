/**
 * The LMDB index environment: three named databases in one environment, so one transaction
 * switches block pointers and object versions together.
 *
 *   meta    'disk'      -> identity record (binds the index to one formatted disk)
 *   blocks  block key   -> block value    (see keys.ts)
 *   objects object key  -> object value
 *
 * Opened with overlappingSync: a commit is visible at once and flushed later, overlapping the next
 * commits; after an OS crash LMDB restarts from its last flushed transaction. Durability does not
 * depend on that flush: every cycle's index changes are in the disk's journal first (journal.ts),
 * and open() replays what the index is missing. `root.flushed` only tells when ring space is free.
 */
import { StorpoolError } from '@storpool/errors';
import { crc32c } from '@storpool/protocol';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { bytesToUuid, uuidToBytes } from './superblock.js';

export const INDEX_DATA_FILES = ['data.mdb', 'lock.mdb'] as const;
const META_KEY = 'disk';
const META_MAGIC = 0x53504958; // "SPIX"
const META_BYTES = 48;
const INDEX_FORMAT_VERSION = 1;

export interface IndexIdentity {
  diskUuid: string;
  clusterId: string;
  diskId: number;
}

export interface IndexDb {
  readonly root: RootDatabase;
  readonly meta: Database<Buffer, string>;
  readonly blocks: Database<Buffer, Buffer>;
  readonly objects: Database<Buffer, Buffer>;
}

export function defaultIndexDir(diskPath: string): string {
  return `${diskPath}.idx`;
}

export async function indexExists(indexDir: string): Promise<boolean> {
  try {
    await fs.access(path.join(indexDir, 'data.mdb'));
    return true;
  } catch {
    return false;
  }
}

export function openIndexDb(indexDir: string): IndexDb {
  const root = open({ path: indexDir, noSubdir: false, compression: false, overlappingSync: true, noSync: false, maxDbs: 8 });
  const meta = root.openDB<Buffer, string>('meta', { encoding: 'binary' });
  const blocks = root.openDB<Buffer, Buffer>('blocks', { keyEncoding: 'binary', encoding: 'binary' });
  const objects = root.openDB<Buffer, Buffer>('objects', { keyEncoding: 'binary', encoding: 'binary' });
  return { root, meta, blocks, objects };
}

export function encodeIdentity(id: IndexIdentity): Buffer {
  const buf = Buffer.alloc(META_BYTES);
  buf.writeUInt32LE(META_MAGIC, 0);
  buf.writeUInt32LE(INDEX_FORMAT_VERSION, 8);
  uuidToBytes(id.diskUuid).copy(buf, 12);
  uuidToBytes(id.clusterId).copy(buf, 28);
  buf.writeUInt32LE(id.diskId, 44);
  buf.writeUInt32LE(crc32c(buf), 4);
  return buf;
}

export function decodeIdentity(buf: Buffer): IndexIdentity | string {
  if (buf.length !== META_BYTES || buf.readUInt32LE(0) !== META_MAGIC) return 'bad identity record';
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, 4);
  if (crc32c(copy) !== buf.readUInt32LE(4)) return 'identity record checksum mismatch';
  if (buf.readUInt32LE(8) !== INDEX_FORMAT_VERSION) return `unsupported index version ${buf.readUInt32LE(8)}`;
  return {
    diskUuid: bytesToUuid(buf.subarray(12, 28)),
    clusterId: bytesToUuid(buf.subarray(28, 44)),
    diskId: buf.readUInt32LE(44),
  };
}

/** Creates a fresh, empty index holding only the identity record. Durable on return. */
export async function createIndex(indexDir: string, id: IndexIdentity): Promise<void> {
  await fs.mkdir(indexDir, { recursive: true });
  assert(!(await indexExists(indexDir)), 'createIndex on a directory that still holds an index');
  const db = openIndexDb(indexDir);
  try {
    await db.meta.put(META_KEY, encodeIdentity(id));
  } finally {
    await db.root.close();
  }
}

/** Checks that the index belongs to the disk described by `id`; throws STORE_ERR_DISK_INVALID. */
export function checkIdentity(db: IndexDb, indexDir: string, id: IndexIdentity): void {
  const raw = db.meta.getBinary(META_KEY);
  const found = raw === undefined ? 'no identity record' : decodeIdentity(raw);
  if (typeof found === 'string') {
    throw new StorpoolError('STORE_ERR_DISK_INVALID', `index ${indexDir} is not a storpool index (${found}); pass the right indexDir or re-run \`storpool-server disk init --force\``);
  }
  if (found.diskUuid !== id.diskUuid || found.clusterId !== id.clusterId || found.diskId !== id.diskId) {
    throw new StorpoolError(
      'STORE_ERR_DISK_INVALID',
      `index ${indexDir} belongs to disk ${found.diskId} (${found.diskUuid}, cluster ${found.clusterId}), ` +
        `not to disk ${id.diskId} (${id.diskUuid}, cluster ${id.clusterId}); pass the index directory of this disk`,
    );
  }
}

/** Removes the index files (and the directory when it is then empty). */
export async function removeIndex(indexDir: string, extraFiles: readonly string[]): Promise<void> {
  for (const f of [...INDEX_DATA_FILES, ...extraFiles]) await fs.rm(path.join(indexDir, f), { force: true });
  await fs.rmdir(indexDir).catch(() => undefined);
}
