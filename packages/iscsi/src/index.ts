export { IscsiServer, ISCSI_PORT_DEFAULT, type IscsiServerOptions, type IscsiServerCounters } from './server.js';
export { IscsiConnection, allowedFrom, type TargetEnv, type ConnectionCallbacks, type ConnectionState } from './connection.js';
export { ScsiLun, naaId, BLOCK, Mutex } from './scsi.js';
export { MemoryReservationStore, prIn, prOut, conflicts, PrType, emptyPr } from './reservations.js';
export { volumeBackend, memoryBackend } from './backends.js';
export * as pdu from './pdu.js';
export * as sense from './sense.js';
export { negotiateOperational, chapResponse, decodeChapValue, defaultParams, TARGET_MAX_RECV_DATA_SEGMENT, type SessionParams } from './login.js';
export type * from './types.js';
