/**
 * ApiReservationStore's copy for I/O checks: commands run on a copy at most PR_REFRESH_MS old
 * without waiting for the API, the refresh runs in the background before that age, and PR
 * commands (fresh) always wait for a list requested after they were issued. A hand-driven clock
 * and API, so that a loaded machine cannot change the outcome.
 */
import type { StorpoolApi } from '@storpool/api-client';
import { describe, expect, it } from 'vitest';
import { ApiReservationStore, PR_FENCE_MS, PR_REFRESH_MS } from '../src/service.js';

/** A KV API whose KV/List calls wait until `answer()`; the bucket is read when the call is made. */
function fakeApi(): { api: StorpoolApi; lists: () => number; settle: () => Promise<void>; answer: () => Promise<void>; set: (key: string, generation: number) => void } {
  const waiting: (() => void)[] = [];
  let lists = 0;
  const pairs: Record<string, string> = {};
  const api = {
    async request(_method: string, call: string): Promise<{ data: unknown }> {
      if (call === 'KV/Create') return { data: {} };
      lists++;
      const snapshot = { version: 1, pairs: { ...pairs } };
      await new Promise<void>((r) => waiting.push(r));
      return { data: snapshot };
    },
  } as unknown as StorpoolApi;
  const settle = async (): Promise<void> => { for (let i = 0; i < 20; i++) await Promise.resolve(); };
  return {
    api,
    lists: () => lists,
    settle,
    answer: async () => {
      await settle();
      for (const r of waiting.splice(0)) r();
      await settle();
    },
    set: (key, generation) => { pairs[key] = JSON.stringify({ generation, registrations: [] }); },
  };
}

describe('ApiReservationStore copy for I/O checks', () => {
  it('serves a young copy without waiting, refreshes it in the background, waits when it is too old', async () => {
    let now = 1_000;
    const f = fakeApi();
    const store = new ApiReservationStore(f.api, { now: () => now });
    expect(store.cached('lun')).toBeUndefined(); // nothing yet: the command must wait
    const first = store.get('lun', false);
    await f.answer();
    expect((await first).generation).toBe(0);
    expect(f.lists()).toBe(1);
    f.set('lun', 7);
    now += PR_REFRESH_MS / 2;
    expect(store.cached('lun')?.generation).toBe(0); // young: answered, no API call
    expect(f.lists()).toBe(1);
    now += 1;
    expect(store.cached('lun')?.generation).toBe(0); // half as old as allowed: answered now, refreshed behind
    await f.answer();
    expect(f.lists()).toBe(2);
    expect(store.cached('lun')?.generation).toBe(7);
    now += PR_REFRESH_MS + 1;
    expect(store.cached('lun')).toBeUndefined(); // too old to fence other portals' reservations
    const late = store.get('lun', false);
    await f.answer();
    expect((await late).generation).toBe(7);
    expect(f.lists()).toBe(3);
  });

  it('a fresh read waits for a list requested after it, not one already on its way', async () => {
    const f = fakeApi();
    const store = new ApiReservationStore(f.api, { now: () => 1_000 });
    const first = store.get('lun', false);
    await f.settle(); // list 1 is sent before the change and not answered yet
    expect(f.lists()).toBe(1);
    f.set('lun', 3);
    const fresh = store.get('lun', true);
    await f.answer(); // list 1, then the fresh read's own list 2
    await f.answer();
    expect((await first).generation).toBe(0);
    expect((await fresh).generation).toBe(3);
    expect(f.lists()).toBe(2);
  });

  it("a change other nexuses must obey is answered only after every portal's copy has expired; taking a unit attention is not", async () => {
    let version = 1;
    const pairs: Record<string, string> = {};
    const api = {
      async request(_method: string, call: string, _params: unknown, body?: { set: Record<string, string> }): Promise<{ data: unknown }> {
        if (call === 'KV/List') return { data: { version, pairs: { ...pairs } } };
        if (call === 'KV/Set') {
          Object.assign(pairs, body!.set);
          version++;
        }
        return { data: {} };
      },
    } as unknown as StorpoolApi;
    const sleeps: number[] = [];
    const store = new ApiReservationStore(api, { sleep: async (ms) => { sleeps.push(ms); } });
    await store.update('lun', (s) => ({ state: { ...s, generation: 1, registrations: [{ nexus: 'a', key: '01' }], ua: { b: [0x2a] } }, result: undefined }));
    expect(sleeps).toEqual([PR_FENCE_MS]);
    expect(PR_FENCE_MS).toBeGreaterThan(PR_REFRESH_MS);
    await store.update('lun', (s) => ({ state: { ...s, ua: {} }, result: undefined }));
    expect(sleeps).toEqual([PR_FENCE_MS]);
    await store.update('lun', () => ({ state: undefined, result: undefined }));
    expect(sleeps).toEqual([PR_FENCE_MS]);
    expect(JSON.parse(pairs['lun']!).registrations).toEqual([{ nexus: 'a', key: '01' }]);
  });
});
