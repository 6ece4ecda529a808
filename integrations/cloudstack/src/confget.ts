/**
 * storpool_confget: the merged storpool.conf of this host (or of `-s SECTION`) as `NAME=value`
 * lines, the way StorPool's confget prints it; with names, only their values (CloudStack's agent
 * runs `/usr/lib/storpool/confget -f /etc/storpool.conf -s <host> SP_OURID`); `-S` prints shell
 * assignments. Files only, no environment overrides.
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '@storpool/api-client';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { file: { type: 'string', short: 'f' }, section: { type: 'string', short: 's' }, shell: { type: 'boolean', short: 'S' } } });
try {
  const cfg = loadConfig({ ...(values.file !== undefined ? { path: values.file } : {}), ...(values.section !== undefined ? { section: values.section } : {}), useEnv: false }).values;
  const quote = (v: string): string => `'${v.replace(/'/g, `'\\''`)}'`;
  if (positionals.length > 0) {
    const missing = positionals.filter((n) => !Object.hasOwn(cfg, n));
    for (const n of positionals) if (Object.hasOwn(cfg, n)) process.stdout.write(`${values.shell === true ? `${n}=${quote(cfg[n]!)}` : cfg[n]!}\n`);
    process.exit(missing.length === 0 ? 0 : 1);
  }
  for (const [k, v] of Object.entries(cfg)) process.stdout.write(`${k}=${values.shell === true ? quote(v) : v}\n`);
} catch (err) {
  process.stderr.write(`storpool_confget: ${(err as Error).message}\n`);
  process.exit(2);
}
