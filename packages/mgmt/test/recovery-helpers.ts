/** What the recovery tests share: polling, a volume's client spec, starting a storage server again. */
import { spawn, type ChildProcess } from 'node:child_process';
import type { VolumeSpec } from '@storpool/client';
import { SERVER_BIN, type LocalCluster } from '@storpool/local';

/** Polls `fn` until it returns something other than undefined; fails naming `what` after `timeoutMs`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 90_000, pollMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** The client-library spec of a volume the management service knows by name. */
export async function volumeSpec(cluster: LocalCluster, name: string): Promise<VolumeSpec> {
  const state = await cluster.service.model.read();
  const o = [...state.objects.values()].find((x) => x.name === name);
  if (o === undefined) throw new Error(`no object ${name}`);
  return { volumeId: o.dataId, placementId: o.placementId, parents: [...o.parents], sizeBytes: o.size, group: o.group, readOnly: false };
}

/** A storage server for `diskPath` on the cluster's map (a restart, or a disk added by the test). */
export function startServer(cluster: LocalCluster, diskPath: string): { child: ChildProcess; kill: () => void; exited: Promise<void> } {
  const child = spawn(process.execPath, [SERVER_BIN, 'serve', '--disk', diskPath, '--map', cluster.mapFile, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, kill: () => child.kill('SIGKILL'), exited };
}
