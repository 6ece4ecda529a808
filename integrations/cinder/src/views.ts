/**
 * Cinder's JSON views of volumes, snapshots, attachments and types, field for field as Cinder
 * (Zed, API 3.70) answers them, fields that a microversion added only from that microversion on:
 * clients and tempest's schemas (additionalProperties: false) check both.
 */
import type { VolumeTemplateDesc } from '@storpool/api-client';
import type { AttachmentRecord, SnapshotRecord, VolumeRecord } from './records.js';
import { typeId } from './service.js';

export type Microversion = readonly [number, number];

export const MIN_VERSION: Microversion = [3, 0];
export const MAX_VERSION: Microversion = [3, 70];

export const atLeast = (v: Microversion, minor: number): boolean => v[0] > 3 || (v[0] === 3 && v[1] >= minor);

export interface ViewContext {
  /** `http://host:port` the client used. */
  base: string;
  projectId: string;
  version: Microversion;
  isAdmin: boolean;
  availabilityZone: string;
  backendHost: string;
}

const link = (ctx: ViewContext, kind: string, id: string): { href: string; rel: string }[] => [
  { href: `${ctx.base}/v3/${ctx.projectId}/${kind}/${id}`, rel: 'self' },
  { href: `${ctx.base}/${ctx.projectId}/${kind}/${id}`, rel: 'bookmark' },
];

export function volumeAttachments(v: VolumeRecord, atts: AttachmentRecord[]): Record<string, unknown>[] {
  return atts.filter((a) => a.volumeId === v.id && a.status === 'attached').map((a) => ({
    server_id: a.instance, attachment_id: a.id, attached_at: a.attachedAt, host_name: a.hostName, volume_id: v.id, device: a.mountpoint, id: v.id,
  }));
}

/** `full`: show/detail (with the os-vol-* extension attributes); else the create/update view. */
export function volumeView(ctx: ViewContext, v: VolumeRecord, sizeGiB: number, atts: AttachmentRecord[], full: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: v.id, name: v.name, description: v.description, status: v.status, size: sizeGiB, availability_zone: ctx.availabilityZone,
    created_at: v.createdAt, updated_at: v.updatedAt, attachments: volumeAttachments(v, atts), links: link(ctx, 'volumes', v.id),
    volume_type: v.volumeType, snapshot_id: v.snapshotId, source_volid: v.sourceVolid, metadata: v.metadata, user_id: v.userId,
    bootable: v.bootable ? 'true' : 'false', encrypted: false, replication_status: null, consistencygroup_id: null, multiattach: v.multiattach,
    migration_status: null,
  };
  if (full) {
    out['os-vol-tenant-attr:tenant_id'] = v.projectId;
    out['os-vol-mig-status-attr:migstat'] = null;
    if (ctx.isAdmin) {
      out['os-vol-host-attr:host'] = ctx.backendHost;
      out['os-vol-mig-status-attr:name_id'] = null;
    }
  }
  if (atLeast(ctx.version, 13)) out['group_id'] = null;
  if (atLeast(ctx.version, 21)) out['provider_id'] = null;
  if (atLeast(ctx.version, 48)) {
    out['service_uuid'] = null;
    out['shared_targets'] = false;
  }
  if (atLeast(ctx.version, 61) && ctx.isAdmin && full) out['cluster_name'] = null;
  if (atLeast(ctx.version, 63)) out['volume_type_id'] = typeId(v.volumeType);
  if (atLeast(ctx.version, 64)) out['encryption_key_id'] = null;
  if (atLeast(ctx.version, 65)) out['consumes_quota'] = true;
  if (atLeast(ctx.version, 69)) out['shared_targets'] = false;
  return out;
}

export function volumeSummaryView(ctx: ViewContext, v: VolumeRecord): Record<string, unknown> {
  return { id: v.id, name: v.name, links: link(ctx, 'volumes', v.id) };
}

export function snapshotView(ctx: ViewContext, s: SnapshotRecord, full: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: s.id, name: s.name, description: s.description, status: s.status, size: s.size, volume_id: s.volumeId,
    created_at: s.createdAt, updated_at: s.updatedAt, metadata: s.metadata,
  };
  if (full) {
    out['os-extended-snapshot-attributes:progress'] = '100%';
    out['os-extended-snapshot-attributes:project_id'] = s.projectId;
  }
  if (atLeast(ctx.version, 14)) out['group_snapshot_id'] = null;
  if (atLeast(ctx.version, 41)) out['user_id'] = s.userId;
  if (atLeast(ctx.version, 65)) out['consumes_quota'] = true;
  return out;
}

export function attachmentView(a: AttachmentRecord, full: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = { id: a.id, status: a.status, instance: a.instance, volume_id: a.volumeId };
  if (full) Object.assign(out, { attached_at: a.attachedAt, detached_at: null, attach_mode: a.mode, connection_info: a.connectionInfo ?? {} });
  return out;
}

export function typeView(t: VolumeTemplateDesc, isDefault: boolean): Record<string, unknown> {
  return {
    id: typeId(t.name), name: t.name, description: isDefault ? `storpool template ${t.name} (default)` : `storpool template ${t.name}`,
    is_public: true, 'os-volume-type-access:is_public': true, qos_specs_id: null,
    extra_specs: { volume_backend_name: 'storpool', storpool_template: t.name },
  };
}

export function versionDoc(base: string): Record<string, unknown> {
  return {
    id: 'v3.0', status: 'CURRENT', version: `${MAX_VERSION[0]}.${MAX_VERSION[1]}`, min_version: `${MIN_VERSION[0]}.${MIN_VERSION[1]}`,
    updated: '2022-08-31T00:00:00Z',
    links: [
      { rel: 'describedby', type: 'text/html', href: 'https://docs.openstack.org/' },
      { rel: 'self', href: `${base}/v3/` },
    ],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
  };
}
