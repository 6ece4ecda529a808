/**
 * storpool as CloudStack primary storage: the pool URL CloudStack's StorPool plugin parses
 * (`SP_API_HTTP=host:port;SP_AUTH_TOKEN=token;SP_TEMPLATE=template`), registering it in a zone
 * (createStoragePool, provider StorPool, zone scope, KVM, managed), listing pools, and checking
 * the whole setup from both ends.
 */
import { StorpoolApiError, type StorpoolApi } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import type { CloudStackClient } from './client.js';

export const PROVIDER = 'StorPool';

export interface PoolTarget {
  /** storpool API address as CloudStack's management server and agents reach it. */
  apiHost: string;
  apiPort: number;
  token: string;
  template: string;
}

export function poolUrl(t: PoolTarget): string {
  for (const [k, v] of Object.entries(t)) if (String(v).includes(';')) throw new StorpoolError('CONFIG_ERR_INVALID', `${k} must not contain ';'`);
  return `SP_API_HTTP=${t.apiHost}:${t.apiPort};SP_AUTH_TOKEN=${t.token};SP_TEMPLATE=${t.template}`;
}

/** The plugin's reading of a pool URL; undefined when a key is missing. */
export function parsePoolUrl(url: string): PoolTarget | undefined {
  const kv = new Map(url.split(';').map((p) => { const i = p.indexOf('='); return [p.slice(0, i).trim(), p.slice(i + 1).trim()] as const; }));
  const http = kv.get('SP_API_HTTP');
  const token = kv.get('SP_AUTH_TOKEN');
  const template = kv.get('SP_TEMPLATE');
  if (http === undefined || token === undefined || template === undefined) return undefined;
  const i = http.lastIndexOf(':');
  const port = i === -1 ? 81 : Number(http.slice(i + 1));
  return { apiHost: i === -1 ? http : http.slice(0, i), apiPort: port, token, template };
}

export interface Zone { id: string; name: string; [k: string]: unknown }
export interface StoragePool { id: string; name: string; zoneid?: string; zonename?: string; state?: string; provider?: string; path?: string; scope?: string; type?: string; disksizetotal?: number; disksizeused?: number; tags?: string; [k: string]: unknown }

export async function findZone(cs: CloudStackClient, zone: string): Promise<Zone> {
  const r = await cs.call<{ zone?: Zone[] }>('listZones', {});
  const z = (r.zone ?? []).find((x) => x.id === zone || x.name === zone);
  if (z === undefined) throw new StorpoolError('CONFIG_ERR_INVALID', `CloudStack has no zone ${zone} (zones: ${(r.zone ?? []).map((x) => x.name).join(', ') || 'none'})`);
  return z;
}

export async function listPools(cs: CloudStackClient, zoneId?: string): Promise<StoragePool[]> {
  const r = await cs.call<{ storagepool?: StoragePool[] }>('listStoragePools', zoneId === undefined ? {} : { zoneid: zoneId });
  return r.storagepool ?? [];
}

async function templateExists(sp: StorpoolApi, template: string): Promise<boolean> {
  try {
    await sp.volumeTemplateDescribe(template);
    return true;
  } catch (err) {
    // What the plugin does too: objectDoesNotExist means "no", anything else is a real failure.
    if (err instanceof StorpoolApiError && err.name === 'objectDoesNotExist') return false;
    throw err;
  }
}

export interface RegisterOptions extends PoolTarget {
  zone: string;
  name: string;
  tags?: string;
  capacityBytes?: number;
  capacityIops?: number;
}

/** Registers the pool; a pool of that name in the zone is returned as is (run it again safely). */
export async function registerPool(cs: CloudStackClient, sp: StorpoolApi, o: RegisterOptions): Promise<{ pool: StoragePool; created: boolean }> {
  if (!(await templateExists(sp, o.template))) throw new StorpoolError('CONFIG_ERR_INVALID', `storpool has no template ${o.template}: create it first (storpool template ${o.template} replication 3 placeAll ... create)`);
  const zone = await findZone(cs, o.zone);
  const existing = (await listPools(cs, zone.id)).find((p) => p.name === o.name);
  if (existing !== undefined) {
    if (existing.provider !== undefined && existing.provider !== PROVIDER) throw new StorpoolError('CONFIG_ERR_INVALID', `zone ${zone.name} already has a pool ${o.name} of provider ${existing.provider}`);
    return { pool: existing, created: false };
  }
  const r = await cs.call<{ storagepool: StoragePool }>('createStoragePool', {
    name: o.name, zoneid: zone.id, scope: 'zone', hypervisor: 'KVM', provider: PROVIDER, managed: true, url: poolUrl(o),
    tags: o.tags, capacitybytes: o.capacityBytes, capacityiops: o.capacityIops,
  });
  return { pool: r.storagepool, created: true };
}

export interface Check { check: string; ok: boolean; detail: string }

/** Each check independently, so that one failure does not hide the others. */
export async function checkSetup(cs: CloudStackClient, sp: StorpoolApi, o: { zone: string; template?: string; name?: string }): Promise<Check[]> {
  const checks: Check[] = [];
  const attempt = async (check: string, fn: () => Promise<string>): Promise<void> => {
    try {
      checks.push({ check, ok: true, detail: await fn() });
    } catch (err) {
      checks.push({ check, ok: false, detail: (err as Error).message });
    }
  };
  await attempt('cloudstack api', async () => {
    const r = await cs.call<{ capability?: { cloudstackversion?: string } }>('listCapabilities');
    return `signed requests accepted; CloudStack ${r.capability?.cloudstackversion ?? '?'}`;
  });
  await attempt('storpool api', async () => {
    const status = await sp.servicesList();
    return `${sp.url}: cluster ${status.clusterStatus}`;
  });
  let zone: Zone | undefined;
  await attempt('zone', async () => {
    zone = await findZone(cs, o.zone);
    return `${zone.name} (${zone.id})`;
  });
  let pools: StoragePool[] = [];
  await attempt('primary storage', async () => {
    if (zone === undefined) throw new Error('no zone');
    pools = (await listPools(cs, zone.id)).filter((p) => p.provider === PROVIDER && (o.name === undefined || p.name === o.name));
    if (pools.length === 0) throw new Error(`no ${PROVIDER} primary storage in zone ${zone.name}: run storpool-cloudstack register`);
    const down = pools.filter((p) => p.state !== undefined && p.state !== 'Up');
    if (down.length > 0) throw new Error(`not Up: ${down.map((p) => `${p.name} (${p.state})`).join(', ')}`);
    return pools.map((p) => `${p.name} ${p.state ?? ''}`.trim()).join(', ');
  });
  const templates = [...new Set([...(o.template !== undefined ? [o.template] : []), ...pools.map((p) => p.path).filter((p): p is string => typeof p === 'string' && p !== '')])];
  for (const t of templates) {
    await attempt(`template ${t}`, async () => {
      if (!(await templateExists(sp, t))) throw new Error(`storpool has no template ${t}`);
      return 'exists in storpool';
    });
  }
  return checks;
}
