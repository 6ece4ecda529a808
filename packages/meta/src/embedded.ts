/**
 * EmbeddedMetaStore: the single-host MetaStore. One LMDB environment (lmdb-js) in a directory:
 *
 *   dir/LOCK     PID of the process that has the store open (one process at a time)
 *   dir/lmdb/    the LMDB environment, three named databases:
 *     kv         key (string) -> { v: value, m: mod revision, c: create revision, n: version, l?: lease }
 *     sys        'revision' -> the store revision (last committed write)
 *     log        revision (number) -> the events of that revision, the last
 *                EMBEDDED_HISTORY_REVISIONS_MAX revisions (watch replay)
 *
 * Watches and leases live in this process. Leases are not persisted: a key attached to a lease
 * belongs to a holder in this process, so on open the keys left by the previous process's
 * leases are deleted (with delete events), as etcd would delete them once their TTL ran out.
 *
 * DURABILITY: every write (put, delete, txn, lease cleanup) is one LMDB write transaction that
 * updates the keys, the revision counter and the log record together. The environment is opened
 * with `overlappingSync: false`, so LMDB fsyncs the data and then the meta page before the commit
 * returns; the promise a caller awaits resolves only after that. A crash before the meta page is
 * synced leaves the previous transaction as the last one (LMDB's two meta pages): the write is
 * wholly absent and was never acknowledged. A crash after it leaves the write wholly present.
 * Nothing is repaired on open except the lease cleanup above and a stale LOCK file.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { open, type Database, type RootDatabase, type Transaction } from 'lmdb';
import type { StorpoolError } from '@storpool/errors';
import { BaseMetaStore } from './base.js';
import { metaError } from './errors.js';
import { lockDirectory } from './internal/lock.js';
import {
  checkKey, checkLimit, checkPrefix, checkRevision, checkTtl, checkTxn, checkValue,
} from './internal/validate.js';
import { EMBEDDED_HISTORY_REVISIONS_MAX, LEASE_KEEPALIVES_PER_TTL } from './limits.js';
import type {
  KeyValue, Lease, LeaseId, MetaValue, MetaWatch, PutOptions, RangeOptions, RangeResult, TxnOp,
  TxnRequest, TxnResult, WatchCallback, WatchEvent,
} from './types.js';

interface KeyRecord { v: Uint8Array; m: number; c: number; n: number; l?: string }
type LogEvent = { t: 'p'; k: string; v: Uint8Array; l?: string } | { t: 'd'; k: string };
type Compare = { key: string; revision: number } | { key: string; value: Buffer } | { key: string; exists: boolean };
type Op = { type: 'put'; key: string; value: Buffer; lease?: LeaseId } | { type: 'delete'; key: string } | { type: 'deletePrefix'; prefix: string };

const REVISION_KEY = 'revision';

export interface EmbeddedMetaStoreOptions {
  /** Revisions kept for watch replay (default EMBEDDED_HISTORY_REVISIONS_MAX). */
  readonly historyRevisionsMax?: number;
}

/** The events one write transaction produces; its revision is assigned inside the transaction. */
interface WriteContext { readonly revision: number; readonly events: WatchEvent[] }

export class EmbeddedMetaStore extends BaseMetaStore {
  readonly backend = 'embedded' as const;
  readonly dir: string;
  readonly #root: RootDatabase;
  readonly #kv: Database<KeyRecord, string>;
  readonly #sys: Database<number, string>;
  readonly #log: Database<LogEvent[], number>;
  readonly #unlock: () => void;
  readonly #historyMax: number;
  /** Last revision whose events were handed to watches (== last committed write). */
  #revision = 0;
  /** Recent revisions, ascending, for watch replay. */
  #history: { revision: number; events: WatchEvent[] }[] = [];
  /** Written inside a transaction, not yet known to be committed. */
  readonly #pending = new Map<number, WatchEvent[]>();
  readonly #watches = new Set<EmbeddedWatch>();
  readonly #leases = new Map<LeaseId, EmbeddedLease>();
  readonly #leaseKeys = new Map<LeaseId, Set<string>>();
  #closed = false;

  private constructor(dir: string, root: RootDatabase, unlock: () => void, historyMax: number) {
    super();
    this.dir = dir;
    this.#historyMax = historyMax;
    this.#root = root;
    this.#unlock = unlock;
    this.#kv = root.openDB<KeyRecord, string>({ name: 'kv', encoding: 'msgpack' });
    this.#sys = root.openDB<number, string>({ name: 'sys', encoding: 'msgpack' });
    this.#log = root.openDB<LogEvent[], number>({ name: 'log', encoding: 'msgpack' });
  }

