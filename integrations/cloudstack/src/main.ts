/**
 * storpool-cloudstack: registers storpool as CloudStack primary storage and checks the setup.
 *   storpool-cloudstack register --zone Z --name N [--template T] [--tags T] [...]
 *   storpool-cloudstack list [--zone Z] [-j]
 *   storpool-cloudstack check --zone Z [--name N] [--template T] [-j]
 * CloudStack: --endpoint/--api-key/--secret-key or CLOUDSTACK_ENDPOINT/CLOUDSTACK_KEY/CLOUDSTACK_SECRET
 * (python3-cs's variables); storpool: storpool.conf (--storpool-conf, STORPOOL_CONF, /etc/storpool.conf).
 */
import { parseArgs } from 'node:util';
import { StorpoolApi, endpointFromConfig, loadConfig } from '@storpool/api-client';
import { CloudStackClient } from './client.js';
import { checkSetup, listPools, findZone, PROVIDER, registerPool } from './primary-storage.js';

const USAGE = `usage: storpool-cloudstack <register|list|check> [options]
  --endpoint URL        CloudStack API, e.g. http://mgmt:8080/client/api (CLOUDSTACK_ENDPOINT)
  --api-key KEY         (CLOUDSTACK_KEY)
  --secret-key KEY      (CLOUDSTACK_SECRET)
  --storpool-conf FILE  storpool.conf with SP_API_HTTP_HOST/PORT and SP_AUTH_TOKEN
  --zone ZONE           zone name or id (register, check; list filters by it)
  --name NAME           primary storage name (register; check: only that pool)
  --template T          storpool template of the pool's volumes (default: default)
  --api-host HOST       storpool API address as CloudStack hosts reach it (default: from storpool.conf)
  --api-port PORT       (default: from storpool.conf)
  --tags TAGS           storage tags of the pool
  --capacity-bytes N    --capacity-iops N
  -j, --json            JSON output`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      endpoint: { type: 'string' }, 'api-key': { type: 'string' }, 'secret-key': { type: 'string' }, 'storpool-conf': { type: 'string' },
      zone: { type: 'string' }, name: { type: 'string' }, template: { type: 'string' }, 'api-host': { type: 'string' }, 'api-port': { type: 'string' },
      tags: { type: 'string' }, 'capacity-bytes': { type: 'string' }, 'capacity-iops': { type: 'string' }, json: { type: 'boolean', short: 'j' }, help: { type: 'boolean', short: 'h' },
    },
  });
  const cmd = positionals[0];
  if (values.help === true || cmd === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return cmd === undefined && values.help !== true ? 2 : 0;
  }
  const usage = (msg: string): number => {
    process.stderr.write(`storpool-cloudstack: ${msg}\n${USAGE}\n`);
    return 2;
  };
  const endpoint = values.endpoint ?? process.env['CLOUDSTACK_ENDPOINT'];
  const apiKey = values['api-key'] ?? process.env['CLOUDSTACK_KEY'];
  const secretKey = values['secret-key'] ?? process.env['CLOUDSTACK_SECRET'];
  if (endpoint === undefined || apiKey === undefined || secretKey === undefined) return usage('CloudStack endpoint, API key and secret key are required');
  const cs = new CloudStackClient({ endpoint, apiKey, secretKey });
  // The token goes into the pool URL, so it is read here rather than inside StorpoolApi.
  const ep = endpointFromConfig(loadConfig(values['storpool-conf'] !== undefined ? { path: values['storpool-conf'] } : {}));
  if (ep.token === undefined) return usage('no SP_AUTH_TOKEN in storpool.conf');
  const sp = new StorpoolApi({ host: ep.host, port: ep.port, token: ep.token });
  const out = (json: unknown, text: string): void => { process.stdout.write(values.json === true ? `${JSON.stringify(json, null, 2)}\n` : `${text}\n`); };
  const num = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${what} ${v} is not a non-negative integer`);
    return n;
  };
  switch (cmd) {
    case 'register': {
      if (values.zone === undefined || values.name === undefined) return usage('register needs --zone and --name');
      const r = await registerPool(cs, sp, {
        zone: values.zone, name: values.name, template: values.template ?? 'default', apiHost: values['api-host'] ?? sp.host,
        apiPort: num(values['api-port'], '--api-port') ?? sp.port, token: ep.token,
        ...(values.tags !== undefined ? { tags: values.tags } : {}),
        ...(values['capacity-bytes'] !== undefined ? { capacityBytes: num(values['capacity-bytes'], '--capacity-bytes')! } : {}),
        ...(values['capacity-iops'] !== undefined ? { capacityIops: num(values['capacity-iops'], '--capacity-iops')! } : {}),
      });
      out(r, `${r.created ? 'registered' : 'already registered'}: primary storage ${r.pool.name} (${r.pool.id}) in zone ${r.pool.zonename ?? values.zone}, state ${r.pool.state ?? '?'}`);
      return 0;
    }
    case 'list': {
      const zoneId = values.zone === undefined ? undefined : (await findZone(cs, values.zone)).id;
      const pools = await listPools(cs, zoneId);
      out(pools, pools.map((p) => [p.name, p.id, p.zonename ?? '', p.provider ?? '', p.state ?? '', p.path ?? ''].join('\t')).join('\n') || '(no primary storage)');
      return 0;
    }
    case 'check': {
      if (values.zone === undefined) return usage('check needs --zone');
      const checks = await checkSetup(cs, sp, { zone: values.zone, ...(values.template !== undefined ? { template: values.template } : {}), ...(values.name !== undefined ? { name: values.name } : {}) });
      out(checks, checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.detail}`).join('\n'));
      return checks.every((c) => c.ok) ? 0 : 1;
    }
    default:
      return usage(`unknown command ${cmd} (register, list, check; ${PROVIDER} primary storage)`);
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`storpool-cloudstack: ${(err as Error).message}\n`);
  process.exit(1);
});
