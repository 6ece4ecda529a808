/**
 * The documents OpenNebula hands to drivers: base64 XML (DS_DRIVER_ACTION_DATA, the VM for
 * premigrate and VMM actions), on stdin (current convention) or as an argument (older one).
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { StorpoolError } from '@storpool/errors';

export type XmlNode = { [key: string]: XmlValue };
export type XmlValue = string | XmlNode | XmlValue[];

const parser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: true, processEntities: true });

/** Base64 or plain XML (OpenNebula sends base64; a '<' first means someone passed it decoded). */
export function decodeDocument(data: string): string {
  const t = data.trim();
  if (t === '') throw new StorpoolError('CONFIG_ERR_INVALID', 'no driver action data (expected base64 XML on stdin or as argument)');
  if (t.startsWith('<')) return t;
  if (!/^[A-Za-z0-9+/=\s]+$/.test(t)) throw new StorpoolError('CONFIG_ERR_INVALID', 'driver action data is neither base64 nor XML');
  return Buffer.from(t, 'base64').toString('utf8');
}

/** Parses a document and checks its root element. */
export function parseDocument(data: string, root: string): XmlNode {
  return parseDocumentOneOf(data, [root]).node;
}

/** Parses a document whose root element is one of `roots` (the first that is present wins). */
export function parseDocumentOneOf(data: string, roots: string[]): { root: string; node: XmlNode } {
  const xml = decodeDocument(data);
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new StorpoolError('CONFIG_ERR_INVALID', `bad XML in driver action data: ${valid.err.msg} (line ${valid.err.line})`);
  const doc = parser.parse(xml) as XmlNode;
  for (const root of roots) {
    const top = doc[root];
    if (top !== undefined && typeof top === 'object' && !Array.isArray(top)) return { root, node: top };
  }
  throw new StorpoolError(
    'CONFIG_ERR_INVALID',
    `driver action data has no ${roots.map((r) => `<${r}>`).join(' or ')} element (got ${Object.keys(doc).filter((k) => k !== '?xml').join(', ') || 'nothing'})`,
  );
}

/** The text at a slash-separated path ('' when absent or not text). */
export function text(node: XmlNode | undefined, path: string): string {
  let cur: XmlValue | undefined = node;
  for (const part of path.split('/')) {
    if (cur === undefined || typeof cur === 'string') return '';
    if (Array.isArray(cur)) cur = cur[0];
    if (cur === undefined || typeof cur === 'string' || Array.isArray(cur)) return '';
    cur = cur[part];
  }
  if (Array.isArray(cur)) cur = cur[0];
  return typeof cur === 'string' ? cur : '';
}

/** The element at a path, as a list (repeated elements such as DISK). */
export function nodes(node: XmlNode | undefined, path: string): XmlNode[] {
  let cur: XmlValue | undefined = node;
  const parts = path.split('/');
  for (const [i, part] of parts.entries()) {
    if (cur === undefined || typeof cur === 'string') return [];
    if (Array.isArray(cur)) cur = cur[0];
    if (cur === undefined || typeof cur === 'string' || Array.isArray(cur)) return [];
    cur = cur[part];
    if (i === parts.length - 1) {
      const list = Array.isArray(cur) ? cur : cur === undefined ? [] : [cur];
      return list.filter((v): v is XmlNode => typeof v === 'object' && !Array.isArray(v));
    }
  }
  return [];
}

/** A required non-negative integer field. */
export function intField(node: XmlNode | undefined, path: string): number {
  const v = text(node, path);
  if (!/^\d+$/.test(v)) throw new StorpoolError('CONFIG_ERR_INVALID', `driver action data: ${path} is ${v === '' ? 'missing' : JSON.stringify(v)}, expected an integer`);
  return Number(v);
}
