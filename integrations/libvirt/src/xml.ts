/**
 * libvirt XML documents for storpool objects, built with fast-xml-parser's XMLBuilder (so names
 * and paths are always escaped). Pure: callers pass what they read from the cluster.
 *
 * Mapping (docs/libvirt.md):
 * - a template (placement group + replication) → a `dir` storage pool whose target is the block
 *   service's `/dev/storpool` directory on this host: its volumes are the storpool volumes attached
 *   here, as block devices; libvirt's dir backend lists block devices too;
 * - a volume → a storage volume (`type='block'`, raw) at `/dev/storpool/<name>`;
 * - a domain disk: NBD over TCP (the block service's listener, export = volume name), NBD over the
 *   attachment's unix socket (its default export is the volume), the block device by global id
 *   (`/dev/storpool-byid/<globalId>`, stable across renames), or iSCSI (target per volume).
 */
import { XMLBuilder } from 'fast-xml-parser';

export const DEFAULT_DEV_ROOT = '/dev';
export const DEFAULT_RUNTIME_DIR = '/run/storpool';
export const DEFAULT_NBD_HOST = '127.0.0.1';
export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_ISCSI_PORT = 3260;
/** libvirt requires a 12-bit-safe prefix for pool names; ours are `storpool-<template>`. */
export const POOL_NAME_PREFIX = 'storpool-';

type XmlNode = Record<string, unknown>;

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, indentBy: '  ', suppressEmptyNode: true });

export function toXml(doc: XmlNode): string {
  return `${(builder.build(doc) as string).trimEnd()}\n`;
}

export interface PoolSpec {
  template: string;
  /** Default `storpool-<template>`. */
  name?: string;
  /** Where the block service makes its links (default /dev). */
  devRoot?: string;
  /** Optional fixed UUID (libvirt makes one otherwise). */
  uuid?: string;
}

export function poolName(spec: PoolSpec): string {
  return spec.name ?? `${POOL_NAME_PREFIX}${spec.template}`;
}

export function poolTargetPath(devRoot = DEFAULT_DEV_ROOT): string {
  return `${devRoot.replace(/\/+$/, '')}/storpool`;
}

export function poolXml(spec: PoolSpec): string {
  const pool: XmlNode = { '@_type': 'dir', name: poolName(spec) };
  if (spec.uuid !== undefined) pool['uuid'] = spec.uuid;
  pool['target'] = { path: poolTargetPath(spec.devRoot), permissions: { mode: '0755' } };
  return toXml({ pool });
}

export interface VolumeSpec {
  name: string;
  sizeBytes: number;
  globalId: string;
  devRoot?: string;
}

export function volumeXml(spec: VolumeSpec): string {
  const devRoot = (spec.devRoot ?? DEFAULT_DEV_ROOT).replace(/\/+$/, '');
  return toXml({
    volume: {
      '@_type': 'block',
      name: spec.name,
      key: `${devRoot}/storpool-byid/${spec.globalId}`,
      capacity: { '@_unit': 'bytes', '#text': String(spec.sizeBytes) },
      allocation: { '@_unit': 'bytes', '#text': '0' },
      target: { path: `${devRoot}/storpool/${spec.name}`, format: { '@_type': 'raw' } },
    },
  });
}

export type DiskSource =
  | { kind: 'nbd-tcp'; host?: string; port?: number }
  | { kind: 'nbd-unix'; runtimeDir?: string; socket?: string }
  | { kind: 'block'; devRoot?: string }
  | { kind: 'iscsi'; host: string; port?: number; iqn: string; lun?: number };

export interface DiskSpec {
  volume: string;
  globalId: string;
  source: DiskSource;
  /** Guest device name (default vda) and bus (default virtio). */
  target?: string;
  bus?: 'virtio' | 'scsi' | 'sata' | 'ide';
  readOnly?: boolean;
  /** Guest-visible serial; default the global id (stable across renames). */
  serial?: string;
}

