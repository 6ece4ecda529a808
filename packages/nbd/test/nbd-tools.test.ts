/**
 * The NBD server against real clients (libnbd's nbdinfo/nbdcopy/nbdsh, qemu-img, qemu-io, fio)
 * and real storage servers (3 disks, replication 3). Debian packages: libnbd-bin, python3-libnbd,
 * qemu-utils, fio.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type Options } from 'execa';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '@storpool/testkit';
import type { StorpoolClient } from '@storpool/client';
import { NbdServer, volumeExport } from '../src/index.js';

const MiB = 1024 * 1024;
const COPY_BYTES = 128 * MiB;
/** nbdsh runs `python3 -mnbd`: the Debian python that has the nbd module must come first. */
const DEBIAN_PATH = `/usr/bin:${process.env.PATH ?? ''}`;

let cluster: LocalCluster;
let client: StorpoolClient;
let server: NbdServer;
let dir: string;
let port: number;
let socketPath: string;
let nextVolumeId = 500;

const uri = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;
const unixUri = (name: string): string => `nbd+unix:///${name}?socket=${socketPath}`;

function run(file: string, args: string[], options: Options = {}): Promise<{ stdout: string; stderr: string }> {
  return execa(file, args, { timeout: 120_000, env: { PATH: DEBIAN_PATH }, ...options }) as unknown as Promise<{ stdout: string; stderr: string }>;
}

function addVolume(name: string, sizeBytes: number, readOnly = false): void {
  const volume = client.volume({ volumeId: nextVolumeId++, sizeBytes, group: 1 });
  server.addExport(volumeExport(volume, { name, description: `test volume ${name}`, readOnly }));
}

/** Random data with a 16 MiB run of zeros in the middle (exercises zero detection). */
async function randomFile(path: string, bytes: number): Promise<Buffer> {
  const data = randomBytes(bytes);
  data.fill(0, bytes / 2, bytes / 2 + 16 * MiB);
  await writeFile(path, data);
  return data;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storpool-nbd-'));
  cluster = await LocalCluster.start({ disks: 3, replications: [3], diskSizeBytes: 2 * 1024 ** 3, logLevel: 'warn' });
  client = await cluster.client();
  server = new NbdServer({ log: pino({ level: process.env.NBD_TEST_LOG ?? 'silent' }) });
  port = (await server.listenTcp({ port: 0 })).port;
  socketPath = join(dir, 'nbd.sock');
  await server.listenUnix(socketPath);
  addVolume('copy', COPY_BYTES);
  addVolume('qemu', 64 * MiB);
  addVolume('snap', 16 * MiB, true);
  addVolume('fio', 64 * MiB);
  addVolume('kill', COPY_BYTES);
}, 120_000);

