import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BLOCK_BYTES } from '@storpool/protocol';
import { DiskStore, formatDisk } from '../src/store/index.js';
import { CLUSTER_ID, CRASH_BLOCKS, CRASH_OBJECTS, crashOps, makeTempDir, removeDir, type CrashOp } from './store-helpers.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CHILD = 'packages/server/test/store-crash-child.ts';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

/** Runs the child until it acknowledged `acks` ops, SIGKILLs it; returns the acknowledged seqs. */
function runAndKill(disk: string, seed: number, acks: number): Promise<Set<number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, disk, String(seed)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    const acked = new Set<number>();
    let buf = '';
    let stderr = '';
    let killed = false;
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('A ')) acked.add(Number(l.slice(2)));
      if (!killed && acked.size >= acks) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`child exited with ${code}: ${stderr}`));
    });
  });
}

/** Tag per (object, block) after applying ops[0..k) to an empty store; 0 = hole. */
function applyOp(state: Int32Array, versions: number[], op: CrashOp): void {
  for (let b = op.firstBlock; b < op.firstBlock + op.blockCount; b++) state[op.objectIndex * CRASH_BLOCKS + b] = op.kind === 'trim' ? 0 : op.seq;
  versions[op.objectIndex] = Math.max(versions[op.objectIndex] as number, op.seq);
}

describe('crash safety', () => {
  const seed = process.env.SEED !== undefined ? Number(process.env.SEED) : Date.now() % 1_000_000;
  it(`every acknowledged write survives SIGKILL, no torn blocks, no leaks (SEED=${seed})`, async () => {
    try {
      dir = await makeTempDir('crash');
      const disk = path.join(dir, 'disk.img');
      await formatDisk(disk, { sizeBytes: 64 * 1024 * 1024, clusterId: CLUSTER_ID, diskId: 1 });
      let base: Snapshot | null = null;
      for (let run = 0; run < 2; run++) {
        // The second run continues on the recovered disk with another op stream.
        const acked = await runAndKill(disk, seed + run, 150 + 100 * run);
        expect(acked.size).toBeGreaterThan(0);
        base = await verify(disk, seed + run, Math.max(...acked), base);
      }
    } catch (err) {
      console.error(`store crash test failed with SEED=${seed}`);
      throw err;
    }
  });
});

/** What a run left on disk: the next run starts from it. */
interface Snapshot {
  state: Int32Array;
  versions: number[];
}

async function verify(disk: string, seed: number, maxAcked: number, base: Snapshot | null): Promise<Snapshot> {
  const store = await DiskStore.open(disk);
  try {
    const onDisk = new Int32Array(CRASH_OBJECTS * CRASH_BLOCKS);
    const diskVersions: number[] = [];
    let allocated = 0;
    for (let o = 0; o < CRASH_OBJECTS; o++) {
      const res = await store.read({ volumeId: 1, objectIndex: o }, 0, CRASH_BLOCKS);
      expect(res.bad, 'no CRC errors after the crash').toEqual([]);
      diskVersions.push(res.version);
      for (let b = 0; b < CRASH_BLOCKS; b++) {
        const blk = res.data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
        if (res.allocated[b] === 0) continue;
        allocated++;
        const tag = blk.readUInt32LE(0);
        expect(blk.readUInt32LE(4), 'block carries its own index').toBe(b);
        for (let i = 8; i < BLOCK_BYTES; i += 4) expect(blk.readUInt32LE(i) === tag, `block ${o}/${b} is not mixed`).toBe(true);
        onDisk[o * CRASH_BLOCKS + b] = tag;
      }
    }
    // The disk must equal the state after some prefix of the op stream that includes every ack.
    const state = base === null ? new Int32Array(onDisk.length) : Int32Array.from(base.state);
    const versions = base === null ? new Array<number>(CRASH_OBJECTS).fill(0) : [...base.versions];
    const ops = crashOps(seed, maxAcked + 10_000);
    let matchedAt = -1;
    for (let k = 0; k <= ops.length; k++) {
      if (k >= maxAcked && state.every((v, i) => v === onDisk[i]) && versions.every((v, i) => v === diskVersions[i])) {
        matchedAt = k;
        break;
      }
      if (k < ops.length) applyOp(state, versions, ops[k] as CrashOp);
    }
    expect(matchedAt, `disk state is the state after a prefix of ops including all ${maxAcked} acked`).toBeGreaterThanOrEqual(maxAcked);
    const st = store.stats();
    expect(st.blocksUsed, 'no leaked blocks').toBe(allocated);
    expect(store.listObjects({ limit: 10 }).reduce((s, o) => s + o.allocatedBlocks, 0)).toBe(allocated);
    return { state: onDisk, versions: diskVersions };
  } finally {
    await store.close();
  }
}
