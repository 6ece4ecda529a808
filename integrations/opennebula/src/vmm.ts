/**
 * VM snapshots (VMM snapshot_create/_delete/_revert, used in place of the hypervisor's own): one
 * group snapshot over the VM's storpool disks, <volume>-ONESNAP<id> each, tagged nvm/nloc/virt.
 * Arguments as one_vmm_exec passes them: create `<deploy_id> <snap_id> <vm_id> <host>`, revert and
 * delete `<deploy_id> <hypervisor_id> <vm_id> <host>` (the hypervisor id is what create printed).
 * stdin: the driver message <VMM_DRIVER_ACTION_DATA> (HOST, DEPLOY_ID, VM, ...), base64 when the
 * action runs on the front-end (a `-l` local action), plain XML when it runs on the host; a bare
 * <VM> document is accepted too.
 */
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, names, sourceVolume } from './env.js';
import { nodes, parseDocumentOneOf, text, type XmlNode } from './xml.js';
import { revertVolume } from './ops.js';

function vmVolumes(e: DriverEnv, vmXml: string): { vmId: number; volumes: string[] } {
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
  return { vmId, volumes };
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
    const { volumes } = vmVolumes(e, await stdin());
    // Check all first: a revert of some disks only would leave the VM inconsistent.
    const have = new Set((await e.api.snapshotsList()).map((s) => s.name));
    const missing = volumes.map((v) => names.vmSnapshot(v, id)).filter((s) => !have.has(s));
    if (missing.length > 0) throw new StorpoolError('CONFIG_ERR_INVALID', `VM snapshot ${id} is missing ${missing.join(', ')}`);
    for (const v of volumes) await revertVolume(e, v, names.vmSnapshot(v, id));
    return '';
  },
};
