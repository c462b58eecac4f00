/**
 * AccessControl: who is calling and what they may pull, before anything else is touched (DESIGN.md,
 * the access/ layer). Framework-free: the HTTP edge (http/access.ts) hands it the Authorization header
 * and the socket's address and turns its answers into responses.
 *
 * - Callers: anonymous (known by address), HTTP Basic checked against the htpasswd file (bcrypt; a
 *   success is remembered for basicCacheSeconds under an HMAC of the credentials, never the password),
 *   or a Bearer token issued by the mirror's /token endpoint (tokens.ts).
 * - Decisions: a repository `<upstream>/<repo>` is pulled when the policy allows the caller (anonymous
 *   callers also need an allowed network) and, for a token, when the token names it.
 * - Failed logins are slowed per user and per address (limits.ts). Nothing here logs or returns a
 *   credential, token or hash.
 * - reload() rereads the htpasswd and policy files (SIGHUP); a bad file keeps the previous ones.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { Htpasswd } from './htpasswd.js';
import { LoginThrottle, RateLimiter } from './limits.js';
import { normalizeAddress, Policy, type Caller } from './policy.js';
import { CLOCK_LEEWAY_SECONDS, TokenSigner, type TokenClaims } from './tokens.js';
import { CallerContext } from './upstream-limit.js';

export interface AccessOptions {
  htpasswdFile: string;
  policyFile: string;
  /** The service name in challenges and the tokens' issuer and audience. */
  service: string;
  tokenTtlSeconds: number;
  /** HS256 key of the tokens (random per process unless configured). */
  tokenKey: Uint8Array;
  /** Members of this policy group may use the admin API. */
  adminGroup: string;
  basicCacheSeconds: number;
  failedLogins: { free: number; maxDelaySeconds: number };
  /** Upstream fetches per client per minute; 0: no limit. */
  missesPerMinute: number;
  now: () => number;
}

/** Who a request comes from, once its credentials (if any) were checked. */
export interface Identity {
  kind: 'anonymous' | 'basic' | 'bearer';
  user: string | undefined;
  address: string;
  /** For a bearer token: the repositories it names. */
  repositories?: string[];
}

/** An Authorization header that was refused. */
export type AuthFailure = { status: 401; reason: string } | { status: 429; retryAfter: number };

export type Decision = 'ok' | 'challenge' | 'denied';

export interface TokenAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

export class AccessControl {
  /** The caller of the request being served, for the per-client upstream limit (only used when there is one). */
  readonly callers = new CallerContext();
  readonly limiter: RateLimiter;
  readonly service: string;
  private htpasswd: Htpasswd;
  private policy: Policy;
  private readonly signer: TokenSigner;
  private readonly throttle: LoginThrottle;
  private readonly hmacKey = randomBytes(32);
  private readonly verified = new Map<string, { user: string; until: number }>();
  /** Tokens already verified (the same string always verifies the same way); expiry is checked on each use. */
  private readonly tokens = new Map<string, { claims: TokenClaims; exp: number }>();

  constructor(private readonly opts: AccessOptions) {
    this.htpasswd = Htpasswd.load(opts.htpasswdFile);
    this.policy = Policy.load(opts.policyFile);
    this.service = opts.service;
    this.signer = new TokenSigner({ key: opts.tokenKey, service: opts.service, ttlSeconds: opts.tokenTtlSeconds, now: opts.now });
    this.throttle = new LoginThrottle({ ...opts.failedLogins, now: opts.now });
    this.limiter = new RateLimiter({ perMinute: opts.missesPerMinute, now: opts.now });
  }

  /** Rereads both files; on an error the previous ones stay in force and the error is returned. */
  reload(): Error | undefined {
    try {
      const h = Htpasswd.load(this.opts.htpasswdFile);
      const p = Policy.load(this.opts.policyFile);
      this.htpasswd = h;
      this.policy = p;
      this.verified.clear();
      return undefined;
    } catch (e) {
      return e as Error;
    }
  }