/** The `<disk>` element as a tree (to embed in a domain) — see diskXml for the text. */
export function diskNode(spec: DiskSpec): XmlNode {
  const s = spec.source;
  // cache='none': writes go straight to storpool (acknowledged only when replicated), no host page cache.
  const driver: XmlNode = { '@_name': 'qemu', '@_type': 'raw', '@_cache': 'none' };
  const disk: XmlNode = { '@_device': 'disk' };
  switch (s.kind) {
    case 'nbd-tcp':
      disk['@_type'] = 'network';
      disk['driver'] = driver;
      disk['source'] = { '@_protocol': 'nbd', '@_name': spec.volume, host: { '@_name': s.host ?? DEFAULT_NBD_HOST, '@_port': String(s.port ?? DEFAULT_NBD_PORT) } };
      break;
    case 'nbd-unix':
      disk['@_type'] = 'network';
      disk['driver'] = driver;
      // The attachment's own socket: its default export is the volume, so no export name.
      disk['source'] = { '@_protocol': 'nbd', host: { '@_transport': 'unix', '@_socket': s.socket ?? `${(s.runtimeDir ?? DEFAULT_RUNTIME_DIR).replace(/\/+$/, '')}/nbd/${spec.volume}.sock` } };
      break;
    case 'block':
      disk['@_type'] = 'block';
      disk['driver'] = { ...driver, '@_io': 'native' };
      disk['source'] = { '@_dev': `${(s.devRoot ?? DEFAULT_DEV_ROOT).replace(/\/+$/, '')}/storpool-byid/${spec.globalId}` };
      break;
    case 'iscsi':
      disk['@_type'] = 'network';
      disk['driver'] = driver;
      disk['source'] = { '@_protocol': 'iscsi', '@_name': `${s.iqn}/${s.lun ?? 0}`, host: { '@_name': s.host, '@_port': String(s.port ?? DEFAULT_ISCSI_PORT) } };
      break;
    default: {
      const never: never = s;
      throw new Error(`unknown disk source ${JSON.stringify(never)}`);
    }
  }
  disk['target'] = { '@_dev': spec.target ?? 'vda', '@_bus': spec.bus ?? 'virtio' };
  if (spec.readOnly === true) disk['readonly'] = '';
  disk['serial'] = spec.serial ?? spec.globalId;
  return disk;
}

export function diskXml(spec: DiskSpec): string {
  // suppressEmptyNode turns readonly: '' into <readonly/>.
  return toXml({ disk: diskNode(spec) });
}

export interface DomainSpec {
  name: string;
  memoryMiB: number;
  vcpus?: number;
  /** kvm, or qemu (TCG) where there is no usable KVM. */
  type?: 'kvm' | 'qemu';
  disks: DiskSpec[];
  /** Direct kernel boot (tests); otherwise boots from the first disk. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** Serial console to this file (tests read it). */
  consoleFile?: string;
  emulator?: string;
}

/** A minimal domain around the disks: for `virsh define` and to boot a guest in tests. */
export function domainXml(spec: DomainSpec): string {
  const os: XmlNode = { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } };
  if (spec.kernel !== undefined) {
    os['kernel'] = spec.kernel;
    if (spec.initrd !== undefined) os['initrd'] = spec.initrd;
    if (spec.cmdline !== undefined) os['cmdline'] = spec.cmdline;
  } else {
    os['boot'] = { '@_dev': 'hd' };
  }
  const devices: XmlNode = {};
  if (spec.emulator !== undefined) devices['emulator'] = spec.emulator;
  devices['disk'] = spec.disks.map(diskNode);
  if (spec.consoleFile !== undefined) {
    devices['serial'] = { '@_type': 'file', source: { '@_path': spec.consoleFile }, target: { '@_port': '0' } };
    devices['console'] = { '@_type': 'file', source: { '@_path': spec.consoleFile }, target: { '@_type': 'serial', '@_port': '0' } };
  }
  devices['memballoon'] = { '@_model': 'none' };
  return toXml({
    domain: {
      '@_type': spec.type ?? 'kvm',
      name: spec.name,
      memory: { '@_unit': 'MiB', '#text': String(spec.memoryMiB) },
      vcpu: String(spec.vcpus ?? 1),
      os,
      // Without ACPI a guest's poweroff only halts the CPU and QEMU keeps running.
      features: { acpi: '', apic: '' },
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices,
    },
  });
}
