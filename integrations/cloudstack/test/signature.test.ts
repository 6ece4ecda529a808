/**
 * Our CloudStack signatures against python3-cs's (Debian) for the same requests, and python3-cs's
 * `cs` command against the fake management server, which shows that the server's check is
 * CloudStack's, so that its accepting our client's requests means something.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudStackClient, canonicalQuery, csEncode, expiresAt, flatten, sign } from '@storpool/cloudstack';
import { startFakeCloudStack, type FakeCloudStack } from './fake-cloudstack.js';

const KEYS = { apiKey: 'Bv9x-7k_LmQ2pW3aZ0yT~api', secretKey: 'S3cr3t/+Key==with*odd!chars' };
const SIGN_PY = fileURLToPath(new URL('./py/cs_sign.py', import.meta.url));

function run(cmd: string, args: string[], env: Record<string, string>, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/nonexistent', LANG: 'C.UTF-8', ...env }, timeout: 120_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

let fake: FakeCloudStack;
beforeAll(async () => { fake = await startFakeCloudStack(KEYS, [{ id: 'z-1', name: 'zone1' }]); });
afterAll(async () => { await fake?.close(); });

describe('CloudStack request signatures', () => {
  it('encoding is java.net.URLEncoder with %20 (python3-cs quote(safe="*"))', () => {
    expect(csEncode("a b/c;d=e*f~g!h'i(j)k+l,m:n@o€")).toBe('a%20b%2Fc%3Bd%3De*f~g%21h%27i%28j%29k%2Bl%2Cm%3An%40o%E2%82%AC');
    expect(expiresAt(new Date('2026-11-25T18:00:07.123Z'))).toBe('2026-11-25T18:00:07+0000');
    expect(flatten({ a: 1, b: true, c: ['x', 'y'], d: { k: 'v' }, e: undefined, f: null })).toEqual({ a: '1', b: 'true', c: 'x,y', 'd[0].k': 'v' });
    expect(canonicalQuery({ b: '2', a: '1 2', signature: 'x', Z: 'z' })).toBe('Z=z&a=1%202&b=2');
  });

  it('equal to python3-cs for the same requests', async () => {
    const expires = expiresAt(new Date(Date.now() + 600_000));
    const requests = [
      { command: 'listZones', params: {} },
      { command: 'listStoragePools', params: { zoneid: '1b5e2f3c-aaaa-4bbb-8ccc-000000000001', keyword: 'sp pool' } },
      { command: 'createStoragePool', params: { name: 'storpool primary', zoneid: 'z-1', scope: 'zone', hypervisor: 'KVM', provider: 'StorPool', managed: 'true', url: 'SP_API_HTTP=10.1.2.3:81;SP_AUTH_TOKEN=1556129910218014736;SP_TEMPLATE=ssd-3', tags: 'ssd,fast', capacitybytes: '1099511627776' } },
      { command: 'updateStoragePool', params: { id: 'x', name: "ünïcödé (test) it's*" } },
    ];
    const r = await run('/usr/bin/python3', [SIGN_PY], {}, JSON.stringify(requests.map((q) => ({ key: KEYS.apiKey, secret: KEYS.secretKey, expires, ...q }))));
    expect(r.code, r.stderr).toBe(0);
    const theirs = JSON.parse(r.stdout) as string[];
    const ours = requests.map((q) => sign({ ...flatten(q.params), apiKey: KEYS.apiKey, command: q.command, response: 'json', signatureVersion: '3', expires }, KEYS.secretKey));
    expect(ours).toEqual(theirs);
    // The client's own query carries exactly that signature.
    const client = new CloudStackClient({ endpoint: fake.endpoint, ...KEYS, now: () => new Date(Date.parse(expires.replace('+0000', 'Z')) - 600_000) });
    const q = new URLSearchParams(client.signedQuery(requests[2]!.command, requests[2]!.params));
    expect(q.get('expires')).toBe(expires);
    expect(q.get('signature')).toBe(theirs[2]);
  });

  it('the fake management server accepts python3-cs and our client, and refuses a wrong secret', async () => {
    // Debian ships no `cs` script: the module is the command.
    const cs = await run('/usr/bin/python3', ['-m', 'cs', 'listZones'], { CLOUDSTACK_ENDPOINT: fake.endpoint, CLOUDSTACK_KEY: KEYS.apiKey, CLOUDSTACK_SECRET: KEYS.secretKey });
    expect(cs.code, cs.stderr + cs.stdout + fake.refused.join('; ')).toBe(0);
    expect(JSON.parse(cs.stdout)).toMatchObject({ zone: [{ id: 'z-1', name: 'zone1' }] });
    const ours = await new CloudStackClient({ endpoint: fake.endpoint, ...KEYS }).call<{ zone: { name: string }[] }>('listZones', { keyword: 'a b*c' });
    expect(ours.zone[0]!.name).toBe('zone1');
    await expect(new CloudStackClient({ endpoint: fake.endpoint, apiKey: KEYS.apiKey, secretKey: 'wrong' }).call('listZones')).rejects.toThrow(/unable to verify/);
    await expect(new CloudStackClient({ endpoint: fake.endpoint, ...KEYS, now: () => new Date(Date.now() - 3600_000) }).call('listZones')).rejects.toThrow(/unable to verify/);
    expect(fake.refused).toHaveLength(2);
    expect(fake.accepted).toEqual(['listZones', 'listZones']);
  });
});
