/** SCSI status codes and fixed-format sense data (SPC-4 §4.5.3). */

export const Status = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  TASK_ABORTED: 0x40,
} as const;

export const SenseKey = {
  NO_SENSE: 0x0,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  ABORTED_COMMAND: 0xb,
  MISCOMPARE: 0xe,
} as const;

/** Additional sense code and qualifier, as one 16-bit number (ASC << 8 | ASCQ). */
export const Asc = {
  NONE: 0x0000,
  WRITE_ERROR: 0x0c00,
  UNRECOVERED_READ_ERROR: 0x1100,
  PARAMETER_LIST_LENGTH_ERROR: 0x1a00,
  MISCOMPARE_DURING_VERIFY: 0x1d00,
  INVALID_OPCODE: 0x2000,
  LBA_OUT_OF_RANGE: 0x2100,
  INVALID_FIELD_IN_CDB: 0x2400,
  LUN_NOT_SUPPORTED: 0x2500,
  INVALID_FIELD_IN_PARAMETER_LIST: 0x2600,
  INVALID_RELEASE_OF_PR: 0x2604,
  WRITE_PROTECTED: 0x2700,
  POWER_ON_RESET: 0x2900,
  BUS_DEVICE_RESET: 0x2903,
  MODE_PARAMETERS_CHANGED: 0x2a01,
  RESERVATIONS_PREEMPTED: 0x2a03,
  RESERVATIONS_RELEASED: 0x2a04,
  REGISTRATIONS_PREEMPTED: 0x2a05,
  CAPACITY_DATA_CHANGED: 0x2a09,
  COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: 0x2f00,
  SAVING_PARAMETERS_NOT_SUPPORTED: 0x3900,
  INTERNAL_TARGET_FAILURE: 0x4400,
  PROTOCOL_SERVICE_CRC_ERROR: 0x4705,
  MEDIUM_REMOVAL_PREVENTED: 0x5302,
  INSUFFICIENT_REGISTRATION_RESOURCES: 0x5504,
} as const;

export interface ScsiResult {
  status: number;
  sense?: Buffer;
  /** Data for the initiator (Data-In); may be longer than the allocation length (truncated by the session). */
  data?: Buffer;
}

export interface SenseOptions {
  /** Sense-key specific field pointer: byte (and bit) in the CDB (cd=true) or parameter list in error. */
  field?: { cd: boolean; byte: number; bit?: number };
  /** INFORMATION field (e.g. the offset of the first miscompare). */
  information?: number;
}

/** Fixed-format sense data, 18 bytes. */
export function senseData(key: number, asc: number, o: SenseOptions = {}): Buffer {
  const s = Buffer.alloc(18);
  s[0] = 0x70 | (o.information !== undefined ? 0x80 : 0);
  s[2] = key;
  if (o.information !== undefined) s.writeUInt32BE(o.information >>> 0, 3);
  s[7] = 10;
  s[12] = asc >> 8;
  s[13] = asc & 0xff;
  if (o.field !== undefined) {
    s[15] = 0x80 | (o.field.cd ? 0x40 : 0) | (o.field.bit !== undefined ? 0x08 | (o.field.bit & 7) : 0);
    s.writeUInt16BE(o.field.byte, 16);
  }
  return s;
}

export const check = (key: number, asc: number, o?: SenseOptions): ScsiResult => ({ status: Status.CHECK_CONDITION, sense: senseData(key, asc, o) });
export const good = (data?: Buffer): ScsiResult => (data === undefined ? { status: Status.GOOD } : { status: Status.GOOD, data });
export const invalidCdb = (byte: number, bit?: number): ScsiResult => check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, { field: bit === undefined ? { cd: true, byte } : { cd: true, byte, bit } });
export const invalidParam = (byte: number): ScsiResult => check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, { field: { cd: false, byte } });
export const outOfRange = (): ScsiResult => check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE);
export const conflict = (): ScsiResult => ({ status: Status.RESERVATION_CONFLICT });
