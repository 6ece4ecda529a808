/**
 * EtcdMetaStore: the multi-host MetaStore over an etcd v3 cluster (the `etcd3` client).
 *
 * - Every key is stored under the cluster's prefix (default `storpool/`), so several storpool
 *   clusters, or other users, can share one etcd.
 * - Revisions are etcd's: `KeyValue.revision` is mod_revision, `TxnResult.revision` and
 *   `RangeResult.revision` are the header revision.
 * - Watches resume after a reconnect from the revision after the last one delivered (the
 *   client library's own bookkeeping would resume after the header revision, which can skip
 *   events of a batch cut short by a disconnect), and drop duplicates.
 * - Leases are etcd leases with the library's keep-alive (every TTL/3). A lease is reported lost
 *   when etcd says so, or when no keep-alive succeeded for one TTL (etcd has expired it or is
 *   about to).
 *
 * DURABILITY: a call resolves after etcd answered, i.e. after the write was committed by a
 * quorum of members (each fsyncs its WAL before acknowledging). Losing a minority of members
 * loses nothing; etcd's own snapshot/backup tooling covers losing the majority.
 */
import {
  ClientClosedError, Etcd3, EtcdLeaseInvalidError, GRPCDeadlineExceededError, GRPCUnavailableError,
  type IKeyValue, type IRequestOp, type IWatchResponse, type IWatchCreateRequest, type ICompare, type Lease as EtcdClientLease, type Watcher,
} from 'etcd3';
import { StorpoolError } from '@storpool/errors';
import { BaseMetaStore } from './base.js';
import { metaError } from './errors.js';
import {
  checkKey, checkLimit, checkPrefix, checkRevision, checkTtl, checkTxn, checkValue, prefixEnd,
} from './internal/validate.js';
import { ETCD_ATTEMPT_TIMEOUT_MS_MIN, ETCD_CALL_TIMEOUT_MS, ETCD_CONNECT_TIMEOUT_MS } from './limits.js';
import type {
  KeyValue, Lease, LeaseId, MetaValue, MetaWatch, PutOptions, RangeOptions, RangeResult, TxnCompare, TxnOp,
  TxnRequest, TxnResult, WatchCallback, WatchEvent,
} from './types.js';

export const ETCD_DEFAULT_PREFIX = 'storpool/';

export interface EtcdMetaStoreOptions {
  readonly endpoints: readonly string[];
  readonly prefix?: string;
  readonly callTimeoutMs?: number;
}

export class EtcdMetaStore extends BaseMetaStore {
  readonly backend = 'etcd' as const;
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly #client: Etcd3;
  readonly #prefix: Buffer;
  readonly #timeoutMs: number;
  readonly #leases = new Set<EtcdLease>();
  readonly #watches = new Set<EtcdWatch>();
  #closed = false;

  private constructor(options: EtcdMetaStoreOptions, client: Etcd3) {
    super();
    this.endpoints = [...options.endpoints];
    this.prefix = options.prefix ?? ETCD_DEFAULT_PREFIX;
    this.#prefix = Buffer.from(this.prefix, 'utf8');
    this.#timeoutMs = options.callTimeoutMs ?? ETCD_CALL_TIMEOUT_MS;
    this.#client = client;
  }

