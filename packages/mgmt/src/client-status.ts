/**
 * The block service's side channel (storpool extensions, not StorPool calls):
 *
 * - `GET ClientAttachments/<clientId>`: what is attached to that client, with each object's data
 *   identity (dataId, placementId, parents, group), which the API never shows otherwise.
 * - `POST ClientStatus/<clientId>` `{generation, open:[globalId], errors?:{globalId: descr}}`: the
 *   block service reports the configuration generation it has applied, which attached devices are
 *   open, and attachments it could not apply. Kept in the metadata store under
 *   `mgmt-clients/<id>`, outside `mgmt/`, so a report is not a configuration change (it does not
 *   bump `generation`, and needs no transaction with the state).
 *
 * VolumesReassignWait (and the snapshot calls) wait on these reports: see `waitForClients`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MetaStore } from '@storpool/meta';
import { ApiError } from './api-error.js';
import { objectName } from './model-helpers.js';
import { attachmentKey, type State } from './state.js';

export const CLIENT_STATUS_PREFIX = 'mgmt-clients/';
/** A client whose last report is older than this is not connected. */
export const CLIENT_STALE_MS = 10_000;
/** How long VolumesReassignWait waits for a connected client to apply a change. */
export const CLIENT_APPLY_TIMEOUT_MS = 30_000;
const CLIENT_POLL_MS = 50;

export interface ClientStatus {
  generation: number;
  open: string[];
  errors: Record<string, string>;
  /** Date.now() of the report (ms). */
  at: number;
}

export async function readClientStatuses(meta: MetaStore): Promise<Map<number, ClientStatus>> {
  const out = new Map<number, ClientStatus>();
  for (const kv of (await meta.getPrefix(CLIENT_STATUS_PREFIX)).kvs) {
    out.set(Number(kv.key.slice(CLIENT_STATUS_PREFIX.length)), JSON.parse(kv.value.toString('utf8')) as ClientStatus);
  }
  return out;
}

export async function writeClientStatus(meta: MetaStore, id: number, status: Omit<ClientStatus, 'at'>): Promise<void> {
  await meta.put(`${CLIENT_STATUS_PREFIX}${id}`, JSON.stringify({ ...status, at: Date.now() }));
}

export const isConnected = (s: ClientStatus | undefined, now = Date.now()): boolean => s !== undefined && now - s.at < CLIENT_STALE_MS;

/** Attachment keys (`<globalId>:<client>`) whose device a connected client reports open. */
export function openAttachments(statuses: Map<number, ClientStatus>): Set<string> {
  const out = new Set<string>();
  const now = Date.now();
  for (const [client, s] of statuses) if (isConnected(s, now)) for (const gid of s.open) out.add(attachmentKey(gid, client));
  return out;
}

/** `ClientAttachments/<id>` data. */
export function clientAttachments(state: State, client: number): Record<string, unknown>[] {
  return [...state.attachments.values()].filter((a) => a.client === client).sort((a, b) => a.pos - b.pos).flatMap((a) => {
    const o = state.objects.get(a.globalId);
    if (o === undefined) return [];
    return [{
      globalId: o.globalId, name: objectName(o), snapshot: o.kind === 'snapshot', rights: a.rights, pos: a.pos, size: o.size,
      dataId: o.dataId, placementId: o.placementId, parents: o.parents, group: o.group,
    }];
  });
}

/**
 * What a client sees of each attachment (rights, name, data identity, size), by attachment key:
 * comparing two digests tells which clients a change touches.
 */
export function attachmentDigest(state: State): Map<string, { client: number; globalId: string; text: string }> {
  const out = new Map<string, { client: number; globalId: string; text: string }>();
  for (const [key, a] of state.attachments) {
    const o = state.objects.get(a.globalId);
    out.set(key, { client: a.client, globalId: a.globalId, text: `${a.rights}:${o === undefined ? '' : `${objectName(o)}:${o.dataId}:${o.parents.join('.')}:${o.size}`}` });
  }
  return out;
}

/** Clients that gained or changed an attachment, clients that only lost some, and the objects concerned. */
export function changedClients(before: ReturnType<typeof attachmentDigest>, after: ReturnType<typeof attachmentDigest>): { attached: number[]; detached: number[]; objects: Set<string> } {
  const attached = new Set<number>();
  const detached = new Set<number>();
  const objects = new Set<string>();
  for (const [key, a] of after) {
    if (before.get(key)?.text === a.text) continue;
    attached.add(a.client);
    objects.add(a.globalId);
  }
  for (const [key, b] of before) {
    if (after.has(key)) continue;
    detached.add(b.client);
    objects.add(b.globalId);
  }
  for (const c of attached) detached.delete(c);
  return { attached: [...attached], detached: [...detached], objects };
}

export interface WaitOptions {
  /** Clients that have (or keep) attachments changed by the request. */
  attached: number[];
  /** Clients that lost their last attachment. */
  detached: number[];
  generation: number;
  /** API `attachTimeout` (seconds): how long to wait for a client that is not connected; absent: forever. */
  attachTimeoutSec?: number | undefined;
  /** The objects of the request (errors reported for other objects do not fail it). */
  objects: Set<string>;
  /** Names of the objects per globalId, for error messages. */
  describe?: (globalId: string) => string;
}

/**
 * Waits until every affected client's block service reports `generation` applied. A client that
 * never reported (no block service ever ran for it) is not waited for. A client that is not
 * connected is waited for `attachTimeout` when attaching (0: not at all; absent: until it
 * connects), and not at all when detaching (it has nothing to remove). A connected client gets
 * CLIENT_APPLY_TIMEOUT_MS. An attachment the client reports it could not apply fails the call.
 */
export async function waitForClients(meta: MetaStore, o: WaitOptions): Promise<void> {
  const started = Date.now();
  const pending = new Set([...o.attached, ...o.detached]);
  const attaching = new Set(o.attached);
  while (pending.size > 0) {
    const statuses = await readClientStatuses(meta);
    const now = Date.now();
    for (const client of [...pending]) {
      const s = statuses.get(client);
      if (s === undefined) { pending.delete(client); continue; }
      if (isConnected(s, now) && s.generation >= o.generation) {
        pending.delete(client);
        const failed = Object.entries(s.errors).filter(([gid]) => o.objects.has(gid));
        if (failed.length > 0 && attaching.has(client)) {
          const [gid, descr] = failed[0]!;
          throw new ApiError('busy', `client ${client} could not apply ${o.describe?.(gid) ?? gid}: ${descr}`);
        }
        continue;
      }
      if (!isConnected(s, now)) {
        if (!attaching.has(client)) { pending.delete(client); continue; }
        if (o.attachTimeoutSec !== undefined && now - started >= o.attachTimeoutSec * 1000) {
          if (o.attachTimeoutSec === 0) { pending.delete(client); continue; }
          throw new ApiError('busy', `client ${client} is not connected (no block service report for ${Math.round((now - s.at) / 1000)} s); attachTimeout ${o.attachTimeoutSec} s expired`);
        }
        continue;
      }
      if (now - started > CLIENT_APPLY_TIMEOUT_MS) {
        throw new ApiError('busy', `client ${client} did not apply configuration generation ${o.generation} within ${CLIENT_APPLY_TIMEOUT_MS / 1000} s (it is at ${s.generation})`, true);
      }
    }
    if (pending.size > 0) await sleep(CLIENT_POLL_MS);
  }
}
