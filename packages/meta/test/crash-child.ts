/**
 * Child process for the embedded crash test: opens the store in argv[2], puts one key attached
 * to a lease, then puts keys in a loop and prints `ack N` after each put resolved, until killed.
 */
import { EmbeddedMetaStore } from '../src/index.js';

const dir = process.argv[2];
if (dir === undefined) throw new Error('usage: crash-child.ts DIR');
const store = await EmbeddedMetaStore.open(dir);
const lease = await store.grant(60_000);
await store.put('crash/leased', 'held by a process that will die', { lease: lease.id });
process.stdout.write('ready\n');
for (let i = 0; ; i++) {
  // A few puts in flight at once, so that kills land mid-commit too.
  await Promise.all([0, 1, 2, 3].map(async (j) => {
    const n = i * 4 + j;
    await store.put(`crash/k${String(n).padStart(6, '0')}`, `v${n}`);
    process.stdout.write(`ack ${n}\n`);
  }));
}
