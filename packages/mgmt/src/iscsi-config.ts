/**
 * iSCSIConfig (API.md §4.9): the cluster's iSCSI base name, portal groups, targets (one per exported
 * volume), initiators and exports. Kept as one JSON document in the metadata store under
 * `mgmt-iscsi/config`, outside `mgmt/`: it changes nothing that block clients apply, so it does
 * not bump the configuration generation. Changes are compare-and-swap (`meta.update`).
 *
 * storpool extension `GET iSCSIExports`: the configuration plus, for every target, its volume's
 * data identity (what `storpool-iscsi` needs to serve it with the client library).
 */
import type { MetaStore } from '@storpool/meta';
import { ApiError, exists, invalid, notFound } from './api-error.js';
import { findObject } from './model-helpers.js';
import type { State } from './state.js';

export const ISCSI_CONFIG_KEY = 'mgmt-iscsi/config';
const IQN = /^[a-z0-9\-.:]+$/;
const PG_NAME = /^[A-Za-z0-9_\-.:]+$/;
const ISCSI_ID_MAX = 4095;

interface Portal { controller: number; ip: string; port: string }
interface PortalGroup { name: string; networks: { address: string; prefix: number }[]; portals: Portal[] }
interface Target { currentControllerId: number; name: string; volume: string }
interface Initiator { name: string; username: string; secret: string; nets: string[]; exports: { portalGroup: string; target: string }[] }

export interface IscsiConfigData {
  baseName: string;
  portalGroups: Record<string, PortalGroup>;
  targets: Record<string, Target>;
  initiators: Record<string, Initiator>;
}

const empty = (): IscsiConfigData => ({ baseName: '', portalGroups: {}, targets: {}, initiators: {} });

export async function readIscsiConfig(meta: MetaStore): Promise<IscsiConfigData> {
  const kv = await meta.get(ISCSI_CONFIG_KEY);
  return kv === undefined ? empty() : { ...empty(), ...(JSON.parse(kv.value.toString('utf8')) as Partial<IscsiConfigData>) };
}

type Cmd = Record<string, unknown>;

const str = (o: Cmd, k: string, cmd: string): string => {
  const v = o[k];
  if (typeof v !== 'string') throw invalid(`${cmd}.${k} must be a string`);
  return v;
};
const portOf = (o: Cmd, cmd: string): number => {
  const v = o['port'] ?? 3260;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw invalid(`${cmd}.port must be a TCP port`);
  return n;
};
const cidr = (v: string, cmd: string): { address: string; prefix: number } => {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(v);
  if (m === null || Number(m[2]) > 32 || m[1]!.split('.').some((x) => Number(x) > 255)) throw invalid(`${cmd}.net ${JSON.stringify(v)} is not a.b.c.d/n`);
  return { address: m[1]!, prefix: Number(m[2]) };
};
const nextId = (rec: Record<string, unknown>): string => {
  for (let i = 1; i <= ISCSI_ID_MAX; i++) if (!Object.hasOwn(rec, String(i))) return String(i);
  throw new ApiError('invalidParam', 'no free iSCSI ids left');
};
const findEntry = <T extends { name: string }>(rec: Record<string, T>, name: string): [string, T] | undefined =>
  Object.entries(rec).find(([, v]) => v.name === name);

