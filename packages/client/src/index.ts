export { StorpoolClient, Volume, splitByObject, type ClientOptions, type ClientCounters, type VolumeSpec } from './client.js';
export { FileShardMapSource, type ShardMapSource } from '@storpool/net';