afterAll(async () => {
  await server?.close();
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe('NBD server with real clients over real storage servers', () => {
  it('nbdinfo --list and --json show exports, flags, block sizes and base:allocation (tcp and unix socket)', async () => {
    const list = await run('nbdinfo', ['--list', '--json', uri('')]);
    const listed = JSON.parse(list.stdout) as { exports: { 'export-name': string; description: string; is_read_only: boolean }[] };
    expect(listed.exports.map((e) => e['export-name']).sort()).toEqual(['copy', 'fio', 'kill', 'qemu', 'snap']);
    expect(listed.exports.find((e) => e['export-name'] === 'snap')?.is_read_only).toBe(true);
    const info = JSON.parse((await run('nbdinfo', ['--json', unixUri('qemu')])).stdout) as { protocol: string; structured: boolean; exports: Record<string, unknown>[] };
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.structured).toBe(true);
    expect(info.exports[0]).toMatchObject({
      'export-name': 'qemu',
      description: 'test volume qemu',
      'export-size': 64 * MiB,
      contexts: ['base:allocation'],
      is_read_only: false,
      can_multi_conn: true,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_df: true,
      can_cache: true,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
  });

  it(`nbdcopy ${COPY_BYTES / MiB} MiB of random data in and out with --connections=4, byte for byte; --map shows the zeros`, async () => {
    const source = join(dir, 'copy-in.img');
    const target = join(dir, 'copy-out.img');
    const data = await randomFile(source, COPY_BYTES);
    const t0 = Date.now();
    await run('nbdcopy', ['--connections=4', '--requests=16', source, uri('copy')]);
    const t1 = Date.now();
    await run('nbdcopy', ['--connections=4', '--requests=16', unixUri('copy'), target]);
    const t2 = Date.now();
    console.log(`nbdcopy in ${t1 - t0} ms, out ${t2 - t1} ms for ${COPY_BYTES / MiB} MiB`);
    expect((await readFile(target)).equals(data)).toBe(true);
    // nbdcopy zeroes the zero run instead of writing it: --map reports it as hole,zero.
    const map = JSON.parse((await run('nbdinfo', ['--map', '--json', uri('copy')])).stdout) as { offset: number; length: number; type: number }[];
    const zeroRun = map.find((e) => e.offset <= COPY_BYTES / 2 && e.offset + e.length >= COPY_BYTES / 2 + 16 * MiB);
    expect(zeroRun?.type).toBe(3);
    expect(map.filter((e) => e.type === 0).reduce((a, e) => a + e.length, 0)).toBe(COPY_BYTES - 16 * MiB);
    await rm(source);
    await rm(target);
  }, 120_000);

  it('qemu-io write/read with patterns, discard, write-zeroes; qemu-img map reports holes; convert and compare', async () => {
    const q = (...cmds: string[]): Promise<{ stdout: string }> => run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri('qemu')]);
    await q('write -P 0xa5 0 4M', 'write -P 0x5a 4M 1M', 'write -P 0x11 7000 3000');
    const read = await q('read -P 0xa5 0 7000', 'read -P 0x11 7000 3000', 'read -P 0xa5 10000 4184304', 'read -P 0x5a 4M 1M');
    expect(read.stdout).not.toMatch(/Pattern verification failed|error/i);
    // qemu sends WRITE_ZEROES with NO_HOLE unless unmapping is allowed (-u): real zeros, still data.
    await q('discard 1M 1M', 'write -z 3M 1M', 'write -z -u 4M 1M');
    const after = await q('read -P 0 1M 1M', 'read -P 0 3M 1M', 'read -P 0xa5 2M 1M', 'read -P 0 4M 1M', 'read -P 0 5M 1M');
    expect(after.stdout).not.toMatch(/Pattern verification failed|error/i);
    const map = JSON.parse((await run('qemu-img', ['map', '-f', 'raw', '--output=json', uri('qemu')])).stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
    const at = (offset: number): { data: boolean; zero: boolean } | undefined => map.find((m) => m.start <= offset && offset < m.start + m.length);
    expect(at(0)).toMatchObject({ data: true, zero: false });
    expect(at(1 * MiB)).toMatchObject({ data: false, zero: true });
    expect(at(2 * MiB)).toMatchObject({ data: true });
    expect(at(3 * MiB)).toMatchObject({ data: true });
    expect(at(4 * MiB)).toMatchObject({ data: false, zero: true });
    expect(at(6 * MiB)).toMatchObject({ data: false, zero: true });

    // convert a sparse qcow2 image in, compare it, convert it back out.
    const image = join(dir, 'src.qcow2');
    await run('qemu-img', ['create', '-f', 'qcow2', image, '64M']);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 8M 2M', '-c', 'write -P 0x78 40M 512k', image]);
    await run('qemu-img', ['convert', '-n', '-f', 'qcow2', '-O', 'raw', image, uri('qemu')]);
    await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, uri('qemu')]);
    const back = join(dir, 'back.raw');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('qemu'), back]);
    await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, back]);
    const map2 = JSON.parse((await run('qemu-img', ['map', '-f', 'raw', '--output=json', uri('qemu')])).stdout) as { start: number; length: number; data: boolean }[];
    expect(map2.filter((m) => m.data).reduce((a, m) => a + m.length, 0)).toBe(2 * MiB + 512 * 1024);
  }, 120_000);

  it('nbdsh: option negotiation, out-of-range and read-only errors, block status', async () => {
    const script = `
import nbd, errno, json
out = {}
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(uri(''))})
names = []
h.opt_list(lambda name, desc: names.append(name))
out['list'] = sorted(names)
ctx = []
h.set_export_name('qemu')
h.opt_list_meta_context(lambda name: ctx.append(name))
out['contexts'] = ctx
h.set_export_name('nosuch')
try:
    h.opt_info()
    out['unknown'] = 'ok'
except nbd.Error as e:
    out['unknown'] = e.errnum
h.set_export_name('qemu')
h.opt_info()
out['size'] = h.get_size()
h.add_meta_context('base:allocation')
h.opt_go()
out['multi_conn'] = h.can_multi_conn()
h.pwrite(b'\\x77' * (2 * 1024 * 1024), 8 * 1024 * 1024)
h.zero(2 * 1024 * 1024, 10 * 1024 * 1024)
h.flush()
out['pread'] = list(h.pread(4, 1024 * 1024 * 8))
try:
    h.pread(4096, h.get_size() - 1024)
    out['oob'] = 'ok'
except nbd.Error as e:
    out['oob'] = e.errnum
ext = []
h.block_status(4 * 1024 * 1024, 8 * 1024 * 1024, lambda ctx, off, entries, err: ext.append(entries))
out['extents'] = ext
h.shutdown()

r = nbd.NBD()
r.set_strict_mode(0)
r.connect_uri(${JSON.stringify(uri('snap'))})
out['ro'] = r.is_read_only()
try:
    r.pwrite(b'x' * 512, 0)
    out['eperm'] = 'ok'
except nbd.Error as e:
    out['eperm'] = e.errnum
try:
    r.pread(512, 16 * 1024 * 1024)
    out['oob2'] = 'ok'
except nbd.Error as e:
    out['oob2'] = e.errnum
r.shutdown()
print(json.dumps(out))
`;
    const { stdout } = await run('/usr/bin/python3', ['-c', script]);
    const out = JSON.parse(stdout) as Record<string, unknown>;
    expect(out.list).toEqual(['copy', 'fio', 'kill', 'qemu', 'snap']);
    expect(out.contexts).toEqual(['base:allocation']);
    expect(out.unknown).toBe(2); // NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT
    expect(out.size).toBe(64 * MiB);
    expect(out.multi_conn).toBe(true);
    expect(out.pread).toEqual([0x77, 0x77, 0x77, 0x77]);
    expect(out.oob).toBe(22); // EINVAL
    expect(out.ro).toBe(true);
    expect(out.eperm).toBe(1); // EPERM
    expect(out.oob2).toBe(22);
    const extents = (out.extents as number[][])[0]!;
    expect(extents.slice(0, 2)).toEqual([2 * MiB, 0]);
    expect(extents.slice(2, 4)).toEqual([2 * MiB, 3]);

    // nbdsh itself, as an operator would use it.
    const sh = await run('nbdsh', ['-u', uri('qemu'), '-c', 'print(h.get_size(), h.can_zero(), h.pread(2, 8*1024*1024).hex())']);
    expect(sh.stdout.trim()).toBe(`${64 * MiB} True 7777`);
  }, 60_000);

  it('a hostile client (garbage after the greeting) is disconnected; the server keeps serving', async () => {
    const { connect } = await import('node:net');
    const errorsBefore = server.counters.protocolErrors;
    const closed = await new Promise<number>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port });
      let received = 0;
      s.on('data', (b: Buffer) => {
        received += b.length;
        if (received >= 18) s.write(Buffer.concat([Buffer.from([0, 0, 0, 1]), randomBytes(64)]));
      });
      s.on('error', reject);
      s.on('close', () => resolve(received));
      setTimeout(() => reject(new Error('not disconnected')), 5_000).unref();
    });
    expect(closed).toBe(18);
    expect(server.counters.protocolErrors).toBe(errorsBefore + 1);
    expect((await run('nbdinfo', ['--size', uri('snap')])).stdout.trim()).toBe(String(16 * MiB));
  });

  it('fio --ioengine=nbd random writes at QD16 verified with crc32c', async () => {
    const { stdout } = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri('fio')}`, '--rw=randwrite', '--bs=4k', '--bsrange=4k-64k', '--size=32M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json']);
    const result = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number } }[] };
    expect(result.jobs[0]?.error).toBe(0);
    expect(result.jobs[0]?.write.io_bytes).toBeGreaterThanOrEqual(32 * MiB);
  }, 120_000);

  it('SIGKILL of one storage server (replication 3) while nbdcopy writes: the copy completes and compares equal', async () => {
    const source = join(dir, 'kill-in.img');
    const target = join(dir, 'kill-out.img');
    const data = await randomFile(source, COPY_BYTES);
    const copy = run('nbdcopy', ['--connections=4', '--requests=16', source, uri('kill')]);
    await new Promise((r) => setTimeout(r, 1_000));
    await cluster.killServer(2, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 1_500));
    await cluster.startServer(2);
    await copy;
    await run('nbdcopy', ['--connections=4', uri('kill'), target]);
    expect((await readFile(target)).equals(data)).toBe(true);
    await rm(source);
    await rm(target);
  }, 120_000);
});
