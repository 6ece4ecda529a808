import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorpoolApi, StorpoolConfigError, endpointFromConfig, listDropIns, loadConfig, parseIni, resolveConfigPath } from '../src/index.js';
import { ok, startFakeApi } from '@storpool/testkit';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-conf-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function confDir(name: string, main: string, dropIns: Record<string, string> = {}): Promise<string> {
  const base = join(dir, name);
  await mkdir(`${base}.conf.d`, { recursive: true });
  await writeFile(`${base}.conf`, main);
  for (const [file, text] of Object.entries(dropIns)) await writeFile(join(`${base}.conf.d`, file), text);
  return `${base}.conf`;
}

describe('parseIni', () => {
  it('reads NAME=value lines, trims, keeps quotes, skips comments, joins continuations', () => {
    const ini = parseIni(
      ['# comment', '  ; another', '', 'SP_A = one ', 'SP_B="quoted"', 'SP_C=long \\', 'value', 'SP_D=x#not-a-comment', '[node1]', 'SP_OURID=12'].join('\n'),
      'test.conf',
    );
    expect(Object.fromEntries(ini.get('') ?? [])).toEqual({ SP_A: 'one', SP_B: '"quoted"', SP_C: 'long value', SP_D: 'x#not-a-comment' });
    expect(Object.fromEntries(ini.get('node1') ?? [])).toEqual({ SP_OURID: '12' });
  });

  it('rejects a line that is not NAME=value, naming file and line', () => {
    expect(() => parseIni('SP_A=1\nrubbish\n', '/etc/x.conf')).toThrow(/\/etc\/x\.conf:2: expected NAME=value/);
    expect(() => parseIni('[broken\n', 'f')).toThrow(StorpoolConfigError);
  });
});

