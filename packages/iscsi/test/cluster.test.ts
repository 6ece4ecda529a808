/**
 * storpool-iscsi end to end: a local cluster (3 storage servers + mgmt), iSCSIConfig through the
 * API, two storpool-iscsi processes (controllers 1 and 2, one portal each, one portal group), and
 * real initiators: libiscsi's iscsi-ls / iscsi-inq / iscsi-readcapacity16, and QEMU (qemu-img
 * convert / compare / map on iscsi:// URLs). CHAP one-way and mutual; an initiator without an
 * export sees nothing. Every process is stopped by PID; the temp directory goes even on failure.
 */
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorpoolApi } from '@storpool/api-client';
import { startLocalCluster, type LocalCluster } from '@storpool/local';
import { freePort } from '@storpool/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ISCSI_BIN, ok, sh, spawnLogged, stop, waitPort, type Spawned } from './helpers.js';

const MiB = 1024 * 1024;
const CLI_BIN = fileURLToPath(new URL('../../cli/bin/storpool.js', import.meta.url));
const BASE = 'iqn.2026-11.com.storpool:it';
const OPEN_INIT = 'iqn.2026-11.test:open';
const CHAP_INIT = 'iqn.2026-11.test:chap';
const QEMU_INIT = 'iqn.2008-11.org.linux-kvm';
const STRANGER = 'iqn.2026-11.test:stranger';

let tmp: string;
let cluster: LocalCluster | undefined;
let api: StorpoolApi;
const targets: Spawned[] = [];
const ports: number[] = [];

async function iscsiConfig(commands: unknown[]): Promise<void> {
  await api.request('POST', 'iSCSIConfig', [], { commands });
}

const url = (port: number, volume: string, init?: { user: string; secret: string }): string =>
  `iscsi://${init === undefined ? '' : `${init.user}%${init.secret}@`}127.0.0.1:${port}/${BASE}:${volume}/0`;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'storpool-iscsi-'));
  cluster = await startLocalCluster({ dataDir: join(tmp, 'data'), port: 0, disks: 3, diskSizeBytes: 1024 * MiB, ourId: 1, serverLogLevel: 'warn' });
  api = new StorpoolApi({ config: { path: cluster.confPath } });
  for (const [name, size] of [['iv1', 64 * MiB], ['iv2', 32 * MiB], ['iv3', 96 * MiB]] as const) {
    await api.request('POST', 'VolumeCreate', [], { name, size, template: 'default' });
  }
  ports.push(await freePort(), await freePort());
  await iscsiConfig([
    { setBaseName: { name: BASE } },
    { createPortalGroup: { name: 'pg1' } },
    { portalGroupAddNetwork: { portalGroup: 'pg1', net: '127.0.0.0/8' } },
    { createPortal: { portalGroup: 'pg1', controller: 1, ip: '127.0.0.1', port: ports[0] } },
    { createPortal: { portalGroup: 'pg1', controller: 2, ip: '127.0.0.1', port: ports[1] } },
    { createTarget: { volumeName: 'iv1' } },
    { createTarget: { volumeName: 'iv2' } },
    { createTarget: { volumeName: 'iv3' } },
    { createInitiator: { name: OPEN_INIT, username: '', secret: '' } },
    { initiatorAddNetwork: { initiator: OPEN_INIT, net: '0.0.0.0/0' } },
    { export: { initiator: OPEN_INIT, portalGroup: 'pg1', volumeName: 'iv1' } },
    { createInitiator: { name: CHAP_INIT, username: 'chapuser', secret: 'chapsecret1234' } },
    { export: { initiator: CHAP_INIT, portalGroup: 'pg1', volumeName: 'iv2' } },
    { createInitiator: { name: QEMU_INIT, username: '', secret: '' } },
    { export: { initiator: QEMU_INIT, portalGroup: 'pg1', volumeName: 'iv3' } },
  ]);
  for (const id of [1, 2]) {
    const p = spawnLogged(process.execPath, [ISCSI_BIN, '--controller-id', String(id), '--map-file', cluster.mapFile, '--log-level', 'debug'], join(tmp, `iscsi-${id}.log`), {
      STORPOOL_CONF: cluster.confPath, STORPOOL_ISCSI_MUTUAL_USER: 'targetuser', STORPOOL_ISCSI_MUTUAL_SECRET: 'targetsecret99',
    });
    targets.push(p);
  }
  await Promise.all(ports.map((port, i) => waitPort(port, targets[i]!.child)));
}, 180_000);

