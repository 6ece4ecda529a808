/** Public types of the iSCSI target. */

/**
 * The storage behind one LUN, in bytes. Every method resolves when the operation is done; writes
 * resolve when durable (storpool volumes acknowledge only when every replica has the data).
 */
export interface LunBackend {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Thin provisioned: UNMAP, WRITE SAME with UNMAP and GET LBA STATUS are offered. */
  readonly thin: boolean;
  /** Stable id of the volume (storpool globalId): the unit serial number and the source of the NAA id. */
  readonly id: string;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Deallocate: reads return zeros afterwards. */
  unmap(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  /** One byte per 4 KiB block of the block-aligned range: 0 = not mapped (reads zeros), else mapped. */
  allocation?(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Atomically: if the range holds `compare`, write `data` over it and resolve -1; else resolve the
   * byte offset of the first difference and write nothing. Without it the target serializes
   * COMPARE AND WRITE through a lock of its own (atomic only among the commands of this process).
   * A storpool volume executes it at the shard primary: atomic across every portal and process.
   */
  compareAndWrite?(offset: number, compare: Buffer, data: Buffer): Promise<number>;
  /**
   * `compareAndWrite` is atomic only for ranges that do not cross a multiple of this many bytes
   * (a storpool object, 4 MiB); the target refuses a COMPARE AND WRITE across one with INVALID
   * FIELD IN CDB rather than run it non-atomically. Undefined: any range.
   */
  readonly compareAndWriteBoundaryBytes?: number;
}

/** One registration of a persistent reservation (SPC-4 §5.13). Keys are 16 hex digits. */
export interface PrRegistration {
  /** I_T nexus: `<initiator name>,i,0x<ISID>`. */
  nexus: string;
  key: string;
}

export interface PrState {
  generation: number;
  registrations: PrRegistration[];
  reservation?: { holder: string; type: number } | undefined;
  /** RESERVE(6) holder (nexus), mutually exclusive with persistent reservations. */
  legacy?: string | undefined;
  /** Unit attentions pending per nexus (ASC<<8|ASCQ), delivered by whichever portal serves it. */
  ua?: Record<string, number[]> | undefined;
  /** LOGICAL UNIT RESETs so far: a session that saw fewer gets a BUS DEVICE RESET unit attention. */
  resets?: number | undefined;
}

/**
 * Where the persistent reservations of the LUNs live. Every portal of the cluster must see the same
 * state: `update` is a compare-and-swap on the whole state of one LUN.
 */
export interface ReservationStore {
  /** The current state (may be cached up to the store's refresh interval for I/O checks). */
  get(lunId: string, fresh: boolean): Promise<PrState>;
  /**
   * The state for an I/O check if the store has one young enough, without waiting (undefined:
   * call `get`). Every SCSI command checks reservations, so this spares each one an await and,
   * for a remote store, from queueing behind a refresh.
   */
  cached?(lunId: string): PrState | undefined;
  /** Runs `fn` on the latest state and stores what it returns (undefined: no change); retried on conflict. */
  update<T>(lunId: string, fn: (s: PrState) => { state: PrState | undefined; result: T }): Promise<T>;
}

export interface IscsiLun {
  lun: number;
  backend: LunBackend;
}

export interface IscsiTarget {
  /** Target IQN. */
  name: string;
  alias?: string;
  luns: IscsiLun[];
}

export interface Portal {
  host: string;
  port: number;
}

export interface InitiatorAccess {
  /** Initiator IQN. */
  name: string;
  /** CHAP user and secret the initiator must present; empty secret: AuthMethod None. */
  username: string;
  secret: string;
  /** CIDRs the initiator may connect from (empty: anywhere). */
  nets: string[];
  /** Target IQNs it may see and log in to, with the portal group each is reached through. */
  targets: { target: string; portalGroup: string }[];
}

export interface PortalGroup {
  name: string;
  /** Target portal group tag. */
  tag: number;
  portals: Portal[];
}

/** What a running target serves: refreshed as a whole when the configuration changes. */
export interface TargetCatalog {
  targets: Map<string, IscsiTarget>;
  initiators: Map<string, InitiatorAccess>;
  portalGroups: Map<string, PortalGroup>;
  /** Credentials the target answers mutual CHAP with (none: mutual CHAP is refused). */
  mutualChap?: { username: string; secret: string } | undefined;
  /**
   * Open mode (tests, single-host use): any initiator may see and log in to every target
   * without authentication; `initiators` then only adds CHAP requirements.
   */
  open?: boolean;
}
