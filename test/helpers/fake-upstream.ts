/**
 * A fake Docker Hub: a real HTTP server (node:http) speaking the OCI distribution read API the way
 * registry-1.docker.io does, so the mirror's upstream client is tested over real sockets.
 *
 * - Bearer auth (default): 401 + `WWW-Authenticate: Bearer realm=<url>/token,service="fake-hub",scope=...`;
 *   the token endpoint hands out opaque tokens remembered with their repositories and expiry.
 *   `auth: 'basic'` and `auth: 'none'` model private registries.
 * - Blob GETs answer 307 to a second server (the "CDN", 127.0.0.2) that refuses any request carrying
 *   Authorization, like Docker Hub's S3/Cloudflare backends do. Blob HEADs are answered directly.
 * - Manifests honour Accept (404 when the stored type is not accepted), carry Docker-Content-Digest,
 *   and count against an optional Docker-Hub-style pull rate limit (GET counts, HEAD does not).
 * - Every request is recorded with its final status; `faults` switches failures on and off per request.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { MT, type Blob, type Image } from './images.js';

export interface FakeUpstreamOptions {
  /** Registry listen address. Default '127.0.0.1'. */
  host?: string;
  /** Default 'bearer' (Docker Hub style). */
  auth?: 'bearer' | 'basic' | 'none';
  /**
   * Bearer: the token endpoint requires these as HTTP Basic (anonymous tokens only when unset).
   * Basic: the registry requires these (any well-formed Basic header is accepted when unset).
   */
  credentials?: { username: string; password: string };
  /** `expires_in` of issued tokens; they really expire. Default 300. */
  tokenTtlSeconds?: number;
  /** Default true: blob GETs redirect (307) to a CDN server on 127.0.0.2 (or `host`). */
  cdn?: boolean | { host?: string };
  /** Docker Hub pull limit: manifest GETs decrement `remaining`; at 0 they get 429. Mutable later via `rateLimit`. */
  rateLimit?: { limit: number; remaining: number };
  /** Default true: serve the OCI 1.1 referrers API from stored manifests' `subject`. */
  referrers?: boolean;
}

export type RequestKind = 'token' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'base' | 'cdn' | 'other';

export interface RecordedRequest {
  method: string;
  path: string;
  /** The raw query string without '?'. */
  query: string;
  host: string;
  headers: Record<string, string | string[] | undefined>;
  /** The status sent (set when headers go out; 0 if the connection died first). */
  status: number;
  server: 'registry' | 'cdn' | 'token';
  kind: RequestKind;
}

export interface Faults {
  /** Registry (and token endpoint) answer 503 UNAVAILABLE to everything. */
  down?: boolean;
  /** Accessor: true closes both listeners (connections refused), false re-listens on the same ports. Prefer `await goDown()/goUp()`. */
  refuse?: boolean;
  /** Answer this status (with an OCI error body) to manifest/blob/tags/referrers requests, after auth. */
  status?: number;
  /** 429 TOOMANYREQUESTS + Retry-After (default 60) to manifest/blob/tags/referrers requests, after auth. */
  rateLimited?: { retryAfter?: number; message?: string };
  /** Blob bodies (registry or CDN): send this many bytes of each response, then drop the connection. */
  truncateBlobAfter?: number;
  /** How many responses truncateBlobAfter applies to (decremented each time); unset = every response. */
  truncateBlobTimes?: number;
  /** Flip the byte at offset floor(size/2) of the blob, in whichever response covers it. */
  corruptBlob?: boolean;
  /** Manifest GET bodies get one hex digit changed: same length, still JSON, digest no longer matches. */
  corruptManifest?: boolean;
  /** Wait this long before answering anything (registry, token and CDN). */
  delayMs?: number;
  /** Blob bodies sent `bytesPerTick` at a time every `tickMs`. */
  trickle?: { bytesPerTick: number; tickMs: number };
  /** Blob bodies: send this many bytes, then neither send more nor end. */
  stallBlobAfter?: number;
  /** Blob GETs redirect to themselves forever. */
  redirectLoop?: boolean;
  /** Blob GETs redirect here (e.g. 'ftp://x/y'). */
  redirectTo?: string;
  /** Manifest GETs of existing manifests return a body of this many bytes (Content-Length set). */
  hugeManifestBytes?: number;
}