/** Applies one command to `c` (a private copy); throws ApiError. */
function apply(c: IscsiConfigData, state: State, command: unknown): void {
  if (typeof command !== 'object' || command === null || Array.isArray(command)) throw invalid('each command must be an object');
  const keys = Object.keys(command);
  if (keys.length !== 1) throw invalid('each command must have exactly one key');
  const name = keys[0]!;
  const o = (command as Record<string, unknown>)[name];
  if (typeof o !== 'object' || o === null) throw invalid(`${name} takes an object`);
  const a = o as Cmd;
  const targetOf = (volumeName: string): [string, Target] | undefined => Object.entries(c.targets).find(([, t]) => t.volume === volumeName);
  switch (name) {
    case 'setBaseName': {
      const n = str(a, 'name', name);
      if (!IQN.test(n) || n.length > 200) throw invalid(`baseName ${JSON.stringify(n)} is not a valid iSCSI name`);
      if (Object.keys(c.targets).length > 0 && n !== c.baseName) throw new ApiError('busy', 'the base name cannot change while targets exist');
      c.baseName = n;
      return;
    }
    case 'createPortalGroup': {
      const n = str(a, 'name', name);
      if (!PG_NAME.test(n)) throw invalid(`portal group name ${JSON.stringify(n)} is not valid`);
      if (findEntry(c.portalGroups, n) !== undefined) throw exists(`portal group ${n}`);
      c.portalGroups[nextId(c.portalGroups)] = { name: n, networks: [], portals: [] };
      return;
    }
    case 'deletePortalGroup': {
      const n = str(a, 'name', name);
      const e = findEntry(c.portalGroups, n);
      if (e === undefined) throw notFound(`portal group ${n}`);
      if (Object.values(c.initiators).some((i) => i.exports.some((x) => x.portalGroup === n))) throw new ApiError('busy', `portal group ${n} has exports`);
      delete c.portalGroups[e[0]];
      return;
    }
    case 'portalGroupAddNetwork': {
      const e = findEntry(c.portalGroups, str(a, 'portalGroup', name));
      if (e === undefined) throw notFound(`portal group ${String(a['portalGroup'])}`);
      const net = cidr(str(a, 'net', name), name);
      if (!e[1].networks.some((x) => x.address === net.address && x.prefix === net.prefix)) e[1].networks.push(net);
      return;
    }
    case 'createPortal': {
      const e = findEntry(c.portalGroups, str(a, 'portalGroup', name));
      if (e === undefined) throw notFound(`portal group ${String(a['portalGroup'])}`);
      const controller = a['controller'];
      if (typeof controller !== 'number' || !Number.isInteger(controller) || controller < 1 || controller > ISCSI_ID_MAX) throw invalid(`${name}.controller must be an iSCSI id (1..${ISCSI_ID_MAX})`);
      const ip = str(a, 'ip', name);
      const port = String(portOf(a, name));
      for (const g of Object.values(c.portalGroups)) if (g.portals.some((p) => p.ip === ip && p.port === port)) throw exists(`portal ${ip}:${port}`);
      e[1].portals.push({ controller, ip, port });
      return;
    }
    case 'deletePortal': {
      const ip = str(a, 'ip', name);
      const port = String(portOf(a, name));
      for (const g of Object.values(c.portalGroups)) {
        const i = g.portals.findIndex((p) => p.ip === ip && p.port === port);
        if (i >= 0) { g.portals.splice(i, 1); return; }
      }
      throw notFound(`portal ${ip}:${port}`);
    }
    case 'createTarget': {
      const v = str(a, 'volumeName', name);
      const o2 = findObject(state, v);
      if (o2 === undefined || o2.kind !== 'volume') throw notFound(`volume ${v}`);
      if (c.baseName === '') throw invalid('set the iSCSI base name first (setBaseName)');
      if (targetOf(v) !== undefined) throw exists(`target for volume ${v}`);
      c.targets[nextId(c.targets)] = { currentControllerId: 0, name: `${c.baseName}:${v}`, volume: v };
      return;
    }
    case 'deleteTarget': {
      const v = str(a, 'volumeName', name);
      const t = targetOf(v);
      if (t === undefined) throw notFound(`target for volume ${v}`);
      if (Object.values(c.initiators).some((i) => i.exports.some((x) => x.target === t[1].name))) throw invalid(`target ${t[1].name} is still exported`);
      delete c.targets[t[0]];
      return;
    }
    case 'createInitiator': {
      const n = str(a, 'name', name);
      if (!IQN.test(n.toLowerCase()) || n.length > 223) throw invalid(`initiator name ${JSON.stringify(n)} is not a valid iSCSI name`);
      if (findEntry(c.initiators, n) !== undefined) throw exists(`initiator ${n}`);
      const username = typeof a['username'] === 'string' ? a['username'] : '';
      const secret = typeof a['secret'] === 'string' ? a['secret'] : '';
      c.initiators[nextId(c.initiators)] = { name: n, username, secret, nets: [], exports: [] };
      return;
    }
    case 'deleteInitiator': {
      const e = findEntry(c.initiators, str(a, 'name', name));
      if (e === undefined) throw notFound(`initiator ${String(a['name'])}`);
      delete c.initiators[e[0]];
      return;
    }
    case 'initiatorAddNetwork': {
      const e = findEntry(c.initiators, str(a, 'initiator', name));
      if (e === undefined) throw notFound(`initiator ${String(a['initiator'])}`);
      const net = cidr(str(a, 'net', name), name);
      const text = `${net.address}/${net.prefix}`;
      if (!e[1].nets.includes(text)) e[1].nets.push(text);
      return;
    }
    case 'export':
    case 'exportDelete': {
      const e = findEntry(c.initiators, str(a, 'initiator', name));
      if (e === undefined) throw notFound(`initiator ${String(a['initiator'])}`);
      const pg = str(a, 'portalGroup', name);
      if (findEntry(c.portalGroups, pg) === undefined) throw notFound(`portal group ${pg}`);
      const v = str(a, 'volumeName', name);
      const t = targetOf(v);
      if (t === undefined) throw notFound(`target for volume ${v}`);
      const i = e[1].exports.findIndex((x) => x.portalGroup === pg && x.target === t[1].name);
      if (name === 'export') {
        if (i >= 0) throw exists(`export of ${v} to ${e[1].name} through ${pg}`);
        e[1].exports.push({ portalGroup: pg, target: t[1].name });
      } else {
        if (i < 0) throw notFound(`export of ${v} to ${e[1].name} through ${pg}`);
        e[1].exports.splice(i, 1);
      }
      return;
    }
    default:
      throw invalid(`unknown iSCSIConfig command ${JSON.stringify(name.slice(0, 64))}`);
  }
}

/** Runs the commands in order as one change: all of them apply, or none. */
export async function changeIscsiConfig(meta: MetaStore, state: State, body: unknown): Promise<void> {
  const commands = (body as { commands?: unknown } | undefined)?.commands;
  if (!Array.isArray(commands)) throw invalid('iSCSIConfig takes {"commands": [...]}');
  let failure: unknown;
  await meta.update(ISCSI_CONFIG_KEY, (cur) => {
    failure = undefined;
    const c: IscsiConfigData = cur === undefined ? empty() : { ...empty(), ...(JSON.parse(cur.toString('utf8')) as Partial<IscsiConfigData>) };
    try {
      for (const cmd of commands) apply(c, state, cmd);
    } catch (err) {
      failure = err;
      return undefined;
    }
    return JSON.stringify(c);
  });
  if (failure !== undefined) throw failure;
}

/** `iSCSIExports` data: the configuration plus each target volume's data identity. */
export function iscsiExports(c: IscsiConfigData, state: State): Record<string, unknown> {
  const volumes: Record<string, unknown> = {};
  for (const t of Object.values(c.targets)) {
    const o = findObject(state, t.volume);
    if (o === undefined || o.kind !== 'volume') continue;
    volumes[t.name] = { globalId: o.globalId, size: o.size, dataId: o.dataId, placementId: o.placementId, parents: o.parents, group: o.group };
  }
  return { iscsi: c, volumes };
}
