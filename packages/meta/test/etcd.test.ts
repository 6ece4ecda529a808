import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdMetaStore, openMetaStore, type MetaStore, type WatchEvent } from '../src/index.js';
import { EtcdCluster } from './etcd-cluster.js';
import { eventually, metaStoreSuite } from './suite.js';

let cluster: EtcdCluster;
beforeAll(async () => {
  cluster = await EtcdCluster.start(3);
}, 30_000);
afterAll(async () => {
  await cluster?.stop();
});

/** Each test gets its own namespace in etcd; a peer is a second client on the same namespace. */
metaStoreSuite('etcd (3 members)', {
  open: () => openMetaStore({ backend: 'etcd', endpoints: cluster.endpoints, prefix: `suite-${randomUUID()}/` }),
  openPeer: (store) => EtcdMetaStore.open({ endpoints: cluster.endpoints, prefix: (store as EtcdMetaStore).prefix }),
});

describe('EtcdMetaStore', () => {
  it('namespaces clusters by prefix', async () => {
    const one = await EtcdMetaStore.open({ endpoints: cluster.endpoints, prefix: 'cluster-one/' });
    const two = await EtcdMetaStore.open({ endpoints: cluster.endpoints, prefix: 'cluster-two/' });
    try {
      await one.put('volumes/v1', 'one');
      await two.put('volumes/v1', 'two');
      expect((await one.get('volumes/v1'))?.value.toString()).toBe('one');
      expect((await two.getPrefix('')).kvs.map((kv) => [kv.key, kv.value.toString()])).toEqual([['volumes/v1', 'two']]);
      expect(await one.deletePrefix('')).toBe(1);
      expect((await two.get('volumes/v1'))?.value.toString()).toBe('two');
    } finally {
      await one.close();
      await two.close();
    }
  });

  // Last: it leaves the cluster with two members.
  it('keeps working with one member of three killed (quorum 2/3), watches and leases included', async () => {
    const store: MetaStore = await EtcdMetaStore.open({ endpoints: cluster.endpoints, prefix: `quorum-${randomUUID()}/` });
    try {
      const seen: WatchEvent[] = [];
      const watch = await store.watch('q/', undefined, (event) => seen.push(event));
      const lease = await store.grant(2_000);
      const lost: string[] = [];
      lease.onLost((error) => lost.push(error.message));
      await store.put('q/leased', 'x', { lease: lease.id });
      await store.put('q/before', '1');
      await cluster.kill(0);
      for (let i = 0; i < 20; i++) await store.put(`q/after-${String(i).padStart(2, '0')}`, String(i));
      await Promise.all(Array.from({ length: 10 }, () => store.update('q/counter', (c) => String(Number(c?.toString() ?? '0') + 1))));
      expect((await store.get('q/counter'))?.value.toString()).toBe('10');
      expect((await store.getPrefix('q/after-')).kvs).toHaveLength(20);
      await eventually('watch saw every write', () => seen.length >= 2 + 20 + 10, 15_000);
      const keys = seen.map((event) => event.key);
      expect(keys.slice(0, 2)).toEqual(['q/leased', 'q/before']);
      expect(keys.filter((key) => key.startsWith('q/after-'))).toEqual(Array.from({ length: 20 }, (_, i) => `q/after-${String(i).padStart(2, '0')}`));
      for (let i = 1; i < seen.length; i++) expect(seen[i]!.revision).toBeGreaterThan(seen[i - 1]!.revision);
      // The lease outlives the member's death: keep-alives go to the survivors.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(lost).toEqual([]);
      expect((await store.get('q/leased'))?.lease).toBe(lease.id);
      await watch.close();
    } finally {
      await store.close();
    }
  });
});