afterAll(async () => {
  for (const t of targets) await stop(t);
  await cluster?.stop();
  if (tmp !== undefined && process.env['KEEP_TMP'] === undefined) await rm(tmp, { recursive: true, force: true });
}, 120_000);

describe('storpool-iscsi with real initiators', () => {
  it('iSCSIConfig: GET shows what was configured (API.md §4.9 shape)', async () => {
    const cfg = (await api.request<{ iscsi: { baseName: string; portalGroups: Record<string, { name: string; portals: { port: string }[] }>; targets: Record<string, { name: string; volume: string }> } }>('GET', 'iSCSIConfig')).data.iscsi;
    expect(cfg.baseName).toBe(BASE);
    const pg = Object.values(cfg.portalGroups).find((g) => g.name === 'pg1')!;
    expect(pg.portals.map((p) => p.port)).toEqual(ports.map(String));
    expect(Object.values(cfg.targets).find((t) => t.volume === 'iv1')!.name).toBe(`${BASE}:iv1`);
    const dup = await api.request('POST', 'iSCSIConfig', [], { commands: [{ createTarget: { volumeName: 'iv1' } }] }).then(() => 'ok', (e: { name: string }) => e.name);
    expect(dup).toBe('objectExists');
  });

  it('discovery lists only the exported target, with both portals; an unknown initiator sees nothing', async () => {
    const ls = await ok('iscsi-ls', ['-i', OPEN_INIT, `iscsi://127.0.0.1:${ports[0]}`]);
    expect(ls).toContain(`Target:${BASE}:iv1 Portal:127.0.0.1:${ports[0]},1`);
    expect(ls).toContain(`Target:${BASE}:iv1 Portal:127.0.0.1:${ports[1]},1`);
    expect(ls).not.toContain(':iv2');
    const stranger = await sh('iscsi-ls', ['-i', STRANGER, `iscsi://127.0.0.1:${ports[1]}`]);
    expect(stranger.stdout).not.toContain('Target:');
    const inq = await sh('iscsi-inq', ['-i', STRANGER, url(ports[0]!, 'iv1')]);
    expect(inq.code).not.toBe(0);
  });

  it('INQUIRY through both portals: same NAA id and serial (multipath sees one LU)', async () => {
    const ids: string[] = [];
    for (const port of ports) {
      const std = await ok('iscsi-inq', ['-i', OPEN_INIT, url(port, 'iv1')]);
      expect(std).toContain('Vendor:STORPOOL');
      const vpd83 = await ok('iscsi-inq', ['-i', OPEN_INIT, '-e', '1', '-c', '131', url(port, 'iv1')]);
      const vpd80 = await ok('iscsi-inq', ['-i', OPEN_INIT, '-e', '1', '-c', '128', url(port, 'iv1')]);
      expect(vpd83).toContain('NAA');
      ids.push(`${vpd83}#${vpd80}`);
    }
    expect(ids[0]).toBe(ids[1]);
    const cap = await ok('iscsi-readcapacity16', ['-i', OPEN_INIT, url(ports[1]!, 'iv1')]);
    expect(cap).toContain('LOGICAL BLOCK LENGTH IN BYTES:512');
    expect(cap).toContain('RETURNED LOGICAL BLOCK ADDRESS:131071');
    expect(cap).toContain('LBPME:1');
  });

  it('CHAP: the wrong secret is refused, the right one works, mutual CHAP works', async () => {
    const wrong = await sh('iscsi-inq', ['-i', CHAP_INIT, url(ports[0]!, 'iv2', { user: 'chapuser', secret: 'wrongsecret12' })]);
    expect(wrong.code).not.toBe(0);
    const none = await sh('iscsi-inq', ['-i', CHAP_INIT, url(ports[0]!, 'iv2')]);
    expect(none.code).not.toBe(0);
    await ok('iscsi-inq', ['-i', CHAP_INIT, url(ports[0]!, 'iv2', { user: 'chapuser', secret: 'chapsecret1234' })]);
    const mutual = `${url(ports[1]!, 'iv2', { user: 'chapuser', secret: 'chapsecret1234' })}?target_user=targetuser&target_password=targetsecret99`;
    await ok('iscsi-inq', ['-i', CHAP_INIT, mutual]);
    const badMutual = `${url(ports[1]!, 'iv2', { user: 'chapuser', secret: 'chapsecret1234' })}?target_user=targetuser&target_password=notthesecret1`;
    expect((await sh('iscsi-inq', ['-i', CHAP_INIT, badMutual])).code).not.toBe(0);
  });

  it('the storpool CLI configures a new export; storpool-iscsi picks it up', async () => {
    await api.request('POST', 'VolumeCreate', [], { name: 'iv4', size: 16 * MiB, template: 'default' });
    const cli = (...words: string[]): Promise<string> => ok(process.execPath, [CLI_BIN, ...words], { STORPOOL_CONF: cluster!.confPath });
    await cli('iscsi', 'config', 'target', 'create', 'iv4');
    await cli('iscsi', 'config', 'initiator', OPEN_INIT, 'export', 'volume', 'iv4', 'portalGroup', 'pg1');
    expect(await cli('-j', 'iscsi', 'list')).toContain(`${BASE}:iv4`);
    let ls = '';
    for (let i = 0; i < 100 && !ls.includes(':iv4'); i++) {
      await sleep(100);
      ls = (await sh('iscsi-ls', ['-i', OPEN_INIT, `iscsi://127.0.0.1:${ports[1]}`])).stdout;
    }
    expect(ls).toContain(`Target:${BASE}:iv4 Portal:127.0.0.1:${ports[0]},1`);
    await cli('iscsi', 'config', 'initiator', OPEN_INIT, 'exportDelete', 'volume', 'iv4', 'portalGroup', 'pg1');
    await cli('iscsi', 'config', 'target', 'delete', 'iv4');
  });

  it('qemu-img convert / compare / map on iscsi:// through either portal', async () => {
    const src = join(tmp, 'src.raw');
    const data = Buffer.alloc(96 * MiB);
    // Data in the first 8 MiB and around 40 MiB; the rest stays a hole.
    randomBytes(8 * MiB).copy(data, 0);
    randomBytes(MiB).copy(data, 40 * MiB);
    await writeFile(src, data);
    await ok('qemu-img', ['convert', '-p', '-n', '-f', 'raw', '-O', 'raw', src, url(ports[0]!, 'iv3')], {}, 300_000);
    await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, url(ports[1]!, 'iv3')], {}, 300_000);
    const map = JSON.parse(await ok('qemu-img', ['map', '--output=json', '-f', 'raw', url(ports[1]!, 'iv3')])) as { start: number; length: number; data: boolean; zero: boolean }[];
    const dataBytes = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
    expect(dataBytes).toBeGreaterThanOrEqual(9 * MiB);
    expect(dataBytes).toBeLessThan(96 * MiB);
    const back = join(tmp, 'back.raw');
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url(ports[0]!, 'iv3'), back], {}, 300_000);
    expect((await readFile(back)).equals(data)).toBe(true);
    await rm(back);
  }, 600_000);
});
