export { StorpoolClient, Volume, splitByObject, type ClientOptions, type ClientCounters, type VolumeSpec } from './client.js';
export { FileShardMapSource, StaticShardMapSource, type ShardMapSource } from '@storpool/net';
