import { isAbsolute } from 'node:path';
import { EmbeddedMetaStore } from './embedded.js';
import { metaError } from './errors.js';
import { EtcdMetaStore } from './etcd.js';
import type { MetaConfig, MetaStore } from './types.js';

/** Checks a config read from a file or the command line; throws CONFIG_ERR_INVALID saying what is wrong. */
export function validateMetaConfig(config: unknown): MetaConfig {
  if (typeof config !== 'object' || config === null) throw metaError('CONFIG_ERR_INVALID', 'metadata store config must be an object');
  const record = config as Record<string, unknown>;
  const allowed = record['backend'] === 'embedded' ? ['backend', 'dir'] : ['backend', 'endpoints', 'prefix', 'callTimeoutMs'];
  for (const key of Object.keys(record)) {
    if (!allowed.includes(key)) throw metaError('CONFIG_ERR_INVALID', `metadata store config: unknown key "${key}" for backend ${String(record['backend'])}`);
  }
  switch (record['backend']) {
    case 'embedded': return validateEmbedded(record);
    case 'etcd': return validateEtcd(record);
    default:
      throw metaError('CONFIG_ERR_INVALID', `metadata store config: backend must be "embedded" or "etcd", got ${JSON.stringify(record['backend'])}`);
  }
}

function validateEmbedded(record: Record<string, unknown>): MetaConfig {
  const dir = record['dir'];
  if (typeof dir !== 'string' || dir.length === 0) throw metaError('CONFIG_ERR_INVALID', 'metadata store config: the embedded backend needs "dir", a directory path');
  if (!isAbsolute(dir)) throw metaError('CONFIG_ERR_INVALID', `metadata store config: "dir" must be an absolute path, got ${dir}`);
  return { backend: 'embedded', dir };
}

function validateEtcd(record: Record<string, unknown>): MetaConfig {
  const endpoints = record['endpoints'];
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw metaError('CONFIG_ERR_INVALID', 'metadata store config: the etcd backend needs "endpoints", a non-empty list like ["http://10.0.0.1:2379"]');
  }
  for (const endpoint of endpoints) {
    let url: URL;
    try {
      url = new URL(String(endpoint));
    } catch {
      throw metaError('CONFIG_ERR_INVALID', `metadata store config: endpoint ${JSON.stringify(endpoint)} is not a URL (expected http://host:port)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw metaError('CONFIG_ERR_INVALID', `metadata store config: endpoint ${String(endpoint)} must be http:// or https://`);
    if (url.port === '' || url.pathname !== '/') throw metaError('CONFIG_ERR_INVALID', `metadata store config: endpoint ${String(endpoint)} must be host:port with no path`);
  }
  const prefix = record['prefix'];
  if (prefix !== undefined && (typeof prefix !== 'string' || prefix.length === 0)) {
    throw metaError('CONFIG_ERR_INVALID', 'metadata store config: "prefix" must be a non-empty string such as "storpool/"');
  }
  const timeout = record['callTimeoutMs'];
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 100 || timeout > 600_000)) {
    throw metaError('CONFIG_ERR_INVALID', 'metadata store config: "callTimeoutMs" must be an integer between 100 and 600000');
  }
  return {
    backend: 'etcd',
    endpoints: endpoints.map(String),
    ...(prefix === undefined ? {} : { prefix: prefix as string }),
    ...(timeout === undefined ? {} : { callTimeoutMs: timeout as number }),
  };
}

/** Opens the backend the config names. */
export async function openMetaStore(config: MetaConfig): Promise<MetaStore> {
  const valid = validateMetaConfig(config);
  if (valid.backend === 'embedded') return EmbeddedMetaStore.open(valid.dir);
  return EtcdMetaStore.open(valid);
}
