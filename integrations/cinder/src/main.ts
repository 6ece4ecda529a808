/**
 * storpool-cinder-api: a Cinder Block Storage API v3 endpoint in front of storpool.
 *   storpool-cinder-api [--listen HOST:PORT] [--storpool-conf FILE] [--auth noauth|keystone] ...
 * Keystone's service password comes from --keystone-password or CINDER_KEYSTONE_PASSWORD.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startCinderApi, type CinderApiOptions } from './server.js';

const USAGE = `usage: storpool-cinder-api [options]
  --listen HOST:PORT          address to serve on (default 127.0.0.1:8776)
  --storpool-conf FILE        storpool.conf: API address and token, [host] sections with SP_OURID (default /etc/storpool.conf)
  --bucket NAME               key/value bucket for the Cinder records (default cinder)
  --prefix P                  object name prefix, as SP_OPENSTACK_VOLUME_PREFIX (default os)
  --default-type TEMPLATE     template of volumes created without a type (default: "default" or the first)
  --availability-zone NAME    (default nova)
  --auth noauth|keystone      (default noauth)
  --keystone-url URL          e.g. http://keystone:5000/v3
  --keystone-user NAME        service user that validates tokens
  --keystone-password PW      (or CINDER_KEYSTONE_PASSWORD)
  --keystone-project NAME     service user's project (default service)
  --keystone-domain NAME      user and project domain (default Default)
  --iscsi-export-to HOSTS     comma-separated connector hosts attached over iSCSI, * for all
  --iscsi-portal-group NAME   storpool iSCSI portal group for those exports
  --iscsi-chap                create iSCSI initiators with CHAP credentials
  --log-level LEVEL           pino level (default info)`;

const { values } = parseArgs({
  options: {
    listen: { type: 'string' }, 'storpool-conf': { type: 'string' }, bucket: { type: 'string' }, prefix: { type: 'string' },
    'default-type': { type: 'string' }, 'availability-zone': { type: 'string' }, auth: { type: 'string' },
    'keystone-url': { type: 'string' }, 'keystone-user': { type: 'string' }, 'keystone-password': { type: 'string' },
    'keystone-project': { type: 'string' }, 'keystone-domain': { type: 'string' }, 'iscsi-export-to': { type: 'string' },
    'iscsi-portal-group': { type: 'string' }, 'iscsi-chap': { type: 'boolean' }, 'log-level': { type: 'string' }, help: { type: 'boolean' },
  },
});
if (values.help === true) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const fail = (msg: string): never => {
  process.stderr.write(`storpool-cinder-api: ${msg}\n${USAGE}\n`);
  process.exit(2);
};
const log = pino({ name: 'storpool-cinder-api', level: values['log-level'] ?? 'info' });
const [host, portText] = (() => {
  const l = values.listen ?? '127.0.0.1:8776';
  const i = l.lastIndexOf(':');
  return i === -1 ? fail(`--listen ${l}: expected HOST:PORT`) : [l.slice(0, i).replace(/^\[|\]$/g, ''), l.slice(i + 1)];
})();
const port = Number(portText);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--listen: bad port ${portText}`);
const o: CinderApiOptions = { host, port, log };
if (values['storpool-conf'] !== undefined) o.storpoolConf = values['storpool-conf'];
if (values.bucket !== undefined) o.bucket = values.bucket;
if (values.prefix !== undefined) o.prefix = values.prefix;
if (values['default-type'] !== undefined) o.defaultType = values['default-type'];
if (values['availability-zone'] !== undefined) o.availabilityZone = values['availability-zone'];
if (values['iscsi-export-to'] !== undefined) o.iscsiExportTo = values['iscsi-export-to'].split(',').map((s) => s.trim()).filter(Boolean);
if (values['iscsi-portal-group'] !== undefined) o.iscsiPortalGroup = values['iscsi-portal-group'];
if (values['iscsi-chap'] === true) o.iscsiChap = true;
const auth = values.auth ?? 'noauth';
if (auth === 'keystone') {
  const url = values['keystone-url'] ?? fail('--auth keystone needs --keystone-url');
  const username = values['keystone-user'] ?? fail('--auth keystone needs --keystone-user');
  const password = values['keystone-password'] ?? process.env['CINDER_KEYSTONE_PASSWORD'] ?? fail('--auth keystone needs --keystone-password or CINDER_KEYSTONE_PASSWORD');
  const domain = values['keystone-domain'] ?? 'Default';
  o.keystone = { url, username, password, projectName: values['keystone-project'] ?? 'service', userDomainName: domain, projectDomainName: domain };
} else if (auth !== 'noauth') {
  fail(`--auth ${auth}: expected noauth or keystone`);
}

try {
  const api = await startCinderApi(o);
  log.info({ url: api.url, auth }, 'listening');
  process.stdout.write(`storpool-cinder-api listening on ${api.url}\n`);
  const stop = (): void => { void api.close().then(() => process.exit(0)); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (err) {
  log.error({ err }, 'cannot start');
  process.stderr.write(`storpool-cinder-api: ${(err as Error).message}\n`);
  process.exit(1);
}
