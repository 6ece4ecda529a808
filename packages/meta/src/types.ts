/**
 * Public types of the metadata store. Keys are strings (UTF-8, ordered bytewise, as etcd orders
 * them); values are bytes. Callers that keep JSON encode it themselves (`Buffer.from(JSON.stringify(x))`).
 */
import type { StorpoolError } from '@storpool/errors';

/** What callers may pass as a value: bytes, or a string stored as UTF-8. */
export type MetaValue = Uint8Array | string;

/** A lease id: etcd's int64 lease id as a decimal string; the embedded store uses the same shape. */
export type LeaseId = string;

export interface KeyValue {
  readonly key: string;
  readonly value: Buffer;
  /** Store revision of the last modification of this key (etcd mod_revision). */
  readonly revision: number;
  /** Store revision at which the key was created (etcd create_revision). */
  readonly createRevision: number;
  /** Number of modifications since creation, 1 after the first put (etcd version). */
  readonly version: number;
  /** The lease the key is attached to, if any. */
  readonly lease?: LeaseId;
}

export interface RangeResult {
  /** Keys in ascending bytewise order. */
  readonly kvs: KeyValue[];
  /** The store revision the read was served at; `watch(prefix, revision + 1, ...)` misses nothing. */
  readonly revision: number;
  /** True when `limit` cut the listing short. */
  readonly more: boolean;
}

export interface PutOptions {
  readonly lease?: LeaseId;
}

export interface RangeOptions {
  /** At most this many keys (0 or absent: no limit). */
  readonly limit?: number;
}

/** A write inside a transaction. */
export type TxnOp =
  | { readonly type: 'put'; readonly key: string; readonly value: MetaValue; readonly lease?: LeaseId }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'deletePrefix'; readonly prefix: string };

/**
 * One condition on one key. `revision` compares the key's mod revision (0 = the key does not exist,
 * as in etcd); `value` compares bytes; `exists` compares presence.
 */
export type TxnCompare =
  | { readonly key: string; readonly revision: number }
  | { readonly key: string; readonly value: MetaValue }
  | { readonly key: string; readonly exists: boolean };

export interface TxnRequest {
  readonly compare: readonly TxnCompare[];
  readonly success: readonly TxnOp[];
  readonly failure?: readonly TxnOp[];
}

export interface TxnResult {
  /** True when every compare held and `success` ran; false when `failure` ran. */
  readonly succeeded: boolean;
  /** The store revision after the transaction (unchanged if the branch that ran wrote nothing). */
  readonly revision: number;
}

export type WatchEvent =
  | { readonly type: 'put'; readonly key: string; readonly value: Buffer; readonly revision: number; readonly lease?: LeaseId }
  | { readonly type: 'delete'; readonly key: string; readonly revision: number };

export type WatchCallback = (event: WatchEvent) => void;

export interface MetaWatch {
  /** Stops delivery; no callback runs after the promise resolves. */
  close(): Promise<void>;
  /**
   * Called once if the watch dies for good (history before `fromRevision` was compacted, the store
   * closed). Transient disconnects are retried internally and not reported.
   */
  onError(callback: (error: StorpoolError) => void): void;
}

export interface Lease {
  readonly id: LeaseId;
  /** The TTL the store granted (etcd rounds up to whole seconds and has a minimum). */
  readonly ttlMs: number;
  /** False once the lease was revoked, released, expired or lost. */
  readonly alive: boolean;
  /**
   * Called once when the lease is gone without the holder asking (expired, revoked by someone else,
   * store unreachable for longer than the TTL). The holder must stop acting on it: its keys are gone.
   */
  onLost(callback: (error: StorpoolError) => void): void;
  /** Deletes the lease and every key attached to it (with delete events). */
  revoke(): Promise<void>;
  /** Stops the keep-alives: the lease and its keys expire after the TTL. Does not report `onLost`. */
  release(): void;
}

export interface Election {
  readonly name: string;
  readonly candidateId: string;
  /** True while this candidate holds the election key under a live lease. */
  readonly isLeader: boolean;
  /** The current leader's candidate id as last seen, if any. */
  readonly leaderId: string | undefined;
  /** The lease this candidate's claim is attached to while leader. */
  readonly leaseId: LeaseId | undefined;
  /** Called on every change of `isLeader` or `leaderId`. */
  onChange(callback: (isLeader: boolean, leaderId: string | undefined) => void): void;
  /** Leaves the election: gives up leadership (deleting the key) and stops campaigning. */
  resign(): Promise<void>;
}

export interface MetaStore {
  readonly backend: 'embedded' | 'etcd';
  get(key: string): Promise<KeyValue | undefined>;
  getPrefix(prefix: string, options?: RangeOptions): Promise<RangeResult>;
  /** Resolves with the store revision of the write, once it is durable (embedded) or committed by a quorum (etcd). */
  put(key: string, value: MetaValue, options?: PutOptions): Promise<number>;
  /** Resolves with the number of keys deleted (0 or 1). */
  delete(key: string): Promise<number>;
  deletePrefix(prefix: string): Promise<number>;
  txn(request: TxnRequest): Promise<TxnResult>;
  /**
   * Read-modify-write with compare-and-swap, retried on conflict. `fn` gets the current value
   * (undefined if absent) and returns the new one, or undefined to leave the key as it is.
   * `fn` may run several times and must have no side effects.
   */
  update(key: string, fn: (current: Buffer | undefined) => MetaValue | undefined, options?: PutOptions): Promise<KeyValue | undefined>;
  /**
   * Every put and delete under `prefix`, in revision order, from `fromRevision` on (default: from
   * now). Resolves once the watch is established: any write that starts afterwards is delivered.
   */
  watch(prefix: string, fromRevision: number | undefined, callback: WatchCallback): Promise<MetaWatch>;
  /** A new lease, kept alive automatically until revoked, released or lost. */
  grant(ttlMs: number): Promise<Lease>;
  /** Revokes any lease by id (the holder gets `onLost`). Unknown or expired ids are ignored. */
  revokeLease(id: LeaseId): Promise<void>;
  /** Joins the election `name`; resolves after the first attempt, with `isLeader` already set. */
  campaign(name: string, candidateId: string, ttlMs: number): Promise<Election>;
  /** Revokes this store's leases, stops watches and releases the backend. */
  close(): Promise<void>;
}

export interface EmbeddedMetaConfig {
  readonly backend: 'embedded';
  /** Directory that holds the store; created if absent. One process at a time. */
  readonly dir: string;
}

export interface EtcdMetaConfig {
  readonly backend: 'etcd';
  /** Client URLs of the etcd members, e.g. `http://10.0.0.1:2379`. */
  readonly endpoints: readonly string[];
  /** Namespace for this cluster's keys inside etcd (default `storpool/`). */
  readonly prefix?: string;
  /** Deadline for each call (default ETCD_CALL_TIMEOUT_MS). */
  readonly callTimeoutMs?: number;
}

export type MetaConfig = EmbeddedMetaConfig | EtcdMetaConfig;
