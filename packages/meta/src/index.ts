export type {
  Election, EmbeddedMetaConfig, EtcdMetaConfig, KeyValue, Lease, LeaseId, MetaConfig, MetaStore, MetaValue,
  MetaWatch, PutOptions, RangeOptions, RangeResult, TxnCompare, TxnOp, TxnRequest, TxnResult, WatchCallback,
  WatchEvent,
} from './types.js';
export { openMetaStore, validateMetaConfig } from './open.js';
export { EmbeddedMetaStore, type EmbeddedMetaStoreOptions } from './embedded.js';
export { EtcdMetaStore, ETCD_DEFAULT_PREFIX, type EtcdMetaStoreOptions } from './etcd.js';
export { campaign, ELECTION_PREFIX } from './election.js';
export { META_ERROR_CODES, isMetaError, metaError, type MetaErrorKind } from './errors.js';
export * from './limits.js';
