/**
 * A client stuck on an old shard map, for split-brain checks: run inside a host's namespace (see
 * staleWrite() in stale-client.ts), it writes one 4 KiB block at the start of each given object
 * through the client library, routed by a frozen copy of the map (so to the old primary), one
 * attempt each (no retry through map refreshes: the frozen map never moves). Prints one JSON line
 * per object: `{"objectIndex":N,"ok":bool,"code":"...","message":"...","ms":N}`.
 *
 *   node --import tsx stale-writer.ts '<StaleWriteJob as JSON>'
 */
import { FileShardMapSource, StorpoolClient } from '@storpool/client';
import type { StaleWriteJob, StaleWriteResult } from './stale-client.js';

const OBJECT_BYTES = 4 * 1024 * 1024;

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as StaleWriteJob;
  // retryDeadlineMs 0: one attempt; a refresh would only re-read the same frozen map.
  const client = await StorpoolClient.connect({ mapSource: new FileShardMapSource(job.mapFile), clientId: 4900, requestTimeoutMs: job.requestTimeoutMs, retryDeadlineMs: 0 });
  try {
    const vol = client.volume({ volumeId: job.volumeId, placementId: job.placementId, parents: [], sizeBytes: job.sizeBytes, group: job.group });
    await Promise.all(job.objects.map(async (objectIndex) => {
      const t0 = Date.now();
      let r: StaleWriteResult;
      try {
        await vol.write(objectIndex * OBJECT_BYTES, Buffer.alloc(4096, job.fill));
        r = { objectIndex, ok: true, ms: Date.now() - t0 };
      } catch (err) {
        // CLIENT_ERR_TIMEOUT wraps the server's own answer: report that one.
        const e = err as Error & { code?: string; cause?: Error & { code?: string } };
        const cause = e.cause?.code !== undefined ? e.cause : e;
        r = { objectIndex, ok: false, code: cause.code ?? 'UNKNOWN', message: cause.message, ms: Date.now() - t0 };
      }
      process.stdout.write(`${JSON.stringify(r)}\n`);
    }));
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`stale-writer: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
