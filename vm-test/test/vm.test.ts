/** The VM harness itself: result markers, failure reasons, the timeout kill, the initramfs writer. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { elfNeeded, ensureImage, newcArchive, runVm } from '../src/index.js';

describe('vm-test harness', () => {
  it('newcArchive writes aligned newc records with a trailer; elfNeeded reads DT_NEEDED', async () => {
    const a = newcArchive([{ type: 'dir', path: 'd' }, { type: 'file', path: '/d/f', data: Buffer.from('hello') }, { type: 'symlink', path: 'l', target: 'd/f' }]);
    expect(a.length % 4).toBe(0);
    expect(a.toString('latin1', 0, 6)).toBe('070701');
    expect(a.includes('TRAILER!!!')).toBe(true);
    expect(a.includes('d/f\0')).toBe(true);
    expect(elfNeeded(await readFile(process.execPath))).toContain('libc.so.6');
    expect(elfNeeded(Buffer.from('#!/bin/sh\n'.padEnd(100)))).toBeUndefined();
  });

  it('reports a failing script with its reason, and kills a hung guest at the timeout', async () => {
    const image = await ensureImage();
    const failed = await runVm({ image, script: '. /lib/vmtest.sh\nstep one\nfail boom here\n', timeoutMs: 300_000 }); // boot alone takes 95 s on a loaded 2-core machine
    expect(failed.ok).toBe(false);
    expect(failed.reason).toBe('boom here');
    expect(failed.lines).toContain('@@STEP one');
    expect(failed.bootMs).toBeGreaterThan(0);
    console.log(`vm-test harness: ${failed.accel} boot ${failed.bootMs} ms, run ${failed.durationMs} ms`);

    const t0 = Date.now();
    const hung = await runVm({ image, script: 'echo @@STEP hang\nsleep 600\n', timeoutMs: 30_000 });
    expect(hung.ok).toBe(false);
    expect(hung.timedOut).toBe(true);
    expect(hung.reason).toMatch(/^timeout/);
    expect(Date.now() - t0).toBeLessThan(60_000); // killed at the timeout, not when the guest ends
  }, 420_000);
});
