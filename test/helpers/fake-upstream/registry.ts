/**
 * The registry server: the OCI distribution read API the way registry-1.docker.io answers it —
 * `/v2/`, manifests (Accept honoured, Docker-Content-Digest, the pull limit), blobs (HEAD answered,
 * GET redirected to the CDN), tags/list with pagination, and the OCI 1.1 referrers API.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { MT, type Blob } from '../images.js';
import type { Auth } from './auth.js';
import { sendHuge, serveBytes } from './bodies.js';
import { cdnLocation } from './cdn.js';
import type { Content, Repo } from './content.js';
import { corruptJson, injectedFailure } from './faults.js';
import { acceptedTypes, DIGEST_RE, json, NAME_RE, notFoundPage, ociError, ROUTE_RE, send, type Ctx } from './protocol.js';
import { chargePull, PULL_LIMIT_MESSAGE, type PullLimit } from './rate-limit.js';
import type { Faults } from './types.js';

export interface RegistryDeps {
  /** The registry's base URL (redirect loops point here). */
  url: string;
  /** Blob GETs redirect here when set. */
  cdnUrl: string | undefined;
  content: Content;
  auth: Auth;
  faults: Faults;
  /** The pull limit as it is now (tests replace or clear it between requests). */
  rateLimit: () => PullLimit | undefined;
  referrers: boolean;
  narrowLists: 'docker' | 'all';
  now: () => number;
}

export class Registry {
  constructor(private readonly deps: RegistryDeps) {}

  async handle(ctx: Ctx): Promise<void> {
    const { auth, faults } = this.deps;
    ctx.res.setHeader('docker-distribution-api-version', 'registry/2.0');
    if (faults.delayMs) await sleep(faults.delayMs);
    if (faults.down) return ociError(ctx, 503, 'UNAVAILABLE', 'service unavailable');

    const path = ctx.url.pathname;
    if (path === '/token') return auth.mode === 'bearer' ? auth.handleToken(ctx) : notFoundPage(ctx);
    const method = ctx.req.method;
    if (path === '/v2/' || path === '/v2') {
      if (method !== 'GET' && method !== 'HEAD') return ociError(ctx, 405, 'UNSUPPORTED', 'The operation is unsupported.');
      if (!auth.authorize(ctx)) return;
      return json(ctx, 200, {});
    }
    const m = ROUTE_RE.exec(path);
    if (!m) return notFoundPage(ctx);
    const [, name, section, ref] = m as unknown as [string, string, string, string];
    if (method !== 'GET' && method !== 'HEAD') return ociError(ctx, 405, 'UNSUPPORTED', 'this fake registry is read-only');
    if (!auth.authorize(ctx, name)) return;
    if (!NAME_RE.test(name)) return ociError(ctx, 400, 'NAME_INVALID', 'invalid repository name', { name });
    if (injectedFailure(ctx, faults)) return;

    switch (section) {
      case 'manifests':
        return this.handleManifest(ctx, name, ref);
      case 'blobs':
        return this.handleBlob(ctx, name, ref);
      case 'tags':
        return ref === 'list' ? this.handleTags(ctx, name) : notFoundPage(ctx);
      default:
        return this.handleReferrers(ctx, name, ref);
    }
  }

