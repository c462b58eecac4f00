/**
 * Upstream authentication: answers a 401 challenge with a Bearer token from the realm (anonymous or
 * with the configured credentials as HTTP Basic) or with Basic credentials. Tokens are cached per
 * scope until shortly before they expire, and one fetch per scope is in flight at a time, so fifty
 * clients pulling one repository cause one token request.
 */
import { LRUCache } from 'lru-cache';
import type { Dispatcher } from 'undici';
import type { Challenge } from './challenge.js';
import { UpstreamError } from './errors.js';
import { SingleFlight } from '../util/single-flight.js';

export interface Credentials {
  username: string;
  password: string;
}

export interface AuthDeps {
  dispatcher: Dispatcher;
  /** Milliseconds since the epoch; injected so expiry is testable. */
  now: () => number;
  credentials?: Credentials;
  /** Called once per token request sent to the realm, with its outcome. */
  onTokenFetch?: (ok: boolean) => void;
  headersTimeout: number;
  bodyTimeout: number;
  /** The upstream's key, for errors. */
  upstream: string;
  userAgent: string;
  /** The token cache's bound in units of one token of up to 1 KiB (default MAX_TOKEN_UNITS). */
  maxTokenUnits?: number;
}

interface Token {
  value: string;
  /** When to stop using it: before the real expiry, so an in-flight request never carries a dead token. */
  renewAt: number;
}

/** Renew this long before expiry (at most a quarter of the token's life). */
const EXPIRY_MARGIN_MS = 15_000;
const DEFAULT_TOKEN_TTL_S = 60;
const MAX_TOKEN_BODY = 256 * 1024;
/**
 * Tokens kept, counted in KiB started (a Docker Hub token is ~1-2 KiB): ~4 MiB at most. A scope is
 * one repository, and a registry like Docker Hub gives a token for any name, even one that does
 * not exist, so a client asking for many names must not grow this for ever; the least recently
 * used token goes first and is fetched again if its repository comes back.
 */
export const MAX_TOKEN_UNITS = 4096;

export class UpstreamAuth {
  private readonly tokens: LRUCache<string, Token>;
  /** One token request per scope at a time. */
  private readonly pending = new SingleFlight<string | undefined>();
  /** The last Bearer challenge seen: lets a new scope fetch its token without a 401 round trip first. */
  private bearer: { realm: string; service: string | undefined } | undefined;
  private basicOnly = false;

  constructor(private readonly deps: AuthDeps) {
    this.tokens = new LRUCache<string, Token>({
      maxSize: Math.max(1, deps.maxTokenUnits ?? MAX_TOKEN_UNITS),
      sizeCalculation: (t, scope) => Math.max(1, Math.ceil((t.value.length + scope.length) / 1024)),
    });
  }

  /** The Authorization header to send for a scope before any challenge, if one is known. */
  async headerFor(scope: string): Promise<string | undefined> {
    if (this.basicOnly) return this.basicHeader();
    const t = this.tokens.get(scope);
    if (t && t.renewAt > this.deps.now()) return `Bearer ${t.value}`;
    // A token past its time is never sent again: it goes now rather than when the cache fills.
    if (t && !this.pending.has(scope)) this.tokens.delete(scope);
    if (this.bearer) return this.fetchToken(scope, this.bearer.realm, this.bearer.service);
    return undefined;
  }

  /**
   * Answers a 401's challenge: returns the header to retry with, or undefined when there is nothing
   * new to try (the caller then reports UNAUTHORIZED). `sent` is the Authorization the refused
   * request carried: only that token is dropped.
   */
  async answer(challenge: Challenge | undefined, scope: string, sent?: string): Promise<string | undefined> {
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      this.basicOnly = true;
      return this.basicHeader();
    }
    if (challenge.scheme !== 'bearer') return undefined;
    const realm = challenge.params.realm;
    if (!realm) return undefined;
    this.bearer = { realm, service: challenge.params.service };
    const cached = this.tokens.get(scope);
    if (cached && `Bearer ${cached.value}` !== sent && cached.renewAt > this.deps.now()) {
      // A 401 for a request sent before (or without) the current token: that token is still good.
      return `Bearer ${cached.value}`;
    }
    if (!this.pending.has(scope)) this.tokens.delete(scope);
    return this.fetchToken(scope, realm, challenge.params.service);
  }

  private basicHeader(): string | undefined {
    const c = this.deps.credentials;
    return c ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
  }

  private fetchToken(scope: string, realm: string, service: string | undefined): Promise<string | undefined> {
    return this.pending.run(scope, () => this.requestToken(scope, realm, service));
  }

  private fail(kind: 'unreachable' | 'timeout' | 'status' | 'protocol', message: string, opts: { status?: number; cause?: unknown } = {}): UpstreamError {
    this.deps.onTokenFetch?.(false);
    return new UpstreamError(kind, this.deps.upstream, message, opts);
  }

  private async requestToken(scope: string, realm: string, service: string | undefined): Promise<string | undefined> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UpstreamError('protocol', this.deps.upstream, 'upstream sent an invalid token realm');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UpstreamError('protocol', this.deps.upstream, 'upstream token realm is not http(s)');
    if (service) url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': this.deps.userAgent };
    const basic = this.basicHeader();
    if (basic) headers.authorization = basic;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.deps.dispatcher.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: 'GET',
        headers,
        headersTimeout: this.deps.headersTimeout,
        bodyTimeout: this.deps.bodyTimeout,
      });
    } catch (e) {
      const code = (e as { code?: unknown })?.code;
      throw this.fail(typeof code === 'string' && code.includes('TIMEOUT') ? 'timeout' : 'unreachable', 'upstream token service unreachable', { cause: e });
    }
    const text = await readLimited(res.body, MAX_TOKEN_BODY);
    if (res.statusCode === 401 || res.statusCode === 403) throw this.fail('status', "upstream refused the mirror's credentials", { status: res.statusCode });
    if (res.statusCode !== 200) throw this.fail('status', `upstream token service answered ${res.statusCode}`, { status: res.statusCode });
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw this.fail('protocol', 'upstream token service sent invalid JSON');
    }
    const value = typeof body.token === 'string' && body.token ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (!value) throw this.fail('protocol', 'upstream token service sent no token');
    this.deps.onTokenFetch?.(true);
    const ttl = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
    this.tokens.set(scope, { value, renewAt: this.deps.now() + ttl * 1000 - Math.min(EXPIRY_MARGIN_MS, ttl * 250) });
    return `Bearer ${value}`;
  }
}

export async function readLimited(body: AsyncIterable<Uint8Array> & { destroy?: (e?: Error) => unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > limit) {
      (body as { on?: (e: string, f: () => void) => void }).on?.('error', () => undefined);
      body.destroy?.();
      break;
    }
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks).toString('utf8');
}
