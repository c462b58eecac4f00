/**
 * UpstreamClient: one upstream registry over an injected undici Dispatcher (keep-alive pools per
 * origin live in the dispatcher). Handles token auth, redirects (never carrying Authorization to
 * another host), Range resumes, rate-limit headers and turning every failure into a classified
 * UpstreamError (see errors.ts).
 */
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { readLimited, UpstreamAuth, type Credentials } from './auth.js';
import { parseChallenge } from './challenge.js';
import { SinkFailure, UpstreamError } from './errors.js';
import type { BlobBody, BlobHead, BlobSink, ErrorClass, ManifestHead, ManifestResult, RequestKind, SunkBody, TagsPage, Upstream, UpstreamObserver } from './types.js';

/** Bytes a blob body buffers before undici stops reading its socket (undici's default is 64 KiB). */
const BLOB_HIGH_WATER_MARK = 1024 * 1024;

export interface UpstreamClientOptions {
  name: string;
  /** Base URL without /v2. */
  url: string;
  credentials?: Credentials;
  dispatcher: Dispatcher;
  now: () => number;
  observer: UpstreamObserver;
  timeouts: { headers: number; bodyIdle: number };
  maxManifestBytes: number;
  /** Sent on every request (registry, token realm, CDN): names the mirror and its version. */
  userAgent: string;
}

const MAX_REDIRECTS = 5;
const MAX_ERROR_BODY = 64 * 1024;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

interface Exchange {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  /** A 200/206 blob body that went to a sink instead of `body` (empty then). */
  direct?: SunkBody | undefined;
}

/** One answer before redirects are followed. */
interface Answer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  direct?: SunkBody | undefined;
}

export class UpstreamClient implements Upstream {
  readonly name: string;
  private readonly base: URL;
  private readonly auth: UpstreamAuth;

  constructor(private readonly opts: UpstreamClientOptions) {
    this.name = opts.name;
    this.base = new URL(opts.url);
    this.auth = new UpstreamAuth({
      dispatcher: opts.dispatcher,
      now: opts.now,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      onTokenFetch: (ok) => opts.observer.token(opts.name, ok),
      upstream: opts.name,
      userAgent: opts.userAgent,
      headersTimeout: opts.timeouts.headers,
      bodyTimeout: opts.timeouts.bodyIdle,
    });
  }

