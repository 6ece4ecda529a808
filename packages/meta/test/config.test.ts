import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isMetaError, openMetaStore, validateMetaConfig } from '../src/index.js';

describe('metadata store config', () => {
  it('accepts both backends', () => {
    expect(validateMetaConfig({ backend: 'embedded', dir: '/var/lib/storpool/meta' })).toEqual({ backend: 'embedded', dir: '/var/lib/storpool/meta' });
    expect(validateMetaConfig({ backend: 'etcd', endpoints: ['http://10.0.0.1:2379'], prefix: 'c1/' }))
      .toEqual({ backend: 'etcd', endpoints: ['http://10.0.0.1:2379'], prefix: 'c1/' });
  });

  it.each([
    [null, /must be an object/],
    [{ backend: 'zookeeper' }, /backend must be "embedded" or "etcd"/],
    [{ backend: 'embedded' }, /needs "dir"/],
    [{ backend: 'embedded', dir: 'relative' }, /absolute path/],
    [{ backend: 'embedded', dir: '/x', endpoints: [] }, /unknown key "endpoints"/],
    [{ backend: 'etcd', endpoints: [] }, /needs "endpoints"/],
    [{ backend: 'etcd', endpoints: ['10.0.0.1'] }, /not a URL/],
    [{ backend: 'etcd', endpoints: ['http://10.0.0.1'] }, /host:port/],
    [{ backend: 'etcd', endpoints: ['http://10.0.0.1:2379'], prefix: '' }, /"prefix"/],
    [{ backend: 'etcd', endpoints: ['http://10.0.0.1:2379'], callTimeoutMs: 5 }, /callTimeoutMs/],
  ])('rejects %j', (config, message) => {
    expect(() => validateMetaConfig(config)).toThrow(message);
    try {
      validateMetaConfig(config);
    } catch (error) {
      expect(isMetaError(error, 'CONFIG_ERR_INVALID')).toBe(true);
    }
  });

  it('names the endpoints when etcd is unreachable', async () => {
    const started = Date.now();
    const error = await openMetaStore({ backend: 'etcd', endpoints: ['http://127.0.0.1:1'], callTimeoutMs: 1_000 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain('http://127.0.0.1:1');
    expect((error as Error).message).toMatch(/check that etcd is running/);
    expect(isMetaError(error, 'META_ERR_UNAVAILABLE') || isMetaError(error, 'META_ERR_TIMEOUT')).toBe(true);
    expect(Date.now() - started).toBeLessThan(8_000);
  });

  it('waits for an unreachable etcd as long as a call deadline longer than the connect default', async () => {
    // Slow or starved hosts (VMs without KVM) get --etcd-timeout: the connect must honour it too.
    // A peer that accepts connections and never answers: a host too starved to reply in time.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const started = Date.now();
      const error = await openMetaStore({ backend: 'etcd', endpoints: [`http://127.0.0.1:${port}`], callTimeoutMs: 8_000 }).catch((caught: unknown) => caught);
      expect(isMetaError(error, 'META_ERR_UNAVAILABLE') || isMetaError(error, 'META_ERR_TIMEOUT')).toBe(true);
      expect(Date.now() - started).toBeGreaterThanOrEqual(7_000);
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  }, 30_000);
});
