/**
 * Shared by the iSCSI guest tests (iscsi-guest.test.ts, iscsi-failover.test.ts): the guest shell
 * that logs in with `iscsistart` and finds the session's disk, the kernel log check for iSCSI
 * trouble, and on the host: storpool-iscsi processes of our own, waiting for a target to be
 * served, reading the target's log, and comparing a volume's replicas object by object.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StorpoolClient } from '@storpool/client';
import { ISCSI_BIN } from '@storpool/local';
import { MiB } from './guest-fs.js';

/** What the guest reaches the host's 127.0.0.1 as (slirp). */
export const GUEST_HOST = '10.0.2.2';
const OBJECT_BYTES = 4 * MiB;

/** GET iSCSIExports: the iSCSI configuration plus each target volume's data identity. */
export interface ExportsView {
  iscsi: { baseName: string; portalGroups: Record<string, { name: string }>; targets: Record<string, { name: string; volume: string }> };
  volumes: Record<string, { globalId: string; size: number; dataId: number; placementId: number; parents: number[]; group: number }>;
}
export type VolumeView = ExportsView['volumes'][string];

/** The portal group tag (iscsistart's -g) and target name of a volume, from iSCSIExports. */
export function targetOf(view: ExportsView, portalGroup: string, volume: string): { tag: string; target: string; vol: VolumeView } {
  const tag = Object.entries(view.iscsi.portalGroups).find(([, g]) => g.name === portalGroup)?.[0];
  const target = Object.values(view.iscsi.targets).find((t) => t.volume === volume)?.name;
  if (tag === undefined || target === undefined) throw new Error(`iSCSIExports has no portal group ${portalGroup} or no target for ${volume}`);
  return { tag, target, vol: view.volumes[target]! };
}

/** storpool-iscsi logs "serving target" once its poll of iSCSIExports has picked up a target. */
export async function waitServing(logPath: string, target: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await readFile(logPath, 'utf8').catch(() => '');
    if (log.split('\n').some((l) => l.includes('serving target') && l.includes(`"target":"${target}"`))) return;
    if (Date.now() > deadline) throw new Error(`storpool-iscsi (${logPath}) did not pick up ${target} within ${timeoutMs} ms:\n${log.split('\n').slice(-10).join('\n')}`);
    await sleep(200);
  }
}

/** The JSON (pino) records of a storpool-iscsi log. */
export async function iscsiLogRecords(logPath: string): Promise<{ level: number; msg?: string }[]> {
  return (await readFile(logPath, 'utf8')).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg?: string });
}

/** A storpool-iscsi process of the test's own (not startLocalCluster's), logging to a file. */
export interface IscsiProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logPath: string;
}

/**
 * Starts `storpool-iscsi --controller-id ID` (it listens on the portals of iSCSIConfig whose
 * controller is ID) and waits until `port` accepts connections.
 */
