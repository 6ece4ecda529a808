/**
 * Callback-style fs helpers for the hot path (one libuv request per call, no per-block promises),
 * plus the few promise helpers format/open need.
 */
import { StorpoolError, toStorpoolError } from '@storpool/errors';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { WRITEV_BUFFERS_MAX } from './limits.js';

export type Done = (err: Error | null) => void;

function bytesOf(buffers: readonly Buffer[]): number {
  let n = 0;
  for (const b of buffers) n += b.length;
  return n;
}

/** Drops the first `n` bytes of a buffer list (after a short write). */
function advance(buffers: readonly Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/** Writes all of `buffers` at `position`, in writev calls of at most WRITEV_BUFFERS_MAX buffers. */
export function writevAll(fd: number, buffers: readonly Buffer[], position: number, done: Done): void {
  if (buffers.length === 0) {
    done(null);
    return;
  }
  const batch = buffers.slice(0, WRITEV_BUFFERS_MAX);
  const rest = buffers.slice(WRITEV_BUFFERS_MAX);
  const want = bytesOf(batch);
  fs.writev(fd, batch, position, (err, written) => {
    if (err) {
      done(err);
      return;
    }
    assert(written > 0 && written <= want, 'writev wrote some bytes');
    if (written < want) {
      writevAll(fd, [...advance(batch, written), ...rest], position + written, done);
      return;
    }
    writevAll(fd, rest, position + written, done);
  });
}

/**
 * Synchronous writevAll, for small cycles: writing a few blocks into the page cache costs a few
 * microseconds, while a threadpool round trip costs ~20 us of CPU (futex wake-ups, completion
 * callback) and its latency. Throws the fs error.
 */
export function writevAllSync(fd: number, buffers: readonly Buffer[], position: number): void {
  let rest: readonly Buffer[] = buffers;
  let at = position;
  while (rest.length > 0) {
    const batch = rest.length > WRITEV_BUFFERS_MAX ? rest.slice(0, WRITEV_BUFFERS_MAX) : rest;
    const want = bytesOf(batch);
    const written = batch.length === 1 ? fs.writeSync(fd, batch[0] as Buffer, 0, want, at) : fs.writevSync(fd, batch, at);
    assert(written > 0 && written <= want, 'writev wrote some bytes');
    at += written;
    rest = written < want ? [...advance(batch, written), ...rest.slice(batch.length)] : rest.slice(batch.length);
  }
}

/** Reads exactly buf.length bytes at `position`; a read past the end of the disk is STORE_ERR_IO. */
export function preadAll(fd: number, buf: Buffer, position: number, done: Done): void {
  fs.read(fd, buf, 0, buf.length, position, (err, n) => {
    if (err) {
      done(err);
      return;
    }
    if (n === buf.length) {
      done(null);
      return;
    }
    if (n === 0) {
      done(new StorpoolError('STORE_ERR_IO', `short read at byte ${position}: the disk is smaller than its superblock says`));
      return;
    }
    preadAll(fd, buf.subarray(n), position + n, done);
  });
}

/** Maps an fs/LMDB failure to our codes: ENOSPC -> NO_SPACE, EIO -> IO, other errno -> IO too. */
export function storeError(err: unknown, what: string): StorpoolError {
  if (err instanceof StorpoolError) return err;
  const mapped = toStorpoolError(err);
  if (mapped.code !== 'INTERNAL_ERR') {
    return new StorpoolError(mapped.code, `${what}: ${mapped.message}`, { cause: err });
  }
  const errno = (err as { code?: unknown } | null)?.code;
  if (typeof errno === 'string' && /^E[A-Z]+$/.test(errno)) {
    return new StorpoolError('STORE_ERR_IO', `${what}: ${mapped.message}`, { cause: err });
  }
  return mapped;
}

/** Synchronous preadAll (page-cache hits: see read-path.ts). Throws the fs error. */
export function preadAllSync(fd: number, buf: Buffer, position: number): void {
  let at = 0;
  while (at < buf.length) {
    const n = fs.readSync(fd, buf, at, buf.length - at, position + at);
    if (n === 0) throw new StorpoolError('STORE_ERR_IO', `short read at byte ${position + at}: the disk is smaller than its superblock says`);
    at += n;
  }
}

export function preadAllAsync(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => preadAll(fd, buf, position, (err) => (err ? reject(err) : resolve())));
}

export function writeAllAsync(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => writevAll(fd, [buf], position, (err) => (err ? reject(err) : resolve())));
}

export function fdatasyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

/** Size in bytes of a block device, from sysfs (stat reports 0 for devices). */
export async function blockDeviceBytes(stat: fs.Stats): Promise<number> {
  assert(stat.isBlockDevice());
  const rdev = stat.rdev;
  const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff);
  const text = await fs.promises.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  const sectors = Number(text.trim());
  assert(Number.isSafeInteger(sectors) && sectors >= 0);
  return sectors * 512;
}
