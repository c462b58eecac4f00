/**
 * Registry authentication as the fake's `auth` option sets it:
 * - 'bearer' (Docker Hub): 401 + `WWW-Authenticate: Bearer realm=<url>/token,service="fake-hub",scope=...`;
 *   the token realm (auth.docker.io's GET, or the OAuth2 password-grant POST) hands out opaque
 *   tokens remembered with their repositories and an expiry on the injected clock.
 * - 'basic' and 'none' model private registries.
 */
import { randomBytes } from 'node:crypto';
import { json, ociError, parseBasic, readBody, send, type Ctx } from './protocol.js';

export const SERVICE = 'fake-hub';

interface Grant {
  repos: Set<string>;
  expiresAt: number;
}

export interface AuthOptions {
  mode: 'bearer' | 'basic' | 'none';
  credentials?: { username: string; password: string };
  /** `expires_in` of issued tokens. */
  ttlSeconds: number;
  /** The registry's base URL; the realm is `<url>/token`. */
  url: string;
  now: () => number;
}

export class Auth {
  private readonly tokens = new Map<string, Grant>();

  constructor(private readonly opts: AuthOptions) {}

  get mode(): AuthOptions['mode'] {
    return this.opts.mode;
  }

  /** Makes every issued token invalid now, as if they had all expired. */
  expireAll(): void {
    for (const g of this.tokens.values()) g.expiresAt = 0;
  }

  /** True when the request may proceed; otherwise the 401 challenge has been sent. */
  authorize(ctx: Ctx, repo?: string): boolean {
    const { mode, credentials } = this.opts;
    const header = ctx.req.headers.authorization;
    if (mode === 'none') return true;
    if (mode === 'basic') {
      const given = parseBasic(header);
      const ok = given && (!credentials || (given.username === credentials.username && given.password === credentials.password));
      if (ok) return true;
      ociError(ctx, 401, 'UNAUTHORIZED', 'authentication required', null, { 'www-authenticate': 'Basic realm="fake"' });
      return false;
    }
    let error: string | undefined;
    const token = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];
    if (token !== undefined) {
      const grant = this.tokens.get(token);
      if (!grant || grant.expiresAt <= this.opts.now()) error = 'invalid_token';
      else if (repo !== undefined && !grant.repos.has(repo)) error = 'insufficient_scope';
      else return true;
    }
    let challenge = `Bearer realm="${this.opts.url}/token",service="${SERVICE}"`;
    if (repo !== undefined) challenge += `,scope="repository:${repo}:pull"`;
    if (error) challenge += `,error="${error}"`;
    const detail = repo === undefined ? null : [{ Type: 'repository', Class: '', Name: repo, Action: 'pull' }];
    ociError(ctx, 401, 'UNAUTHORIZED', 'authentication required', detail, { 'www-authenticate': challenge });
    return false;
  }

  /** Docker Hub's auth.docker.io: GET with optional Basic, or the OAuth2 POST password grant. */
  async handleToken(ctx: Ctx): Promise<void> {
    const { credentials, ttlSeconds } = this.opts;
    let params = ctx.url.searchParams;
    let given = parseBasic(ctx.req.headers.authorization);
    if (ctx.req.method === 'POST') {
      params = new URLSearchParams(await readBody(ctx.req, 64 * 1024));
      if (params.get('grant_type') !== 'password') return json(ctx, 400, { error: 'unsupported_grant_type' });
      given = { username: params.get('username') ?? '', password: params.get('password') ?? '' };
    } else if (ctx.req.method !== 'GET') {
      return send(ctx, 405, { 'content-type': 'text/plain' }, 'method not allowed\n');
    }
    const service = params.get('service');
    if (service !== null && service !== SERVICE) return json(ctx, 400, { details: `unknown service ${service}` });
    if (credentials) {
      const ok = given && given.username === credentials.username && given.password === credentials.password;
      if (!ok) return json(ctx, 401, { details: 'incorrect username or password' });
    }
    const repos = new Set<string>();
    for (const scope of params.getAll('scope').flatMap((s) => s.split(' '))) {
      const m = /^repository(?:\([^)]*\))?:([^:]+):(.*)$/.exec(scope);
      if (m && m[2]!.split(',').some((a) => a === 'pull' || a === '*')) repos.add(m[1]!);
    }
    const token = randomBytes(24).toString('base64url');
    const issuedAt = this.opts.now();
    this.tokens.set(token, { repos, expiresAt: issuedAt + ttlSeconds * 1000 });
    json(ctx, 200, { token, access_token: token, expires_in: ttlSeconds, issued_at: new Date(issuedAt).toISOString() });
  }
}
