export { startManagementService, type ManagementService, type ManagementServiceOptions } from './service.js';
export { MetaShardMapSource, ShardMapPublisher, writeShardMapFile } from './map-source.js';
export { ClusterModel } from './cluster-model.js';
export { ApiError, type ApiErrorName } from './api-error.js';
export type { ClusterInit, DiskRegistration } from './model-cluster.js';
export type { ObjectRecord, State, DiskRecord, TaskRecord } from './state.js';
export { parseTarget } from './http.js';
export { CALLS } from './routes.js';
export * from './limits.js';
