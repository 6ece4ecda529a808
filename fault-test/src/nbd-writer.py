#!/usr/bin/python3
"""The I/O engine of VerifyingWriter (verifying-writer.ts): a real NBD client (libnbd, Debian's
python3-libnbd; run with /usr/bin/python3) that writes self-describing 4 KiB blocks at a queue
depth > 1, remembers every acknowledged write, and reads everything back to check it.

  nbd-writer.py write  --socket PATH --state FILE [--duration-ms MS] [--qd N] [--read-pct P]
  nbd-writer.py verify --socket PATH --state FILE

The state file (JSON) is created by the caller with seed, firstBlock, blocks, nextGen = 1 and is
updated by `write` when it stops (SIGTERM/SIGINT or the duration): per block, the generation of
the last ACKNOWLEDGED write, and the generations of writes whose outcome is unknown (error reply,
lost connection). A block with an unknown outcome is never written again, so its content may be
the last acknowledged generation or one of those, nothing else. Writes to one block never overlap
in time (a block is busy while a write to it is in flight).

Block layout (4096 bytes): b'SPFTWRT1', seed u64, byte offset u64, generation u64 (little
endian), then 4064 bytes of random.Random((seed << 64) | generation).randbytes(4064).
Never-written blocks must read as zeros (the volume is new).

With --read-pct P, P% of the operations are reads of a random block that is not being written;
each answer is checked at once against the same model (a read error or a mismatch is recorded in
readErrors / readMismatches: reads must go on, and be right, during faults too).

stdout: one JSON object per line: progress every 500 ms, and a final `done` / `verify` object.
"""
import argparse
import json
import os
import random
import signal
import struct
import sys
import time

import nbd

BLOCK = 4096
MAGIC = b'SPFTWRT1'
HEADER = struct.Struct('<8sQQQ')
PAYLOAD = BLOCK - HEADER.size
DRAIN_TIMEOUT_S = 180
MAX_REPORTED = 50

stopping = False


def on_signal(_sig, _frame):
    global stopping
    stopping = True


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def block_data(seed, offset, gen):
    return HEADER.pack(MAGIC, seed, offset, gen) + random.Random((seed << 64) | gen).randbytes(PAYLOAD)


def load_state(path):
    with open(path) as f:
        st = json.load(f)
    st.setdefault('acked', {})
    st.setdefault('uncertain', {})
    st.setdefault('ioErrors', [])
    st.setdefault('ioErrorCount', 0)
    st.setdefault('writes', 0)
    st.setdefault('ackedWrites', 0)
    st.setdefault('maxLatencyMs', 0)
    st.setdefault('reads', 0)
    st.setdefault('readErrors', [])
    st.setdefault('readErrorCount', 0)
    st.setdefault('readMismatches', [])
    st.setdefault('readMismatchCount', 0)
    return st


def save_state(path, st):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(st, f)
    os.replace(tmp, path)


def connect(sock):
    h = nbd.NBD()
    h.connect_unix(sock)
    return h


