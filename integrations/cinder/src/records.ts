/**
 * What Cinder knows about a volume that storpool does not (name, description, metadata, status,
 * owner, attachments): JSON records in one key/value bucket of the management API, so that the
 * shim itself is stateless and any number of shims in front of one cluster agree.
 */
import { StorpoolApiError, type StorpoolApi } from '@storpool/api-client';

export type VolumeStatus = 'available' | 'in-use' | 'attaching' | 'detaching' | 'reserved' | 'error' | 'maintenance';

export interface VolumeRecord {
  id: string;
  name: string | null;
  description: string | null;
  projectId: string;
  userId: string;
  createdAt: string;
  updatedAt: string | null;
  status: VolumeStatus;
  volumeType: string;
  metadata: Record<string, string>;
  bootable: boolean;
  readonly: boolean;
  multiattach: boolean;
  snapshotId: string | null;
  sourceVolid: string | null;
}

export interface SnapshotRecord {
  id: string;
  volumeId: string;
  name: string | null;
  description: string | null;
  projectId: string;
  userId: string;
  createdAt: string;
  updatedAt: string | null;
  status: 'available' | 'error';
  metadata: Record<string, string>;
  size: number;
}

export type AttachmentStatus = 'reserved' | 'attaching' | 'attached' | 'detached';

export interface AttachmentRecord {
  id: string;
  volumeId: string;
  projectId: string;
  instance: string | null;
  hostName: string | null;
  mountpoint: string | null;
  mode: 'rw' | 'ro';
  status: AttachmentStatus;
  attachedAt: string | null;
  connector: Record<string, unknown> | null;
  connectionInfo: Record<string, unknown> | null;
}

export interface Records {
  volumes: Map<string, VolumeRecord>;
  snapshots: Map<string, SnapshotRecord>;
  attachments: Map<string, AttachmentRecord>;
}

const KINDS = { volume: 'volumes', snapshot: 'snapshots', attachment: 'attachments' } as const;
type Kind = keyof typeof KINDS;

export type Change = { kind: Kind; id: string; record: VolumeRecord | SnapshotRecord | AttachmentRecord | undefined };

export class RecordStore {
  readonly #api: StorpoolApi;
  readonly bucket: string;
  /** Mutations run one at a time in this process (read, check, write). */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(api: StorpoolApi, bucket: string) {
    this.#api = api;
    this.bucket = bucket;
  }

  async init(): Promise<void> {
    try {
      await this.#api.kvCreate(this.bucket);
    } catch (err) {
      if (!(err instanceof StorpoolApiError && err.name === 'objectExists')) throw err;
    }
  }

  async load(): Promise<Records> {
    const out: Records = { volumes: new Map(), snapshots: new Map(), attachments: new Map() };
    const bucket = await this.#api.kvList(this.bucket);
    for (const [key, value] of Object.entries(bucket.pairs ?? {})) {
      const colon = key.indexOf(':');
      const kind = key.slice(0, colon) as Kind;
      if (!Object.hasOwn(KINDS, kind)) continue;
      (out[KINDS[kind]] as Map<string, unknown>).set(key.slice(colon + 1), JSON.parse(value));
    }
    return out;
  }

  async write(changes: Change[]): Promise<void> {
    if (changes.length === 0) return;
    const set: Record<string, string> = {};
    // An empty value deletes the key (API.md §1.7 rule 9).
    for (const c of changes) set[`${c.kind}:${c.id}`] = c.record === undefined ? '' : JSON.stringify(c.record);
    await this.#api.kvSet(this.bucket, { set });
  }

  /** Runs `fn` after every mutation started before it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(() => fn(), () => fn());
    this.#tail = run.catch(() => undefined);
    return run;
  }
}
