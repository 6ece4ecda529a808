import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildShardGroup, type DiskEntry, type ShardMap } from '@storpool/protocol';
import { FileShardMapSource, ShardMapView, type ShardMapSource } from '../src/index.js';

const disks: DiskEntry[] = [1, 2, 3].map((id) => ({ id, serverId: id, faultSet: '', address: { host: '127.0.0.1', port: 7000 + id }, weight: 1, placementGroups: ['default'] }));
const map = (epoch: number): ShardMap => ({ clusterId: '7b0a1f4e-3c2d-4e5f-8a9b-0c1d2e3f4a5b', epoch, disks, groups: [buildShardGroup({ id: 1, name: 'g', replication: 3, placeAll: 'default', shardCount: 4 }, disks)] });

let dir: string | undefined;
afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('ShardMapView', () => {
  it('atLeast(): waits for a map published a moment later; gives up at the deadline with the newest; never goes back', async () => {
    dir = await mkdtemp(join(tmpdir(), 'storpool-map-'));
    const path = join(dir, 'map.json');
    await writeFile(path, JSON.stringify(map(1)));
    const view = await ShardMapView.open(new FileShardMapSource(path));
    expect(view.router.epoch).toBe(1);
    setTimeout(() => void writeFile(path, JSON.stringify(map(2))), 150);
    expect((await view.atLeast(2, 5_000)).epoch).toBe(2);
    const started = Date.now();
    expect((await view.atLeast(5, 300)).epoch).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // An older map in the file is not taken.
    await writeFile(path, JSON.stringify(map(1)));
    expect((await view.refresh()).epoch).toBe(2);
    expect((await view.atLeast(1, 1_000)).epoch).toBe(2);
  });

  it('refresh(): a call made while a load runs gets a load that began after it (shared), not the one that may predate its reason', async () => {
    // A source whose loads finish when the test says, each returning the epoch current at its START.
    let epoch = 1;
    let loads = 0;
    const finish: (() => void)[] = [];
    const source: ShardMapSource = {
      load: () => {
        loads++;
        const at = epoch;
        return new Promise((resolve) => finish.push(() => resolve(map(at))));
      },
    };
    const opening = ShardMapView.open(source);
    finish.shift()!();
    const view = await opening;
    expect(loads).toBe(1);
    const first = view.refresh(); // load 2 starts at epoch 1
    epoch = 2; // the map changes while it runs
    const second = view.refresh();
    const third = view.refresh();
    expect(loads).toBe(2);
    finish.shift()!();
    expect((await first).epoch).toBe(1);
    // The callers that came during load 2 share load 3, which began after them.
    await new Promise((r) => setImmediate(r));
    expect(loads).toBe(3);
    finish.shift()!();
    expect((await second).epoch).toBe(2);
    expect((await third).epoch).toBe(2);
    expect(loads).toBe(3);
  });
});