def do_write(args):
    st = load_state(args.state)
    seed, first, nblocks = st['seed'], st['firstBlock'], st['blocks']
    acked, uncertain = st['acked'], st['uncertain']
    rng = random.Random(seed * 1000003 + st['nextGen'])
    h = connect(args.socket)
    if h.get_size() < (first + nblocks) * BLOCK:
        raise SystemExit(f'export is {h.get_size()} bytes, smaller than blocks {first}..{first + nblocks}')
    inflight = {}  # cookie -> (block, gen, t0)
    busy = set()
    deadline = None if args.duration_ms is None else time.monotonic() + args.duration_ms / 1000
    last_progress = 0.0
    dead = False
    drain_deadline = None

    def fail(b, gen, msg):
        uncertain.setdefault(str(b), []).append(gen)
        st['ioErrorCount'] += 1
        if len(st['ioErrors']) < MAX_REPORTED:
            st['ioErrors'].append({'block': b, 'gen': gen, 'error': msg, 't': time.time()})

    def read_problem(b, msg):
        st['readErrorCount'] += 1
        if len(st['readErrors']) < MAX_REPORTED:
            st['readErrors'].append({'block': b, 'error': msg, 't': time.time()})

    def lose(entry, msg):
        b, gen, _t0, _buf = entry
        if gen is None:
            read_problem(b, msg)
        else:
            fail(b, gen, msg)

    def check_read(b, data):
        want = acked.get(str(b), 0)
        maybe = uncertain.get(str(b), [])
        gen, problem = classify(bytes(data), seed, b * BLOCK)
        if problem is None and (gen == want or gen in maybe):
            return
        st['readMismatchCount'] += 1
        if len(st['readMismatches']) < MAX_REPORTED:
            st['readMismatches'].append({'block': b, 'found': gen, 'acknowledged': want, 'unknownOutcome': maybe,
                                         'problem': problem or 'generation not acknowledged', 't': time.time()})

    def progress(kind='progress'):
        emit({'type': kind, 'writes': st['writes'], 'acked': st['ackedWrites'], 'errors': st['ioErrorCount'],
              'reads': st['reads'], 'readErrors': st['readErrorCount'], 'readMismatches': st['readMismatchCount'],
              'inflight': len(inflight), 'maxLatencyMs': st['maxLatencyMs'], 'nextGen': st['nextGen']})

    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            globals()['stopping'] = True
        if stopping and drain_deadline is None:
            drain_deadline = now + DRAIN_TIMEOUT_S
        if stopping and (not inflight or now > drain_deadline):
            break
        if dead:
            break
        while not stopping and len(inflight) < args.qd:
            reading = args.read_pct > 0 and rng.random() * 100 < args.read_pct
            b = None
            for _ in range(16):
                c = first + rng.randrange(nblocks)
                if c not in busy and (reading or str(c) not in uncertain):
                    b = c
                    break
            if b is None:
                break
            if reading:
                # The block is busy while the read is in flight, so no write can race it: the
                # answer must match the model exactly (acknowledged or unknown-outcome).
                buf = nbd.Buffer(BLOCK)
                try:
                    cookie = h.aio_pread(buf, b * BLOCK)
                except nbd.Error as e:
                    read_problem(b, f'submit: {e}')
                    dead = True
                    break
                st['reads'] += 1
                inflight[cookie] = (b, None, time.monotonic(), buf)
                busy.add(b)
                continue
            gen = st['nextGen']
            st['nextGen'] += 1
            buf = nbd.Buffer.from_bytearray(bytearray(block_data(seed, b * BLOCK, gen)))
            try:
                cookie = h.aio_pwrite(buf, b * BLOCK)
            except nbd.Error as e:
                fail(b, gen, f'submit: {e}')
                dead = True
                break
            st['writes'] += 1
            inflight[cookie] = (b, gen, time.monotonic(), buf)
            busy.add(b)
        try:
            h.poll(100)
        except nbd.Error as e:
            dead = True
            for entry in inflight.values():
                lose(entry, f'connection: {e}')
            inflight.clear()
            busy.clear()
            break
        while inflight:
            try:
                cookie = h.aio_peek_command_completed()
            except nbd.Error:
                break
            if cookie <= 0:
                break
            b, gen, t0, buf = inflight.pop(cookie)
            busy.discard(b)
            if gen is None:
                try:
                    h.aio_command_completed(cookie)
                    check_read(b, buf.to_bytearray())
                except nbd.Error as e:
                    read_problem(b, str(e))
                continue
            try:
                h.aio_command_completed(cookie)
                acked[str(b)] = gen
                st['ackedWrites'] += 1
                st['maxLatencyMs'] = max(st['maxLatencyMs'], round((time.monotonic() - t0) * 1000))
            except nbd.Error as e:
                fail(b, gen, str(e))
        if h.aio_is_dead() or h.aio_is_closed():
            dead = True
            for entry in inflight.values():
                lose(entry, 'connection lost')
            inflight.clear()
            busy.clear()
        if time.monotonic() - last_progress >= 0.5:
            last_progress = time.monotonic()
            progress()
    # Whatever is still in flight (drain timed out) has an unknown outcome.
    for entry in inflight.values():
        lose(entry, 'still in flight when the writer stopped')
    if not dead:
        try:
            h.flush()
        except nbd.Error as e:
            st['flushError'] = str(e)
    try:
        h.shutdown()
    except nbd.Error:
        pass
    save_state(args.state, st)
    progress('done')


def classify(data, seed, offset):
    """-> (generation, problem): generation 0 for zeros; problem None when the block is well formed."""
    if data == bytes(BLOCK):
        return 0, None
    magic, s, off, gen = HEADER.unpack_from(data)
    if magic != MAGIC:
        return None, 'not a writer block'
    if s != seed:
        return gen, f'seed {s} (expected {seed})'
    if off != offset:
        return gen, f'written for offset {off} (misplaced)'
    if data != block_data(seed, offset, gen):
        return gen, 'payload corrupted'
    return gen, None


def do_verify(args):
    st = load_state(args.state)
    seed, first, nblocks = st['seed'], st['firstBlock'], st['blocks']
    acked, uncertain = st['acked'], st['uncertain']
    h = connect(args.socket)
    chunk_blocks = 64
    bad = []
    bad_count = 0
    counts = {'zero': 0, 'acked': 0, 'unacked': 0}
    b = first
    while b < first + nblocks:
        n = min(chunk_blocks, first + nblocks - b)
        data = h.pread(n * BLOCK, b * BLOCK)
        for i in range(n):
            blk = b + i
            want = acked.get(str(blk), 0)
            maybe = uncertain.get(str(blk), [])
            gen, problem = classify(data[i * BLOCK:(i + 1) * BLOCK], seed, blk * BLOCK)
            if problem is None and gen == want:
                counts['zero' if gen == 0 else 'acked'] += 1
                continue
            if problem is None and gen in maybe:
                counts['unacked'] += 1
                continue
            if problem is None:
                if want != 0 and gen == 0:
                    problem = f'reads zeros: acknowledged generation {want} lost'
                elif gen < want:
                    problem = f'stale generation {gen}: acknowledged generation {want} lost'
                else:
                    problem = f'generation {gen} was never written here unacknowledged (acknowledged {want}, unknown-outcome {maybe})'
            bad_count += 1
            if len(bad) < MAX_REPORTED:
                bad.append({'block': blk, 'offset': blk * BLOCK, 'found': gen, 'acknowledged': want, 'unknownOutcome': maybe, 'problem': problem})
        b += n
    try:
        h.shutdown()
    except nbd.Error:
        pass
    emit({'type': 'verify', 'seed': seed, 'checked': nblocks, 'badCount': bad_count, 'bad': bad, 'counts': counts})


def main():
    p = argparse.ArgumentParser()
    p.add_argument('mode', choices=['write', 'verify'])
    p.add_argument('--socket', required=True)
    p.add_argument('--state', required=True)
    p.add_argument('--duration-ms', type=int)
    p.add_argument('--qd', type=int, default=16)
    p.add_argument('--read-pct', type=int, default=0)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.mode == 'write':
        do_write(args)
    else:
        do_verify(args)


if __name__ == '__main__':
    main()