  /** Opens (creating if needed) the store in `dir`. Fails with META_ERR_LOCKED if another process has it. */
  static async open(dir: string, options?: EmbeddedMetaStoreOptions): Promise<EmbeddedMetaStore> {
    if (typeof dir !== 'string' || dir.length === 0) throw metaError('CONFIG_ERR_INVALID', 'embedded metadata store needs a directory');
    const historyMax = options?.historyRevisionsMax ?? EMBEDDED_HISTORY_REVISIONS_MAX;
    if (!Number.isInteger(historyMax) || historyMax < 1) throw metaError('CONFIG_ERR_INVALID', `historyRevisionsMax must be a positive integer, got ${historyMax}`);
    mkdirSync(dir, { recursive: true });
    const unlock = lockDirectory(dir);
    let root: RootDatabase;
    try {
      root = open({ path: join(dir, 'lmdb'), overlappingSync: false, compression: false, maxDbs: 8 });
    } catch (error) {
      unlock();
      throw metaError('INTERNAL_ERR', `cannot open metadata store in ${dir}: ${(error as Error).message}`, error);
    }
    const store = new EmbeddedMetaStore(dir, root, unlock, historyMax);
    try {
      await store.#recover();
    } catch (error) {
      await root.close();
      unlock();
      throw error;
    }
    return store;
  }

