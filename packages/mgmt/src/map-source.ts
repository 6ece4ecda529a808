/**
 * The shard map as the metadata store holds it: `MetaShardMapSource` serves processes on other
 * hosts (they read etcd), `publishShardMap` writes the JSON file that storage servers and clients
 * with a `FileShardMapSource` read.
 */
import { open, rename } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { StorpoolError } from '@storpool/errors';
import type { MetaStore } from '@storpool/meta';
import { parseShardMap, type ShardMap } from '@storpool/protocol';
import { SHARD_MAP_KEY } from './state.js';

/** Minimal structural copy of @storpool/client's ShardMapSource (the client package re-exports it). */
export interface ShardMapSourceLike {
  load(): Promise<ShardMap>;
}

export class MetaShardMapSource implements ShardMapSourceLike {
  readonly #meta: MetaStore;

  constructor(meta: MetaStore) {
    this.#meta = meta;
  }

  async load(): Promise<ShardMap> {
    const kv = await this.#meta.get(SHARD_MAP_KEY);
    if (kv === undefined) throw new StorpoolError('MAP_ERR_INVALID', 'the metadata store holds no shard map yet: start storpool-mgmt and register disks');
    let value: unknown;
    try {
      value = JSON.parse(kv.value.toString('utf8'));
    } catch (err) {
      throw new StorpoolError('MAP_ERR_INVALID', `shard map in the metadata store is not JSON: ${(err as Error).message}`);
    }
    return parseShardMap(value);
  }
}

/**
 * Writes the map to `path` atomically (temp file, fsync, rename): a reader sees the old or the
 * new map, never a torn one.
 */
export async function writeShardMapFile(path: string, map: ShardMap): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const handle = await open(tmp, 'w', 0o644);
  try {
    await handle.writeFile(`${JSON.stringify(map)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

/**
 * Keeps the map file in step with the store: publish() reads the newest map and writes it if its
 * epoch is newer than the last one written. Calls run one at a time, so the file never goes back.
 */
export class ShardMapPublisher {
  readonly #source: MetaShardMapSource;
  readonly #path: string;
  #epoch = 0;
  #chain: Promise<void> = Promise.resolve();

  constructor(meta: MetaStore, path: string) {
    this.#source = new MetaShardMapSource(meta);
    this.#path = path;
  }

  get epoch(): number {
    return this.#epoch;
  }

  publish(): Promise<void> {
    const run = this.#chain.then(async () => {
      let map: ShardMap;
      try {
        map = await this.#source.load();
      } catch (err) {
        if (err instanceof StorpoolError && err.code === 'MAP_ERR_INVALID' && err.message.includes('holds no shard map')) return;
        throw err;
      }
      if (map.epoch <= this.#epoch) return;
      await writeShardMapFile(this.#path, map);
      this.#epoch = map.epoch;
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }
}
