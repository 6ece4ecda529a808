export * from './limits.js';
export * from './crc.js';
export * from './frame.js';
export * from './handshake.js';
export * from './shardmap.js';
export * from './scrub.js';
export * from './sync.js';