export interface CountFilter {
  method?: string;
  kind?: RequestKind;
  path?: string | RegExp;
  status?: number;
  server?: RecordedRequest['server'];
}

interface StoredManifest {
  blob: Blob;
  subject?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface Repo {
  blobs: Map<string, Blob>;
  manifests: Map<string, StoredManifest>;
  tags: Map<string, string>;
}

interface Grant {
  repos: Set<string>;
  expiresAt: number;
}

/** One request in flight: what every handler needs to answer it and record the outcome. */
interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  rec: RecordedRequest;
  head: boolean;
}

const SERVICE = 'fake-hub';
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
// The distribution spec's repository name grammar.
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
// Greedy name: the reference part (tag, digest, 'list') never contains '/'.
const ROUTE_RE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^/]+)$/;
const RATE_WINDOW = 'w=21600';
const PULL_LIMIT_MESSAGE =
  'You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit';

function routeKind(path: string): RequestKind {
  if (path === '/token') return 'token';
  if (path === '/v2/' || path === '/v2') return 'base';
  const m = ROUTE_RE.exec(path);
  if (!m) return 'other';
  return ({ manifests: 'manifest', blobs: 'blob', tags: 'tags', referrers: 'referrers' } as const)[m[2] as 'manifests' | 'blobs' | 'tags' | 'referrers'];
}

/** Media types named in Accept headers (several headers and q-params allowed); empty when absent. */
function acceptedTypes(req: IncomingMessage): string[] {
  const raw = req.headers.accept;
  if (!raw) return [];
  return (Array.isArray(raw) ? raw.join(',') : raw)
    .split(',')
    .map((s) => s.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);
}

