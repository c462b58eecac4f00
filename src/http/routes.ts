/**
 * The /v2/ endpoints (GET and HEAD): parse and validate the request, call the registry, write
 * headers, stream bodies. Errors are thrown as RegistryErrors and answered once, in app.ts.
 */
import type { Context, Hono } from 'hono';
import type { Identity } from '../access/service.js';
import { RegistryError } from '../registry/errors.js';
import { AcceptParser } from '../registry/media-types.js';
import { parseRange, resolveRanges } from '../registry/range.js';
import type { Page, Registry } from '../registry/service.js';
import { paginate } from '../registry/listings.js';
import type { AccessGate } from './access.js';
import { multipartByteranges } from './multipart.js';
import { sendBytes, sendStream, type StreamSink } from './send.js';

/** RFC 9111 Warning for an answer served from the cache because upstream could not be asked. */
const STALE_WARNING = '110 - "Response is Stale"';

export type Env = {
  Bindings: StreamSink;
  /** `frame`: the headers every answer carries (set by the app's middleware; see send.ts). */
  Variables: { frame?: Record<string, string>; route: string; repo?: string; digest?: string; cache?: string; bytes?: number; reference?: string; identity?: Identity; user?: string; client?: string };
};

const API_PATH = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^/]+(?:\/[^/]+)?)$/;

/**
 * `gate` (access control on): asked before anything is looked up; the catalog lists only what the caller may see.
 * `accelRedirect`: nginx's internal location over the blob directory (config `serve.accelRedirect`), see accelBlob().
 */
export function mountRoutes(app: Hono<Env>, registry: Registry, onServed: (source: 'cache' | 'upstream', n: number) => void, gate?: AccessGate, accelRedirect?: string): void {
  const accept = new AcceptParser();
  app.on(['GET', 'HEAD'], '/v2', (c) => (gate?.enter(c), base(c)));
  app.on(['GET', 'HEAD'], '/v2/', (c) => (gate?.enter(c), base(c)));

  app.on(['GET', 'HEAD'], '/v2/_catalog', async (c) => {
    c.set('route', 'catalog');
    const { n, last } = pageParams(c);
    let page: Page<string>;
    if (gate) {
      gate.enter(c);
      // Filtered before paging, so pages are full and `last` never names a hidden repository.
      await registry.catalog(n, undefined); // `n` checked as without access control
      const all = (await registry.catalog(undefined, undefined)).items;
      // A cached name that no longer routes (its upstream left the config) is shown to nobody.
      const canonical = (name: string) => {
        try {
          const ref = registry.route(name, undefined);
          return `${ref.upstream}/${ref.repo}`;
        } catch {
          return '';
        }
      };
      const visible = gate.visible(c, all.map(canonical).filter((r) => r !== ''));
      page = { ...paginate(all.filter((name) => visible.has(canonical(name))), n, last), cache: 'hit' };
    } else page = await registry.catalog(n, last);
    return listResponse(c, { repositories: page.items }, page, '/v2/_catalog', n);
  });

  app.all('/v2/*', async (c) => {
    // The request target as the client sent it: c.req.url has dot segments and escapes resolved.
    const raw = c.env?.incoming?.url;
    const path = rawPath(raw ? `http://h${raw}` : c.req.url);
    const m = API_PATH.exec(path);
    c.set('route', m ? routeOf(m[2]!) : 'unknown');
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      throw new RegistryError('METHOD_UNSUPPORTED', 'this mirror is read-only: only GET and HEAD are supported', { detail: { method: c.req.method } });
    }
    if (!m) throw new RegistryError('ROUTE_UNKNOWN', 'not a registry API path', { detail: { path: path.slice(0, 300) } });
    const [, name, kind, rest] = m as unknown as [string, string, string, string];
    const ref = registry.route(name, c.req.query('ns'));
    c.set('repo', `${ref.upstream}/${ref.repo}`);
    c.set('reference', rest);
    gate?.repository(c, ref);
    const head = c.req.method === 'HEAD';
    switch (kind) {
      case 'manifests':
        return manifest(c, registry, ref, rest, head, onServed, accept);
      case 'blobs':
        if (rest.startsWith('uploads')) throw new RegistryError('METHOD_UNSUPPORTED', 'this mirror is read-only: pushes are not supported');
        if (!head && accelRedirect !== undefined && c.req.header(ACCEL_REQUEST_HEADER) === 'on') {
          const res = await accelBlob(c, registry, ref, rest, accelRedirect, onServed);
          if (res) return res;
        }
        return blob(c, registry, ref, rest, head, onServed);
      case 'tags': {
        if (rest !== 'list') throw new RegistryError('ROUTE_UNKNOWN', 'not a registry API path');
        const { n, last } = pageParams(c);
        const page = await registry.listTags(ref, n, last);
        c.header('x-mirror-cache', page.cache);
        if (page.cache === 'stale') c.header('warning', STALE_WARNING);
        return listResponse(c, { name, tags: page.items }, page, `/v2/${name}/tags/list`, n);
      }
      default: {
        c.set('digest', rest);
        const artifactType = c.req.query('artifactType');
        const res = await registry.referrers(ref, rest, artifactType);
        const headers: Record<string, string> = { 'content-type': 'application/vnd.oci.image.index.v1+json' };
        if (res.filtered) headers['oci-filters-applied'] = 'artifactType';
        if (res.stale) {
          headers['x-mirror-cache'] = 'stale';
          headers.warning = STALE_WARNING;
        }
        return new Response(head ? null : JSON.stringify(res.index), { status: 200, headers });
      }
    }
  });
}

