import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedMetaStore, isMetaError, openMetaStore, type MetaStore, type WatchEvent } from '../src/index.js';
import { eventually, metaStoreSuite } from './suite.js';

const root = mkdtempSync(join(tmpdir(), 'storpool-meta-embedded-'));
let dirs = 0;
const newDir = (): string => join(root, `store-${dirs++}`);
afterAll(() => rmSync(root, { recursive: true, force: true }));

metaStoreSuite('embedded', {
  open: () => openMetaStore({ backend: 'embedded', dir: newDir() }),
  openPeer: async (store) => store, // one process owns the directory: peers share the handle
});

describe('EmbeddedMetaStore', () => {
  it('keeps data, revision and watch history across reopen', async () => {
    const dir = newDir();
    const first = await EmbeddedMetaStore.open(dir);
    const r1 = await first.put('a', '1');
    const r2 = await first.put('b', '2');
    await first.close();
    const second = await EmbeddedMetaStore.open(dir);
    expect((await second.get('a'))?.value.toString()).toBe('1');
    expect(await second.put('c', '3')).toBe(r2 + 1);
    const seen: WatchEvent[] = [];
    const watch = await second.watch('', r1, (event) => seen.push(event));
    await eventually('replay', () => seen.length === 3);
    expect(seen.map((event) => event.key)).toEqual(['a', 'b', 'c']);
    await watch.close();
    await second.close();
  });

  it('refuses a second opener of the directory, takes over a stale lock', async () => {
    const dir = newDir();
    const store = await EmbeddedMetaStore.open(dir);
    const error = await EmbeddedMetaStore.open(dir).catch((caught: unknown) => caught);
    expect(isMetaError(error, 'META_ERR_LOCKED')).toBe(true);
    expect((error as Error).message).toContain(dir);
    await store.close();
    // A lock left by a process that no longer exists.
    const dead = spawn('true');
    await new Promise((resolve) => dead.once('exit', resolve));
    writeFileSync(join(dir, 'LOCK'), `${dead.pid}\n`);
    const reopened = await EmbeddedMetaStore.open(dir);
    expect(await reopened.get('anything')).toBeUndefined();
    await reopened.close();
  });

  it('refuses a lock held by another live process', async () => {
    const dir = newDir();
    const child = spawn('sleep', ['30']);
    try {
      await (await EmbeddedMetaStore.open(dir)).close();
      writeFileSync(join(dir, 'LOCK'), `${child.pid}\n`);
      await expect(EmbeddedMetaStore.open(dir)).rejects.toThrow(`in use by process ${child.pid}`);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('reports closed after close()', async () => {
    const store: MetaStore = await EmbeddedMetaStore.open(newDir());
    await store.close();
    await expect(store.get('x')).rejects.toSatisfy((error: unknown) => isMetaError(error, 'META_ERR_CLOSED'));
  });

  it('rejects a watch from history it no longer has, with META_ERR_COMPACTED', async () => {
    const dir = newDir();
    let store = await EmbeddedMetaStore.open(dir, { historyRevisionsMax: 5 });
    for (let i = 1; i <= 8; i++) await store.put(`h/${i}`, String(i));
    await expect(store.watch('h/', 3, () => undefined)).rejects.toSatisfy((error: unknown) => isMetaError(error, 'META_ERR_COMPACTED'));
    await store.close();
    store = await EmbeddedMetaStore.open(dir, { historyRevisionsMax: 5 });
    const seen: number[] = [];
    const watch = await store.watch('h/', 4, (event) => seen.push(event.revision));
    await eventually('replay of kept history', () => seen.length === 5);
    expect(seen).toEqual([4, 5, 6, 7, 8]);
    await watch.close();
    await store.close();
  });

  it('crash safety: every acknowledged put survives SIGKILL; keys of dead leases are removed', async () => {
    const dir = newDir();
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/meta/test/crash-child.ts', dir], {
      cwd: join(import.meta.dirname, '../../..'),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const acked = new Set<number>();
    let ready = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line === 'ready') ready = true;
      const match = /^ack (\d+)$/.exec(line);
      if (match !== null) acked.add(Number(match[1]));
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await eventually('child acknowledged puts', () => ready && acked.size >= 200, 30_000);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const snapshot = new Set(acked); // every ack the child printed before it died
    const store = await EmbeddedMetaStore.open(dir);
    try {
      const { kvs } = await store.getPrefix('crash/k');
      const present = new Map(kvs.map((kv) => [kv.key, kv.value.toString()]));
      for (const n of snapshot) expect(present.get(`crash/k${String(n).padStart(6, '0')}`)).toBe(`v${n}`);
      expect(await store.get('crash/leased')).toBeUndefined();
    } finally {
      await store.close();
    }
  });
});
