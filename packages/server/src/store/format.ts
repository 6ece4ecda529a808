import { StorpoolError } from '@storpool/errors';
import { BLOCK_BYTES } from '@storpool/protocol';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createIndex, defaultIndexDir, indexExists, removeIndex } from './index-db.js';
import { blockDeviceBytes, fdatasyncAsync, preadAllAsync, writeAllAsync } from './io.js';
import { DATA_BLOCKS_MAX, DATA_BLOCKS_MIN, DATA_OFFSET_BYTES, FORMAT_VERSION, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSETS } from './limits.js';
import { checkNotInUse, LOCK_FILE } from './lock.js';
import { JOURNAL_BYTES, JOURNAL_OFFSET } from './journal.js';
import { blockCountFor, decodeSuperblock, encodeSuperblock, isUuid, type Superblock } from './superblock.js';

export interface FormatOptions {
  /** Disk size. Required when the file does not exist; a smaller file is extended (sparse). For a block device, at most the device size (default: all of it). */
  sizeBytes?: number;
  clusterId: string;
  diskId: number;
  /** Reformat a disk that already holds a valid superblock or index: wipes both and loses its data. */
  force?: boolean;
  /** Index directory; default `${path}.idx`. Required for block devices. */
  indexDir?: string;
}

/** Smallest disk formatDisk accepts: the data offset plus DATA_BLOCKS_MIN blocks. */
export const DISK_BYTES_MIN = DATA_OFFSET_BYTES + DATA_BLOCKS_MIN * BLOCK_BYTES;

function invalid(message: string): StorpoolError {
  return new StorpoolError('CONFIG_ERR_INVALID', message);
}

function checkOptions(opts: FormatOptions): void {
  if (typeof opts.clusterId !== 'string' || !isUuid(opts.clusterId.toLowerCase())) {
    throw invalid(`clusterId ${String(opts.clusterId)} must be a uuid like 123e4567-e89b-12d3-a456-426614174000`);
  }
  if (!Number.isInteger(opts.diskId) || opts.diskId < 0 || opts.diskId > 0xffff_ffff) {
    throw invalid(`diskId ${String(opts.diskId)} must be an integer in [0, 2^32)`);
  }
  if (opts.sizeBytes !== undefined && (!Number.isSafeInteger(opts.sizeBytes) || opts.sizeBytes < DISK_BYTES_MIN)) {
    throw invalid(`sizeBytes ${String(opts.sizeBytes)} is too small: a disk needs at least ${DISK_BYTES_MIN} bytes (1 MiB header plus ${DATA_BLOCKS_MIN} blocks of 4 KiB)`);
  }
}

interface Target {
  kind: 'missing' | 'file' | 'device';
  currentBytes: number;
}

async function inspect(diskPath: string): Promise<Target> {
  try {
    const st = await fs.stat(diskPath);
    if (st.isBlockDevice()) return { kind: 'device', currentBytes: await blockDeviceBytes(st) };
    if (st.isFile()) return { kind: 'file', currentBytes: st.size };
    throw invalid(`${diskPath} is neither a regular file nor a block device`);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return { kind: 'missing', currentBytes: 0 };
    throw err;
  }
}

function diskBytesFor(diskPath: string, target: Target, sizeBytes: number | undefined): number {
  if (target.kind === 'device') {
    if (sizeBytes !== undefined && sizeBytes > target.currentBytes) {
      throw invalid(`sizeBytes ${sizeBytes} exceeds the size of block device ${diskPath} (${target.currentBytes} bytes)`);
    }
    return sizeBytes ?? target.currentBytes;
  }
  const bytes = sizeBytes ?? (target.kind === 'file' ? target.currentBytes : undefined);
  if (bytes === undefined) throw invalid(`${diskPath} does not exist: pass sizeBytes to create it`);
  if (bytes < DISK_BYTES_MIN) throw invalid(`${diskPath} is ${bytes} bytes; a disk needs at least ${DISK_BYTES_MIN} bytes`);
  return Math.min(bytes, DATA_OFFSET_BYTES + DATA_BLOCKS_MAX * BLOCK_BYTES);
}