function base(c: Context<Env>): Response {
  c.set('route', 'base');
  return c.json({}, 200);
}

async function manifest(
  c: Context<Env>,
  registry: Registry,
  ref: ReturnType<Registry['route']>,
  reference: string,
  head: boolean,
  onServed: (s: 'cache' | 'upstream', n: number) => void,
  accept: AcceptParser,
): Promise<Response> {
  if (reference.includes('/')) throw new RegistryError('MANIFEST_UNKNOWN', 'invalid manifest reference');
  const res = await registry.getManifest(ref, reference, accept.parse(c.req.header('accept')));
  c.set('digest', res.digest);
  c.set('cache', res.cache);
  const etag = `"${res.digest}"`;
  const headers: Record<string, string> = {
    'content-type': res.mediaType,
    'docker-content-digest': res.digest,
    'content-length': String(res.bytes.length),
    etag,
    'x-mirror-cache': res.cache,
  };
  if (res.cache === 'stale') headers.warning = STALE_WARNING;
  if (c.req.header('if-none-match') === etag) {
    delete headers['content-length'];
    return head ? c.body(null, 304, headers) : sendBytes(c, 304, headers, null);
  }
  c.set('bytes', head ? 0 : res.bytes.length);
  if (head) return c.body(null, 200, headers);
  onServed(res.cache === 'miss' ? 'upstream' : 'cache', res.bytes.length);
  return sendBytes(c, 200, headers, res.bytes);
}

async function blob(c: Context<Env>, registry: Registry, ref: ReturnType<Registry['route']>, digest: string, head: boolean, onServed: (s: 'cache' | 'upstream', n: number) => void): Promise<Response> {
  if (digest.includes('/')) throw new RegistryError('DIGEST_INVALID', 'invalid digest');
  c.set('digest', digest);
  const common: Record<string, string> = {
    'docker-content-digest': digest,
    etag: `"${digest}"`,
    'accept-ranges': 'bytes',
    'cache-control': 'max-age=31536000, immutable',
  };
  if (c.req.header('if-none-match') === common.etag) {
    // The client has these bytes (the ETag is the digest), as distribution answers: a 304, once the
    // repository is known to hold the blob (statBlob refuses otherwise).
    await registry.statBlob(ref, digest);
    return c.body(null, 304, common);
  }
  if (head) {
    const stat = await registry.statBlob(ref, digest);
    const headers: Record<string, string> = { ...common, 'content-type': 'application/octet-stream' };
    if (stat.size !== undefined) headers['content-length'] = String(stat.size);
    return c.body(null, 200, headers);
  }
  const ranges = parseRange(c.req.header('range'));
  const res = await registry.openBlob(ref, digest, ranges);
  const cache = res.source === 'cache' ? 'hit' : 'miss';
  c.set('cache', cache);
  const headers: Record<string, string> = { ...common, 'content-type': 'application/octet-stream', 'x-mirror-cache': cache };
  let status = 200;
  if (res.ranges && res.ranges.length > 1 && res.openRange && res.size !== undefined) {
    const multi = multipartByteranges(res.ranges, res.size, 'application/octet-stream', res.body, res.openRange);
    headers['content-type'] = multi.contentType;
    headers['content-length'] = String(multi.length);
    return sendStream(c, 206, headers, multi.stream, (n) => {
      c.set('bytes', n);
      onServed(res.source, n);
    });
  }
  const range = res.ranges?.[0];
  if (range) {
    status = 206;
    headers['content-range'] = `bytes ${range.start}-${range.end}/${res.size ?? '*'}`;
    headers['content-length'] = String(range.end - range.start + 1);
  } else if (res.size !== undefined) {
    headers['content-length'] = String(res.size);
  }
  if (Buffer.isBuffer(res.body)) {
    c.set('bytes', res.body.length);
    onServed(res.source, res.body.length);
    return sendBytes(c, status, headers, res.body);
  }
  return sendStream(c, status, headers, res.body, (n) => {
    c.set('bytes', n);
    onServed(res.source, n);
  });
}

