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
  /** Bucket version the records were read at (writes that change records check it). */
  version: number;
  volumes: Map<string, VolumeRecord>;
  snapshots: Map<string, SnapshotRecord>;
  attachments: Map<string, AttachmentRecord>;
}

const KINDS = { volume: 'volumes', snapshot: 'snapshots', attachment: 'attachments' } as const;
type Kind = keyof typeof KINDS;

export type Change = { kind: Kind; id: string; record: VolumeRecord | SnapshotRecord | AttachmentRecord | undefined };

/** Another writer (another shim) changed the bucket between read and write: run again. */
export class RecordConflict extends Error {}

/** Attempts of a read-check-write before giving up under contention. */
const CONFLICT_RETRIES_MAX = 8;

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
    const bucket = await this.#api.kvList(this.bucket);
    const out: Records = { version: bucket.version, volumes: new Map(), snapshots: new Map(), attachments: new Map() };
    for (const [key, value] of Object.entries(bucket.pairs ?? {})) {
      const colon = key.indexOf(':');
      const kind = key.slice(0, colon) as Kind;
      if (!Object.hasOwn(KINDS, kind)) continue;
      (out[KINDS[kind]] as Map<string, unknown>).set(key.slice(colon + 1), JSON.parse(value));
    }
    return out;
  }

  /**
   * `ifVersion`: only if nobody wrote since the records were read (else RecordConflict); records
   * under new keys (creations) need no check.
   */
  async write(changes: Change[], ifVersion?: number): Promise<void> {
    if (changes.length === 0) return;
    const set: Record<string, string> = {};
    // An empty value deletes the key (API.md §1.7 rule 9).
    for (const c of changes) set[`${c.kind}:${c.id}`] = c.record === undefined ? '' : JSON.stringify(c.record);
    try {
      await this.#api.kvSet(this.bucket, ifVersion === undefined ? { set } : { set, runIfVersionIs: ifVersion });
    } catch (err) {
      if (err instanceof StorpoolApiError && err.name === 'runIfVersionIsMismatch') throw new RecordConflict(err.descr);
      throw err;
    }
  }

  /**
   * Runs `fn` after every mutation of this process started before it, and again (from its read)
   * when another process's write got in between; `fn`'s storpool calls must be idempotent.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const attempt = async (): Promise<T> => {
      for (let i = 1; ; i++) {
        try {
          return await fn();
        } catch (err) {
          if (!(err instanceof RecordConflict) || i >= CONFLICT_RETRIES_MAX) throw err;
        }
      }
    };
    const run = this.#tail.then(attempt, attempt);
    this.#tail = run.catch(() => undefined);
    return run;
  }
}
