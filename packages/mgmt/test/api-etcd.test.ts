import { randomUUID } from 'node:crypto';
import { openMetaStore, type MetaStore } from '@storpool/meta';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startManagementService } from '../src/index.js';
import { Api } from './helpers.js';
// The meta package's real 3-member etcd harness (free ports, temp dirs, stopped by PID).
import { EtcdCluster } from '../../meta/test/etcd-cluster.js';
import { apiSuite } from './api-suite.js';

let cluster: EtcdCluster | undefined;
beforeAll(async () => {
  cluster = await EtcdCluster.start(3);
}, 30_000);
afterAll(async () => {
  await cluster?.stop();
});

apiSuite('etcd metadata store, 3 members', {
  open(): Promise<MetaStore> {
    if (cluster === undefined) throw new Error('etcd did not start');
    return openMetaStore({ backend: 'etcd', endpoints: cluster.endpoints, prefix: `mgmt-test-${randomUUID()}/` });
  },
});

describe('several storpool-mgmt instances on one etcd', () => {
  it('share the state, and exactly one of them is active (leads)', async () => {
    const prefix = `mgmt-multi-${randomUUID()}/`;
    const metaA = await openMetaStore({ backend: 'etcd', endpoints: cluster!.endpoints, prefix });
    const metaB = await openMetaStore({ backend: 'etcd', endpoints: cluster!.endpoints, prefix });
    const a = await startManagementService({ meta: metaA, token: 't' });
    const b = await startManagementService({ meta: metaB, token: 't' });
    try {
      const apiA = new Api(a.url, 't');
      const apiB = new Api(b.url, 't');
      for (let id = 1; id <= 3; id++) await apiB.post(`DiskRegister/${id}`, { serverId: id, address: { host: '127.0.0.1', port: 1 }, placementGroups: ['default'] });
      await apiA.post('VolumeTemplateCreate', { name: 't', replication: 3 });
      // Concurrent creates through both instances: all succeed exactly once (serializable commits).
      const names = Array.from({ length: 8 }, (_, i) => `v${i}`);
      await Promise.all(names.map((name, i) => (i % 2 === 0 ? apiA : apiB).post('VolumeCreate', { name, size: 1 << 30, template: 't' })));
      const listed = (await apiB.get('VolumesList')).map((v: { name: string }) => v.name).sort();
      expect(listed).toEqual(names);
      const ids = new Set((await apiA.get('VolumesList')).map((v: { globalId: string }) => v.globalId));
      expect(ids.size).toBe(names.length);
      const failures = await Promise.all([apiA.fail('POST', 'VolumeCreate', { name: 'v0', size: 1 << 30, template: 't' }), apiB.fail('POST', 'VolumeCreate', { name: 'v1', size: 1 << 30, template: 't' })]);
      expect(failures.map((f) => f.name)).toEqual(['objectExists', 'objectExists']);
      const mgmt = Object.values((await apiA.get('ServicesList')).mgmt) as { id: number; active: boolean }[];
      expect(mgmt).toHaveLength(2);
      expect(mgmt.filter((m) => m.active)).toHaveLength(1);
      expect([a.isLeader, b.isLeader].filter(Boolean)).toHaveLength(1);
    } finally {
      await a.close();
      await b.close();
      await metaA.close();
      await metaB.close();
    }
  });
});
