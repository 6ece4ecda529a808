export { WireConnection, type WireConnectionOptions, type WireRequest } from './wire-connection.js';
export { FileShardMapSource, ShardMapView, type ShardMapSource } from './map-source.js';
export { ConnectionPool, type ConnectionPoolOptions } from './connection-pool.js';
export { BatchedWriter } from './batched-writer.js';
