/** Test helpers: API calls over real HTTP (node:http, so raw `#`/`*` paths reach the server as sent). */
import { request } from 'node:http';
import { expect } from 'vitest';

export interface RawReply {
  status: number;
  text: string;
  json: { generation?: number; data?: unknown; error?: { name: string; descr: string; transient: boolean } };
}

export class Api {
  readonly url: string;
  readonly token: string;

  constructor(url: string, token: string) {
    this.url = url;
    this.token = token;
  }

  raw(method: string, path: string, body?: string, headers: Record<string, string> = {}, auth: string | null = `Storpool v1:${this.token}`): Promise<RawReply> {
    const u = new URL(this.url);
    return new Promise((resolve, reject) => {
      const req = request({
        host: u.hostname, port: u.port, method, path: path.startsWith('/') ? path : `/ctrl/1.0/${path}`,
        headers: { ...(auth === null ? {} : { Authorization: auth }), ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}), ...headers },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, text, json: JSON.parse(text) as RawReply['json'] });
          } catch (err) {
            reject(new Error(`${method} ${path}: non-JSON reply ${res.statusCode}: ${text.slice(0, 200)} (${(err as Error).message})`));
          }
        });
      });
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  /** A successful call's `data`; fails the test on an error envelope. */
  async get<T = any>(path: string): Promise<T> {
    const r = await this.raw('GET', path);
    if (r.json.error !== undefined || r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.text}`);
    expect(typeof r.json.generation).toBe('number');
    return r.json.data as T;
  }

  async post<T = any>(path: string, body?: unknown): Promise<T> {
    const r = await this.raw('POST', path, body === undefined ? undefined : JSON.stringify(body));
    if (r.json.error !== undefined || r.status !== 200) throw new Error(`POST ${path}: ${r.status} ${r.text}`);
    const data = r.json.data as { ok?: boolean; generation?: number };
    expect(data.ok).toBe(true);
    expect(data.generation).toBe(r.json.generation);
    return r.json.data as T;
  }

  /** The error of a call that must fail: checks the envelope and a non-200 status. */
  async fail(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ name: string; descr: string; transient: boolean }> {
    const r = await this.raw(method, path, body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
    expect(r.status, `${method} ${path} should fail: ${r.text}`).not.toBe(200);
    expect(r.json.error, r.text).toBeDefined();
    expect(Object.keys(r.json).sort()).toEqual(['error']);
    expect(typeof r.json.error!.transient).toBe('boolean');
    return r.json.error!;
  }

  async generation(): Promise<number> {
    const r = await this.raw('GET', 'VolumesList');
    return r.json.generation!;
  }
}

let counter = 0;
/** A name unique within this test process. */
export function unique(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}`;
}

export const GiB = 1024 ** 3;