  async getManifest(repo: string, reference: string, accept: string[]): Promise<ManifestResult> {
    const res = await this.send('manifest', 'GET', repo, `manifests/${reference}`, { accept: accept.join(', ') });
    if (res.status !== 200) throw await this.failure('manifest', res);
    const head = manifestHead(res);
    const limit = this.opts.maxManifestBytes;
    if (head.size !== undefined && head.size > limit) {
      discard(res.body);
      throw this.tooLarge(limit);
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) {
        discard(res.body);
        throw this.tooLarge(limit);
      }
      chunks.push(c);
    }
    this.opts.observer.bytes(this.name, n);
    return { ...head, bytes: Buffer.concat(chunks), size: n };
  }

  async headManifest(repo: string, reference: string, accept: string[]): Promise<ManifestHead> {
    const res = await this.send('manifest', 'HEAD', repo, `manifests/${reference}`, { accept: accept.join(', ') });
    discard(res.body);
    if (res.status !== 200) throw await this.failure('manifest', res);
    return manifestHead(res);
  }

  async headBlob(repo: string, digest: string): Promise<BlobHead> {
    const res = await this.send('blob', 'HEAD', repo, `blobs/${digest}`, {});
    discard(res.body);
    if (res.status !== 200) throw await this.failure('blob', res);
    return { size: intHeader(res.headers['content-length']) };
  }

  async getBlob(repo: string, digest: string, offset: number, sink?: BlobSink): Promise<BlobBody> {
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.send('blob', 'GET', repo, `blobs/${digest}`, headers, sink);
    let start = 0;
    let size: number | undefined;
    if (res.status === 206) {
      const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(str(res.headers['content-range']) ?? '');
      if (!cr) {
        discard(res.body);
        res.direct?.cancel();
        throw new UpstreamError('protocol', this.name, 'upstream sent a 206 without a valid Content-Range');
      }
      start = Number(cr[1]);
      size = cr[3] === '*' ? undefined : Number(cr[3]);
    } else if (res.status === 200) {
      size = intHeader(res.headers['content-length']);
    } else {
      throw await this.failure('blob', res);
    }
    const observer = this.opts.observer;
    const name = this.name;
    const direct = res.direct;
    if (direct) {
      return {
        start,
        size,
        body: Readable.from([]),
        cancel: () => direct.cancel(),
        direct: {
          write: (skip, onBytes, limit) =>
            direct.write(
              skip,
              (n) => {
                observer.bytes(name, n);
                onBytes(n);
              },
              limit,
            ),
          cancel: () => direct.cancel(),
        },
      };
    }
    const body = res.body;
    async function* counted(): AsyncIterable<Uint8Array> {
      for await (const c of body as AsyncIterable<Buffer>) {
        observer.bytes(name, c.length);
        yield c;
      }
    }
    return { start, size, body: counted(), cancel: () => discard(body) };
  }

  async getTags(repo: string, page?: string): Promise<TagsPage> {
    // Only the query of a next-page link is followed, always on this repository's own path.
    const qs = page ? `?${new URLSearchParams(page)}` : '';
    const res = await this.send('tags', 'GET', repo, `tags/list${qs}`, { accept: 'application/json' });
    if (res.status !== 200) throw await this.failure('tags', res);
    const body = await this.readJson(res, 'tags');
    return { body, next: parseNextLink(str(res.headers.link)) };
  }

  async getReferrers(repo: string, digest: string): Promise<unknown> {
    const res = await this.send('referrers', 'GET', repo, `referrers/${digest}`, { accept: 'application/vnd.oci.image.index.v1+json' });
    if (res.status === 404 || res.status === 405 || res.status === 400) {
      // Registries without the referrers API (distribution 2.8, many others) say so with these.
      discard(res.body);
      return undefined;
    }
    if (res.status !== 200) throw await this.failure('referrers', res);
    return this.readJson(res, 'referrers');
  }

  /**
   * The availability probe (availability.ts): GET /v2/ without credentials. Any answer below 500
   * (200, or Docker Hub's 401) means the registry is answering; a 5xx, no connection or a timeout
   * throws the classified UpstreamError. Not counted as a request of any kind in the metrics.
   */
  async ping(): Promise<void> {
    const url = new URL(`${this.base.pathname.replace(/\/$/, '')}/v2/`, this.base);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.opts.dispatcher.request({
        origin: url.origin,
        path: url.pathname,
        method: 'GET',
        headers: { 'user-agent': this.opts.userAgent },
        headersTimeout: this.opts.timeouts.headers,
        bodyTimeout: this.opts.timeouts.bodyIdle,
      });
    } catch (e) {
      const timeout = isTimeout(e);
      throw new UpstreamError(timeout ? 'timeout' : 'unreachable', this.name, `upstream ${this.name} ${timeout ? 'timed out' : 'is unreachable'} (${errorCode(e)})`, { cause: e });
    }
    discard(res.body);
    if (res.statusCode >= 500) throw new UpstreamError('status', this.name, `upstream ${this.name} answered ${res.statusCode} to /v2/`, { status: res.statusCode });
  }

  private async readJson(res: Exchange, kind: RequestKind): Promise<unknown> {
    const text = await readLimited(res.body, this.opts.maxManifestBytes);
    this.opts.observer.bytes(this.name, text.length);
    try {
      return JSON.parse(text);
    } catch {
      throw new UpstreamError('protocol', this.name, `upstream sent invalid JSON for ${kind}`);
    }
  }

  /** One authorized request: a cached token if any; on 401, answer the challenge and retry once. */
  private async send(kind: RequestKind, method: Dispatcher.HttpMethod, repo: string, rest: string, headers: Record<string, string>, sink?: BlobSink): Promise<Exchange> {
    const scope = `repository:${repo}:pull`;
    const url = new URL(`${this.base.pathname.replace(/\/$/, '')}/v2/${repo}/${rest}`, this.base);
    let authorization = await this.auth.headerFor(scope);
    for (let attempt = 0; ; attempt++) {
      const res = await this.exchange(kind, method, url, authorization ? { ...headers, authorization } : headers, sink);
      if (res.status !== 401 || attempt > 0) return res;
      discard(res.body);
      const next = await this.auth.answer(parseChallenge(str(res.headers['www-authenticate'])), scope, authorization);
      if (!next) return res;
      authorization = next;
    }
  }

  /** Sends one request, following redirects itself so credentials never reach another host. */
  private async exchange(kind: RequestKind, method: Dispatcher.HttpMethod, first: URL, headers: Record<string, string>, sink: BlobSink | undefined): Promise<Exchange> {
    let url = first;
    let hdrs = headers;
    const started = performance.now();
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      let res: Answer;
      try {
        res = await this.requestOnce(kind, method, url, hdrs, sink);
      } catch (e) {
        if (e instanceof SinkFailure) throw e;
        const timeout = isTimeout(e);
        this.observe(kind, 0, started, timeout ? 'timeout' : 'network');
        throw new UpstreamError(timeout ? 'timeout' : 'unreachable', this.name, `upstream ${this.name} ${timeout ? 'timed out' : 'is unreachable'} (${errorCode(e)})`, { cause: e });
      }
      if (url.origin === this.base.origin) this.noteRateLimit(res.headers);
      const location = str(res.headers.location);
      if (REDIRECTS.has(res.statusCode) && location) {
        discard(res.body);
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          this.observe(kind, res.statusCode, started, 'redirect');
          throw new UpstreamError('protocol', this.name, 'upstream sent an invalid redirect');
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          this.observe(kind, res.statusCode, started, 'redirect');
          throw new UpstreamError('protocol', this.name, `upstream redirected to a non-HTTP location (${next.protocol.slice(0, 20)})`);
        }
        if (next.origin !== first.origin && hdrs.authorization !== undefined) {
          // Credentials are for the registry; a CDN rejects them and must never see them.
          const { authorization: _drop, ...rest } = hdrs;
          hdrs = rest;
        }
        url = next;
        continue;
      }
      this.observe(kind, res.statusCode, started, classify(res.statusCode));
      return { status: res.statusCode, headers: res.headers, body: res.body, direct: res.direct };
    }
    this.observe(kind, 0, started, 'redirect');
    throw new UpstreamError('protocol', this.name, `upstream ${this.name} redirected more than ${MAX_REDIRECTS} times`);
  }

  /** One request, no redirect followed: a blob GET through the sink when there is one, else through the dispatcher. */
  private async requestOnce(kind: RequestKind, method: Dispatcher.HttpMethod, url: URL, hdrs: Record<string, string>, sink: BlobSink | undefined): Promise<Answer> {
    const headers = { ...hdrs, 'user-agent': this.opts.userAgent };
    const { headers: headersTimeout, bodyIdle: bodyTimeout } = this.opts.timeouts;
    const blobGet = kind === 'blob' && method === 'GET';
    if (sink && blobGet) {
      const a = await sink.request({ origin: url.origin, path: url.pathname + url.search, headers, headersTimeout, bodyTimeout });
      return { statusCode: a.status, headers: a.headers, body: Readable.from(a.text === '' ? [] : [Buffer.from(a.text)]), direct: a.body };
    }
    return this.opts.dispatcher.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method,
      headers,
      headersTimeout,
      bodyTimeout,
      // A blob body may buffer more before undici pauses the socket: fewer pause/resume turns.
      ...(blobGet ? { highWaterMark: BLOB_HIGH_WATER_MARK } : {}),
    });
  }

  private observe(kind: RequestKind, status: number, started: number, errorClass: ErrorClass | undefined): void {
    this.opts.observer.request(this.name, kind, status, (performance.now() - started) / 1000, errorClass);
  }

  private noteRateLimit(headers: Record<string, string | string[] | undefined>): void {
    const remaining = /^\s*(\d+)/.exec(str(headers['ratelimit-remaining']) ?? '');
    if (!remaining) return;
    const limit = /^\s*(\d+)/.exec(str(headers['ratelimit-limit']) ?? '');
    this.opts.observer.rateLimit(this.name, Number(remaining[1]), limit ? Number(limit[1]) : undefined);
  }

  /** Classifies a non-success upstream answer: its status and OCI code, never its body or headers beyond those. */
  private async failure(kind: RequestKind, res: Exchange): Promise<UpstreamError> {
    const text = await readLimited(res.body, MAX_ERROR_BODY).catch(() => '');
    const envelope = parseEnvelope(text);
    const retryAfter = retryAfterSeconds(str(res.headers['retry-after']), this.opts.now());
    const message = envelope?.message ?? `upstream ${this.name} answered ${res.status} for ${kind}`;
    return new UpstreamError('status', this.name, message, {
      status: res.status,
      ...(envelope ? { code: envelope.code } : {}),
      ...(retryAfter !== undefined ? { retryAfter } : {}),
    });
  }

  private tooLarge(limit: number): UpstreamError {
    return new UpstreamError('protocol', this.name, `manifest from upstream exceeds the ${limit}-byte limit`, { code: 'MANIFEST_INVALID' });
  }
}

