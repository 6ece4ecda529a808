/**
 * Child process of store-crash.test.ts (not a test): applies crashOps(seed) with 16 ops in flight
 * and prints `A <seq>` for every acknowledged op, until it is SIGKILLed.
 * Usage: node --import tsx packages/server/test/store-crash-child.ts DISK SEED
 */
import { DiskStore } from '../src/store/index.js';
import { blocksData, crashOps } from './store-helpers.js';

const [disk, seedText] = process.argv.slice(2);
if (disk === undefined || seedText === undefined) throw new Error('usage: store-crash-child.ts DISK SEED');
const ops = crashOps(Number(seedText), 1_000_000);
const store = await DiskStore.open(disk);
const IN_FLIGHT = 16;
let next = 0;

function issue(): void {
  const op = ops[next++];
  if (op === undefined) return;
  const key = { volumeId: 1, objectIndex: op.objectIndex };
  const done =
    op.kind === 'trim'
      ? store.trim(key, op.firstBlock, op.blockCount, op.seq)
      : (() => {
          const { data, crcs } = blocksData(Array.from({ length: op.blockCount }, () => op.seq), op.firstBlock);
          return store.write(key, op.firstBlock, data, crcs, op.seq);
        })();
  done.then(
    () => {
      process.stdout.write(`A ${op.seq}\n`);
      issue();
    },
    (err: unknown) => {
      process.stderr.write(`op ${op.seq} failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
}

process.stdout.write('READY\n');
for (let i = 0; i < IN_FLIGHT; i++) issue();