  /** Connects and checks that the cluster answers; fails with META_ERR_UNAVAILABLE naming the endpoints otherwise. */
  static async open(options: EtcdMetaStoreOptions): Promise<EtcdMetaStore> {
    const timeoutMs = options.callTimeoutMs ?? ETCD_CALL_TIMEOUT_MS;
    // Each attempt gets a third of the call's time: a member that died with our request in flight
    // costs one attempt, and the client library retries on another member (up to 3 attempts).
    const attemptMs = Math.max(ETCD_ATTEMPT_TIMEOUT_MS_MIN, Math.floor(timeoutMs / 3));
    // A longer call deadline (slow or starved hosts, e.g. VMs without KVM) lengthens the connect too.
    const connectMs = Math.max(ETCD_CONNECT_TIMEOUT_MS, timeoutMs);
    const client = new Etcd3({
      hosts: [...options.endpoints],
      dialTimeout: connectMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: new Date(Date.now() + attemptMs) }),
    });
    const store = new EtcdMetaStore(options, client);
    try {
      await store.#call('connect', () => client.maintenance.status(), connectMs);
    } catch (error) {
      client.close();
      if (error instanceof StorpoolError) throw error;
      throw store.#unreachable('connect', error);
    }
    return store;
  }

  // ---- plumbing ------------------------------------------------------------------------------

  #unreachable(what: string, cause: unknown): StorpoolError {
    const detail = cause instanceof Error ? cause.message : String(cause);
    return metaError('META_ERR_UNAVAILABLE',
      `${what}: etcd is unreachable at ${this.endpoints.join(', ')} (${detail}); check that etcd is running there and the endpoints are right`, cause);
  }

  /**
   * One etcd call with a deadline (each grpc attempt has its own, see open()); every failure
   * leaves as a StorpoolError naming the endpoints.
   */
  async #call<T>(what: string, body: () => Promise<T>, timeoutMs = this.#timeoutMs): Promise<T> {
    if (this.#closed) throw metaError('META_ERR_CLOSED', `${what}: the etcd metadata store is closed`);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(metaError('META_ERR_TIMEOUT',
        `${what}: etcd at ${this.endpoints.join(', ')} did not answer within ${timeoutMs} ms; check that etcd is running and has a quorum`)), timeoutMs);
    });
    try {
      return await Promise.race([body(), deadline]);
    } catch (error) {
      throw this.#mapError(what, error);
    } finally {
      clearTimeout(timer);
    }
  }

  #mapError(what: string, error: unknown): StorpoolError {
    if (error instanceof StorpoolError) return error;
    if (error instanceof EtcdLeaseInvalidError) return metaError('META_ERR_LEASE_NOT_FOUND', `${what}: ${error.message}`, error);
    if (error instanceof GRPCDeadlineExceededError) {
      return metaError('META_ERR_TIMEOUT', `${what}: etcd at ${this.endpoints.join(', ')} did not answer in time; check that etcd is running and has a quorum`, error);
    }
    if (error instanceof GRPCUnavailableError || error instanceof ClientClosedError) return this.#unreachable(what, error);
    return metaError('INTERNAL_ERR', `${what}: etcd answered with an error: ${(error as Error).message}`, error);
  }

  #key(key: string): Buffer {
    return Buffer.concat([this.#prefix, Buffer.from(key, 'utf8')]);
  }

  #range(prefix: string): { key: Buffer; range_end: Buffer } {
    const key = this.#key(prefix);
    return { key, range_end: prefixEnd(key) ?? Buffer.from([0]) };
  }

  #toKeyValue(kv: IKeyValue): KeyValue {
    const base = {
      key: kv.key.subarray(this.#prefix.length).toString('utf8'),
      value: Buffer.from(kv.value),
      revision: Number(kv.mod_revision),
      createRevision: Number(kv.create_revision),
      version: Number(kv.version),
    };
    return kv.lease === '0' || kv.lease === '' ? base : { ...base, lease: String(kv.lease) };
  }

  // ---- key-value -----------------------------------------------------------------------------

  async get(key: string): Promise<KeyValue | undefined> {
    checkKey(key);
    const response = await this.#call(`get ${key}`, () => this.#client.kv.range({ key: this.#key(key) }));
    const kv = response.kvs[0];
    return kv === undefined ? undefined : this.#toKeyValue(kv);
  }

  async getPrefix(prefix: string, options?: RangeOptions): Promise<RangeResult> {
    checkPrefix(prefix);
    const limit = checkLimit(options?.limit);
    const response = await this.#call(`list ${prefix}`, () => this.#client.kv.range(
      { ...this.#range(prefix), limit, sort_order: 'Ascend', sort_target: 'Key' }));
    return { kvs: response.kvs.map((kv) => this.#toKeyValue(kv)), revision: Number(response.header.revision), more: response.more };
  }

  async put(key: string, value: MetaValue, options?: PutOptions): Promise<number> {
    checkKey(key);
    const bytes = checkValue(value);
    const request = options?.lease === undefined ? { key: this.#key(key), value: bytes } : { key: this.#key(key), value: bytes, lease: options.lease };
    const response = await this.#call(`put ${key}`, () => this.#client.kv.put(request));
    return Number(response.header.revision);
  }

  async delete(key: string): Promise<number> {
    checkKey(key);
    const response = await this.#call(`delete ${key}`, () => this.#client.kv.deleteRange({ key: this.#key(key) }));
    return Number(response.deleted);
  }

  async deletePrefix(prefix: string): Promise<number> {
    checkPrefix(prefix);
    const response = await this.#call(`delete prefix ${prefix}`, () => this.#client.kv.deleteRange(this.#range(prefix)));
    return Number(response.deleted);
  }

  async txn(request: TxnRequest): Promise<TxnResult> {
    checkTxn(request);
    const body = {
      compare: request.compare.map((compare) => this.#compare(compare)),
      success: request.success.map((op) => this.#op(op)),
      failure: (request.failure ?? []).map((op) => this.#op(op)),
    };
    const response = await this.#call('txn', () => this.#client.kv.txn(body));
    return { succeeded: response.succeeded, revision: Number(response.header.revision) };
  }

  #compare(compare: TxnCompare): ICompare {
    const key = this.#key(compare.key);
    if ('revision' in compare) return { key, target: 'Mod', result: 'Equal', mod_revision: compare.revision };
    if ('value' in compare) return { key, target: 'Value', result: 'Equal', value: checkValue(compare.value) };
    // create_revision is 0 exactly when the key does not exist.
    return { key, target: 'Create', result: compare.exists ? 'Greater' : 'Equal', create_revision: 0 };
  }

  #op(op: TxnOp): IRequestOp {
    switch (op.type) {
      case 'put': {
        const put = { key: this.#key(op.key), value: checkValue(op.value) };
        return { request_put: op.lease === undefined ? put : { ...put, lease: op.lease } };
      }
      case 'delete': return { request_delete_range: { key: this.#key(op.key) } };
      case 'deletePrefix': return { request_delete_range: this.#range(op.prefix) };
    }
  }

  // ---- watches -------------------------------------------------------------------------------

  async watch(prefix: string, fromRevision: number | undefined, callback: WatchCallback): Promise<MetaWatch> {
    checkPrefix(prefix);
    if (fromRevision !== undefined) checkRevision(fromRevision, 'fromRevision');
    if (this.#closed) throw metaError('META_ERR_CLOSED', 'watch: the etcd metadata store is closed');
    const range = this.#range(prefix);
    const builder = this.#client.watch().inRange({ start: range.key, end: range.range_end });
    if (fromRevision !== undefined && fromRevision > 0) builder.startRevision(String(fromRevision));
    const watch = new EtcdWatch(builder.watcher(), this.#prefix.length, fromRevision, callback, () => this.#watches.delete(watch));
    this.#watches.add(watch);
    try {
      await this.#call(`watch ${prefix}`, () => watch.established);
    } catch (error) {
      await watch.close();
      throw error;
    }
    return watch;
  }

  // ---- leases --------------------------------------------------------------------------------

  async grant(ttlMs: number): Promise<Lease> {
    checkTtl(ttlMs);
    const ttlSeconds = Math.ceil(ttlMs / 1000);
    const inner = this.#client.lease(ttlSeconds);
    let id: string;
    try {
      id = await this.#call('lease grant', () => inner.grant());
    } catch (error) {
      inner.release(); // never granted, or granted too late: stop it, it expires on its own
      throw error;
    }
    const lease = new EtcdLease(id, ttlSeconds * 1000, inner,
      (how) => this.#call(`lease ${how}`, () => inner.revoke()), () => this.#leases.delete(lease));
    this.#leases.add(lease);
    return lease;
  }

  async revokeLease(id: LeaseId): Promise<void> {
    try {
      await this.#call(`revoke lease ${id}`, () => this.#client.leaseClient.leaseRevoke({ ID: id }));
    } catch (error) {
      if (error instanceof StorpoolError && error.code === 'META_ERR_LEASE_NOT_FOUND') return;
      throw error;
    }
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.#closed) return;
    await Promise.allSettled([...this.#leases].map((lease) => lease.revoke()));
    for (const watch of [...this.#watches]) await watch.close();
    this.#closed = true;
    this.#client.close();
  }
}

class EtcdWatch implements MetaWatch {
  readonly established: Promise<void>;
  readonly #watcher: Watcher;
  readonly #prefixBytes: number;
  readonly #callback: WatchCallback;
  readonly #onClose: () => void;
  readonly #errorCallbacks: ((error: StorpoolError) => void)[] = [];
  /** First revision not yet delivered; undefined until the first connect of a watch "from now". */
  #nextRevision: number | undefined;
  #closed = false;

  constructor(watcher: Watcher, prefixBytes: number, fromRevision: number | undefined, callback: WatchCallback, onClose: () => void) {
    this.#watcher = watcher;
    this.#prefixBytes = prefixBytes;
    this.#callback = callback;
    this.#onClose = onClose;
    this.#nextRevision = fromRevision === undefined || fromRevision === 0 ? undefined : fromRevision;
    this.established = new Promise<void>((resolve, reject) => {
      watcher.once('connected', () => resolve());
      watcher.once('error', (error) => reject(error));
    });
    this.established.catch(() => undefined);
    // The create request of every (re)connect: resume right after what we delivered.
    // (The library emits its create request object and sends it right after the listeners ran.)
    watcher.on('connecting', (request) => {
      if (this.#nextRevision !== undefined) (request as IWatchCreateRequest).start_revision = this.#nextRevision;
    });
    watcher.on('connected', (response) => {
      if (this.#nextRevision === undefined) this.#nextRevision = Number(response.header.revision) + 1;
    });
    watcher.on('data', (response) => this.#onData(response));
    watcher.on('error', (error) => this.#fail(error));
  }

  #onData(response: IWatchResponse): void {
    if (this.#closed) return;
    const threshold = this.#nextRevision ?? 0;
    let last = threshold - 1;
    for (const raw of response.events) {
      const revision = Number(raw.kv.mod_revision);
      if (revision < threshold) continue; // replayed after a reconnect: already delivered
      last = Math.max(last, revision);
      const key = raw.kv.key.subarray(this.#prefixBytes).toString('utf8');
      const event: WatchEvent = String(raw.type) === 'Delete' || String(raw.type) === '1'
        ? { type: 'delete', key, revision }
        : raw.kv.lease === '0' || raw.kv.lease === ''
          ? { type: 'put', key, value: Buffer.from(raw.kv.value), revision }
          : { type: 'put', key, value: Buffer.from(raw.kv.value), revision, lease: String(raw.kv.lease) };
      try {
        this.#callback(event);
      } catch (error) {
        setImmediate(() => { throw error; }); // a bug in the callback; not ours to swallow
      }
      if (this.#closed) return;
    }
    if (response.events.length === 0 && !response.created) {
      // Progress notification: etcd sends it only when the watch has caught up to this revision.
      last = Math.max(last, Number(response.header.revision));
    }
    this.#nextRevision = Math.max(threshold, last + 1);
  }

  #fail(cause: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
    const compacted = /compact/i.test(cause.message);
    const error = compacted
      ? metaError('META_ERR_COMPACTED', `watch from revision ${this.#nextRevision}: etcd no longer has that history (${cause.message})`, cause)
      : metaError('INTERNAL_ERR', `etcd cancelled the watch: ${cause.message}`, cause);
    for (const callback of this.#errorCallbacks) callback(error);
  }

  onError(callback: (error: StorpoolError) => void): void {
    this.#errorCallbacks.push(callback);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
    // Cancelling waits for etcd's answer; when etcd is gone there is nothing to cancel.
    await Promise.race([this.#watcher.cancel().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  }
}

class EtcdLease implements Lease {
  readonly id: LeaseId;
  readonly ttlMs: number;
  readonly #inner: EtcdClientLease;
  readonly #revoke: (how: string) => Promise<void>;
  readonly #onEnd: () => void;
  readonly #lostCallbacks: ((error: StorpoolError) => void)[] = [];
  /** Fires when no keep-alive succeeded for one TTL: etcd has expired the lease, or is about to. */
  #silence: NodeJS.Timeout | undefined;
  #alive = true;

  constructor(id: LeaseId, ttlMs: number, inner: EtcdClientLease, revoke: (how: string) => Promise<void>, onEnd: () => void) {
    this.id = id;
    this.ttlMs = ttlMs;
    this.#inner = inner;
    this.#revoke = revoke;
    this.#onEnd = onEnd;
    inner.on('lost', (error) => this.#lost(`etcd reports lease ${id} lost: ${error.message}`));
    inner.on('keepaliveSucceeded', () => this.#armSilence());
    this.#armSilence();
  }

  get alive(): boolean { return this.#alive; }

  #armSilence(): void {
    clearTimeout(this.#silence);
    if (!this.#alive) return;
    this.#silence = setTimeout(() => this.#lost(`no keep-alive of lease ${this.id} succeeded for ${this.ttlMs} ms (etcd unreachable?)`), this.ttlMs).unref();
  }

  #end(): boolean {
    if (!this.#alive) return false;
    this.#alive = false;
    clearTimeout(this.#silence);
    this.#onEnd();
    return true;
  }

  #lost(reason: string): void {
    if (!this.#end()) return;
    this.#inner.release();
    const error = metaError('META_ERR_LEASE_LOST', reason);
    for (const callback of this.#lostCallbacks) callback(error);
  }

  onLost(callback: (error: StorpoolError) => void): void {
    this.#lostCallbacks.push(callback);
  }

  async revoke(): Promise<void> {
    if (!this.#end()) return;
    try {
      await this.#revoke('revoke');
    } catch (error) {
      this.#inner.release(); // unreachable: it expires by itself after the TTL
      if (!(error instanceof StorpoolError && error.code === 'META_ERR_LEASE_NOT_FOUND')) throw error;
    }
  }

  release(): void {
    if (this.#end()) this.#inner.release();
  }
}