function manifestHead(res: Exchange): ManifestHead {
  const ct = str(res.headers['content-type'])?.split(';')[0]?.trim();
  return {
    mediaType: ct ?? '',
    // Docker-Content-Digest is optional in the spec; registries that leave it out (some proxies,
    // object-store fronted ones) still send the digest as a strong ETag, as distribution does.
    digest: str(res.headers['docker-content-digest']) ?? digestEtag(str(res.headers.etag)),
    size: intHeader(res.headers['content-length']),
  };
}

/** `"sha256:<hex>"` → the digest; a weak or other ETag says nothing about the content's digest. */
function digestEtag(etag: string | undefined): string | undefined {
  const m = etag ? /^"((?:sha256:[a-f0-9]{64})|(?:sha512:[a-f0-9]{128}))"$/.exec(etag) : null;
  return m ? m[1] : undefined;
}

function parseEnvelope(text: string): { code: string; message: string | undefined } | undefined {
  try {
    const e = (JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors?.[0];
    // Only a well-formed code is kept: it may reach a client, and must not carry anything else.
    if (e && typeof e.code === 'string' && /^[A-Z_]{1,64}$/.test(e.code)) return { code: e.code, message: typeof e.message === 'string' ? scrubUrls(e.message.slice(0, 500)) : undefined };
  } catch {
    /* not an OCI envelope */
  }
  return undefined;
}

/** Upstream messages may reach a client: URLs in them (signed CDN links, userinfo) do not. */
const scrubUrls = (s: string): string => s.replace(/[a-z][a-z0-9+.-]*:\/\/\S+/gi, '<url>');

/**
 * `</v2/x/tags/list?last=b&n=2>; rel="next"` -> `last=b&n=2`: the next page's query, whatever its
 * parameters (distribution's `last`, Quay's `next_page` token); undefined without one.
 */
export function parseNextLink(link: string | undefined): TagsPage['next'] {
  if (!link) return undefined;
  const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
  if (!m) return undefined;
  try {
    const q = new URL(m[1]!, 'http://x').searchParams;
    return q.size > 0 ? q.toString() : undefined;
  } catch {
    return undefined;
  }
}

function classify(status: number): ErrorClass | undefined {
  if (status < 400 || status === 401) return undefined;
  if (status === 429) return '429';
  return status >= 500 ? '5xx' : '4xx';
}

function isTimeout(e: unknown): boolean {
  const code = errorCode(e);
  return code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT';
}

function errorCode(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' ? code : e instanceof Error ? e.name : 'error';
}

/** Drops a body we do not want; the abort error it raises has nowhere useful to go. */
function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

const str = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** Retry-After in seconds: delay-seconds, or an HTTP date (RFC 9110 allows both) counted from now; undefined when neither. */
export function retryAfterSeconds(v: string | undefined, now: number): number | undefined {
  const s = v?.trim();
  if (!s) return undefined;
  if (/^\d+$/.test(s)) return Number(s);
  const at = /[a-z]/i.test(s) ? Date.parse(s) : NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

function intHeader(v: string | string[] | undefined): number | undefined {
  const s = str(v);
  if (s === undefined || !/^\d+$/.test(s.trim())) return undefined;
  return Number(s.trim());
}
