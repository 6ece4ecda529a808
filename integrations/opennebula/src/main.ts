/**
 * storpool-one <datastore|tm|vmm> <action> [args...]: one OpenNebula driver action. Prints what
 * OpenNebula expects on stdout; on failure prints "ERROR: ..." on stderr and exits non-zero.
 */
import { StorpoolApiError } from '@storpool/api-client';
import { StorpoolError } from '@storpool/errors';
import { driverEnv, type DriverEnv } from './env.js';
import { dsActions, exportDispose, type DsRequest } from './ds.js';
import { tmActions } from './tm.js';
import { vmmActions } from './vmm.js';
import { parseDocument, type XmlNode } from './xml.js';

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sub(node: XmlNode, key: string): XmlNode | undefined {
  const v = node[key];
  return typeof v === 'object' && !Array.isArray(v) ? v : undefined;
}

/**
 * DS actions: `<action> <image_id>` with the document on stdin (current OpenNebula), or
 * `<action> <base64 document> <image_id>` (older releases).
 */
async function dsRequest(args: string[], stdin: () => Promise<string>): Promise<DsRequest> {
  const first = args[0];
  const data = first !== undefined && !/^-?\d+$/.test(first) ? first : await stdin();
  const doc = parseDocument(data, 'DS_DRIVER_ACTION_DATA');
  return { image: sub(doc, 'IMAGE'), datastore: sub(doc, 'DATASTORE') };
}

export async function runAction(kind: string, action: string, args: string[], stdin: () => Promise<string> = readStdin, env?: DriverEnv): Promise<string> {
  const known = kind === 'datastore' ? dsActions : kind === 'tm' ? tmActions : kind === 'vmm' ? vmmActions : undefined;
  if (known === undefined) throw new StorpoolError('CONFIG_ERR_INVALID', `unknown driver kind ${JSON.stringify(kind)} (datastore, tm, vmm)`);
  if (kind === 'datastore' && action === 'export_dispose') {
    await exportDispose(env ?? driverEnv(), args[0] ?? '');
    return '';
  }
  if (!Object.hasOwn(known, action)) throw new StorpoolError('CONFIG_ERR_INVALID', `unknown ${kind} action ${JSON.stringify(action)}`);
  const e = env ?? driverEnv();
  if (kind === 'datastore') return dsActions[action]!(e, await dsRequest(args, stdin));
  return (known as typeof tmActions)[action]!(e, args, stdin);
}

export async function main(argv: string[]): Promise<number> {
  const [kind, action, ...args] = argv;
  if (kind === undefined || action === undefined) {
    process.stderr.write('usage: storpool-one <datastore|tm|vmm> <action> [args...]\n');
    return 2;
  }
  try {
    const out = await runAction(kind, action, args);
    if (out !== '') process.stdout.write(`${out}\n`);
    return 0;
  } catch (err) {
    const msg = err instanceof StorpoolApiError ? `storpool API: ${err.name}: ${err.descr}` : err instanceof Error ? err.message : String(err);
    process.stderr.write(`ERROR: storpool ${kind} ${action}: ${msg}\n`);
    return err instanceof StorpoolError ? Math.max(1, err.spec.cliExit) : 1;
  }
}
