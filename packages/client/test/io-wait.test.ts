/**
 * retryDeadlineMs: with a deadline, an I/O whose disk is gone fails with CLIENT_ERR_TIMEOUT once
 * it passes; with Infinity (the block service's default) it waits, logs why after 10 s, and
 * completes when the disk is back: no error is handed up.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '@storpool/testkit';
import { pino } from 'pino';

describe('I/O while the cluster cannot serve it', () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await LocalCluster.start({ disks: 1, replications: [1], diskSizeBytes: 64 * 1024 ** 2, shardCount: 4, logLevel: 'warn' });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('fails after a finite deadline; with none it waits for the disk and completes', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const waiting = await cluster.client({ retryDeadlineMs: Infinity, requestTimeoutMs: 1_000, log });
    const impatient = await cluster.client({ retryDeadlineMs: 1_500, requestTimeoutMs: 1_000 });
    const spec = { volumeId: 7, sizeBytes: 4 * 1024 ** 2, group: 1 };
    const data = Buffer.alloc(8192, 0x5a);
    await waiting.volume(spec).write(0, Buffer.alloc(8192, 1));

    await cluster.killServer(1);
    await expect(impatient.volume(spec).write(0, data)).rejects.toMatchObject({ code: 'CLIENT_ERR_TIMEOUT' });
    let settled = false;
    const pending = waiting.volume(spec).write(0, data).finally(() => { settled = true; });
    await new Promise((r) => setTimeout(r, 11_000));
    expect(settled, 'still waiting after 11 s without its disk').toBe(false);
    expect(lines.some((l) => l.includes('I/O is waiting for the cluster')), lines.join('')).toBe(true);
    await cluster.startServer(1);
    await pending;
    expect((await waiting.volume(spec).read(0, 8192)).equals(data)).toBe(true);
  }, 60_000);
});
