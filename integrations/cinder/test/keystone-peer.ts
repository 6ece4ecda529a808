/**
 * A minimal Keystone v3 for the tests (a peer, not the thing under test): version discovery,
 * password authentication with a project scope (POST /v3/auth/tokens, the token in
 * X-Subject-Token, a catalog naming the Cinder shim), and token validation
 * (GET /v3/auth/tokens with X-Auth-Token and X-Subject-Token), as keystoneauth1 and
 * keystonemiddleware use them.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface PeerUser { name: string; password: string; id: string; project: { name: string; id: string }; roles: string[] }

export interface KeystonePeer {
  url: string;
  server: Server;
  /** Requests seen, `METHOD path`. */
  seen: string[];
  revoke(token: string): void;
  close(): Promise<void>;
}

export async function startKeystonePeer(port: number, volumeUrl: string, users: PeerUser[]): Promise<KeystonePeer> {
  const tokens = new Map<string, PeerUser>();
  const seen: string[] = [];
  const url = `http://127.0.0.1:${port}`;
  const version = { id: 'v3.14', status: 'stable', updated: '2020-04-07T00:00:00Z', links: [{ rel: 'self', href: `${url}/v3/` }], 'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }] };
  const tokenBody = (u: PeerUser): unknown => ({
    token: {
      methods: ['password'], expires_at: new Date(Date.now() + 3600_000).toISOString(), issued_at: new Date().toISOString(), audit_ids: ['a'],
      user: { id: u.id, name: u.name, domain: { id: 'default', name: 'Default' }, password_expires_at: null },
      project: { id: u.project.id, name: u.project.name, domain: { id: 'default', name: 'Default' } },
      roles: u.roles.map((r) => ({ id: `role-${r}`, name: r })), is_domain: false,
      catalog: [
        { type: 'identity', name: 'keystone', id: 'svc-identity', endpoints: ['public', 'internal', 'admin'].map((i) => ({ id: `ks-${i}`, interface: i, region: 'RegionOne', region_id: 'RegionOne', url: `${url}/v3` })) },
        // OpenStackClient builds an image client for `volume create` even without --image.
        { type: 'image', name: 'glance', id: 'svc-image', endpoints: [{ id: 'image-public', interface: 'public', region: 'RegionOne', region_id: 'RegionOne', url: `${url}/image` }] },
        ...['volumev3', 'block-storage'].map((type) => ({
          type, name: type === 'volumev3' ? 'cinderv3' : 'block-storage', id: `svc-${type}`,
          endpoints: ['public', 'internal', 'admin'].map((i) => ({ id: `${type}-${i}`, interface: i, region: 'RegionOne', region_id: 'RegionOne', url: `${volumeUrl}/v3/${u.project.id}` })),
        })),
      ],
    },
  });
  const read = async (req: IncomingMessage): Promise<string> => {
    let s = '';
    for await (const c of req as AsyncIterable<Buffer>) s += c.toString('utf8');
    return s;
  };
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '');
      seen.push(`${req.method} ${path}`);
      const send = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
        const text = JSON.stringify(body);
        res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)), ...headers });
        res.end(text);
      };
      if (req.method === 'GET' && path === '') return send(300, { versions: { values: [version] } });
      if (req.method === 'GET' && path === '/v3') return send(200, { version });
      // Only the image service's version document: OpenStackClient discovers it, never calls it here.
      if (req.method === 'GET' && path === '/image') return send(300, { versions: [{ id: 'v2.16', status: 'CURRENT', links: [{ rel: 'self', href: `${url}/image/v2/` }] }] });
      if (path === '/v3/auth/tokens' && req.method === 'POST') {
        const body = JSON.parse(await read(req)) as { auth?: { identity?: { password?: { user?: { name?: string; password?: string } } }; scope?: { project?: { name?: string; id?: string } } } };
        const pu = body.auth?.identity?.password?.user;
        const u = users.find((x) => x.name === pu?.name && x.password === pu?.password);
        const scope = body.auth?.scope?.project;
        if (u === undefined || (scope !== undefined && scope.name !== u.project.name && scope.id !== u.project.id)) {
          return send(401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
        }
        const token = randomBytes(16).toString('hex');
        tokens.set(token, u);
        return send(201, tokenBody(u), { 'X-Subject-Token': token });
      }
      if (path === '/v3/auth/tokens' && req.method === 'GET') {
        const caller = tokens.get(String(req.headers['x-auth-token'] ?? ''));
        if (caller === undefined) return send(401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
        const subject = String(req.headers['x-subject-token'] ?? '');
        const u = tokens.get(subject);
        if (u === undefined) return send(404, { error: { code: 404, title: 'Not Found', message: `Could not find token: ${subject}.` } });
        return send(200, tokenBody(u), { 'X-Subject-Token': subject });
      }
      return send(404, { error: { code: 404, title: 'Not Found', message: 'not here' } });
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen,
    revoke: (t) => { tokens.delete(t); },
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
