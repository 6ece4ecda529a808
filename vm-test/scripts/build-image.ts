/**
 * Builds (or finds in the cache) the guest image and boots it once:
 *   npx tsx vm-test/scripts/build-image.ts [--boot] [--accel tcg|kvm]
 */
import { ensureImage, runVm, type Accel } from '../src/index.js';

const args = process.argv.slice(2);
const t0 = Date.now();
const image = await ensureImage({ log: (l) => console.log(`[image] ${l}`) });
console.log(`image: ${image.dir} (kernel ${image.kernelVersion}) in ${Date.now() - t0} ms`);
if (args.includes('--boot')) {
  const i = args.indexOf('--accel');
  const accel = i >= 0 ? (args[i + 1] as Accel) : undefined;
  const r = await runVm({ image, timeoutMs: 120_000, script: '. /lib/vmtest.sh\nuname -a\nlsmod\nip addr\n', onLine: (l) => console.log(`  | ${l}`), ...(accel ? { accel } : {}) });
  console.log(`boot: ok=${r.ok} accel=${r.accel} booted after ${r.bootMs} ms, total ${r.durationMs} ms${r.reason ? `, reason: ${r.reason}` : ''}`);
  process.exitCode = r.ok ? 0 : 1;
}
