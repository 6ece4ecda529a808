/**
 * The cluster model: the state store plus the clock, with one method per operation that reads or
 * mutates. Handlers of the HTTP layer call these; the launcher and tests may too.
 */
import type { MetaStore } from '@storpool/meta';
import type { ModelContext } from './model-helpers.js';
import { StateStore, type MutationResult } from './store.js';
import type { State } from './state.js';

export class ClusterModel {
  readonly store: StateStore;
  readonly shardCount: number;

  constructor(meta: MetaStore, shardCount: number, onMapChange: (state: State) => void) {
    this.shardCount = shardCount;
    this.store = new StateStore(meta, shardCount, onMapChange);
  }

  context(): ModelContext {
    return { now: Math.floor(Date.now() / 1000), shardCount: this.shardCount };
  }

  async read(): Promise<State> {
    return (await this.store.read()).state;
  }

  /** Runs a pure operation as one serializable mutation. */
  mutate<R>(fn: (state: State, ctx: ModelContext) => R): Promise<MutationResult<R>> {
    const ctx = this.context();
    return this.store.mutate((state) => fn(state, ctx));
  }
}
