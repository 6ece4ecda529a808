/**
 * The generators fed from the cluster's state through the management API: a template must exist
 * for its pool, a volume for its volume and disk documents (size and global id come from it).
 */
import type { StorpoolApi } from '@storpool/api-client';
import { diskXml, poolXml, volumeXml, type DiskSource, type DiskSpec, type PoolSpec } from './xml.js';

export async function poolXmlFromCluster(api: StorpoolApi, spec: PoolSpec): Promise<string> {
  await api.volumeTemplateDescribe(spec.template);
  return poolXml(spec);
}

async function volumeFacts(api: StorpoolApi, volume: string): Promise<{ size: number; globalId: string }> {
  const v = (await api.volume(volume))[0];
  if (v === undefined) throw new Error(`volume '${volume}' does not exist`);
  return { size: v.size, globalId: v.globalId };
}

export async function volumeXmlFromCluster(api: StorpoolApi, volume: string, devRoot?: string): Promise<string> {
  const v = await volumeFacts(api, volume);
  return volumeXml({ name: volume, sizeBytes: v.size, globalId: v.globalId, ...(devRoot !== undefined ? { devRoot } : {}) });
}

export async function diskSpecFromCluster(api: StorpoolApi, volume: string, source: DiskSource, extra: Omit<DiskSpec, 'volume' | 'globalId' | 'source'> = {}): Promise<DiskSpec> {
  const v = await volumeFacts(api, volume);
  return { volume, globalId: v.globalId, source, ...extra };
}

export async function diskXmlFromCluster(api: StorpoolApi, volume: string, source: DiskSource, extra: Omit<DiskSpec, 'volume' | 'globalId' | 'source'> = {}): Promise<string> {
  return diskXml(await diskSpecFromCluster(api, volume, source, extra));
}
