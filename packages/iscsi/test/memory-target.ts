/**
 * A target over an in-memory LUN, without a cluster: `npx tsx packages/iscsi/test/memory-target.ts PORT [PORT2]`
 * (open mode: any initiator, no CHAP). For trying initiators and for the conformance comparison
 * of the protocol layer alone.
 */
import { IscsiServer, memoryBackend } from '@storpool/iscsi';
import { pino } from 'pino';

const ports = process.argv.slice(2).map(Number);
const size = Number(process.env['LUN_BYTES'] ?? 128 * 1024 * 1024);
const target = { name: 'iqn.2026-11.com.storpool:memory', luns: [{ lun: 0, backend: memoryBackend({ id: 'memory.lun.0', sizeBytes: size }) }] };
const portals = ports.map((port) => ({ host: '127.0.0.1', port }));
const server = new IscsiServer({
  catalog: { targets: new Map([[target.name, target]]), initiators: new Map(), portalGroups: new Map([['pg', { name: 'pg', tag: 1, portals }]]), open: true },
  log: pino({ level: process.env['LOG_LEVEL'] ?? 'warn' }),
});
for (const port of ports) await server.listen({ host: '127.0.0.1', port, portalGroupTag: 1 });
process.stdout.write(`listening on ${ports.join(', ')}\n`);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