  /** The client's address: the socket's, or X-Forwarded-For's last hop not a trusted proxy when the socket is one. */
  clientAddress(remote: string | undefined, forwardedFor: string | undefined): string {
    let addr = normalizeAddress(remote ?? '');
    if (forwardedFor && this.policy.isTrustedProxy(addr)) {
      const hops = forwardedFor.split(',').map((h) => normalizeAddress(h.trim())).filter((h) => h !== '');
      while (hops.length > 0) {
        addr = hops.pop()!;
        if (!this.policy.isTrustedProxy(addr)) break;
      }
    }
    return addr;
  }

  /** Checks the Authorization header (absent: anonymous). */
  async authenticate(authorization: string | undefined, address: string): Promise<Identity | AuthFailure> {
    if (!authorization) return { kind: 'anonymous', user: undefined, address };
    const sp = authorization.indexOf(' ');
    const scheme = (sp < 0 ? authorization : authorization.slice(0, sp)).toLowerCase();
    const value = sp < 0 ? '' : authorization.slice(sp + 1).trim();
    if (scheme === 'bearer') {
      const claims = await this.verifyToken(value);
      if (!claims) return { status: 401, reason: 'invalid or expired token' };
      return { kind: 'bearer', user: claims.user, address, repositories: claims.repositories };
    }
    if (scheme === 'basic') {
      const user = await this.checkBasic(value, address);
      if (typeof user !== 'string') return user;
      return { kind: 'basic', user, address };
    }
    return { status: 401, reason: 'unsupported authorization scheme' };
  }

  /** Whether the per-client upstream limit is on (the edge then runs each request in its caller's context). */
  get limiting(): boolean {
    return this.opts.missesPerMinute > 0;
  }

  private async verifyToken(token: string): Promise<TokenClaims | undefined> {
    const now = this.opts.now();
    const hit = this.tokens.get(token);
    if (hit) {
      if (hit.exp > now) return hit.claims;
      this.tokens.delete(token);
      return undefined;
    }
    const claims = await this.signer.verify(token);
    if (claims) {
      if (this.tokens.size >= 10_000) for (const [k, v] of this.tokens) if (v.exp <= now || this.tokens.size >= 10_000) this.tokens.delete(k);
      // Usable as long as the signer's check allows (its leeway included).
      this.tokens.set(token, { claims, exp: ((claims.exp ?? 0) + CLOCK_LEEWAY_SECONDS) * 1000 });
    }
    return claims;
  }

  /** May this identity pull from `<upstream>/<repo>`? `challenge`: authenticate (again); `denied`: 403. */
  mayPull(id: Identity, repository: string): Decision {
    const caller: Caller = { user: id.user, address: id.address };
    const allowed = this.policy.allows(caller, repository);
    if (id.kind === 'bearer' && !id.repositories!.includes(repository)) return 'challenge';
    if (allowed) return 'ok';
    return id.user === undefined ? 'challenge' : 'denied';
  }

  /** The base endpoint (/v2/) and the catalog: any authenticated caller, or anonymous from an allowed network. */
  mayEnter(id: Identity): boolean {
    return id.user !== undefined || this.policy.anonymousAllowedFrom(id.address);
  }

  /** Repositories of `names` the identity may see (the catalog). */
  visible(id: Identity, repositories: string[]): Set<string> {
    const caller: Caller = { user: id.user, address: id.address };
    return new Set(repositories.filter((r) => this.policy.allows(caller, r)));
  }

  /** The admin API: Basic credentials of a member of the admin group. */
  async mayAdminister(authorization: string | undefined, address: string): Promise<'ok' | 'unauthorized' | 'forbidden' | { retryAfter: number }> {
    if (!authorization || !/^basic /i.test(authorization)) return 'unauthorized';
    const user = await this.checkBasic(authorization.slice(6).trim(), address);
    if (typeof user !== 'string') return user.status === 429 ? { retryAfter: user.retryAfter } : 'unauthorized';
    return this.policy.inGroup(user, this.opts.adminGroup) ? 'ok' : 'forbidden';
  }