export async function startIscsiProcess(o: { controllerId: number; port: number; confPath: string; mapFile: string; logPath: string; timeoutMs?: number }): Promise<IscsiProcess> {
  const log = createWriteStream(o.logPath, { flags: 'a' });
  const child = spawn(process.execPath, [ISCSI_BIN, '--controller-id', String(o.controllerId), '--map-file', o.mapFile, '--log-level', 'info'], {
    env: { ...process.env, STORPOOL_CONF: o.confPath }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const p = { child, exited, logPath: o.logPath };
  const deadline = Date.now() + (o.timeoutMs ?? 120_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`storpool-iscsi ${o.controllerId} exited at startup (see ${o.logPath})`);
    const up = await new Promise<boolean>((r) => {
      const s = connect(o.port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (up) return p;
    if (Date.now() > deadline) {
      await stopIscsiProcess(p);
      throw new Error(`storpool-iscsi ${o.controllerId} did not listen on ${o.port} (see ${o.logPath})`);
    }
    await sleep(200);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; by PID, and only if it still runs. */
export async function stopIscsiProcess(p: IscsiProcess | undefined, graceMs = 10_000): Promise<void> {
  if (p === undefined || p.child.pid === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return;
  process.kill(p.child.pid, 'SIGTERM');
  const done = await Promise.race([p.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done && p.child.exitCode === null && p.child.signalCode === null) process.kill(p.child.pid, 'SIGKILL');
  await p.exited;
}

export interface IscsiLogin {
  initiator: string;
  target: string;
  /** Portal group tag (iscsistart -g). */
  tag: string;
  port: number;
  /** Names the steps (login-<label>, logged-in-<label>) and the @@DISK-<label> marker. */
  label: string;
  /** The session's disk is linked here (e.g. /dev/iscsi-x), whatever sdX the kernel gave it. */
  dev: string;
  /** Expected size of the LUN. */
  bytes: number;
  /**
   * The session's recovery timeout (sysfs recovery_tmo, open-iscsi's replacement_timeout, 120 s
   * by default): how long I/O waits on a dead connection before the kernel fails it. Without
   * iscsid nobody reconnects, so this is how long a failover to another path stalls.
   */
  recoveryTmoS?: number;
}

/**
 * Guest shell: log in to one target through one portal with iscsistart (a few attempts: one
 * refused or timed-out login on a loaded machine should not fail the run), find the session it
 * made (the one that was not there before: two sessions may go to the same target through two
 * portals), find its disk in sysfs, link it to `dev`, check its size, and print
 * `@@DISK-<label> /dev/sdX VENDOR MODEL discard_max=N wwid=…`.
 */
export function iscsiLoginScript(l: IscsiLogin): string {
  return `
step login-${l.label}
before=$(ls -d /sys/class/iscsi_session/session* 2>/dev/null)
ok=
for i in 1 2 3 4 5; do
  iscsistart -i ${l.initiator} -t ${l.target} -g ${l.tag} -a ${GUEST_HOST} -p ${l.port} && { ok=1; break; }
  sleep 2
done
[ -n "$ok" ] || fail "iscsistart could not log in to ${l.target} through port ${l.port}"
sess=
for s in /sys/class/iscsi_session/session*; do
  echo "$before" | grep -qx "$s" && continue
  [ "$(cat $s/targetname)" = "${l.target}" ] && sess=$s
done
[ -n "$sess" ] || fail "no new iSCSI session for ${l.target}"
${l.recoveryTmoS !== undefined ? `echo ${l.recoveryTmoS} > $sess/recovery_tmo || fail "cannot set recovery_tmo of $sess"` : ''}
# iscsistart asks the kernel to scan the new host; rescan ourselves if the LUN is slow to show up
disk=
for i in $(seq 1 120); do
  disk=$(ls $sess/device/target*/*/block 2>/dev/null | head -1)
  [ -n "$disk" ] && [ -b /dev/$disk ] && break
  [ $i -eq 20 ] && for h in /sys/class/scsi_host/host*/scan; do echo '- - -' > $h; done
  sleep 0.5
done
[ -n "$disk" ] && [ -b /dev/$disk ] || { dmesg | tail -20; fail "no disk for the session of ${l.target}"; }
ln -s /dev/$disk ${l.dev}
step logged-in-${l.label}
echo "@@DISK-${l.label} /dev/$disk $(cat /sys/block/$disk/device/vendor) $(cat /sys/block/$disk/device/model) discard_max=$(cat /sys/block/$disk/queue/discard_max_bytes) wwid=$(cat /sys/block/$disk/device/wwid) session=$(basename $sess)"
[ "$(cat /sys/block/$disk/size)" = "${l.bytes / 512}" ] || fail "$disk size $(cat /sys/block/$disk/size) sectors"
`;
}

/**
 * Guest shell: fail if the kernel logged iSCSI trouble the generic check (dmesgCheck) does not
 * name: connection errors and recovery, failed SCSI commands. `ignore`: an extended regex (may use
 * shell variables) of lines that are expected, e.g. those of a path that was made to fail.
 */
export function iscsiDmesgCheck(ignore?: string): string {
  return `
if dmesg | ${ignore !== undefined ? `{ grep -vE "${ignore}" || true; } | ` : ''}grep -iE 'detected conn error|ping timeout|session recovery timed out|iscsi: .*(error|failed)|FAILED Result|Sense Key' > /tmp/dmesg.iscsi; then
  cat /tmp/dmesg.iscsi
  fail "kernel reported iSCSI errors"
fi
`;
}

/** The objects of one volume (its dataId) that a disk holds: object index -> version and allocated 4 KiB blocks. */
async function listedObjects(c: StorpoolClient, disk: number, dataId: number): Promise<Map<number, { version: number; blocks: number }>> {
  const out = new Map<number, { version: number; blocks: number }>();
  const PAGE = 4096;
  let after: { volumeId: number; objectIndex: number } | undefined;
  for (;;) {
    const page = await c.listObjects(disk, after, PAGE);
    for (const e of page) if (e.volumeId === dataId) out.set(e.objectIndex, { version: e.version, blocks: e.allocatedBlocks });
    if (page.length < PAGE) return out;
    after = { volumeId: page[PAGE - 1]!.volumeId, objectIndex: page[PAGE - 1]!.objectIndex };
  }
}

/**
 * Compares a volume's replicas without repair or forwarding: every object any disk holds must be
 * held by each of its three replicas at the same version with the same number of allocated
 * blocks, and with the same bytes. Objects with no allocated block (never written, or unmapped by
 * mkfs's discard) read as zeros on every copy, so only the others are read: reading every object
 * of both volumes from every copy cost 20-30 s here. Returns the differences, how many objects
 * were compared and how many of them were read.
 */
export async function replicaDiffs(c: StorpoolClient, vol: VolumeView, disks: number[]): Promise<{ diffs: string[]; objects: number; read: number }> {
  await c.refreshMap();
  const held = new Map(await Promise.all(disks.map(async (d) => [d, await listedObjects(c, d, vol.dataId)] as const)));
  const objects = [...new Set([...held.values()].flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const diffs: string[] = [];
  let read = 0;
  let next = 0;
  // a few objects at a time: the three servers read and checksum in parallel
  const worker = async (): Promise<void> => {
    for (let i = next++; i < objects.length; i = next++) {
      const obj = objects[i]!;
      const { replicas } = c.router.locate(vol.group, vol.placementId, obj);
      if (replicas.length !== 3) diffs.push(`object ${obj}: ${replicas.length} replicas`);
      const meta = replicas.map((d) => held.get(d)?.get(obj));
      const shown = meta.map((m) => (m === undefined ? 'absent' : `v${m.version}/${m.blocks} blocks`));
      if (shown.some((m) => m !== shown[0])) {
        diffs.push(`object ${obj}: ${shown.join(' / ')} on disks ${replicas.join(' / ')}`);
        continue;
      }
      if (meta[0]!.blocks === 0) continue;
      read++;
      const copies = await Promise.all(replicas.map((disk) => c.readReplica(disk, vol.group, vol.dataId, obj, 0, OBJECT_BYTES, vol.placementId)));
      for (let k = 1; k < copies.length; k++) {
        if (!copies[k]!.data.equals(copies[0]!.data)) diffs.push(`object ${obj}: disk ${replicas[k]} data differs from disk ${replicas[0]}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { diffs, objects: objects.length, read };
}
