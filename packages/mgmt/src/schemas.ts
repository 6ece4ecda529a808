/**
 * Request bodies (API.md §5), checked with zod. Unknown fields are dropped (tolerated); integer
 * ids may be numeric strings (§1.7). A failed check is `invalidParam` naming the field.
 */
import { z } from 'zod';
import { invalid } from './api-error.js';

const intLike = z.union([z.number().int(), z.string().regex(/^-?\d{1,16}$/).transform(Number)]);
const idLike = z.union([z.number().int(), z.string().regex(/^\d{1,9}$/).transform(Number)]);
const limit = z.union([z.number().int().min(0), z.literal('-')]);
const tags = z.record(z.string(), z.string());
const name = z.string().max(1024);

const policy = {
  placeAll: name.optional(),
  placeTail: name.optional(),
  placeHead: name.optional(),
  replication: intLike.optional(),
  bw: limit.optional(),
  iops: limit.optional(),
  limitType: z.enum(['total', 'perGiB']).optional(),
  reuseServer: z.boolean().optional(),
};

export const volumeCreate = z.object({
  ...policy,
  name: name.optional(),
  size: intLike.optional(),
  parent: name.optional(),
  baseOn: name.optional(),
  template: name.optional(),
  tags: tags.optional(),
});

export const volumeUpdate = z.object({
  ...policy,
  rename: name.optional(),
  size: intLike.optional(),
  sizeAdd: intLike.optional(),
  shrinkOk: z.boolean().optional(),
  template: name.optional(),
  tags: tags.optional(),
});

export const volumeDelete = z.object({ onAttached: z.enum(['fail', 'detach', 'detachForce', 'export']).optional() });
export const volumeRevert = z.object({ toSnapshot: name, revertSize: z.boolean().optional() });
export const volumeFreeze = z.object({ targetDeleteDate: intLike.optional(), deleteAfter: intLike.optional() });

export const volumeSnapshot = z.object({
  name: name.optional(),
  bind: z.boolean().optional(),
  targetDeleteDate: intLike.optional(),
  deleteAfter: intLike.optional(),
  tags: tags.optional(),
});

export const snapshotUpdate = z.object({
  ...policy,
  rename: name.optional(),
  template: name.optional(),
  bind: z.boolean().optional(),
  targetDeleteDate: intLike.optional(),
  deleteAfter: intLike.optional(),
  tags: tags.optional(),
});

export const groupSnapshot = z.object({
  volumes: z.array(z.object({ volume: name, name: name.optional(), tags: tags.optional() })).max(1024),
  tags: tags.optional(),
});

const clientList = z.array(idLike).max(4096);
const reassignEntry = z.object({
  volume: name.optional(),
  snapshot: name.optional(),
  detach: z.union([z.literal('all'), clientList]).optional(),
  ro: clientList.optional(),
  rw: clientList.optional(),
  force: z.boolean().optional(),
});
export const reassign = z.array(reassignEntry).max(1024);
export const reassignWait = z.union([
  reassign,
  z.object({ reassign, attachTimeout: intLike.optional() }),
]);

/** storpool extension: `POST ClientStatus/<id>` from the block service. */
export const clientStatus = z.object({
  generation: z.number().int().min(0),
  open: z.array(z.string().max(256)).max(4096).optional(),
  errors: z.record(z.string().max(256), z.string().max(4096)).optional(),
});

export const templateCreate = z.object({
  ...policy,
  name,
  parent: name.optional(),
  size: z.union([intLike, z.literal('-')]).optional(),
});

export const templateUpdate = z.object({
  ...policy,
  rename: name.optional(),
  parent: name.optional(),
  size: z.union([intLike, z.literal('-')]).optional(),
  propagate: z.boolean().optional(),
});

export const placementGroupUpdate = z.object({
  rename: name.optional(),
  addDisks: z.array(idLike).max(4096).default([]),
  rmDisks: z.array(idLike).max(4096).default([]),
});

export const balancerCommand = z.object({ cmd: z.enum(['start', 'stop', 'commit']) });
export const kvSet = z.object({ runIfVersionIs: intLike.optional(), set: z.record(z.string(), z.string()) });

/** Parses `body` or throws invalidParam with the first problem. */
export function parse<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue?.path.map(String).join('.') ?? '';
  throw invalid(`${path === '' ? 'request' : path}: ${issue?.message ?? 'invalid'}`);
}

/** Drops keys whose value is undefined (exactOptionalPropertyTypes). */
export type Defined<T> = { [K in keyof T as undefined extends T[K] ? never : K]: T[K] } & { [K in keyof T as undefined extends T[K] ? K : never]?: Exclude<T[K], undefined> };

export function defined<T extends object>(value: T): Defined<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Defined<T>;
}

export const diskRegister = z.object({
  serverId: idLike,
  address: z.object({ host: z.string().min(1).max(255), port: z.number().int().min(1).max(65535) }),
  faultSet: z.string().regex(/^[A-Za-z0-9_\-]*$/).max(127).optional(),
  weight: z.number().positive().finite().optional(),
  placementGroups: z.array(name).max(64).optional(),
  ssd: z.boolean().optional(),
  model: z.string().max(64).optional(),
  serial: z.string().max(64).optional(),
  description: z.string().regex(/^[A-Za-z0-9_\- ]{0,30}$/).optional(),
});
