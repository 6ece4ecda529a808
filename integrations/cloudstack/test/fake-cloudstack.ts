/**
 * A small CloudStack management server for the tests (a peer, not the thing under test): it
 * accepts only requests signed with a known key pair (signatureVersion 3, `expires` in the future,
 * checked the way CloudStack's ApiServer checks them), and serves listCapabilities, listZones,
 * createStoragePool and listStoragePools. createStoragePool does what CloudStack's StorPool plugin
 * does on registration: parse the URL and ask storpool whether the template exists.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeCloudStack {
  endpoint: string;
  server: Server;
  pools: Record<string, unknown>[];
  /** Commands accepted, and requests refused (with the reason). */
  accepted: string[];
  refused: string[];
  close(): Promise<void>;
}

/** CloudStack's encoding before signing (java.net.URLEncoder, `%20` for spaces). */
const encode = (v: string): string => encodeURIComponent(v).replace(/[!'()]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

export async function startFakeCloudStack(keys: { apiKey: string; secretKey: string }, zones: { id: string; name: string }[]): Promise<FakeCloudStack> {
  const pools: Record<string, unknown>[] = [];
  const accepted: string[] = [];
  const refused: string[] = [];
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      let body = '';
      for await (const c of req as AsyncIterable<Buffer>) body += c.toString('utf8');
      const params = new Map<string, string>();
      for (const [k, v] of url.searchParams) params.set(k, v);
      for (const [k, v] of new URLSearchParams(body)) params.set(k, v);
      const command = params.get('command') ?? '';
      const send = (status: number, content: Record<string, unknown>, key = `${command.toLowerCase()}response`): void => {
        const text = JSON.stringify({ [key]: content });
        res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(text)) });
        res.end(text);
      };
      const deny = (why: string): void => {
        refused.push(`${command}: ${why}`);
        send(401, { uuidList: [], errorcode: 401, errortext: 'unable to verify user credentials and/or request signature' }, 'errorresponse');
      };
      // Signature check as CloudStack's ApiServer.verifyRequest does it.
      const signature = params.get('signature');
      if (params.get('apiKey') !== keys.apiKey || signature === undefined) return deny('unknown apiKey or no signature');
      if (params.get('signatureVersion') !== '3') return deny('signatureVersion is not 3');
      const expires = Date.parse((params.get('expires') ?? '').replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
      if (!(expires > Date.now())) return deny(`expired or bad expires ${params.get('expires')}`);
      const canonical = [...params.keys()].filter((k) => k !== 'signature').sort().map((k) => `${k}=${encode(params.get(k)!)}`).join('&').toLowerCase();
      const expected = createHmac('sha1', keys.secretKey).update(canonical).digest('base64');
      if (expected !== signature) return deny('signature mismatch');
      accepted.push(command);
      switch (command) {
        case 'listCapabilities':
          return send(200, { capability: { cloudstackversion: '4.19.0.0', apiLimitInterval: 1 } });
        case 'listZones':
          return send(200, { count: zones.length, zone: zones.map((z) => ({ ...z, networktype: 'Advanced', allocationstate: 'Enabled' })) });
        case 'listStoragePools': {
          const zoneid = params.get('zoneid');
          const list = pools.filter((p) => zoneid === undefined || p['zoneid'] === zoneid);
          return send(200, list.length === 0 ? {} : { count: list.length, storagepool: list });
        }
        case 'createStoragePool': {
          const zone = zones.find((z) => z.id === params.get('zoneid'));
          if (zone === undefined) return send(431, { uuidList: [], errorcode: 431, cserrorcode: 4350, errortext: 'Unable to find zone by id' });
          if (params.get('provider') !== 'StorPool') return send(431, { uuidList: [], errorcode: 431, cserrorcode: 4350, errortext: `provider ${params.get('provider')} is not StorPool` });
          const kv = new Map((params.get('url') ?? '').split(';').map((p) => { const i = p.indexOf('='); return [p.slice(0, i), p.slice(i + 1)] as const; }));
          const http = kv.get('SP_API_HTTP');
          const token = kv.get('SP_AUTH_TOKEN');
          const template = kv.get('SP_TEMPLATE');
          if (http === undefined || token === undefined || template === undefined) return send(530, { uuidList: [], errorcode: 530, cserrorcode: 9999, errortext: 'Invalid StorPool URL' });
          const check = await fetch(`http://${http}/ctrl/1.0/VolumeTemplateDescribe/${template}`, { headers: { Authorization: `Storpool v1:${token}` } });
          const answer = (await check.json()) as { error?: { name: string; descr: string } };
          if (answer.error !== undefined) return send(530, { uuidList: [], errorcode: 530, cserrorcode: 9999, errortext: `StorPool: ${answer.error.descr}` });
          const pool = {
            id: randomUUID(), zoneid: zone.id, zonename: zone.name, name: params.get('name'), ipaddress: http.split(':')[0], path: template,
            type: 'SharedMountPoint', state: 'Up', scope: (params.get('scope') ?? 'zone').toUpperCase(), hypervisor: params.get('hypervisor'),
            provider: 'StorPool', managed: params.get('managed') === 'true', tags: params.get('tags') ?? '', disksizetotal: Number(params.get('capacitybytes') ?? 0), disksizeused: 0,
          };
          pools.push(pool);
          return send(200, { storagepool: pool });
        }
        default:
          return send(432, { uuidList: [], errorcode: 432, errortext: `The given command ${command} either does not exist, is not available for user, or not available from ip address.` });
      }
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}/client/api`, server, pools, accepted, refused,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
