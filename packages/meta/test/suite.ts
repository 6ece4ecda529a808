/**
 * The MetaStore contract, run against every backend. `open()` gives a store for one test;
 * `openPeer(store)` gives a second handle on the same data (another etcd client, or for the
 * embedded store, which one process owns, the same store).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { isMetaError, type MetaStore, type WatchEvent } from '../src/index.js';

export interface SuiteBackend {
  open(): Promise<MetaStore>;
  openPeer(store: MetaStore): Promise<MetaStore>;
}

/** Polls until `check` holds; fails with `what` after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}

const text = (event: WatchEvent): string => `${event.type} ${event.key}${event.type === 'put' ? `=${event.value.toString()}` : ''}`;

export function metaStoreSuite(name: string, backend: SuiteBackend): void {
  describe(`MetaStore contract: ${name}`, () => {
    const opened: MetaStore[] = [];
    let ns = '';
    const open = async (): Promise<MetaStore> => {
      const store = await backend.open();
      opened.push(store);
      ns = `t-${randomUUID().slice(0, 8)}/`;
      return store;
    };
    const peer = async (store: MetaStore): Promise<MetaStore> => {
      const other = await backend.openPeer(store);
      opened.push(other);
      return other;
    };
    afterEach(async () => {
      for (const store of opened.splice(0).reverse()) await store.close();
    });

    it('puts, gets, lists by prefix in key order, deletes', async () => {
      const store = await open();
      expect(await store.get(`${ns}missing`)).toBeUndefined();
      const r1 = await store.put(`${ns}a/2`, 'two');
      const r2 = await store.put(`${ns}a/1`, Buffer.from('one'));
      const r3 = await store.put(`${ns}a/3`, new Uint8Array([0, 255]));
      await store.put(`${ns}b/1`, 'other');
      expect(r2).toBeGreaterThan(r1);
      expect(r3).toBeGreaterThan(r2);
      const one = await store.get(`${ns}a/1`);
      expect(one?.value.toString()).toBe('one');
      expect(one?.revision).toBe(r2);
      expect(one?.version).toBe(1);
      expect(one?.createRevision).toBe(r2);
      const r4 = await store.put(`${ns}a/1`, 'uno');
      const again = await store.get(`${ns}a/1`);
      expect(again).toMatchObject({ revision: r4, createRevision: r2, version: 2 });
      const list = await store.getPrefix(`${ns}a/`);
      expect(list.kvs.map((kv) => kv.key)).toEqual([`${ns}a/1`, `${ns}a/2`, `${ns}a/3`]);
      expect([...list.kvs[2]!.value]).toEqual([0, 255]);
      expect(list.revision).toBeGreaterThanOrEqual(r4);
      expect(list.more).toBe(false);
      const limited = await store.getPrefix(`${ns}a/`, { limit: 2 });
      expect(limited.kvs.map((kv) => kv.key)).toEqual([`${ns}a/1`, `${ns}a/2`]);
      expect(limited.more).toBe(true);
      expect(await store.delete(`${ns}a/2`)).toBe(1);
      expect(await store.delete(`${ns}a/2`)).toBe(0);
      expect(await store.deletePrefix(`${ns}a/`)).toBe(2);
      expect((await store.getPrefix(`${ns}a/`)).kvs).toEqual([]);
      expect((await store.get(`${ns}b/1`))?.value.toString()).toBe('other');
    });

    it('rejects bad keys and values with CONFIG_ERR_INVALID', async () => {
      const store = await open();
      await expect(store.put('', 'x')).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });
      await expect(store.put(`${ns}${'k'.repeat(2000)}`, 'x')).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });
      await expect(store.grant(10)).rejects.toMatchObject({ code: 'CONFIG_ERR_INVALID' });
    });

    it('compare-and-swap: succeeds when the compare holds, runs failure ops otherwise', async () => {
      const store = await open();
      const key = `${ns}cas`;
      const created = await store.txn({ compare: [{ key, exists: false }], success: [{ type: 'put', key, value: 'v1' }] });
      expect(created.succeeded).toBe(true);
      const again = await store.txn({ compare: [{ key, exists: false }], success: [{ type: 'put', key, value: 'nope' }] });
      expect(again).toEqual({ succeeded: false, revision: created.revision });
      const swapped = await store.txn({
        compare: [{ key, revision: created.revision }, { key, value: 'v1' }],
        success: [{ type: 'put', key, value: 'v2' }, { type: 'put', key: `${ns}side`, value: 's' }],
      });
      expect(swapped.succeeded).toBe(true);
      expect(swapped.revision).toBe(created.revision + 1);
      expect((await store.get(`${ns}side`))?.revision).toBe(swapped.revision);
      const stale = await store.txn({
        compare: [{ key, revision: created.revision }],
        success: [{ type: 'delete', key }],
        failure: [{ type: 'put', key: `${ns}conflicts`, value: '1' }],
      });
      expect(stale.succeeded).toBe(false);
      expect((await store.get(key))?.value.toString()).toBe('v2');
      expect((await store.get(`${ns}conflicts`))?.value.toString()).toBe('1');
      const valueMiss = await store.txn({ compare: [{ key: `${ns}absent`, value: '' }], success: [{ type: 'put', key: `${ns}absent`, value: 'x' }] });
      expect(valueMiss.succeeded).toBe(false);
      const removed = await store.txn({ compare: [{ key, exists: true }], success: [{ type: 'deletePrefix', prefix: ns }] });
      expect(removed.succeeded).toBe(true);
      expect((await store.getPrefix(ns)).kvs).toEqual([]);
    });

    it('update(): 20 parallel read-modify-write increments all land', async () => {
      const store = await open();
      const other = await peer(store);
      const key = `${ns}counter`;
      const increment = (current: Buffer | undefined): string => String(Number(current?.toString() ?? '0') + 1);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? store : other).update(key, increment)));
      expect((await store.get(key))?.value.toString()).toBe('20');
      expect(new Set(results.map((kv) => kv?.value.toString())).size).toBe(20);
      expect(await store.update(key, () => undefined)).toMatchObject({ key, version: 20 });
    });

    it('watch: delivers puts and deletes in revision order, replays from a revision', async () => {
      const store = await open();
      const first = await store.put(`${ns}w/1`, 'a');
      await store.put(`${ns}w/2`, 'b');
      await store.put(`${ns}other`, 'not watched');
      await store.delete(`${ns}w/1`);
      const seen: WatchEvent[] = [];
      const watch = await store.watch(`${ns}w/`, first, (event) => seen.push(event));
      await eventually('replay', () => seen.length >= 3);
      const live = await store.txn({ compare: [], success: [{ type: 'put', key: `${ns}w/3`, value: 'c' }, { type: 'delete', key: `${ns}w/2` }] });
      await eventually('live events', () => seen.length >= 5);
      expect(seen.map(text)).toEqual([`put ${ns}w/1=a`, `put ${ns}w/2=b`, `delete ${ns}w/1`, `put ${ns}w/3=c`, `delete ${ns}w/2`]);
      expect(seen[0]!.revision).toBe(first);
      expect(seen[3]!.revision).toBe(live.revision);
      expect(seen[4]!.revision).toBe(live.revision);
      for (let i = 1; i < seen.length; i++) expect(seen[i]!.revision).toBeGreaterThanOrEqual(seen[i - 1]!.revision);
      await watch.close();
      await store.put(`${ns}w/4`, 'after close');
      await sleep(100);
      expect(seen).toHaveLength(5);
    });

    it('watch from R+1 after a read at R misses nothing written concurrently', async () => {
      const store = await open();
      const other = await peer(store);
      let stop = false;
      const written: string[] = [];
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          await other.put(`${ns}c/${String(i).padStart(4, '0')}`, String(i));
          written.push(`${ns}c/${String(i).padStart(4, '0')}`);
        }
      })();
      await eventually('writer started', () => written.length >= 3);
      const snapshot = await store.getPrefix(`${ns}c/`);
      const seen: string[] = [];
      const watch = await store.watch(`${ns}c/`, snapshot.revision + 1, (event) => seen.push(event.key));
      await eventually('more writes', () => written.length >= snapshot.kvs.length + 10);
      stop = true;
      await writer;
      await eventually('all delivered', () => snapshot.kvs.length + seen.length >= written.length);
      expect([...snapshot.kvs.map((kv) => kv.key), ...seen]).toEqual(written);
      await watch.close();
    });

    it('watch without a revision starts now', async () => {
      const store = await open();
      await store.put(`${ns}n/old`, 'x');
      const seen: WatchEvent[] = [];
      const watch = await store.watch(`${ns}n/`, undefined, (event) => seen.push(event));
      await store.put(`${ns}n/new`, 'y');
      await eventually('new event', () => seen.length >= 1);
      await sleep(50);
      expect(seen.map(text)).toEqual([`put ${ns}n/new=y`]);
      await watch.close();
    });

    it('lease: a released lease expires, deleting its keys with delete events', async () => {
      const store = await open();
      const lease = await store.grant(1_000);
      expect(lease.alive).toBe(true);
      await store.put(`${ns}l/a`, 'x', { lease: lease.id });
      await store.put(`${ns}l/b`, 'y', { lease: lease.id });
      await store.put(`${ns}l/keep`, 'z');
      expect((await store.get(`${ns}l/a`))?.lease).toBe(lease.id);
      const seen: WatchEvent[] = [];
      const watch = await store.watch(`${ns}l/`, undefined, (event) => seen.push(event));
      await sleep(lease.ttlMs * 1.5); // kept alive automatically
      expect(await store.get(`${ns}l/a`)).toBeDefined();
      const released = Date.now();
      lease.release();
      await eventually('keys expired', async () => (await store.get(`${ns}l/a`)) === undefined, 10_000);
      expect(Date.now() - released).toBeGreaterThanOrEqual(lease.ttlMs * 0.5);
      await eventually('delete events', () => seen.length >= 2);
      expect(seen.map(text).sort()).toEqual([`delete ${ns}l/a`, `delete ${ns}l/b`]);
      expect(await store.get(`${ns}l/b`)).toBeUndefined();
      expect((await store.get(`${ns}l/keep`))?.value.toString()).toBe('z');
      await watch.close();
    });

    it('lease: revoke deletes its keys; revoking from elsewhere reports the loss to the holder', async () => {
      const store = await open();
      const other = await peer(store);
      const lease = await store.grant(2_000);
      await store.put(`${ns}r/a`, 'x', { lease: lease.id });
      const seen: WatchEvent[] = [];
      const watch = await store.watch(`${ns}r/`, undefined, (event) => seen.push(event));
      await lease.revoke();
      expect(lease.alive).toBe(false);
      expect(await store.get(`${ns}r/a`)).toBeUndefined();
      await eventually('delete event', () => seen.length >= 1);
      expect(seen.map(text)).toEqual([`delete ${ns}r/a`]);
      await expect(store.put(`${ns}r/b`, 'x', { lease: lease.id }))
        .rejects.toSatisfy((error: unknown) => isMetaError(error, 'META_ERR_LEASE_NOT_FOUND'));

      const held = await store.grant(2_000);
      await store.put(`${ns}r/c`, 'x', { lease: held.id });
      const lost: string[] = [];
      held.onLost((error) => lost.push(error.code));
      await other.revokeLease(held.id);
      await eventually('holder told', () => lost.length === 1);
      expect(lost[0]).toBe('META_ERR_LEASE_LOST');
      expect(held.alive).toBe(false);
      expect(await store.get(`${ns}r/c`)).toBeUndefined();
      await watch.close();
    });

    it('leader election: one leader; when its lease dies the other takes over', async () => {
      const storeA = await open();
      const storeB = await peer(storeA);
      const name = `${ns}mgmt`;
      const a = await storeA.campaign(name, 'mgmt-a', 1_000);
      const b = await storeB.campaign(name, 'mgmt-b', 1_000);
      expect(a.isLeader).toBe(true);
      expect(b.isLeader).toBe(false);
      expect(b.leaderId).toBe('mgmt-a');
      const changesA: boolean[] = [];
      a.onChange((isLeader) => changesA.push(isLeader));
      const leaseA = a.leaseId;
      expect(leaseA).toBeDefined();
      await storeB.revokeLease(leaseA!);
      await eventually('b takes over', () => b.isLeader);
      await eventually('a steps down', () => !a.isLeader);
      expect(changesA[0]).toBe(false);
      await eventually('a sees b', () => a.leaderId === 'mgmt-b');
      expect(a.isLeader).toBe(false);
      await b.resign();
      expect(b.isLeader).toBe(false);
      await eventually('a leads again', () => a.isLeader);
      await a.resign();
      expect(await storeA.getPrefix(`elections/${name}`)).toMatchObject({ kvs: [] });
    });
  });
}
