export { CinderShim, REQUEST_BODY_BYTES_MAX, type ShimOptions } from './http.js';
export { CinderService, typeId, type CinderServiceOptions, type RequestContext, type Connector, type ConnectionInfo } from './service.js';
export { KeystoneAuth, type KeystoneOptions, type Identity } from './keystone.js';
export { CinderError } from './errors.js';
export { RecordStore, type VolumeRecord, type SnapshotRecord, type AttachmentRecord } from './records.js';
export { startCinderApi, type CinderApiOptions, type RunningCinderApi } from './server.js';