describe('loadConfig', () => {
  it('applies files in order, each global section then the host section, then the environment', async () => {
    const path = await confDir('order', 'SP_API_HTTP_HOST=10.0.0.1\nSP_AUTH_TOKEN=111\n[otherhost]\nSP_OURID=9\n[myhost]\nSP_OURID=3\nSP_API_HTTP_PORT=8081\n', {
      'b.conf': 'SP_API_HTTP_PORT=9090\n',
      'a.conf': 'SP_API_HTTP_HOST=10.0.0.2\n[myhost]\nSP_API_HTTP_HOST=10.0.0.3\n',
      'x.conf.bak': 'SP_AUTH_TOKEN=bak\n',
      '.hidden.conf': 'SP_AUTH_TOKEN=hidden\n',
      'local.confx': 'SP_AUTH_TOKEN=confx\n',
    });
    const env = { SP_AUTH_TOKEN: '222' };
    const cfg = loadConfig({ path, section: 'myhost', env });
    expect(cfg.files).toEqual([path, join(`${path}.d`, 'a.conf'), join(`${path}.d`, 'b.conf')]);
    // a.conf's host section beats its global one; b.conf's global port beats the main file's host section.
    expect(cfg.values).toEqual({ SP_API_HTTP_HOST: '10.0.0.3', SP_AUTH_TOKEN: '222', SP_OURID: '3', SP_API_HTTP_PORT: '9090' });
    expect(endpointFromConfig(cfg)).toEqual({ host: '10.0.0.3', port: 9090, token: '222', ourId: 3 });
    expect(loadConfig({ path, section: 'myhost', env, useEnv: false }).values['SP_AUTH_TOKEN']).toBe('111');
  });

  it('lets the environment override host, port, token and SP_OURID', async () => {
    const path = await confDir('env', 'SP_AUTH_TOKEN=1\n');
    const cfg = loadConfig({ path, env: { SP_API_HTTP_HOST: 'api.example', SP_API_HTTP_PORT: '8000', SP_AUTH_TOKEN: 't', SP_OURID: '7', SP_CLUSTER_ID: 'ignored.x' } });
    expect(endpointFromConfig(cfg)).toEqual({ host: 'api.example', port: 8000, token: 't', ourId: 7 });
    expect(cfg.values['SP_CLUSTER_ID']).toBeUndefined();
  });

  it('finds the file via STORPOOL_CONF, then /etc, then the local cluster data directory', async () => {
    const path = await confDir('override', 'SP_AUTH_TOKEN=from-override\n');
    expect(resolveConfigPath({ env: { STORPOOL_CONF: path } })).toBe(path);
    expect(loadConfig({ env: { STORPOOL_CONF: path } }).values['SP_AUTH_TOKEN']).toBe('from-override');
    const data = join(dir, 'data');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'storpool.conf'), 'SP_AUTH_TOKEN=local\n');
    // (this machine has no /etc/storpool.conf; the fallbacks apply only without one)
    expect(resolveConfigPath({ env: { STORPOOL_DATA: data } })).toBe(join(data, 'storpool.conf'));
    expect(resolveConfigPath({ env: {}, cwd: dir })).toBeUndefined();
    await mkdir(join(dir, '.storpool'), { recursive: true });
    await writeFile(join(dir, '.storpool', 'storpool.conf'), 'SP_AUTH_TOKEN=cwd\n');
    expect(loadConfig({ env: {}, cwd: dir }).values['SP_AUTH_TOKEN']).toBe('cwd');
  });

  it('with no file at all, uses the environment and the defaults', () => {
    const cfg = loadConfig({ env: { SP_AUTH_TOKEN: 'tok' }, cwd: join(dir, 'nowhere') });
    expect(cfg.files).toEqual([]);
    expect(endpointFromConfig(cfg)).toEqual({ host: '127.0.0.1', port: 81, token: 'tok', ourId: undefined });
  });

  it('fails clearly on a missing STORPOOL_CONF file and on bad values', async () => {
    expect(() => loadConfig({ env: { STORPOOL_CONF: join(dir, 'missing.conf') } })).toThrow(/missing\.conf does not exist/);
    const path = await confDir('bad', 'SP_API_HTTP_PORT=eighty\nSP_OURID=0\n');
    expect(() => endpointFromConfig(loadConfig({ path, env: {} }))).toThrow(/SP_API_HTTP_PORT "eighty" in .*bad\.conf is not a port number/);
    const path2 = await confDir('bad2', 'SP_OURID=5000\n');
    expect(() => endpointFromConfig(loadConfig({ path: path2, env: {} }))).toThrow(/SP_OURID "5000"/);
  });

  it('lists only *.conf regular files not starting with a dot, sorted', async () => {
    const d = join(dir, 'dropins');
    await mkdir(join(d, 'sub.conf'), { recursive: true });
    for (const f of ['z.conf', 'a.conf', '.h.conf', 'm.conf.bak']) await writeFile(join(d, f), '');
    expect(listDropIns(d)).toEqual([join(d, 'a.conf'), join(d, 'z.conf')]);
    expect(listDropIns(join(dir, 'absent'))).toEqual([]);
  });

  it('StorpoolApi reads its endpoint and token from the files; explicit options win', async () => {
    const fake = await startFakeApi(() => ok([]));
    try {
      const path = await confDir('api', `SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=${fake.port}\nSP_AUTH_TOKEN=filetoken\n[h1]\nSP_OURID=4\n`);
      const api = new StorpoolApi({ config: { path, section: 'h1', env: {} } });
      expect([api.host, api.port, api.ourId]).toEqual(['127.0.0.1', fake.port, 4]);
      await api.tasksList();
      expect(fake.requests[0]?.headers.authorization).toBe('Storpool v1:filetoken');
      const explicit = new StorpoolApi({ token: 'mine', config: { path, env: {} } });
      await explicit.tasksList();
      expect(fake.requests[1]?.headers.authorization).toBe('Storpool v1:mine');
      expect(() => new StorpoolApi({ config: { env: {}, cwd: join(dir, 'nowhere') } })).toThrow(/no API token/);
    } finally {
      await fake.close();
    }
  });
});
