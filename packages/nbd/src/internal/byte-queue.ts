import assert from 'node:assert/strict';

/**
 * Received bytes not yet decoded: a list of chunks, joined only when a frame straddles them.
 * Frames are cut from it with peek/consume, so a frame split at any point decodes the same.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first n bytes as one contiguous buffer, not consumed. */
  peek(n: number): Buffer {
    assert(n >= 0 && n <= this.#length);
    const first = this.#chunks[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length >= n) return first.subarray(0, n);
    let joinedLength = 0;
    let count = 0;
    while (joinedLength < n) joinedLength += this.#chunks[count++]!.length;
    const joined = Buffer.concat(this.#chunks.slice(0, count), joinedLength);
    this.#chunks.splice(0, count, joined);
    return joined.subarray(0, n);
  }

  consume(n: number): void {
    assert(n >= 0 && n <= this.#length);
    this.#length -= n;
    while (n > 0) {
      const first = this.#chunks[0]!;
      if (first.length <= n) {
        this.#chunks.shift();
        n -= first.length;
      } else {
        this.#chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  take(n: number): Buffer {
    const b = this.peek(n);
    this.consume(n);
    return b;
  }

  clear(): void {
    this.#chunks = [];
    this.#length = 0;
  }
}