  /** Loads the revision and history, then deletes keys of the previous process's leases. */
  async #recover(): Promise<void> {
    this.#revision = this.#sys.get(REVISION_KEY) ?? 0;
    for (const { key, value } of this.#log.getRange({ start: Math.max(1, this.#revision - this.#historyMax + 1) })) {
      this.#history.push({ revision: key, events: value.map((event) => fromLogEvent(event, key)) });
    }
    const orphans: string[] = [];
    for (const { key, value } of this.#kv.getRange({})) if (value.l !== undefined) orphans.push(key);
    if (orphans.length === 0) return;
    await this.#write((context) => {
      for (const key of orphans) this.#applyDelete(context, key);
    });
  }

  // ---- reads ---------------------------------------------------------------------------------

  #read<T>(body: (transaction: Transaction) => T): T {
    this.#checkOpen();
    const transaction = this.#root.useReadTransaction();
    try {
      return body(transaction);
    } finally {
      transaction.done();
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    checkKey(key);
    return this.#read((transaction) => {
      const record = this.#kv.get(key, { transaction });
      return record === undefined ? undefined : toKeyValue(key, record);
    });
  }

  async getPrefix(prefix: string, options?: RangeOptions): Promise<RangeResult> {
    checkPrefix(prefix);
    const limit = checkLimit(options?.limit);
    return this.#read((transaction) => {
      const revision = this.#sys.get(REVISION_KEY, { transaction }) ?? 0;
      const kvs: KeyValue[] = [];
      let more = false;
      const range = prefix === '' ? { transaction } : { start: prefix, transaction };
      for (const { key, value } of this.#kv.getRange(range)) {
        if (!key.startsWith(prefix)) break;
        if (limit > 0 && kvs.length === limit) {
          more = true;
          break;
        }
        kvs.push(toKeyValue(key, value));
      }
      return { kvs, revision, more };
    });
  }

  // ---- writes --------------------------------------------------------------------------------

  async put(key: string, value: MetaValue, options?: PutOptions): Promise<number> {
    const op = normalizeOp(options?.lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease: options.lease });
    const { revision } = await this.#write((context) => {
      this.#checkLeases([op]);
      this.#applyOp(context, op);
    });
    return revision;
  }

  async delete(key: string): Promise<number> {
    checkKey(key);
    return (await this.#write((context) => this.#applyDelete(context, key))).value;
  }

  async deletePrefix(prefix: string): Promise<number> {
    checkPrefix(prefix);
    return (await this.#write((context) => this.#applyDeletePrefix(context, prefix))).value;
  }

  async txn(request: TxnRequest): Promise<TxnResult> {
    checkTxn(request);
    const compares = request.compare.map(normalizeCompare);
    const success = request.success.map(normalizeOp);
    const failure = (request.failure ?? []).map(normalizeOp);
    const { value: succeeded, revision } = await this.#write((context) => {
      const holds = compares.every((compare) => this.#compareHolds(compare));
      const ops = holds ? success : failure;
      this.#checkLeases(ops); // throws before anything is written
      for (const op of ops) this.#applyOp(context, op);
      return holds;
    });
    return { succeeded, revision };
  }

  /**
   * Runs `body` inside one LMDB write transaction (see DURABILITY above) and resolves after the
   * durable commit, with the revision the write got (or the current one if it wrote nothing).
   * `body` runs on this thread, in order with other writes; it may throw only before it writes.
   */
  async #write<T>(body: (context: WriteContext) => T): Promise<{ value: T; revision: number }> {
    this.#checkOpen();
    type Outcome = { ok: true; value: T; revision: number } | { ok: false; error: unknown };
    let outcome: Outcome;
    try {
      outcome = await this.#root.transaction((): Outcome => {
        const base = this.#sys.get(REVISION_KEY) ?? 0;
        const context: WriteContext = { revision: base + 1, events: [] };
        let value: T;
        try {
          value = body(context);
        } catch (error) {
          return { ok: false, error };
        }
        if (context.events.length === 0) return { ok: true, value, revision: base };
        this.#sys.putSync(REVISION_KEY, context.revision);
        this.#log.putSync(context.revision, context.events.map(toLogEvent));
        const expired = context.revision - this.#historyMax;
        if (expired > 0) this.#log.removeSync(expired);
        this.#pending.set(context.revision, context.events);
        return { ok: true, value, revision: context.revision };
      });
    } catch (error) {
      for (const revision of this.#pending.keys()) if (revision > this.#revision) this.#pending.delete(revision);
      throw metaError('INTERNAL_ERR', `metadata store write failed in ${this.dir}: ${(error as Error).message}`, error);
    }
    if (!outcome.ok) throw outcome.error;
    this.#committed(outcome.revision);
    return { value: outcome.value, revision: outcome.revision };
  }

  /** Every revision up to `revision` is durable: hand their events to history and watches, in order. */
  #committed(revision: number): void {
    while (this.#revision < revision) {
      const next = this.#revision + 1;
      const events = this.#pending.get(next);
      if (events === undefined) throw metaError('INTERNAL_ERR', `embedded store lost the events of revision ${next}`);
      this.#pending.delete(next);
      this.#revision = next;
      this.#history.push({ revision: next, events });
      if (this.#history.length > this.#historyMax) this.#history.shift();
      for (const watch of this.#watches) watch.offer(next, events);
    }
  }

  #compareHolds(compare: Compare): boolean {
    const record = this.#kv.get(compare.key);
    if ('revision' in compare) return (record?.m ?? 0) === compare.revision;
    if ('value' in compare) return record !== undefined && Buffer.compare(record.v, compare.value) === 0;
    return (record !== undefined) === compare.exists;
  }

  #checkLeases(ops: readonly Op[]): void {
    for (const op of ops) {
      if (op.type !== 'put' || op.lease === undefined) continue;
      if (this.#leases.get(op.lease)?.alive !== true) throw metaError('META_ERR_LEASE_NOT_FOUND', `lease ${op.lease} does not exist (expired or revoked)`);
    }
  }

  #applyOp(context: WriteContext, op: Op): void {
    switch (op.type) {
      case 'put': this.#applyPut(context, op.key, op.value, op.lease); return;
      case 'delete': this.#applyDelete(context, op.key); return;
      case 'deletePrefix': this.#applyDeletePrefix(context, op.prefix); return;
    }
  }

  #applyPut(context: WriteContext, key: string, value: Buffer, lease: LeaseId | undefined): void {
    const previous = this.#kv.get(key);
    const record: KeyRecord = { v: value, m: context.revision, c: previous?.c ?? context.revision, n: (previous?.n ?? 0) + 1 };
    if (lease !== undefined) record.l = lease;
    this.#kv.putSync(key, record);
    if (previous?.l !== undefined && previous.l !== lease) this.#leaseKeys.get(previous.l)?.delete(key);
    if (lease !== undefined) {
      const keys = this.#leaseKeys.get(lease) ?? new Set<string>();
      keys.add(key);
      this.#leaseKeys.set(lease, keys);
    }
    context.events.push(lease === undefined
      ? { type: 'put', key, value, revision: context.revision }
      : { type: 'put', key, value, revision: context.revision, lease });
  }

  #applyDelete(context: WriteContext, key: string): number {
    const previous = this.#kv.get(key);
    if (previous === undefined) return 0;
    this.#kv.removeSync(key);
    if (previous.l !== undefined) this.#leaseKeys.get(previous.l)?.delete(key);
    context.events.push({ type: 'delete', key, revision: context.revision });
    return 1;
  }

  #applyDeletePrefix(context: WriteContext, prefix: string): number {
    const keys: string[] = [];
    for (const key of this.#kv.getKeys(prefix === '' ? {} : { start: prefix })) {
      if (!key.startsWith(prefix)) break;
      keys.push(key);
    }
    let deleted = 0;
    for (const key of keys) deleted += this.#applyDelete(context, key);
    return deleted;
  }

  // ---- watches -------------------------------------------------------------------------------

  async watch(prefix: string, fromRevision: number | undefined, callback: WatchCallback): Promise<MetaWatch> {
    checkPrefix(prefix);
    if (fromRevision !== undefined) checkRevision(fromRevision, 'fromRevision');
    this.#checkOpen();
    const start = fromRevision === undefined || fromRevision === 0 ? this.#revision + 1 : fromRevision;
    const oldest = this.#history[0]?.revision ?? this.#revision + 1;
    if (start < oldest) {
      throw metaError('META_ERR_COMPACTED', `cannot watch from revision ${start}: the embedded store keeps revisions ${oldest}..${this.#revision}`);
    }
    const watch = new EmbeddedWatch(prefix, start, callback, (closed) => this.#watches.delete(closed));
    for (const entry of this.#history) if (entry.revision >= start) watch.offer(entry.revision, entry.events);
    this.#watches.add(watch);
    return watch;
  }

  // ---- leases --------------------------------------------------------------------------------

  async grant(ttlMs: number): Promise<Lease> {
    checkTtl(ttlMs);
    this.#checkOpen();
    let id: LeaseId;
    do id = BigInt.asUintN(62, randomBytes(8).readBigUInt64BE()).toString(); while (this.#leases.has(id));
    const lease = new EmbeddedLease(id, ttlMs, (ended, reason) => this.#endLease(ended, reason));
    this.#leases.set(id, lease);
    return lease;
  }

  async revokeLease(id: LeaseId): Promise<void> {
    const lease = this.#leases.get(id);
    if (lease !== undefined) await lease.end('lost', `lease ${id} was revoked by another holder`);
  }

  /** The lease is dead (alive === false already): delete its keys, in one revision. */
  async #endLease(lease: EmbeddedLease, _reason: string): Promise<void> {
    this.#leases.delete(lease.id);
    const keys = this.#leaseKeys.get(lease.id);
    await this.#write((context) => {
      for (const key of keys ?? []) {
        if (this.#kv.get(key)?.l === lease.id) this.#applyDelete(context, key);
      }
      this.#leaseKeys.delete(lease.id);
    });
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw metaError('META_ERR_CLOSED', `metadata store in ${this.dir} is closed`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // Leases first (their keys go, with events), then nothing more is accepted.
    await Promise.allSettled([...this.#leases.values()].map((lease) => lease.end('revoked', 'store closed')));
    this.#closed = true;
    for (const watch of this.#watches) await watch.close();
    await this.#root.close();
    this.#unlock();
  }
}

class EmbeddedWatch implements MetaWatch {
  readonly #prefix: string;
  readonly #callback: WatchCallback;
  readonly #onClose: (watch: EmbeddedWatch) => void;
  readonly #queue: WatchEvent[] = [];
  readonly #errorCallbacks: ((error: StorpoolError) => void)[] = [];
  #nextRevision: number;
  #scheduled = false;
  #closed = false;

  constructor(prefix: string, nextRevision: number, callback: WatchCallback, onClose: (watch: EmbeddedWatch) => void) {
    this.#prefix = prefix;
    this.#nextRevision = nextRevision;
    this.#callback = callback;
    this.#onClose = onClose;
  }

  /** Revisions arrive in order; one already seen is skipped. Delivery is deferred to a microtask. */
  offer(revision: number, events: readonly WatchEvent[]): void {
    if (this.#closed || revision < this.#nextRevision) return;
    this.#nextRevision = revision + 1;
    for (const event of events) if (event.key.startsWith(this.#prefix)) this.#queue.push(event);
    if (this.#queue.length === 0 || this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => this.#drain());
  }

  #drain(): void {
    this.#scheduled = false;
    while (!this.#closed && this.#queue.length > 0) {
      const event = this.#queue.shift()!;
      try {
        this.#callback(event);
      } catch (error) {
        setImmediate(() => { throw error; }); // a bug in the callback; not ours to swallow
      }
    }
  }

  onError(callback: (error: StorpoolError) => void): void {
    this.#errorCallbacks.push(callback);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#onClose(this);
  }
}

type LeaseEnd = 'lost' | 'revoked' | 'released';

class EmbeddedLease implements Lease {
  readonly id: LeaseId;
  readonly ttlMs: number;
  readonly #onEnd: (lease: EmbeddedLease, reason: string) => Promise<void>;
  readonly #lostCallbacks: ((error: StorpoolError) => void)[] = [];
  #keepAlive: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #alive = true;
  #released = false;
  #ending: Promise<void> | undefined;

  constructor(id: LeaseId, ttlMs: number, onEnd: (lease: EmbeddedLease, reason: string) => Promise<void>) {
    this.id = id;
    this.ttlMs = ttlMs;
    this.#onEnd = onEnd;
    this.#refresh();
    // Automatic keep-alive, as etcd clients do: the lease lives as long as this process does.
    this.#keepAlive = setInterval(() => this.#refresh(), ttlMs / LEASE_KEEPALIVES_PER_TTL).unref();
  }

  get alive(): boolean { return this.#alive; }

  #refresh(): void {
    clearTimeout(this.#expiry);
    this.#expiry = setTimeout(() => {
      void this.end(this.#released ? 'released' : 'lost', `lease ${this.id} expired after ${this.ttlMs} ms`).catch(() => undefined);
    }, this.ttlMs).unref();
  }

  onLost(callback: (error: StorpoolError) => void): void {
    this.#lostCallbacks.push(callback);
  }

  async revoke(): Promise<void> {
    await this.end('revoked', `lease ${this.id} revoked by its holder`);
  }

  release(): void {
    this.#released = true;
    clearInterval(this.#keepAlive);
  }

  /** Idempotent: the first call decides how the lease ended. */
  end(how: LeaseEnd, reason: string): Promise<void> {
    if (this.#ending !== undefined) return this.#ending;
    this.#alive = false;
    clearInterval(this.#keepAlive);
    clearTimeout(this.#expiry);
    if (how === 'lost') {
      const error = metaError('META_ERR_LEASE_LOST', reason);
      for (const callback of this.#lostCallbacks) callback(error);
    }
    this.#ending = this.#onEnd(this, reason);
    return this.#ending;
  }
}

function normalizeOp(op: TxnOp): Op {
  switch (op.type) {
    case 'put': {
      checkKey(op.key);
      const value = Buffer.from(checkValue(op.value)); // a copy: the caller may reuse its buffer
      return op.lease === undefined ? { type: 'put', key: op.key, value } : { type: 'put', key: op.key, value, lease: op.lease };
    }
    case 'delete': checkKey(op.key); return { type: 'delete', key: op.key };
    case 'deletePrefix': checkPrefix(op.prefix); return { type: 'deletePrefix', prefix: op.prefix };
  }
}

function normalizeCompare(compare: TxnRequest['compare'][number]): Compare {
  if ('value' in compare) return { key: compare.key, value: checkValue(compare.value) };
  return compare;
}

function toKeyValue(key: string, record: KeyRecord): KeyValue {
  const value = Buffer.from(record.v); // copy out of LMDB's read buffer
  const base = { key, value, revision: record.m, createRevision: record.c, version: record.n };
  return record.l === undefined ? base : { ...base, lease: record.l };
}

function toLogEvent(event: WatchEvent): LogEvent {
  if (event.type === 'delete') return { t: 'd', k: event.key };
  return event.lease === undefined ? { t: 'p', k: event.key, v: event.value } : { t: 'p', k: event.key, v: event.value, l: event.lease };
}

function fromLogEvent(event: LogEvent, revision: number): WatchEvent {
  if (event.t === 'd') return { type: 'delete', key: event.k, revision };
  const value = Buffer.from(event.v);
  return event.l === undefined ? { type: 'put', key: event.k, value, revision } : { type: 'put', key: event.k, value, revision, lease: event.l };
}
