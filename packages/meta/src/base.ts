import { setTimeout as sleep } from 'node:timers/promises';
import { campaign } from './election.js';
import { metaError } from './errors.js';
import { checkKey, checkValue } from './internal/validate.js';
import { UPDATE_ATTEMPTS_MAX, UPDATE_BACKOFF_MS_MAX } from './limits.js';
import type {
  Election, KeyValue, Lease, LeaseId, MetaStore, MetaValue, MetaWatch, PutOptions, RangeOptions, RangeResult,
  TxnOp, TxnRequest, TxnResult, WatchCallback,
} from './types.js';

/**
 * What both backends share: `update` (CAS loop) and `campaign` (election) are written once over
 * the primitives each backend implements.
 */
export abstract class BaseMetaStore implements MetaStore {
  abstract readonly backend: 'embedded' | 'etcd';
  abstract get(key: string): Promise<KeyValue | undefined>;
  abstract getPrefix(prefix: string, options?: RangeOptions): Promise<RangeResult>;
  abstract put(key: string, value: MetaValue, options?: PutOptions): Promise<number>;
  abstract delete(key: string): Promise<number>;
  abstract deletePrefix(prefix: string): Promise<number>;
  abstract txn(request: TxnRequest): Promise<TxnResult>;
  abstract watch(prefix: string, fromRevision: number | undefined, callback: WatchCallback): Promise<MetaWatch>;
  abstract grant(ttlMs: number): Promise<Lease>;
  abstract revokeLease(id: LeaseId): Promise<void>;
  abstract close(): Promise<void>;

  async update(
    key: string,
    fn: (current: Buffer | undefined) => MetaValue | undefined,
    options?: PutOptions,
  ): Promise<KeyValue | undefined> {
    checkKey(key);
    for (let attempt = 0; attempt < UPDATE_ATTEMPTS_MAX; attempt++) {
      const current = await this.get(key);
      const next = fn(current?.value);
      if (next === undefined) return current;
      const value = checkValue(next);
      const put: TxnOp = options?.lease === undefined
        ? { type: 'put', key, value }
        : { type: 'put', key, value, lease: options.lease };
      const result = await this.txn({ compare: [{ key, revision: current?.revision ?? 0 }], success: [put] });
      if (result.succeeded) {
        return {
          key, value, revision: result.revision,
          createRevision: current?.createRevision ?? result.revision,
          version: (current?.version ?? 0) + 1,
          ...(options?.lease === undefined ? {} : { lease: options.lease }),
        };
      }
      await sleep(Math.random() * UPDATE_BACKOFF_MS_MAX);
    }
    throw metaError('META_ERR_CONFLICT', `update of ${key} lost the compare-and-swap race ${UPDATE_ATTEMPTS_MAX} times`);
  }

  campaign(name: string, candidateId: string, ttlMs: number): Promise<Election> {
    return campaign(this, name, candidateId, ttlMs);
  }
}
