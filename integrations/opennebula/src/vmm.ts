/**
 * VM snapshots (VMM snapshot_create/_delete/_revert, used in place of the hypervisor's own): one
 * group snapshot over the VM's storpool disks, <volume>-ONESNAP<id> each, tagged nvm/nloc/virt.
 * Arguments as one_vmm_exec passes them: create `<deploy_id> <snap_id> <vm_id> <host>`, revert and
 * delete `<deploy_id> <hypervisor_id> <vm_id> <host>` (the hypervisor id is what create printed).
 * stdin: the driver message <VMM_DRIVER_ACTION_DATA> (HOST, DEPLOY_ID, VM, ...), base64 when the
 * action runs on the front-end (a `-l` local action), plain XML when it runs on the host; a bare
 * <VM> document is accepted too.
 *
 * Revert of a running VM (oned reverts VM snapshots of RUNNING VMs): its disks cannot be reverted
 * under a running domain, so, as StorPool's addon does, the domain is destroyed on its host
 * (`virsh destroy`), the disks reverted, and the domain created again from its newest deployment
 * file in the VM directory (`<DS_LOCATION>/<DS_ID>/<VM ID>/deployment.<n>`): the VM restarts from
 * the snapshot's (crash-consistent) disk state.
 */
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, names, onHost, q, sourceVolume } from './env.js';
import { nodes, parseDocumentOneOf, text, type XmlNode } from './xml.js';
import { revertVolume } from './ops.js';

interface VmInfo {
  vmId: number;
  volumes: string[];
  /** From the driver message (or the VM's last history record): where the domain runs. */
  host: string;
  deployId: string;
  /** The VM directory on the host ('' when the history does not say). */
  vmDir: string;
}

function vmVolumes(e: DriverEnv, vmXml: string, args: string[] = []): VmInfo {
  const doc = parseDocumentOneOf(vmXml, ['VMM_DRIVER_ACTION_DATA', 'VM']);
  const inner = doc.node['VM'];
  const vm: XmlNode | undefined = doc.root === 'VM' ? doc.node : typeof inner === 'object' && !Array.isArray(inner) ? inner : undefined;
  if (vm === undefined) throw new StorpoolError('CONFIG_ERR_INVALID', 'VMM driver action data has no <VM> element');
  const vmId = Number(text(vm, 'ID'));
  if (!Number.isInteger(vmId) || text(vm, 'ID') === '') throw new StorpoolError('CONFIG_ERR_INVALID', 'VM document has no ID');
  const volumes: string[] = [];
  for (const disk of nodes(vm, 'TEMPLATE/DISK')) {
    if (text(disk, 'TM_MAD') !== 'storpool') continue;
    const persistent = text(disk, 'PERSISTENT').toUpperCase() === 'YES' || text(disk, 'CLONE').toUpperCase() === 'NO';
    const diskId = Number(text(disk, 'DISK_ID'));
    volumes.push(persistent ? sourceVolume(text(disk, 'SOURCE')) : names.disk(e, vmId, diskId));
  }
  if (volumes.length === 0) throw new StorpoolError('CONFIG_ERR_INVALID', `VM ${vmId} has no storpool disks`);
  const msg = doc.root === 'VM' ? undefined : doc.node;
  const history = nodes(vm, 'HISTORY_RECORDS/HISTORY').at(-1);
  const host = text(msg, 'HOST') || args[3] || text(history, 'HOSTNAME');
  const deployId = text(msg, 'DEPLOY_ID') || args[0] || '';
  const dsLocation = text(history, 'DS_LOCATION').replace(/\/+$/, '');
  const dsId = text(history, 'DS_ID');
  const vmDir = dsLocation !== '' && dsId !== '' ? `${dsLocation}/${dsId}/${vmId}` : '';
  return { vmId, volumes, host, deployId, vmDir };
}

/**
 * Stops the VM's domain on its host if it runs; returns the deployment file to start it again
 * from, or undefined when there was no running domain.
 */
async function stopDomain(e: DriverEnv, vm: VmInfo): Promise<string | undefined> {
  if (vm.host === '' || vm.deployId === '') return undefined;
  const virsh = `virsh -c ${q(e.libvirtUri)}`;
  const script = [
    `state=$(${virsh} domstate ${q(vm.deployId)} 2>/dev/null | head -n 1)`,
    'case "$state" in running|paused|blocked|"in shutdown") ;; *) exit 0 ;; esac',
    `f=$(ls -1v ${q(vm.vmDir)}/deployment.* 2>/dev/null | tail -n 1)`,
    `[ -n "$f" ] || { echo ${q(`domain ${vm.deployId} runs but ${vm.vmDir || 'its VM directory (unknown)'} has no deployment file`)} >&2; exit 1; }`,
    `${virsh} destroy ${q(vm.deployId)} >/dev/null && printf '%s\\n' "$f"`,
  ].join('\n');
  const file = (await onHost(e, vm.host, script)).trim();
  return file === '' ? undefined : file;
}

async function startDomain(e: DriverEnv, vm: VmInfo, file: string): Promise<void> {
  await onHost(e, vm.host, `virsh -c ${q(e.libvirtUri)} create ${q(file)} >/dev/null`);
}

function snapId(arg: string | undefined): string {
  const m = /^(?:ONESNAP|snap-)?(\d+)$/.exec(arg ?? '');
  if (m === null) throw new StorpoolError('CONFIG_ERR_INVALID', `bad snapshot id ${JSON.stringify(arg)}`);
  return m[1]!;
}

export const vmmActions: Record<string, (e: DriverEnv, args: string[], stdin: () => Promise<string>) => Promise<string>> = {
  async snapshot_create(e, args, stdin) {
    const id = snapId(args[1]);
    const { vmId, volumes } = vmVolumes(e, await stdin());
    await e.api.volumesGroupSnapshot({
      volumes: volumes.map((volume) => ({ volume, name: names.vmSnapshot(volume, id) })),
      tags: { nvm: String(vmId), nloc: e.location, virt: 'one' },
    });
    return `ONESNAP${id}`;
  },

  async snapshot_delete(e, args, stdin) {
    const id = snapId(args[1]);
    const { volumes } = vmVolumes(e, await stdin());
    for (const v of volumes) await e.api.snapshotDelete(names.vmSnapshot(v, id));
    return '';
  },

  async snapshot_revert(e, args, stdin) {
    const id = snapId(args[1]);
    const vm = vmVolumes(e, await stdin(), args);
    const { volumes } = vm;
    // Check all first: a revert of some disks only would leave the VM inconsistent.
    const have = new Set((await e.api.snapshotsList()).map((s) => s.name));
    const missing = volumes.map((v) => names.vmSnapshot(v, id)).filter((s) => !have.has(s));
    if (missing.length > 0) throw new StorpoolError('CONFIG_ERR_INVALID', `VM snapshot ${id} is missing ${missing.join(', ')}`);
    const deployment = await stopDomain(e, vm);
    try {
      for (const v of volumes) await revertVolume(e, v, names.vmSnapshot(v, id));
    } finally {
      // Started again even when a revert failed (as the addon's trap does): the VM keeps running.
      if (deployment !== undefined) await startDomain(e, vm, deployment);
    }
    return '';
  },
};
