/**
 * Leader election over any MetaStore, built from leases and compare-and-swap only:
 *
 *   key = `elections/<name>`, value = candidate id, attached to the candidate's lease.
 *   campaign: txn(compare key absent, success put key with my lease).
 *   everyone watches the key; a delete (leader resigned, its lease expired or was revoked)
 *   starts another round. A leader whose lease is lost steps down at once (onChange(false)),
 *   and waits one TTL before campaigning again so that a healthy candidate takes over.
 *
 * At most one candidate holds the key at any revision. A deposed leader learns of it when its
 * lease is reported lost, which is at most one TTL after etcd expired it; callers that act on
 * leadership must fence their writes (compare on the election key's revision) if that window
 * matters.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { StorpoolError } from '@storpool/errors';
import { isMetaError, metaError } from './errors.js';
import { checkKey, checkTtl } from './internal/validate.js';
import type { Election, Lease, MetaStore, MetaWatch, WatchEvent } from './types.js';

export const ELECTION_PREFIX = 'elections/';

export async function campaign(store: MetaStore, name: string, candidateId: string, ttlMs: number): Promise<Election> {
  checkKey(name, 'election name');
  if (typeof candidateId !== 'string' || candidateId.length === 0) throw metaError('CONFIG_ERR_INVALID', 'candidateId must be a non-empty string');
  checkTtl(ttlMs);
  const election = new StoreElection(store, name, candidateId, ttlMs);
  await election.start();
  return election;
}

class StoreElection implements Election {
  readonly name: string;
  readonly candidateId: string;
  readonly #store: MetaStore;
  readonly #key: string;
  readonly #ttlMs: number;
  readonly #callbacks: ((isLeader: boolean, leaderId: string | undefined) => void)[] = [];
  #lease: Lease | undefined;
  #isLeader = false;
  #leaderId: string | undefined;
  #watch: MetaWatch | undefined;
  #closed = false;
  /** Attempts run one at a time, in order. */
  #chain: Promise<void> = Promise.resolve();
  #queued = false;

  constructor(store: MetaStore, name: string, candidateId: string, ttlMs: number) {
    this.#store = store;
    this.name = name;
    this.candidateId = candidateId;
    this.#key = ELECTION_PREFIX + name;
    this.#ttlMs = ttlMs;
  }

  get isLeader(): boolean { return this.#isLeader; }
  get leaderId(): string | undefined { return this.#leaderId; }
  get leaseId(): string | undefined { return this.#isLeader ? this.#lease?.id : undefined; }

  onChange(callback: (isLeader: boolean, leaderId: string | undefined) => void): void {
    this.#callbacks.push(callback);
  }

  async start(): Promise<void> {
    const revision = await this.#attempt();
    await this.#startWatch(revision + 1);
  }

  async resign(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#chain;
    await this.#watch?.close();
    const lease = this.#lease;
    this.#lease = undefined;
    this.#setState(false, this.#isLeader ? undefined : this.#leaderId);
    // Revoking deletes the key if we hold it, atomically with the lease.
    if (lease?.alive === true) await lease.revoke();
  }

  async #startWatch(fromRevision: number): Promise<void> {
    const watch = await this.#store.watch(this.#key, fromRevision, (event) => this.#onEvent(event));
    watch.onError((error) => this.#onWatchError(error));
    this.#watch = watch;
    if (this.#closed) await watch.close();
  }

  #onWatchError(error: StorpoolError): void {
    if (this.#closed || isMetaError(error, 'META_ERR_CLOSED')) return;
    // Start over: one attempt, then a fresh watch from the revision it saw.
    this.#chain = this.#chain.then(async () => {
      await sleep(this.#ttlMs / 3);
      if (this.#closed) return;
      const revision = await this.#attempt();
      await this.#startWatch(revision + 1);
    }).catch((retryError: unknown) => this.#onWatchError(retryError as StorpoolError));
  }

  #onEvent(event: WatchEvent): void {
    if (this.#closed) return;
    if (event.type === 'delete') {
      this.#setState(false, undefined);
      this.#schedule(0);
      return;
    }
    const holder = event.value.toString('utf8');
    const mine = holder === this.candidateId && event.lease !== undefined && event.lease === this.#lease?.id;
    this.#setState(mine, holder);
  }

  #onLeaseLost(lease: Lease): void {
    if (lease !== this.#lease) return;
    this.#lease = undefined;
    if (this.#isLeader) this.#setState(false, undefined);
    this.#schedule(this.#ttlMs);
  }

  #schedule(delayMs: number): void {
    if (this.#closed || this.#queued) return;
    this.#queued = true;
    this.#chain = this.#chain.then(async () => {
      if (delayMs > 0) await sleep(delayMs);
      this.#queued = false;
      await this.#attempt();
    }).catch(() => {
      this.#queued = false;
      this.#schedule(this.#ttlMs / 3);
    });
  }

  /** One round: claim the key if it is free. Returns the store revision it saw. */
  async #attempt(): Promise<number> {
    if (this.#closed) return 0;
    const lease = await this.#ensureLease();
    try {
      const result = await this.#store.txn({
        compare: [{ key: this.#key, exists: false }],
        success: [{ type: 'put', key: this.#key, value: this.candidateId, lease: lease.id }],
      });
      if (result.succeeded) {
        this.#setState(true, this.candidateId);
        return result.revision;
      }
      const current = await this.#store.get(this.#key);
      const holder = current?.value.toString('utf8');
      this.#setState(holder === this.candidateId && current?.lease === lease.id, holder);
      return result.revision;
    } catch (error) {
      if (!isMetaError(error, 'META_ERR_LEASE_NOT_FOUND')) throw error;
      // Our lease died before its loss was reported: same as losing it.
      this.#onLeaseLost(lease);
      return (await this.#store.getPrefix(this.#key, { limit: 1 })).revision;
    }
  }

  async #ensureLease(): Promise<Lease> {
    if (this.#lease?.alive === true) return this.#lease;
    const lease = await this.#store.grant(this.#ttlMs);
    lease.onLost(() => this.#onLeaseLost(lease));
    this.#lease = lease;
    return lease;
  }

  #setState(isLeader: boolean, leaderId: string | undefined): void {
    if (isLeader === this.#isLeader && leaderId === this.#leaderId) return;
    this.#isLeader = isLeader;
    this.#leaderId = leaderId;
    for (const callback of this.#callbacks) callback(isLeader, leaderId);
  }
}
