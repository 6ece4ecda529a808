/**
 * A guest that is a storpool client host itself: the host's own `node` binary and this project are
 * shared into the guest over 9p (read-only), the guest runs the block service (storpool-block)
 * against the host's management API and storage servers over slirp (host = 10.0.2.2), and
 * `storpool attach volume NAME here` in the guest makes /dev/storpool/NAME with the kernel nbd
 * driver; the guest makes ext4 on it, writes, fsck's, remounts and verifies. The host then reads
 * the volume through the API-created volume's data (client library) to compare.
 * Under TCG every node start in the guest costs tens of seconds: one block service, one CLI call.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { defaultCacheDir, ensureImage, runVm, type GuestImage } from '../src/index.js';
import { DMESG_CHECK, MiB, StepClock, TREE_FILES, fsCycleScript, makeTree, marker, type FsCycle } from './guest-fs.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const VERBOSE = process.env.VM_TEST_VERBOSE === '1';
const GUEST_HOST = '10.0.2.2';

let tmp: string;
let cluster: LocalCluster | undefined;
let api: StorpoolApi;
let image: GuestImage;
let mapTimer: NodeJS.Timeout | undefined;

/** The host's shard map with the servers' loopback addresses as the guest reaches them (slirp). */
async function copyMapForGuest(): Promise<void> {
  const text = await readFile(cluster!.mapFile, 'utf8').catch(() => undefined);
  if (text === undefined) return;
  const out = text.replaceAll('"127.0.0.1"', `"${GUEST_HOST}"`);
  const path = join(tmp, 'share', 'shardmap.json');
  if ((await readFile(path, 'utf8').catch(() => '')) !== out) {
    await writeFile(`${path}.tmp`, out);
    await import('node:fs/promises').then((fs) => fs.rename(`${path}.tmp`, path));
  }
}

beforeAll(async () => {
  image = await ensureImage({ log: (l) => console.log(`[vm-test image] ${l}`) });
  tmp = await mkdtemp(join(tmpdir(), 'storpool-vm-block-'));
  await mkdir(join(tmp, 'share'));
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn' });
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  await copyMapForGuest();
  // keep the guest's copy current if mgmt republishes the map (the share is read with cache=none)
  mapTimer = setInterval(() => { void copyMapForGuest(); }, 500);
  const conf = (await readFile(cluster.confPath, 'utf8')).replace(/^SP_API_HTTP_HOST=.*$/m, `SP_API_HTTP_HOST=${GUEST_HOST}`);
  await writeFile(join(tmp, 'share', 'storpool.conf'), conf);
}, 180_000);

afterAll(async () => {
  if (mapTimer !== undefined) clearInterval(mapTimer);
  await cluster?.stop();
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
}, 60_000);

describe('a guest running the block service itself', () => {
  it('storpool-block in the guest + `storpool attach volume here`: /dev/storpool/NAME over kernel nbd, ext4 made, fsck clean, checksums verified', async () => {
    await api.request('POST', 'VolumeCreate', [], { name: 'gvol', size: 256 * MiB, template: 'default' });
    const cycle: FsCycle = { dev: '/dev/storpool/gvol', fs: 'ext4', label: 'gvol', copies: 1, bigMiB: 8 };
    const tsxCache = join(defaultCacheDir(), 'guest-tsx');
    await mkdir(tsxCache, { recursive: true });
    const node = '/opt/node/bin/node';
    const script = `. /lib/vmtest.sh
set -o pipefail
share nodebin /opt/node/bin
share project ${REPO}
share conf /etc/storpool none
share tsx /var/cache/tsx
export PATH=/opt/node/bin:$PATH STORPOOL_CONF=/etc/storpool/storpool.conf TMPDIR=/var/cache/tsx
cd ${REPO}
step block-start
${node} packages/block/bin/storpool-block.js --map-file /etc/storpool/shardmap.json --nbd off --attach-method nbd --runtime-dir /run/storpool --log-level info > /tmp/block.log 2>&1 &
for i in $(seq 1 600); do
  grep -q 'storpool-block running' /tmp/block.log && break
  kill -0 $! 2>/dev/null || { cat /tmp/block.log; fail "storpool-block exited"; }
  sleep 1
done
grep -q 'storpool-block running' /tmp/block.log || { cat /tmp/block.log; fail "storpool-block did not start"; }
grep -o '"method":"[a-z]*"' /tmp/block.log | head -1
step attach
${node} packages/cli/bin/storpool.js attach volume gvol here timeout 600 || { tail -20 /tmp/block.log; fail "storpool attach failed"; }
[ -b /dev/storpool/gvol ] || { ls -l /dev/storpool; tail -20 /tmp/block.log; fail "no /dev/storpool/gvol"; }
echo "@@DEVICE $(readlink /dev/storpool/gvol)"
${fsCycleScript(cycle)}
${DMESG_CHECK}
`;
    const clock = new StepClock();
    const result = await runVm({
      image, script, files: makeTree().files, timeoutMs: 900_000, memoryMb: 1024,
      shares: [
        { path: dirname(process.execPath), tag: 'nodebin' },
        { path: REPO, tag: 'project' },
        { path: join(tmp, 'share'), tag: 'conf' },
        // tsx's transpile cache, kept between runs: the guest's esbuild under TCG is slow
        { path: tsxCache, tag: 'tsx', writable: true },
      ],
      onLine: (line) => {
        clock.onLine(line);
        if (VERBOSE) console.log(`  [guest] ${line}`);
      },
    });
    console.log(`vm-test guest block service: ok=${result.ok} accel=${result.accel} booted +${result.bootMs} ms; ${clock.summary()}`);
    if (!result.ok) console.log(result.log);
    expect(result.reason).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(marker(result, 'DEVICE')).toMatch(/^\/dev\/nbd\d+$/);
    expect(Number(marker(result, `FILES-${cycle.label}`))).toBe(cycle.copies * TREE_FILES + 1);
    // mgmt recorded the attachment to client 1 (the guest)
    const attachments = await api.attachmentsList();
    expect(attachments.some((a) => a.volume === 'gvol' && a.client === 1)).toBe(true);
    expect(existsSync(join(tmp, 'share', 'shardmap.json'))).toBe(true);
    const devsum = marker(result, `DEVSUM-${cycle.label}`);
    expect(devsum).toMatch(/^[0-9a-f]{32}$/);
  }, 960_000);
});
