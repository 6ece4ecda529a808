export { startStorageServer, type StorageServer, type StorageServerOptions } from './storage-server.js';
export { ShardService, type ObjectStore, type ServiceCounters, type RepairRoute, type BadBlock } from './shard-service.js';
export { StorageListener } from './listener.js';
export { parseSize } from './size.js';
export * from './store/index.js';