  /**
   * GET /token: Basic credentials (or none, from an allowed network) for a token naming the requested
   * repositories the policy allows; `resolve` turns a client-visible name into `<upstream>/<repo>`.
   */
  async token(authorization: string | undefined, address: string, scopes: string[], resolve: (name: string) => string | undefined): Promise<TokenAnswer> {
    const basicChallenge = { 'www-authenticate': `Basic realm="${this.service}"` };
    let user: string | undefined;
    if (authorization) {
      if (!/^basic /i.test(authorization)) return errorAnswer(401, 'UNAUTHORIZED', 'the token endpoint takes HTTP Basic credentials', basicChallenge);
      const r = await this.checkBasic(authorization.slice(6).trim(), address);
      if (typeof r !== 'string') {
        return r.status === 429
          ? errorAnswer(429, 'TOOMANYREQUESTS', 'too many failed logins: try again later', { 'retry-after': String(r.retryAfter) })
          : errorAnswer(401, 'UNAUTHORIZED', 'authentication required', basicChallenge);
      }
      user = r;
    } else if (!this.policy.anonymousAllowedFrom(address)) {
      return errorAnswer(401, 'UNAUTHORIZED', 'authentication required', basicChallenge);
    }
    const caller: Caller = { user, address };
    const granted = new Set<string>();
    for (const scope of scopes.slice(0, 32)) {
      for (const name of pullScopes(scope)) {
        const repository = resolve(name);
        if (repository !== undefined && this.policy.allows(caller, repository)) granted.add(repository);
      }
    }
    const token = await this.signer.sign({ user, repositories: [...granted] } satisfies TokenClaims);
    const issuedAt = new Date(this.opts.now()).toISOString();
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { token, access_token: token, expires_in: this.signer.ttlSeconds, issued_at: issuedAt },
    };
  }

  /** The user of `base64(user:password)`, or why not. */
  private async checkBasic(encoded: string, address: string): Promise<string | AuthFailure> {
    let decoded: string;
    try {
      decoded = Buffer.from(encoded, 'base64').toString('utf8');
    } catch {
      return { status: 401, reason: 'malformed credentials' };
    }
    const colon = decoded.indexOf(':');
    if (colon <= 0 || decoded.length > 1024) return { status: 401, reason: 'malformed credentials' };
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const now = this.opts.now();
    const mac = createHmac('sha256', this.hmacKey).update(user).update('\0').update(password).digest('hex');
    const hit = this.verified.get(mac);
    if (hit && hit.until > now && safeEqual(hit.user, user)) return user;
    // Per user at this address, and per address: never per user alone, or anyone anywhere could
    // lock a user out by failing logins in their name (the right password would then be refused too).
    // An IPv6 address counts by its /64: one host has a whole /64 to cycle through.
    const from = throttleAddress(address);
    const keys = [`user:${user}@${from}`, `addr:${from}`];
    const wait = this.throttle.retryAfter(keys);
    if (wait > 0) return { status: 429, retryAfter: wait };
    if (!(await this.htpasswd.verify(user, password))) {
      this.throttle.failed(keys);
      return { status: 401, reason: 'invalid username or password' };
    }
    this.throttle.succeeded(keys);
    if (this.opts.basicCacheSeconds > 0) {
      if (this.verified.size > 10_000) this.verified.clear();
      this.verified.set(mac, { user, until: now + this.opts.basicCacheSeconds * 1000 });
    }
    return user;
  }
}

/** The address failed logins are counted by: an IPv4 address, or an IPv6 address's /64 prefix. */
export function throttleAddress(address: string): string {
  if (isIP(address) !== 6) return address;
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::ffff:1.2.3.4 forms) takes two groups; it is past the /64 either way.
  const missing = 8 - left.length - right.length;
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, missing)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function errorAnswer(status: number, code: string, message: string, headers: Record<string, string>): TokenAnswer {
  return { status, headers, body: { errors: [{ code, message }] } };
}

/**
 * The repository names a token request's `scope` asks to pull (space-separated entries of
 * `repository:<name>:<actions>`). The name may hold a colon (an upstream with a port,
 * `reg.local:5000/team/app`): the actions are what follows the last one.
 */
export function pullScopes(scope: string): string[] {
  const names: string[] = [];
  for (const one of scope.split(' ')) {
    const m = /^repository:(.+):([a-z,*]+)$/.exec(one);
    if (m && m[2]!.split(',').includes('pull')) names.push(m[1]!);
  }
  return names;
}
