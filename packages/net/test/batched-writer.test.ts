import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BatchedWriter } from '../src/index.js';

/** A real loopback connection: the writer's socket and everything the peer receives until FIN. */
async function pair(): Promise<{ socket: Socket; received: Promise<Buffer>; server: Server }> {
  let resolveReceived!: (b: Buffer) => void;
  const received = new Promise<Buffer>((resolve) => {
    resolveReceived = resolve;
  });
  const server = createServer((peer) => {
    const chunks: Buffer[] = [];
    peer.on('data', (c: Buffer) => chunks.push(c));
    peer.on('end', () => {
      resolveReceived(Buffer.concat(chunks));
      peer.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const socket = connect(address.port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  return { socket, received, server };
}

let open: { socket: Socket; server: Server } | undefined;
afterEach(async () => {
  open?.socket.destroy();
  await new Promise<void>((resolve) => (open === undefined ? resolve() : open.server.close(() => resolve())));
  open = undefined;
});

describe('BatchedWriter', () => {
  it('sends one turn of writes with one socket write, small buffers joined, in order; end() flushes before the FIN', async () => {
    const p = await pair();
    open = p;
    const writes = vi.spyOn(p.socket, 'write');
    const out = new BatchedWriter(p.socket);
    const big = Buffer.alloc(64 * 1024, 7);
    out.write([Buffer.from('head-1|'), Buffer.alloc(0), Buffer.from('body-1|')]);
    out.write([Buffer.from('head-2|')]);
    expect(writes).not.toHaveBeenCalled(); // nothing leaves before the turn ends
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes).toHaveBeenCalledTimes(1);
    // Next turn: a big buffer goes as it is, between the joined small runs around it (one corked writev).
    out.write([Buffer.from('a|'), big, Buffer.from('b|')]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes.mock.calls.slice(1).map(([b]) => (b as Buffer).length)).toEqual([2, big.length, 2]);
    out.write([Buffer.from('last')]);
    out.end();
    const got = await p.received;
    expect(got.equals(Buffer.concat([Buffer.from('head-1|body-1|head-2|a|'), big, Buffer.from('b|last')]))).toBe(true);
  });
});
