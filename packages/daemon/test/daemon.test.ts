/** stopOnSignals: one close per process however many signals, exit 0 after it, 1 when it fails. */
import { afterEach, describe, expect, it } from 'vitest';
import { stopOnSignals } from '../src/index.js';

const SIGNAL = 'SIGUSR2';
afterEach(() => {
  process.removeAllListeners(SIGNAL);
});

function recorder() {
  const lines: string[] = [];
  const log = { info: (o: object, m: string) => lines.push(`info ${m} ${JSON.stringify(o)}`), error: (_o: object, m: string) => lines.push(`error ${m}`) };
  return { lines, log };
}

describe('stopOnSignals', () => {
  it('closes once on the first signal and exits 0 when closed', async () => {
    const { lines, log } = recorder();
    let closes = 0;
    const exits: number[] = [];
    const life = stopOnSignals({ log, close: async () => void closes++, exit: (c) => exits.push(c), signals: [SIGNAL], message: 'bye' });
    expect(life.stopping).toBe(false);
    process.emit(SIGNAL, SIGNAL);
    process.emit(SIGNAL, SIGNAL);
    expect(life.stopping).toBe(true);
    await new Promise((r) => setImmediate(r));
    expect(closes).toBe(1);
    expect(exits).toEqual([0]);
    expect(lines).toEqual([`info bye {"signal":"${SIGNAL}"}`]);
  });

  it('exits 1 and logs when closing fails', async () => {
    const { lines, log } = recorder();
    const exits: number[] = [];
    const life = stopOnSignals({ log, close: () => Promise.reject(new Error('stuck')), exit: (c) => exits.push(c), signals: [SIGNAL] });
    life.stop('test');
    await new Promise((r) => setImmediate(r));
    expect(exits).toEqual([1]);
    expect(lines).toEqual(['info stopping {"signal":"test"}', 'error error while stopping']);
  });
});
