/**
 * HELLO exchange: the first frame on every connection. The connecting side states its protocol
 * version, role and cluster; the server answers with its disk id, cluster and shard-map epoch, or
 * with an error reply and closes. Layouts (32 bytes each) are in docs/wire-protocol.md.
 */
import { StorpoolError } from '@storpool/errors';
import { PROTOCOL_VERSION } from './limits.js';

export const HELLO_BYTES = 32;

export const PeerRole = { CLIENT: 1, PEER: 2 } as const;
export type PeerRole = (typeof PeerRole)[keyof typeof PeerRole];

export interface HelloRequest {
  protocolVersion: number;
  role: PeerRole;
  /** Client id for clients, disk id for peers. */
  senderId: number;
  clusterId: string;
}

export interface HelloReply {
  protocolVersion: number;
  diskId: number;
  clusterId: string;
  epoch: number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isClusterId(value: string): boolean {
  return UUID_RE.test(value);
}

export function clusterIdToBytes(id: string): Buffer {
  if (!isClusterId(id)) throw new StorpoolError('CONFIG_ERR_INVALID', `cluster id ${JSON.stringify(id)} is not a lowercase UUID`);
  return Buffer.from(id.replaceAll('-', ''), 'hex');
}

export function clusterIdFromBytes(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function invalid(message: string): StorpoolError {
  return new StorpoolError('WIRE_ERR_FRAME_INVALID', message);
}

/** 0 u16 version  2 u16 role  4 u32 senderId  8 16B clusterId  24 u64 reserved(0) */
export function encodeHelloRequest(h: HelloRequest): Buffer {
  const b = Buffer.alloc(HELLO_BYTES);
  b.writeUInt16LE(h.protocolVersion, 0);
  b.writeUInt16LE(h.role, 2);
  b.writeUInt32LE(h.senderId, 4);
  clusterIdToBytes(h.clusterId).copy(b, 8);
  return b;
}

export function decodeHelloRequest(b: Buffer): HelloRequest {
  if (b.length !== HELLO_BYTES) throw invalid(`HELLO payload is ${b.length} bytes, expected ${HELLO_BYTES}`);
  const role = b.readUInt16LE(2);
  if (role !== PeerRole.CLIENT && role !== PeerRole.PEER) throw invalid(`unknown HELLO role ${role}`);
  if (b.readUInt32LE(24) !== 0 || b.readUInt32LE(28) !== 0) throw invalid('HELLO reserved bytes are not zero');
  return {
    protocolVersion: b.readUInt16LE(0),
    role,
    senderId: b.readUInt32LE(4),
    clusterId: clusterIdFromBytes(b.subarray(8, 24)),
  };
}

/** 0 u16 version  2 u16 reserved(0)  4 u32 diskId  8 16B clusterId  24 u32 epoch  28 u32 reserved(0) */
export function encodeHelloReply(h: HelloReply): Buffer {
  const b = Buffer.alloc(HELLO_BYTES);
  b.writeUInt16LE(h.protocolVersion, 0);
  b.writeUInt32LE(h.diskId, 4);
  clusterIdToBytes(h.clusterId).copy(b, 8);
  b.writeUInt32LE(h.epoch, 24);
  return b;
}

export function decodeHelloReply(b: Buffer): HelloReply {
  if (b.length !== HELLO_BYTES) throw invalid(`HELLO reply payload is ${b.length} bytes, expected ${HELLO_BYTES}`);
  if (b.readUInt16LE(2) !== 0 || b.readUInt32LE(28) !== 0) throw invalid('HELLO reply reserved bytes are not zero');
  return {
    protocolVersion: b.readUInt16LE(0),
    diskId: b.readUInt32LE(4),
    clusterId: clusterIdFromBytes(b.subarray(8, 24)),
    epoch: b.readUInt32LE(24),
  };
}

/** Server side: the error to refuse a HELLO with, or undefined to accept it. */
export function checkHello(h: HelloRequest, clusterId: string): StorpoolError | undefined {
  if (h.protocolVersion !== PROTOCOL_VERSION) {
    return new StorpoolError('WIRE_ERR_VERSION', `peer speaks protocol ${h.protocolVersion}, this server ${PROTOCOL_VERSION}: upgrade the older side`);
  }
  if (h.clusterId !== clusterId) {
    return new StorpoolError('WIRE_ERR_CLUSTER_MISMATCH', `peer belongs to cluster ${h.clusterId}, this server to ${clusterId}: check the shard map / storpool.conf`);
  }
  return undefined;
}

/** OBJECT_LIST reply entry: 24 bytes: u64 volumeId, u32 objectIndex, u32 allocatedBlocks, u64 version. */
export const OBJECT_LIST_ENTRY_BYTES = 24;

export interface ObjectListEntry {
  volumeId: number;
  objectIndex: number;
  allocatedBlocks: number;
  version: number;
}

export function encodeObjectList(entries: readonly ObjectListEntry[]): Buffer {
  const b = Buffer.alloc(entries.length * OBJECT_LIST_ENTRY_BYTES);
  entries.forEach((e, i) => {
    const at = i * OBJECT_LIST_ENTRY_BYTES;
    b.writeUInt32LE(e.volumeId % 0x1_0000_0000, at);
    b.writeUInt32LE(Math.floor(e.volumeId / 0x1_0000_0000), at + 4);
    b.writeUInt32LE(e.objectIndex, at + 8);
    b.writeUInt32LE(e.allocatedBlocks, at + 12);
    b.writeUInt32LE(e.version % 0x1_0000_0000, at + 16);
    b.writeUInt32LE(Math.floor(e.version / 0x1_0000_0000), at + 20);
  });
  return b;
}

export function decodeObjectList(b: Buffer): ObjectListEntry[] {
  if (b.length % OBJECT_LIST_ENTRY_BYTES !== 0) throw invalid(`object list of ${b.length} bytes is not a multiple of ${OBJECT_LIST_ENTRY_BYTES}`);
  const out: ObjectListEntry[] = [];
  for (let at = 0; at < b.length; at += OBJECT_LIST_ENTRY_BYTES) {
    out.push({
      volumeId: b.readUInt32LE(at + 4) * 0x1_0000_0000 + b.readUInt32LE(at),
      objectIndex: b.readUInt32LE(at + 8),
      allocatedBlocks: b.readUInt32LE(at + 12),
      version: b.readUInt32LE(at + 20) * 0x1_0000_0000 + b.readUInt32LE(at + 16),
    });
  }
  return out;
}
