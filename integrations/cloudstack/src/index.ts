export { CloudStackClient, CloudStackError, EXPIRES_SECONDS_DEFAULT, type CloudStackOptions } from './client.js';
export { csEncode, canonicalQuery, sign, expiresAt, flatten, type CloudStackParams } from './signature.js';
export { PROVIDER, poolUrl, parsePoolUrl, findZone, listPools, registerPool, checkSetup, type PoolTarget, type RegisterOptions, type StoragePool, type Zone, type Check } from './primary-storage.js';
