import type { Socket } from 'node:net';

/** Buffers at least this big are written as they are; smaller ones are copied together. */
const COPY_BYTES_MAX = 16 * 1024;

/**
 * Writes to a socket, batched until the event loop's check phase: everything written by the
 * callbacks of one poll phase — the replies that one storage reply, several sockets' reads and the
 * threadpool's completions made ready — leaves in one write(2) instead of one each. Flushing on
 * process.nextTick instead flushes after every callback: a threadpool completion or a reply
 * resolved alone costs a system call of its own, and on loopback each write(2) also runs the
 * receiver's TCP input path in the sender's context. Small buffers are copied into one (a 4 KiB
 * copy costs far less than the stream's per-chunk bookkeeping of a corked writev). Backpressure
 * stays the socket's: what waits here is at most one turn of the loop's writes.
 */
export class BatchedWriter {
  readonly #socket: Socket;
  #queued: Uint8Array[] = [];
  readonly #flush = (): void => this.#writeQueued();

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  /** Queues the buffers (not copied yet: do not reuse them). */
  write(buffers: readonly Uint8Array[]): void {
    for (const b of buffers) {
      if (b.length === 0) continue;
      if (this.#queued.length === 0) setImmediate(this.#flush);
      this.#queued.push(b);
    }
  }

  /** Writes what is queued, then half-closes the socket (queued bytes go out before the FIN). */
  end(): void {
    this.#writeQueued();
    this.#socket.end();
  }

  #writeQueued(): void {
    const queued = this.#queued;
    this.#queued = [];
    if (queued.length === 0 || this.#socket.destroyed) return;
    if (queued.length === 1) {
      this.#socket.write(queued[0] as Uint8Array);
      return;
    }
    // Runs of small buffers become one; big ones go as they are, in one corked writev.
    const out: Uint8Array[] = [];
    let run: Uint8Array[] = [];
    let runBytes = 0;
    const endRun = (): void => {
      if (run.length === 1) out.push(run[0] as Uint8Array);
      else if (run.length > 1) out.push(Buffer.concat(run, runBytes));
      run = [];
      runBytes = 0;
    };
    for (const b of queued) {
      if (b.length >= COPY_BYTES_MAX) {
        endRun();
        out.push(b);
      } else {
        run.push(b);
        runBytes += b.length;
      }
    }
    endRun();
    if (out.length === 1) {
      this.#socket.write(out[0] as Uint8Array);
      return;
    }
    this.#socket.cork();
    for (const b of out) this.#socket.write(b);
    this.#socket.uncork();
  }
}
