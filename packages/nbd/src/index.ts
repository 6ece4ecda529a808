export { NbdServer, NBD_PORT_DEFAULT, SEND_BUFFER_BYTES_MAX, type NbdServerOptions, type NbdServerCounters } from './server.js';
export { NbdSession, normalizeExtents, REQUESTS_IN_FLIGHT_MAX, BLOCK_STATUS_BYTES_MAX, BASE_ALLOCATION_CONTEXT_ID, type NbdSessionOptions, type NbdState } from './session.js';
export { volumeExport, memoryExport, allocationExtents, type VolumeExportOptions } from './volume-export.js';
export type { NbdExport, NbdExportInfo, NbdCatalog, NbdEffect, NbdIo, NbdIoResult, WriteZeroesOptions } from './types.js';
export * as nbdProtocol from './protocol.js';
