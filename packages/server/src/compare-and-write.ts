/**
 * Pieces of COMPARE_AND_WRITE at the shard primary that hold no I/O: the byte comparison and the
 * memory of attempts this primary applied (so a client's retry of one is not mistaken for a
 * miscompare). The op itself runs in ShardService, under the object's range lock.
 */
import assert from 'node:assert/strict';
import type { ObjectKey } from './store/index.js';

/** Byte offset of the first difference of two equally long ranges, or -1 when they are equal. */
export function firstDifference(current: Uint8Array, expected: Uint8Array): number {
  assert.equal(current.length, expected.length);
  if (Buffer.compare(current, expected) === 0) return -1;
  for (let i = 0; i < current.length; i++) if (current[i] !== expected[i]) return i;
  assert.fail('Buffer.compare found a difference the byte loop did not');
}

/**
 * Attempts remembered per primary. A client retries within its retry deadline (60 s by default);
 * at the iSCSI target's rate of compare-and-writes (VMware ATS heartbeats: a few per second per
 * host) 16384 attempts cover that many times over, in about 1 MiB.
 */
export const CAW_ATTEMPTS_REMEMBERED_MAX = 16384;

/**
 * Tokens of the COMPARE_AND_WRITE attempts whose data this primary wrote to its own store. A
 * client sends the same token with every retry of one call: when the first attempt wrote but its
 * answer was lost (a replica failed, the connection dropped, the reply timed out), the retry
 * finds the range holding its own data and would report a miscompare for a write that happened.
 * The primary answers "written" instead. Bounded (oldest forgotten first); lost with a primary
 * change, after which a retry compares afresh.
 */
export class CawAttempts {
  readonly #written = new Set<string>();

  static #id(key: ObjectKey, token: number): string {
    return `${key.volumeId}/${key.objectIndex}/${token}`;
  }

  recordWritten(key: ObjectKey, token: number): void {
    assert(token > 0, 'token 0 means the client sent none');
    const id = CawAttempts.#id(key, token);
    this.#written.delete(id);
    this.#written.add(id);
    if (this.#written.size > CAW_ATTEMPTS_REMEMBERED_MAX) {
      const oldest = this.#written.values().next().value;
      assert(oldest !== undefined);
      this.#written.delete(oldest);
    }
    assert(this.#written.size <= CAW_ATTEMPTS_REMEMBERED_MAX);
  }

  wasWritten(key: ObjectKey, token: number): boolean {
    return token > 0 && this.#written.has(CawAttempts.#id(key, token));
  }

  get size(): number {
    return this.#written.size;
  }
}
