/**
 * Keystone v3 token validation, as keystonemiddleware's auth_token does it: the shim logs in as
 * its service user (POST /v3/auth/tokens, password method) and validates each user token with
 * GET /v3/auth/tokens (X-Auth-Token: service token, X-Subject-Token: user token). Valid tokens are
 * cached briefly so that a client's burst of calls costs one validation.
 */
import { CinderError } from './errors.js';

export interface KeystoneOptions {
  /** Identity endpoint, e.g. http://keystone:5000 (with or without /v3). */
  url: string;
  username: string;
  password: string;
  projectName: string;
  userDomainName?: string;
  projectDomainName?: string;
  /** How long a validated token is trusted without asking again. */
  cacheMs?: number;
  timeoutMs?: number;
}

export interface Identity {
  userId: string;
  projectId: string;
  roles: string[];
}

/** Bounds the validation cache: a client sending random tokens cannot grow it without end. */
const CACHE_ENTRIES_MAX = 10_000;
const CACHE_MS_DEFAULT = 60_000;
const TIMEOUT_MS_DEFAULT = 10_000;

interface TokenBody {
  token?: { expires_at?: string; user?: { id?: string }; project?: { id?: string }; roles?: { name?: string }[] };
}

export class KeystoneAuth {
  readonly base: string;
  readonly #o: KeystoneOptions;
  #service: { token: string; expires: number } | undefined;
  readonly #cache = new Map<string, { identity: Identity; until: number }>();

  constructor(o: KeystoneOptions) {
    this.#o = o;
    this.base = o.url.replace(/\/+$/, '').replace(/\/v3$/, '');
  }

  get wwwAuthenticate(): string {
    return `Keystone uri="${this.base}"`;
  }

  async #fetch(path: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, { ...init, signal: AbortSignal.timeout(this.#o.timeoutMs ?? TIMEOUT_MS_DEFAULT) });
    } catch (err) {
      throw new CinderError(503, `cannot reach Keystone at ${this.base}: ${(err as Error).message}`);
    }
  }

  async #serviceToken(): Promise<string> {
    if (this.#service !== undefined && this.#service.expires > Date.now()) return this.#service.token;
    const body = {
      auth: {
        identity: { methods: ['password'], password: { user: { name: this.#o.username, domain: { name: this.#o.userDomainName ?? 'Default' }, password: this.#o.password } } },
        scope: { project: { name: this.#o.projectName, domain: { name: this.#o.projectDomainName ?? 'Default' } } },
      },
    };
    const res = await this.#fetch('/v3/auth/tokens', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const token = res.headers.get('x-subject-token');
    if (res.status !== 201 || token === null) throw new CinderError(503, `Keystone refused the service user ${this.#o.username}: HTTP ${res.status}`);
    const parsed = (await res.json()) as TokenBody;
    const expires = Date.parse(parsed.token?.expires_at ?? '') || Date.now() + 3600_000;
    // Renew a minute early so that no validation goes out with an expiring service token.
    this.#service = { token, expires: expires - 60_000 };
    return token;
  }

  /** The identity behind a user token, or undefined when Keystone does not know it. */
  async validate(token: string): Promise<Identity | undefined> {
    const hit = this.#cache.get(token);
    if (hit !== undefined && hit.until > Date.now()) return hit.identity;
    let res = await this.#fetch('/v3/auth/tokens', { headers: { 'x-auth-token': await this.#serviceToken(), 'x-subject-token': token } });
    if (res.status === 401) {
      this.#service = undefined;
      res = await this.#fetch('/v3/auth/tokens', { headers: { 'x-auth-token': await this.#serviceToken(), 'x-subject-token': token } });
    }
    if (res.status === 404 || res.status === 401) return undefined;
    if (res.status !== 200) throw new CinderError(503, `Keystone answered HTTP ${res.status} to a token validation`);
    const body = (await res.json()) as TokenBody;
    const userId = body.token?.user?.id;
    const projectId = body.token?.project?.id;
    if (userId === undefined || projectId === undefined) return undefined;
    const identity = { userId, projectId, roles: (body.token?.roles ?? []).map((r) => r.name ?? '').filter((n) => n !== '') };
    const expires = Date.parse(body.token?.expires_at ?? '') || Date.now();
    if (this.#cache.size >= CACHE_ENTRIES_MAX) this.#cache.clear();
    this.#cache.set(token, { identity, until: Math.min(expires, Date.now() + (this.#o.cacheMs ?? CACHE_MS_DEFAULT)) });
    return identity;
  }
}