/** Set by nginx in front (deploy/nginx/regmirror.conf): it will act on an X-Accel-Redirect answer. */
const ACCEL_REQUEST_HEADER = 'x-regmirror-accel';
/** What a store's fileOf() may give, checked again here before it goes into a header nginx acts on. */
const BLOB_FILE = /^[a-z0-9]+\/[0-9a-f]{2}\/[0-9a-f]{32,128}$/;

/**
 * A cache hit of a complete blob kept as a file, for nginx to send: after the checks a streamed hit
 * gets (access, membership, last use, the hit metric) an empty answer whose X-Accel-Redirect names
 * the file under nginx's internal location; nginx sends it with sendfile and answers Range itself
 * (the client's Range header is nginx's to read). nginx keeps only Content-Type, Cache-Control and a
 * few more of this answer's headers; the internal location adds Docker-Content-Digest, ETag and
 * X-Mirror-Cache back from these. Undefined for anything else (a miss, a download under way): the
 * caller streams it.
 */
async function accelBlob(c: Context<Env>, registry: Registry, ref: ReturnType<Registry['route']>, digest: string, prefix: string, onServed: (s: 'cache' | 'upstream', n: number) => void): Promise<Response | undefined> {
  if (digest.includes('/')) throw new RegistryError('DIGEST_INVALID', 'invalid digest');
  c.set('digest', digest);
  const file = await registry.blobFile(ref, digest);
  if (!file || !BLOB_FILE.test(file.path)) return undefined;
  c.set('cache', 'hit');
  // The bytes nginx will send (a range's, when the client asked for one it can have).
  let n = file.size;
  try {
    const specs = parseRange(c.req.header('range'));
    const ranges = specs ? resolveRanges(specs, file.size) : undefined;
    if (ranges) n = ranges.reduce((a, r) => a + r.end - r.start + 1, 0);
  } catch {
    // nginx answers a range it cannot serve (416) or ignores one it cannot read (200, whole).
  }
  c.set('bytes', n);
  onServed('cache', n);
  return new Response(null, {
    status: 200,
    headers: {
      'x-accel-redirect': `${prefix}/${file.path}`,
      'content-type': 'application/octet-stream',
      'docker-content-digest': digest,
      etag: `"${digest}"`,
      'cache-control': 'max-age=31536000, immutable',
      'x-mirror-cache': 'hit',
    },
  });
}

function listResponse(c: Context<Env>, body: object, page: Page<string>, path: string, n: number | undefined): Response {
  if (page.next !== undefined) {
    const q = new URLSearchParams();
    if (n !== undefined) q.set('n', String(n));
    q.set('last', page.next);
    const ns = c.req.query('ns');
    if (ns) q.set('ns', ns);
    c.header('link', `<${path}?${q}>; rel="next"`);
  }
  return c.json(body, 200);
}

function pageParams(c: Context<Env>): { n: number | undefined; last: string | undefined } {
  const nRaw = c.req.query('n');
  let n: number | undefined;
  if (nRaw !== undefined && nRaw !== '') {
    if (!/^\d{1,15}$/.test(nRaw)) throw new RegistryError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer');
    n = Number(nRaw);
  }
  const last = c.req.query('last') || undefined;
  return { n, last };
}

function routeOf(kind: string): string {
  return kind === 'manifests' ? 'manifest' : kind === 'blobs' ? 'blob' : kind;
}

/** The path exactly as sent (still percent-encoded): an encoded `..` or `/` must fail validation, not be decoded into a path. */
function rawPath(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  const q = url.indexOf('?', start);
  return start < 0 ? '/' : url.slice(start, q < 0 ? undefined : q);
}
