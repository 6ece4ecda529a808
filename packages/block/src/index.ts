export { startBlockService, POLL_INTERVAL_MS, OPEN_CHECK_INTERVAL_MS, HEARTBEAT_MS, type BlockService, type BlockServiceOptions, type AttachmentView } from './service.js';
export { detectMethod, createDevice, openDevices, sweepStale, type AttachMethod, type Device, type DeviceRequest } from './devices.js';
export { SwitchableVolume } from './export.js';
