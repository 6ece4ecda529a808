/**
 * Serializable mutations of the cluster state over any MetaStore.
 *
 * A mutation reads every `mgmt/` record in one range read (one store revision), applies a pure
 * function to a copy, and commits the changed records in one transaction whose only compare is
 * the revision of `mgmt/counters` as read. Every mutation bumps `counters.generation`, so every
 * mutation writes that key: a commit succeeds only if no other mutation committed since the read,
 * which makes mutations serializable across processes (several storpool-mgmt on one etcd).
 * A conflict re-runs the function on fresh state. A function that throws changes nothing.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MetaStore, TxnOp } from '@storpool/meta';
import { ApiError } from './api-error.js';
import { MUTATION_ATTEMPTS_MAX } from './limits.js';
import { reconcileShardMap } from './shard-map.js';
import { COUNTERS_KEY, SHARD_MAP_KEY, STATE_PREFIX, parseState, serializeState, type State } from './state.js';

export interface Snapshot {
  state: State;
  /** Store revision of `mgmt/counters` (0: absent). */
  countersRevision: number;
}

export interface MutationResult<R> {
  result: R;
  generation: number;
  /** The shard map changed (its new epoch is in state.shardMap). */
  mapChanged: boolean;
  state: State;
}

export class StateStore {
  readonly meta: MetaStore;
  readonly shardCount: number;
  readonly #onMapChange: (state: State) => void;

  constructor(meta: MetaStore, shardCount: number, onMapChange: (state: State) => void) {
    this.meta = meta;
    this.shardCount = shardCount;
    this.#onMapChange = onMapChange;
  }

  async read(): Promise<Snapshot> {
    const range = await this.meta.getPrefix(STATE_PREFIX);
    let countersRevision = 0;
    const records: [string, string][] = [];
    for (const kv of range.kvs) {
      if (kv.key === COUNTERS_KEY) countersRevision = kv.revision;
      records.push([kv.key, kv.value.toString('utf8')]);
    }
    return { state: parseState(records), countersRevision };
  }

  /** Runs `fn` on a private copy of the state and commits what it changed (see the file comment). */
  async mutate<R>(fn: (state: State) => R): Promise<MutationResult<R>> {
    for (let attempt = 1; ; attempt++) {
      const { state, countersRevision } = await this.read();
      const before = serializeState(state);
      const result = fn(state);
      state.counters.generation++;
      const mapChanged = reconcileShardMap(state, this.shardCount);
      const after = serializeState(state);
      const ops: TxnOp[] = [];
      for (const [key, text] of after) if (before.get(key) !== text) ops.push({ type: 'put', key, value: text });
      for (const key of before.keys()) if (!after.has(key)) ops.push({ type: 'delete', key });
      const txn = await this.meta.txn({ compare: [{ key: COUNTERS_KEY, revision: countersRevision }], success: ops });
      if (txn.succeeded) {
        if (mapChanged || ops.some((op) => op.type === 'put' && op.key === SHARD_MAP_KEY)) this.#onMapChange(state);
        return { result, generation: state.counters.generation, mapChanged, state };
      }
      if (attempt >= MUTATION_ATTEMPTS_MAX) throw new ApiError('busy', `the cluster configuration kept changing under this request (${attempt} attempts); retry`, true);
      await sleep(Math.random() * 10 * Math.min(attempt, 5));
    }
  }
}
