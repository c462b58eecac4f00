/**
 * List-like answers: tags (upstream first, the last cached answer when upstream fails), the catalog
 * (what the cache holds) and referrers (OCI 1.1; upstream's API, else its fallback tag; cached with
 * the tag TTL).
 */
import { RegistryContext } from './context.js';
import { isUpstreamFailure, RegistryError } from './errors.js';
import { MediaTypes } from './manifest.js';
import { displayName, parseDigest, validateTag, type RepoRef } from './reference.js';

export interface Page<T> {
  items: T[];
  /** The `last` value for the next page, when there is one. */
  next: string | undefined;
  stale: boolean;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Array<{ mediaType?: string; digest?: string; size?: number; artifactType?: string; annotations?: Record<string, string> }>;
}

export class ListingService {
  constructor(private readonly ctx: RegistryContext) {}

  checkPageSize(n: number | undefined): void {
    if (n !== undefined && (!Number.isSafeInteger(n) || n < 0 || n > this.ctx.deps.maxPageSize)) {
      throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be an integer from 0 to ${this.ctx.deps.maxPageSize}`, { status: 400 });
    }
  }

  async tags(ref: RepoRef, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    this.checkPageSize(n);
    if (last !== undefined) validateTag(last);
    const { deps } = this.ctx;
    if (!deps.offline) {
      try {
        const page = await this.ctx.upstream(ref).getTags(ref.repo, n, last);
        const tags = tagsOf(page.body);
        if (n === undefined && last === undefined && !page.next) await deps.meta.putDoc(ref, 'tags', { fetchedAt: deps.now(), body: tags });
        deps.observer.result('tags', ref.upstream, 'miss');
        return { items: tags, next: page.next?.last, stale: false };
      } catch (e) {
        if (!isUpstreamFailure(e)) throw e;
        const cached = await deps.meta.getDoc(ref, 'tags');
        if (!cached) throw e;
        deps.observer.result('tags', ref.upstream, 'stale');
        return { ...paginate(tagsOf({ tags: cached.body }), n, last), stale: true };
      }
    }
    const cached = await deps.meta.getDoc(ref, 'tags');
    if (!cached) this.ctx.assertOnline('tags', ref);
    deps.observer.result('tags', ref.upstream, 'stale');
    return { ...paginate(tagsOf({ tags: cached!.body }), n, last), stale: true };
  }

  /** Repositories held in the cache, by their client-visible names. */
  async catalog(n: number | undefined, last: string | undefined): Promise<Page<string>> {
    this.checkPageSize(n);
    const repos = await this.ctx.deps.meta.listRepos();
    const names = repos.map((r) => displayName(r, this.ctx.deps.defaultUpstream)).sort();
    return { ...paginate(names, n, last), stale: false };
  }

  /** The referrers of a manifest, optionally filtered by artifactType. */
  async referrers(ref: RepoRef, digest: string, artifactType: string | undefined): Promise<{ index: ReferrersIndex; filtered: boolean; stale: boolean }> {
    const { algorithm, hex } = parseDigest(digest);
    const { deps } = this.ctx;
    const docName = `referrers-${algorithm}-${hex}`;
    const cached = await deps.meta.getDoc(ref, docName);
    let manifests: ReferrersIndex['manifests'];
    let stale = false;
    const fresh = cached && deps.now() - cached.fetchedAt < deps.tagTtl(ref.upstream) * 1000;
    if (cached && (fresh || deps.offline)) {
      manifests = cached.body as ReferrersIndex['manifests'];
      stale = !fresh;
      deps.observer.result('referrers', ref.upstream, fresh ? 'hit' : 'stale');
    } else if (deps.offline) {
      manifests = [];
    } else {
      try {
        manifests = await this.fetchReferrers(ref, digest, algorithm, hex);
        await deps.meta.putDoc(ref, docName, { fetchedAt: deps.now(), body: manifests });
        const digests = manifests.map((m) => m.digest).filter((d): d is string => typeof d === 'string' && /^[a-z0-9]+:[a-f0-9]+$/.test(d));
        await this.ctx.link(ref, digests);
        deps.observer.result('referrers', ref.upstream, 'miss');
      } catch (e) {
        if (!cached || !isUpstreamFailure(e)) throw e;
        manifests = cached.body as ReferrersIndex['manifests'];
        stale = true;
        deps.observer.result('referrers', ref.upstream, 'stale');
      }
    }
    const filtered = artifactType !== undefined;
    const list = filtered ? manifests.filter((m) => m.artifactType === artifactType) : manifests;
    return { index: { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: list }, filtered, stale };
  }

  private async fetchReferrers(ref: RepoRef, digest: string, algorithm: string, hex: string): Promise<ReferrersIndex['manifests']> {
    const upstream = this.ctx.upstream(ref);
    const body = await upstream.getReferrers(ref.repo, digest);
    if (body !== undefined) return manifestsOf(body);
    // No referrers API upstream: the OCI fallback is an index tagged <alg>-<hex>.
    try {
      const res = await upstream.getManifest(ref.repo, `${algorithm}-${hex}`, [MediaTypes.ociIndex]);
      return manifestsOf(JSON.parse(res.bytes.toString('utf8')));
    } catch (e) {
      if (e instanceof RegistryError && e.status === 404) return [];
      if (e instanceof SyntaxError) return [];
      throw e;
    }
  }
}

function tagsOf(body: unknown): string[] {
  const tags = (body as { tags?: unknown })?.tags;
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : [];
}

function manifestsOf(body: unknown): ReferrersIndex['manifests'] {
  const m = (body as { manifests?: unknown })?.manifests;
  return Array.isArray(m) ? m.filter((x) => typeof x === 'object' && x !== null) : [];
}

/** Lexical pagination as the distribution spec describes: entries after `last`, at most `n`. */
export function paginate(all: string[], n: number | undefined, last: string | undefined): { items: string[]; next: string | undefined } {
  const sorted = [...all].sort();
  const after = last === undefined ? sorted : sorted.filter((t) => t > last);
  if (n === undefined || after.length <= n) return { items: after, next: undefined };
  const items = after.slice(0, n);
  return { items, next: items.length > 0 ? items[items.length - 1] : undefined };
}