function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? undefined : { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

function errorCodeFor(status: number): string {
  switch (status) {
    case 400: return 'UNSUPPORTED';
    case 401: return 'UNAUTHORIZED';
    case 403: return 'DENIED';
    case 404: return 'NOT_FOUND';
    case 429: return 'TOOMANYREQUESTS';
    case 503: return 'UNAVAILABLE';
    default: return 'UNKNOWN';
  }
}

/** A same-length, still-valid-JSON alteration: change one hex digit of the last digest in the body. */
function corruptJson(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  const at = out.lastIndexOf('sha256:');
  if (at < 0) return Buffer.concat([out, Buffer.from(' ')]);
  const i = at + 'sha256:'.length;
  out[i] = out[i] === 0x30 ? 0x31 : 0x30; // '0' <-> '1'
  return out;
}

export class FakeUpstream {
  readonly url: string;
  readonly cdnUrl?: string;
  readonly requests: RecordedRequest[] = [];
  /** CDN requests refused because they carried an Authorization header. */
  cdnRejectedAuth = 0;
  /** Mutable pull limit (see FakeUpstreamOptions.rateLimit); set undefined to switch it off. */
  rateLimit?: { limit: number; remaining: number };
  readonly faults: Faults;

  private readonly repos = new Map<string, Repo>();
  /** Everything the CDN can serve, across repos (repo scoping is the registry's job, before the redirect). */
  private readonly cdnBlobs = new Map<string, Blob>();
  private readonly tokens = new Map<string, Grant>();
  private readonly auth: 'bearer' | 'basic' | 'none';
  private readonly credentials?: { username: string; password: string };
  private readonly ttl: number;
  private readonly referrersEnabled: boolean;
  private readonly registry: http.Server;
  private readonly cdn?: http.Server;
  private readonly ports: { registry: number; cdn?: number };
  private readonly hosts: { registry: string; cdn?: string };
  private listening = true;
  private transition: Promise<void> = Promise.resolve();

  private constructor(opts: FakeUpstreamOptions, registry: http.Server, cdn: http.Server | undefined, hosts: { registry: string; cdn?: string }, ports: { registry: number; cdn?: number }) {
    this.auth = opts.auth ?? 'bearer';
    if (opts.credentials) this.credentials = opts.credentials;
    this.ttl = opts.tokenTtlSeconds ?? 300;
    this.referrersEnabled = opts.referrers ?? true;
    if (opts.rateLimit) this.rateLimit = { ...opts.rateLimit };
    this.registry = registry;
    if (cdn) this.cdn = cdn;
    this.hosts = hosts;
    this.ports = ports;
    this.url = `http://${hosts.registry}:${ports.registry}`;
    if (cdn) this.cdnUrl = `http://${hosts.cdn}:${ports.cdn}`;
    const faults: Faults = {};
    // `refuse` is an accessor so a test can flip it like the other switches; the listener change is async.
    Object.defineProperty(faults, 'refuse', {
      enumerable: true,
      get: () => !this.listening,
      set: (v: boolean) => void (v ? this.goDown() : this.goUp()),
    });
    this.faults = faults;
  }

  static async start(opts: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
    const host = opts.host ?? '127.0.0.1';
    const cdnHost = opts.cdn === false ? undefined : (typeof opts.cdn === 'object' && opts.cdn.host) || '127.0.0.2';
    // Handlers need `self`, which needs the ports; servers exist first and route through a late binding.
    let self: FakeUpstream | undefined;
    const registry = http.createServer((req, res) => self!.dispatch(req, res, 'registry'));
    const cdn = cdnHost ? http.createServer((req, res) => self!.dispatch(req, res, 'cdn')) : undefined;
    const registryPort = await listen(registry, host, 0);
    const cdnPort = cdn ? await listen(cdn, cdnHost!, 0) : undefined;
    self = new FakeUpstream(opts, registry, cdn, { registry: host, ...(cdnHost ? { cdn: cdnHost } : {}) }, { registry: registryPort, ...(cdnPort ? { cdn: cdnPort } : {}) });
    return self;
  }

  // --- content -----------------------------------------------------------------------------

  private repo(name: string): Repo {
    let r = this.repos.get(name);
    if (!r) {
      r = { blobs: new Map(), manifests: new Map(), tags: new Map() };
      this.repos.set(name, r);
    }
    return r;
  }

  putBlob(repo: string, blob: Blob): void {
    this.repo(repo).blobs.set(blob.digest, blob);
    this.cdnBlobs.set(blob.digest, blob);
  }

  /** Stores a manifest or index (reachable by digest, and by `tag` if given). Throws if it is not JSON. */
  putManifest(repo: string, manifest: Blob, tag?: string): void {
    const doc = JSON.parse(manifest.bytes.toString('utf8')) as {
      subject?: { digest?: string };
      artifactType?: string;
      config?: { mediaType?: string };
      annotations?: Record<string, string>;
    };
    const stored: StoredManifest = { blob: manifest };
    if (doc.subject?.digest) stored.subject = doc.subject.digest;
    const artifactType = doc.artifactType ?? doc.config?.mediaType;
    if (artifactType) stored.artifactType = artifactType;
    if (doc.annotations) stored.annotations = doc.annotations;
    const r = this.repo(repo);
    r.manifests.set(manifest.digest, stored);
    if (tag !== undefined) r.tags.set(tag, manifest.digest);
  }

  putImage(repo: string, image: Image, tag?: string): void {
    this.putBlob(repo, image.config);
    for (const l of image.layers) this.putBlob(repo, l);
    this.putManifest(repo, image.manifest, tag);
  }

  putIndex(repo: string, index: Blob, images: Image[], tag?: string): void {
    for (const img of images) this.putImage(repo, img);
    this.putManifest(repo, index, tag);
  }

  deleteTag(repo: string, tag: string): void {
    this.repos.get(repo)?.tags.delete(tag);
  }

  /** Makes every issued token invalid now, as if they had all expired. */
  expireTokens(): void {
    for (const g of this.tokens.values()) g.expiresAt = 0;
  }

  // --- observation -------------------------------------------------------------------------

  count(filter: CountFilter = {}): number {
    return this.requests.filter(
      (r) =>
        (filter.method === undefined || r.method === filter.method.toUpperCase()) &&
        (filter.kind === undefined || r.kind === filter.kind) &&
        (filter.server === undefined || r.server === filter.server) &&
        (filter.status === undefined || r.status === filter.status) &&
        (filter.path === undefined || (typeof filter.path === 'string' ? r.path === filter.path : filter.path.test(r.path))),
    ).length;
  }

  resetCounters(): void {
    this.requests.length = 0;
    this.cdnRejectedAuth = 0;
  }

  /** Clears every fault switch (re-listening if `refuse` was on). */
  async resetFaults(): Promise<void> {
    for (const k of Object.keys(this.faults) as Array<keyof Faults>) if (k !== 'refuse') delete this.faults[k];
    await this.goUp();
  }

  // --- listeners ---------------------------------------------------------------------------

  /** Closes both listeners and drops open connections: new connections are refused. */
  goDown(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (!this.listening) return;
      this.listening = false;
      await Promise.all([this.registry, this.cdn].filter((s): s is http.Server => !!s).map(closeServer));
      // Let in-process clients read the FINs of their pooled keep-alive sockets, so their next request
      // dials (and is refused) instead of failing with "other side closed" on a dead socket.
      await sleep(20);
    });
    return this.transition;
  }

  /** Listens again on the same host:port pairs. */
  goUp(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (this.listening) return;
      await listen(this.registry, this.hosts.registry, this.ports.registry);
      if (this.cdn) await listen(this.cdn, this.hosts.cdn!, this.ports.cdn!);
      this.listening = true;
    });
    return this.transition;
  }

  async close(): Promise<void> {
    await this.transition;
    this.listening = false;
    await Promise.all([this.registry, this.cdn].filter((s): s is http.Server => !!s).map(closeServer));
  }

  // --- dispatch ----------------------------------------------------------------------------

  private dispatch(req: IncomingMessage, res: ServerResponse, server: 'registry' | 'cdn'): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const kind: RequestKind = server === 'cdn' ? 'cdn' : routeKind(url.pathname);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search.replace(/^\?/, ''),
      host: req.headers.host ?? '',
      headers: { ...req.headers },
      status: 0,
      server: kind === 'token' ? 'token' : server,
      kind,
    };
    this.requests.push(rec);
    const ctx: Ctx = { req, res, url, rec, head: req.method === 'HEAD' };
    const handle = server === 'cdn' ? this.handleCdn(ctx) : this.handleRegistry(ctx);
    handle.catch((err: unknown) => {
      if (!res.headersSent && !res.destroyed) this.send(ctx, 500, { 'content-type': 'text/plain' }, `fake upstream bug: ${String(err)}\n`);
      else res.destroy();
    });
  }

  /** Writes status + headers (recording the status) and the body; HEAD keeps Content-Length but no body. */
  private send(ctx: Ctx, status: number, headers: Record<string, string | number>, body?: Buffer | string): void {
    if (ctx.res.destroyed) return;
    const buf = body === undefined ? Buffer.alloc(0) : typeof body === 'string' ? Buffer.from(body) : body;
    ctx.rec.status = status;
    ctx.res.writeHead(status, { 'content-length': buf.length, ...headers });
    ctx.res.end(ctx.head ? undefined : buf);
  }

  private json(ctx: Ctx, status: number, value: unknown, headers: Record<string, string | number> = {}): void {
    this.send(ctx, status, { 'content-type': 'application/json', ...headers }, JSON.stringify(value));
  }

  /** The OCI error envelope. */
  private ociError(ctx: Ctx, status: number, code: string, message: string, detail: unknown = null, headers: Record<string, string | number> = {}): void {
    this.json(ctx, status, { errors: [{ code, message, detail }] }, headers);
  }

  private notFoundPage(ctx: Ctx): void {
    // What Go's mux (and so distribution) sends for an unknown route.
    this.send(ctx, 404, { 'content-type': 'text/plain; charset=utf-8' }, '404 page not found\n');
  }

  // --- registry ----------------------------------------------------------------------------

  private async handleRegistry(ctx: Ctx): Promise<void> {
    ctx.res.setHeader('docker-distribution-api-version', 'registry/2.0');
    if (this.faults.delayMs) await sleep(this.faults.delayMs);
    if (this.faults.down) return this.ociError(ctx, 503, 'UNAVAILABLE', 'service unavailable');

    const path = ctx.url.pathname;
    if (path === '/token') return this.auth === 'bearer' ? this.handleToken(ctx) : this.notFoundPage(ctx);
    const method = ctx.req.method;
    if (path === '/v2/' || path === '/v2') {
      if (method !== 'GET' && method !== 'HEAD') return this.ociError(ctx, 405, 'UNSUPPORTED', 'The operation is unsupported.');
      if (!this.authorize(ctx)) return;
      return this.json(ctx, 200, {});
    }
    const m = ROUTE_RE.exec(path);
    if (!m) return this.notFoundPage(ctx);
    const [, name, section, ref] = m as unknown as [string, string, string, string];
    if (method !== 'GET' && method !== 'HEAD') return this.ociError(ctx, 405, 'UNSUPPORTED', 'this fake registry is read-only');
    if (!this.authorize(ctx, name)) return;
    if (!NAME_RE.test(name)) return this.ociError(ctx, 400, 'NAME_INVALID', 'invalid repository name', { name });

    const f = this.faults;
    if (f.rateLimited) {
      const retryAfter = f.rateLimited.retryAfter ?? 60;
      return this.ociError(ctx, 429, 'TOOMANYREQUESTS', f.rateLimited.message ?? PULL_LIMIT_MESSAGE, null, { 'retry-after': retryAfter });
    }
    if (f.status !== undefined) return this.ociError(ctx, f.status, errorCodeFor(f.status), `injected status ${f.status}`);

    switch (section) {
      case 'manifests':
        return this.handleManifest(ctx, name, ref);
      case 'blobs':
        return this.handleBlob(ctx, name, ref);
      case 'tags':
        return ref === 'list' ? this.handleTags(ctx, name) : this.notFoundPage(ctx);
      default:
        return this.handleReferrers(ctx, name, ref);
    }
  }

  /** True when the request may proceed; otherwise the 401 challenge has been sent. */
  private authorize(ctx: Ctx, repo?: string): boolean {
    const header = ctx.req.headers.authorization;
    if (this.auth === 'none') return true;
    if (this.auth === 'basic') {
      const given = parseBasic(header);
      const ok = given && (!this.credentials || (given.username === this.credentials.username && given.password === this.credentials.password));
      if (ok) return true;
      this.ociError(ctx, 401, 'UNAUTHORIZED', 'authentication required', null, { 'www-authenticate': 'Basic realm="fake"' });
      return false;
    }
    let error: string | undefined;
    const token = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];
    if (token !== undefined) {
      const grant = this.tokens.get(token);
      if (!grant || grant.expiresAt <= Date.now()) error = 'invalid_token';
      else if (repo !== undefined && !grant.repos.has(repo)) error = 'insufficient_scope';
      else return true;
    }
    let challenge = `Bearer realm="${this.url}/token",service="${SERVICE}"`;
    if (repo !== undefined) challenge += `,scope="repository:${repo}:pull"`;
    if (error) challenge += `,error="${error}"`;
    const detail = repo === undefined ? null : [{ Type: 'repository', Class: '', Name: repo, Action: 'pull' }];
    this.ociError(ctx, 401, 'UNAUTHORIZED', 'authentication required', detail, { 'www-authenticate': challenge });
    return false;
  }

  /** Docker Hub's auth.docker.io: GET with optional Basic, or the OAuth2 POST password grant. */
  private async handleToken(ctx: Ctx): Promise<void> {
    let params = ctx.url.searchParams;
    let given = parseBasic(ctx.req.headers.authorization);
    if (ctx.req.method === 'POST') {
      params = new URLSearchParams(await readBody(ctx.req, 64 * 1024));
      if (params.get('grant_type') !== 'password') return this.json(ctx, 400, { error: 'unsupported_grant_type' });
      given = { username: params.get('username') ?? '', password: params.get('password') ?? '' };
    } else if (ctx.req.method !== 'GET') {
      return this.send(ctx, 405, { 'content-type': 'text/plain' }, 'method not allowed\n');
    }
    const service = params.get('service');
    if (service !== null && service !== SERVICE) return this.json(ctx, 400, { details: `unknown service ${service}` });
    if (this.credentials) {
      const ok = given && given.username === this.credentials.username && given.password === this.credentials.password;
      if (!ok) return this.json(ctx, 401, { details: 'incorrect username or password' });
    }
    const repos = new Set<string>();
    for (const scope of params.getAll('scope').flatMap((s) => s.split(' '))) {
      const m = /^repository(?:\([^)]*\))?:([^:]+):(.*)$/.exec(scope);
      if (m && m[2]!.split(',').some((a) => a === 'pull' || a === '*')) repos.add(m[1]!);
    }
    const token = randomBytes(24).toString('base64url');
    const issuedAt = new Date();
    this.tokens.set(token, { repos, expiresAt: issuedAt.getTime() + this.ttl * 1000 });
    this.json(ctx, 200, { token, access_token: token, expires_in: this.ttl, issued_at: issuedAt.toISOString() });
  }

  private async handleManifest(ctx: Ctx, name: string, ref: string): Promise<void> {
    const repo = this.repos.get(name);
    let rateHeaders: Record<string, string> = {};
    if (this.rateLimit) {
      // Docker Hub counts manifest GETs as pulls; HEADs are free but still report the headers.
      const rl = this.rateLimit;
      if (!ctx.head && rl.remaining <= 0) {
        return this.ociError(ctx, 429, 'TOOMANYREQUESTS', PULL_LIMIT_MESSAGE, null, {
          'ratelimit-limit': `${rl.limit};${RATE_WINDOW}`,
          'ratelimit-remaining': `0;${RATE_WINDOW}`,
          'retry-after': 60,
        });
      }
      if (!ctx.head) rl.remaining--;
      rateHeaders = { 'ratelimit-limit': `${rl.limit};${RATE_WINDOW}`, 'ratelimit-remaining': `${rl.remaining};${RATE_WINDOW}`, 'docker-ratelimit-source': '127.0.0.1' };
    }
    if (!repo) return this.ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name }, rateHeaders);
    let digest: string | undefined = ref;
    if (ref.includes(':')) {
      if (!DIGEST_RE.test(ref)) return this.ociError(ctx, 400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest: ref }, rateHeaders);
    } else {
      digest = repo.tags.get(ref);
    }
    const stored = digest ? repo.manifests.get(digest) : undefined;
    if (!stored) return this.ociError(ctx, 404, 'MANIFEST_UNKNOWN', 'manifest unknown', { Tag: ref }, rateHeaders);
    const { blob } = stored;

    const accepted = acceptedTypes(ctx.req);
    if (accepted.length > 0 && !accepted.includes('*/*') && !accepted.includes(blob.mediaType)) {
      const what = blob.mediaType === MT.ociIndex ? 'OCI index' : blob.mediaType === MT.ociManifest ? 'OCI manifest' : blob.mediaType;
      return this.ociError(ctx, 404, 'MANIFEST_UNKNOWN', `${what} found, but accept header does not support ${what}s`, null, rateHeaders);
    }

    const headers = {
      'content-type': blob.mediaType,
      'docker-content-digest': blob.digest,
      etag: `"${blob.digest}"`,
      ...rateHeaders,
    };
    const huge = this.faults.hugeManifestBytes;
    if (huge !== undefined && !ctx.head) return this.sendHuge(ctx, huge, headers);
    const body = this.faults.corruptManifest && !ctx.head ? corruptJson(blob.bytes) : blob.bytes;
    this.send(ctx, 200, headers, body);
  }

  /** A manifest-shaped body of exactly `size` bytes, streamed so even gigabytes cost no memory. */
  private async sendHuge(ctx: Ctx, size: number, headers: Record<string, string>): Promise<void> {
    const { res } = ctx;
    ctx.rec.status = 200;
    res.writeHead(200, { ...headers, 'content-length': size });
    const prefix = Buffer.from('{"schemaVersion":2,"pad":"');
    const suffix = Buffer.from('"}');
    const chunk = Buffer.alloc(64 * 1024, 'a');
    let left = size;
    const write = async (buf: Buffer) => {
      if (res.destroyed) return;
      if (!res.write(buf)) await drained(res);
    };
    if (size >= prefix.length + suffix.length) {
      await write(prefix);
      left -= prefix.length + suffix.length;
      while (left > 0 && !res.destroyed) {
        const n = Math.min(left, chunk.length);
        await write(chunk.subarray(0, n));
        left -= n;
      }
      await write(suffix);
    } else {
      await write(Buffer.alloc(size, ' '));
    }
    if (!res.destroyed) res.end();
  }

  private async handleBlob(ctx: Ctx, name: string, digest: string): Promise<void> {
    if (!DIGEST_RE.test(digest)) return this.ociError(ctx, 400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest });
    const repo = this.repos.get(name);
    if (!repo) return this.ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    const blob = repo.blobs.get(digest);
    if (!blob) return this.ociError(ctx, 404, 'BLOB_UNKNOWN', 'blob unknown to registry', { digest });
    if (ctx.head) {
      return this.send(ctx, 200, {
        'content-type': 'application/octet-stream',
        'content-length': blob.size,
        'docker-content-digest': blob.digest,
        etag: `"${blob.digest}"`,
        'accept-ranges': 'bytes',
      });
    }
    const f = this.faults;
    let location: string | undefined;
    if (f.redirectLoop) location = `${this.url}${ctx.url.pathname}${ctx.url.search}`;
    else if (f.redirectTo) location = f.redirectTo;
    else if (this.cdnUrl) location = `${this.cdnUrl}/blobs/sha256/${digest.slice(7)}?expires=${Math.floor(Date.now() / 1000) + 1200}`;
    if (location) {
      const html = `<a href="${location}">Temporary Redirect</a>.\n\n`;
      return this.send(ctx, 307, { location, 'content-type': 'text/html; charset=utf-8' }, html);
    }
    return this.serveBytes(ctx, blob, { 'docker-content-digest': blob.digest, etag: `"${blob.digest}"` });
  }

  private handleTags(ctx: Ctx, name: string): void {
    const repo = this.repos.get(name);
    if (!repo) return this.ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    const nParam = ctx.url.searchParams.get('n');
    const n = nParam === null ? undefined : Number(nParam);
    if (n !== undefined && (!Number.isInteger(n) || n < 0)) return this.ociError(ctx, 400, 'PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n: nParam });
    const last = ctx.url.searchParams.get('last');
    const after = [...repo.tags.keys()].sort().filter((t) => last === null || t > last);
    const page = n === undefined ? after : after.slice(0, n);
    const headers: Record<string, string> = {};
    if (n !== undefined && n > 0 && after.length > page.length) {
      headers.link = `</v2/${name}/tags/list?last=${encodeURIComponent(page[page.length - 1]!)}&n=${n}>; rel="next"`;
    }
    this.json(ctx, 200, { name, tags: page }, headers);
  }

  private handleReferrers(ctx: Ctx, name: string, digest: string): void {
    if (!this.referrersEnabled) return this.notFoundPage(ctx);
    if (!DIGEST_RE.test(digest)) return this.ociError(ctx, 400, 'DIGEST_INVALID', 'invalid digest', { digest });
    const repo = this.repos.get(name);
    if (!repo) return this.ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    let found = [...repo.manifests.values()].filter((m) => m.subject === digest);
    const headers: Record<string, string> = { 'content-type': MT.ociIndex };
    const filter = ctx.url.searchParams.get('artifactType');
    if (filter !== null) {
      found = found.filter((m) => m.artifactType === filter);
      headers['oci-filters-applied'] = 'artifactType';
    }
    const manifests = found
      .sort((a, b) => (a.blob.digest < b.blob.digest ? -1 : 1))
      .map((m) => ({
        mediaType: m.blob.mediaType,
        digest: m.blob.digest,
        size: m.blob.size,
        ...(m.artifactType ? { artifactType: m.artifactType } : {}),
        ...(m.annotations ? { annotations: m.annotations } : {}),
      }));
    this.send(ctx, 200, headers, JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests }));
  }

  // --- CDN ---------------------------------------------------------------------------------

  private async handleCdn(ctx: Ctx): Promise<void> {
    if (this.faults.delayMs) await sleep(this.faults.delayMs);
    const xml = (status: number, code: string, message: string) =>
      this.send(ctx, status, { 'content-type': 'application/xml' }, `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
    if (ctx.req.method !== 'GET' && ctx.req.method !== 'HEAD') return xml(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
    // S3 behind Docker Hub's redirects rejects a second auth mechanism; clients must drop the registry token.
    if (ctx.req.headers.authorization !== undefined) {
      this.cdnRejectedAuth++;
      return xml(400, 'InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified');
    }
    const expires = Number(ctx.url.searchParams.get('expires'));
    if (!Number.isFinite(expires) || expires * 1000 < Date.now()) return xml(403, 'AccessDenied', 'Request has expired');
    const m = /^\/blobs\/sha256\/([a-f0-9]{64})$/.exec(ctx.url.pathname);
    const blob = m ? this.cdnBlobs.get(`sha256:${m[1]}`) : undefined;
    if (!blob) return xml(404, 'NoSuchKey', 'The specified key does not exist.');
    return this.serveBytes(ctx, blob, { etag: `"${blob.digest.slice(7)}"` });
  }

  // --- blob bodies -------------------------------------------------------------------------

  /** 200 or 206 (single range; multi-range or malformed is ignored like S3 does) or 416, then the body with faults applied. */
  private async serveBytes(ctx: Ctx, blob: Blob, extra: Record<string, string>): Promise<void> {
    const total = blob.size;
    let start = 0;
    let end = total - 1;
    let status = 200;
    const range = /^bytes=(\d*)-(\d*)$/.exec((ctx.req.headers.range ?? '').trim());
    if (range && (range[1] !== '' || range[2] !== '')) {
      if (range[1] === '') {
        start = Math.max(0, total - Number(range[2]));
      } else {
        start = Number(range[1]);
        if (range[2] !== '') end = Math.min(Number(range[2]), total - 1);
      }
      if (start >= total || end < start || (range[1] === '' && Number(range[2]) === 0)) {
        return this.send(ctx, 416, { 'content-range': `bytes */${total}`, 'content-type': 'text/plain' });
      }
      status = 206;
    }
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'content-length': end - start + 1,
      'accept-ranges': 'bytes',
      ...extra,
    };
    if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${total}`;
    if (ctx.head) return this.send(ctx, status, headers);

    let body = blob.bytes.subarray(start, end + 1);
    const mid = Math.floor(total / 2);
    if (this.faults.corruptBlob && mid >= start && mid <= end) {
      body = Buffer.from(body);
      body[mid - start] = body[mid - start]! ^ 0xff;
    }
    ctx.rec.status = status;
    ctx.res.writeHead(status, headers);
    await this.sendBody(ctx, body);
  }

  private async sendBody(ctx: Ctx, body: Buffer): Promise<void> {
    const { res } = ctx;
    const f = this.faults;
    let limit = body.length;
    let ending: 'end' | 'drop' | 'stall' = 'end';
    if (f.truncateBlobAfter !== undefined && f.truncateBlobAfter < limit && (f.truncateBlobTimes === undefined || f.truncateBlobTimes > 0)) {
      limit = f.truncateBlobAfter;
      ending = 'drop';
      if (f.truncateBlobTimes !== undefined) f.truncateBlobTimes--;
    }
    if (f.stallBlobAfter !== undefined && f.stallBlobAfter < limit) {
      limit = f.stallBlobAfter;
      ending = 'stall';
    }
    const trickle = f.trickle;
    const step = trickle ? Math.max(1, trickle.bytesPerTick) : 64 * 1024;
    for (let off = 0; off < limit; off += step) {
      if (res.destroyed) return;
      const ok = res.write(body.subarray(off, Math.min(off + step, limit)));
      if (trickle) await sleep(trickle.tickMs);
      else if (!ok) await drained(res);
    }
    if (res.destroyed) return;
    if (ending === 'end') return void res.end();
    res.flushHeaders();
    if (ending === 'drop') {
      // end() flushes what was written, then FIN: the client sees the body stop short of Content-Length.
      const socket = res.socket;
      socket?.end();
      setTimeout(() => socket?.destroy(), 1000).unref();
    }
    // 'stall': leave the response open; close()/goDown() drop the connection.
  }
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Resolves on 'drain', or when the response dies (so a vanished client never leaves us waiting). */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new Error('request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
