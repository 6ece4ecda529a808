import type { Extent } from './protocol.js';

/** What the handshake needs to know about an export. */
export interface NbdExportInfo {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
}

export interface WriteZeroesOptions {
  fua: boolean;
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated (write real zeros). */
  noHole: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail with ENOTSUP rather than zero slowly. */
  fast: boolean;
}

/**
 * The storage behind one export. Every method resolves when the operation is done; writes
 * resolve when durable if the backend says FUA is free. Thrown errors are mapped to NBD errno
 * through @storpool/errors (`ERRORS[code].nbdErrno`); anything else becomes EIO.
 */
export interface NbdExport extends NbdExportInfo {
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void>;
  flush(): Promise<void>;
  /** NBD_CMD_CACHE: a prefetch hint; may do nothing. */
  cache?(offset: number, length: number): Promise<void>;
  /** base:allocation extents covering [offset, offset+length) from offset on (may cover less). */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
}

/** The exports a session may choose from. */
export interface NbdCatalog {
  get(name: string): NbdExportInfo | undefined;
  list(): readonly NbdExportInfo[];
}

/** Backend work a session asks its runner to do; answered by `session.complete(id, result)`. */
export type NbdIo =
  | { id: number; op: 'read'; offset: number; length: number }
  | { id: number; op: 'write'; offset: number; length: number; data: Buffer; fua: boolean }
  | { id: number; op: 'trim'; offset: number; length: number; fua: boolean }
  | { id: number; op: 'writeZeroes'; offset: number; length: number; fua: boolean; noHole: boolean; fast: boolean }
  | { id: number; op: 'flush' }
  | { id: number; op: 'cache'; offset: number; length: number }
  | { id: number; op: 'blockStatus'; offset: number; length: number };

export type NbdEffect =
  /** Bytes for the client, in order (several buffers avoid copying read data). */
  | { type: 'send'; data: Buffer[] }
  | { type: 'io'; io: NbdIo }
  /** The session entered transmission with this export. */
  | { type: 'export'; export: NbdExportInfo }
  /**
   * End the connection after the bytes already sent. `error` marks a hostile or broken peer
   * (the reason is logged at warn); otherwise it is a clean end (ABORT, DISC).
   */
  | { type: 'close'; reason: string; error: boolean };

export type NbdIoResult =
  | { ok: true; data?: Buffer; extents?: Extent[] }
  | { ok: false; errno: number; message: string };
