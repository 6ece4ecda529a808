/**
 * VM snapshots (VMM snapshot_create/_delete/_revert, used in place of the hypervisor's own): one
 * group snapshot over the VM's storpool disks, <volume>-ONESNAP<id> each, tagged nvm/nloc/virt.
 * Arguments: <domain> <snap_id|snap_name> <vm_id> [host]; the VM document (base64 or XML) on stdin.
 */
import { StorpoolError } from '@storpool/errors';
import { type DriverEnv, names, sourceVolume } from './env.js';
import { nodes, parseDocument, text } from './xml.js';
import { revertVolume } from './ops.js';

function vmVolumes(e: DriverEnv, vmXml: string): { vmId: number; volumes: string[] } {
  const vm = parseDocument(vmXml, 'VM');
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