  private async handleManifest(ctx: Ctx, name: string, ref: string): Promise<void> {
    const repo = this.deps.content.get(name);
    // Docker Hub counts manifest GETs as pulls; HEADs are free but still report the headers.
    const pull = chargePull(this.deps.rateLimit(), ctx.head);
    if (pull.refused) return ociError(ctx, 429, 'TOOMANYREQUESTS', PULL_LIMIT_MESSAGE, null, pull.headers);
    const rateHeaders = pull.headers;
    if (!repo) return ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name }, rateHeaders);
    let digest: string | undefined = ref;
    if (ref.includes(':')) {
      if (!DIGEST_RE.test(ref)) return ociError(ctx, 400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest: ref }, rateHeaders);
    } else {
      digest = repo.tags.get(ref);
    }
    const stored = digest ? repo.manifests.get(digest) : undefined;
    if (!stored) return ociError(ctx, 404, 'MANIFEST_UNKNOWN', 'manifest unknown', { Tag: ref }, rateHeaders);
    let { blob } = stored;

    const accepted = acceptedTypes(ctx.req);
    if (digest !== ref && this.narrows(blob.mediaType) && accepted.length > 0 && !accepted.includes('*/*') && !accepted.includes(blob.mediaType)) {
      const child = this.defaultPlatformChild(repo, blob, accepted);
      if (child) blob = child;
    }
    if (!this.deps.faults.ignoreAccept && accepted.length > 0 && !accepted.includes('*/*') && !accepted.includes(blob.mediaType)) {
      const what = blob.mediaType === MT.ociIndex ? 'OCI index' : blob.mediaType === MT.ociManifest ? 'OCI manifest' : blob.mediaType;
      return ociError(ctx, 404, 'MANIFEST_UNKNOWN', `${what} found, but accept header does not support ${what}s`, null, rateHeaders);
    }

    const headers = {
      'content-type': blob.mediaType,
      'docker-content-digest': blob.digest,
      etag: `"${blob.digest}"`,
      ...rateHeaders,
    };
    const faults = this.deps.faults;
    if (ctx.head && faults.manifestHeadWithout) {
      // Registries where Docker-Content-Digest is optional (the spec lets them): some keep the ETag, some send neither.
      delete (headers as Record<string, string>)['docker-content-digest'];
      if (faults.manifestHeadWithout === 'digest-and-etag') delete (headers as Record<string, string>).etag;
    }
    const huge = faults.hugeManifestBytes;
    if (huge !== undefined && !ctx.head) return sendHuge(ctx, huge, headers);
    const body = faults.corruptManifest && !ctx.head ? corruptJson(blob.bytes) : blob.bytes;
    send(ctx, 200, headers, body);
  }

  /** Whether a tag naming a list of this type is narrowed to a platform child (see `narrowLists`). */
  private narrows(mediaType: string): boolean {
    return mediaType === MT.dockerList || (this.deps.narrowLists === 'all' && mediaType === MT.ociIndex);
  }

  /** The list's linux/amd64 child, when stored and of a type the request accepts. */
  private defaultPlatformChild(repo: Repo, list: Blob, accepted: string[]): Blob | undefined {
    const doc = JSON.parse(list.bytes.toString('utf8')) as { manifests?: Array<{ digest: string; mediaType?: string; platform?: { os?: string; architecture?: string } }> };
    const d = doc.manifests?.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64');
    const child = d ? repo.manifests.get(d.digest)?.blob : undefined;
    return child && accepted.includes(child.mediaType) ? child : undefined;
  }

  private async handleBlob(ctx: Ctx, name: string, digest: string): Promise<void> {
    if (!DIGEST_RE.test(digest)) return ociError(ctx, 400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest });
    const repo = this.deps.content.get(name);
    if (!repo) return ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    const blob = repo.blobs.get(digest);
    if (!blob) return ociError(ctx, 404, 'BLOB_UNKNOWN', 'blob unknown to registry', { digest });
    if (ctx.head) {
      return send(ctx, 200, {
        'content-type': 'application/octet-stream',
        'content-length': blob.size,
        'docker-content-digest': blob.digest,
        etag: `"${blob.digest}"`,
        'accept-ranges': 'bytes',
      });
    }
    const { faults: f, url, cdnUrl } = this.deps;
    let location: string | undefined;
    if (f.redirectLoop) location = `${url}${ctx.url.pathname}${ctx.url.search}`;
    else if (f.redirectTo) location = f.redirectTo;
    else if (cdnUrl) location = cdnLocation(cdnUrl, digest, this.deps.now());
    if (location) {
      const html = `<a href="${location}">Temporary Redirect</a>.\n\n`;
      return send(ctx, 307, { location, 'content-type': 'text/html; charset=utf-8' }, html);
    }
    return serveBytes(ctx, f, blob, { 'docker-content-digest': blob.digest, etag: `"${blob.digest}"` });
  }

  private handleTags(ctx: Ctx, name: string): void {
    const repo = this.deps.content.get(name);
    if (!repo) return ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    const nParam = ctx.url.searchParams.get('n');
    const n = nParam === null ? undefined : Number(nParam);
    if (n !== undefined && (!Number.isInteger(n) || n < 0)) return ociError(ctx, 400, 'PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n: nParam });
    const forced = this.deps.faults.tagPages;
    // Quay pages by an opaque token, on an absolute URL, and caps every page (no `last`).
    const token = ctx.url.searchParams.get('next_page');
    const last = token !== null ? Buffer.from(token, 'base64url').toString() : ctx.url.searchParams.get('last');
    const after = [...repo.tags.keys()].sort().filter((t) => last === null || t > last);
    const size = forced ? Math.min(forced.size, n ?? Infinity) : n;
    const page = size === undefined ? after : after.slice(0, size);
    const headers: Record<string, string> = {};
    if (size !== undefined && size > 0 && after.length > page.length) {
      const end = page[page.length - 1]!;
      headers.link =
        forced?.style === 'quay'
          ? `<http://${ctx.req.headers.host}/v2/${name}/tags/list?n=${size}&next_page=${Buffer.from(end).toString('base64url')}>; rel="next"`
          : `</v2/${name}/tags/list?last=${encodeURIComponent(end)}&n=${size}>; rel="next"`;
    }
    json(ctx, 200, { name, tags: page }, headers);
  }

  private handleReferrers(ctx: Ctx, name: string, digest: string): void {
    if (!this.deps.referrers) return notFoundPage(ctx);
    if (!DIGEST_RE.test(digest)) return ociError(ctx, 400, 'DIGEST_INVALID', 'invalid digest', { digest });
    const repo = this.deps.content.get(name);
    if (!repo) return ociError(ctx, 404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
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
    send(ctx, 200, headers, JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests }));
  }
}