/** True when either superblock copy of an existing disk is valid. */
async function hasValidSuperblock(fd: number): Promise<boolean> {
  for (const offset of SUPERBLOCK_OFFSETS) {
    const buf = Buffer.alloc(SUPERBLOCK_BYTES);
    try {
      await preadAllAsync(fd, buf, offset);
    } catch {
      continue; // too short to hold one
    }
    if (typeof decodeSuperblock(buf) !== 'string') return true;
  }
  return false;
}

/**
 * Formats a disk (file or block device) for storpool and creates its empty index.
 *
 * DURABILITY: on return both superblock copies are written and fdatasync()ed, the file size is
 * durable (and a newly created file's directory entry fsync()ed), and the index holds only its
 * identity record, committed by a synced LMDB transaction.
 * Order: (1) wipe both superblock copies + fdatasync, (2) remove the old index, (3) size the file,
 * (4) create the new index (synced), (5) write both superblock copies + fdatasync.
 * A crash before (5) leaves no valid superblock, so open() refuses the disk and a re-run of
 * `disk init --force` starts over; a crash during (5) leaves at least one valid copy or none.
 * Open never sees a valid superblock without its index: the index is durable before (5).
 */
export async function formatDisk(diskPath: string, opts: FormatOptions): Promise<Superblock> {
  checkOptions(opts);
  const target = await inspect(diskPath);
  if (target.kind === 'device' && opts.indexDir === undefined) {
    throw invalid(`${diskPath} is a block device: pass indexDir (a directory on another filesystem) for its index`);
  }
  const indexDir = opts.indexDir ?? defaultIndexDir(diskPath);
  const diskBytes = diskBytesFor(diskPath, target, opts.sizeBytes);
  await checkNotInUse(diskPath, indexDir);
  const fh = await fs.open(diskPath, target.kind === 'missing' ? 'w+' : 'r+');
  try {
    await prepare(fh, diskPath, indexDir, target, diskBytes, opts.force === true);
    const sb: Superblock = {
      formatVersion: FORMAT_VERSION,
      clusterId: opts.clusterId.toLowerCase(),
      diskUuid: randomUUID(),
      diskId: opts.diskId,
      blockBytes: BLOCK_BYTES,
      diskBytes,
      dataOffset: DATA_OFFSET_BYTES,
      blockCount: blockCountFor(diskBytes),
      createdAtMs: Date.now(),
    };
    // An empty journal: nothing of an earlier format may be replayed into the new index.
    await writeAllAsync(fh.fd, Buffer.alloc(JOURNAL_BYTES), JOURNAL_OFFSET);
    await createIndex(indexDir, { diskUuid: sb.diskUuid, clusterId: sb.clusterId, diskId: sb.diskId });
    const encoded = encodeSuperblock(sb);
    for (const offset of SUPERBLOCK_OFFSETS) await writeAllAsync(fh.fd, encoded, offset);
    await fdatasyncAsync(fh.fd);
    if (target.kind === 'missing') await fsyncDir(path.dirname(path.resolve(diskPath)));
    return sb;
  } finally {
    await fh.close();
  }
}

async function prepare(fh: fs.FileHandle, diskPath: string, indexDir: string, target: Target, diskBytes: number, force: boolean): Promise<void> {
  const used = target.kind !== 'missing' && (await hasValidSuperblock(fh.fd));
  const staleIndex = await indexExists(indexDir);
  if (used && !force) {
    throw new StorpoolError('STORE_ERR_DISK_IN_USE', `${diskPath} already holds a storpool superblock; run 'storpool-server disk init --force' to wipe it (its data is lost)`);
  }
  if (staleIndex && !force) {
    throw new StorpoolError('STORE_ERR_DISK_IN_USE', `${indexDir} already holds a storpool index; run 'storpool-server disk init --force' to remove it`);
  }
  if (target.kind !== 'missing') {
    const zeros = Buffer.alloc(SUPERBLOCK_BYTES);
    for (const offset of SUPERBLOCK_OFFSETS) await writeAllAsync(fh.fd, zeros, offset);
    await fdatasyncAsync(fh.fd);
  }
  await removeIndex(indexDir, [LOCK_FILE]);
  if (target.kind !== 'device' && target.currentBytes < diskBytes) {
    await fh.truncate(diskBytes);
    await fh.sync();
  }
  assert(!(await indexExists(indexDir)));
}

async function fsyncDir(dir: string): Promise<void> {
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
