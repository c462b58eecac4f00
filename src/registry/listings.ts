/**
 * List-like answers: tags (the whole list fetched from upstream, following its pages, kept with the
 * tag TTL and paged here, so upstreams that ignore `n`/`last` still give correct pages; the last
 * list when upstream is unavailable), the catalog (what the cache holds) and referrers (OCI 1.1;
 * upstream's API, else its fallback tag; cached with the tag TTL).
 */
import { MetaUnavailableError } from '../storage/meta-store.js';
import { isUpstreamError } from '../upstream/errors.js';
import { SingleFlight } from '../util/single-flight.js';
import { RegistryContext, repoKey, type CacheResult } from './context.js';
import { RegistryError } from './errors.js';
import { ALL_MANIFEST_TYPES, MediaTypes } from './media-types.js';
import { displayName, parseDigest, validateTag, type RepoRef } from './reference.js';
import { isUpstreamUnavailable } from './upstream-errors.js';

export interface Page<T> {
  items: T[];
  /** The `last` value for the next page, when there is one. */
  next: string | undefined;
  /** Where the whole list came from: the cache within its TTL, upstream, or the cache when upstream failed (or offline). */
  cache: CacheResult;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Array<{ mediaType?: string; digest?: string; size?: number; artifactType?: string; annotations?: Record<string, string> }>;
}

/** At most this many upstream pages are followed for one tag list (a bound against a hostile upstream). */
const MAX_TAG_PAGES = 100;

export class ListingService {
  private readonly tagFlights = new SingleFlight<string[]>();

  constructor(private readonly ctx: RegistryContext) {}

  checkPageSize(n: number | undefined): void {
    if (n !== undefined && (!Number.isSafeInteger(n) || n < 0 || n > this.ctx.deps.maxPageSize)) {
      throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be an integer from 0 to ${this.ctx.deps.maxPageSize}`);
    }
  }

  async tags(ref: RepoRef, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    this.checkPageSize(n);
    if (last !== undefined) validateTag(last);
    const { deps } = this.ctx;
    const cached = await deps.meta.getDoc(ref, 'tags');
    const page = (body: unknown, cache: CacheResult): Page<string> => {
      deps.observer.result('tags', ref.upstream, cache);
      return { ...paginate(stringsOf(body), n, last), cache };
    };
    if (cached && deps.now() - cached.fetchedAt < deps.tagTtl(ref.upstream) * 1000) return page(cached.body, 'hit');
    if (deps.offline) {
      if (!cached) this.ctx.assertOnline('tags', ref);
      return page(cached!.body, 'stale');
    }
    try {
      const tags = await this.tagFlights.run(repoKey(ref), () => this.fetchAllTags(ref));
      return page(tags, 'miss');
    } catch (e) {
      if (!cached || !isUpstreamUnavailable(e)) throw e;
      return page(cached.body, 'stale');
    }
  }

  /** The whole tag list from upstream, following its Link pages; stored for later pages and outages. */
  private async fetchAllTags(ref: RepoRef): Promise<string[]> {
    const upstream = this.ctx.upstream(ref);
    const all = new Set<string>();
    const seen = new Set<string>();
    let page: string | undefined;
    for (let pages = 0; pages < MAX_TAG_PAGES; pages++) {
      const res = await upstream.getTags(ref.repo, page);
      for (const t of stringsOf((res.body as { tags?: unknown })?.tags)) all.add(t);
      // A next page already asked for would loop: stop there.
      if (!res.next || seen.has(res.next)) break;
      seen.add(res.next);
      page = res.next;
    }
    const tags = [...all].sort();
    await this.ctx.deps.meta.putDoc(ref, 'tags', { fetchedAt: this.ctx.deps.now(), body: tags });
    return tags;
  }

  /** Repositories with cached manifests, by their client-visible names. */
  async catalog(n: number | undefined, last: string | undefined): Promise<Page<string>> {
    this.checkPageSize(n);
    // The whole list lives in the shared store: while it is unreachable a replica's own records would be a partial answer.
    const repos = await this.ctx.deps.meta.listRepos().catch((e: unknown) => {
      throw e instanceof MetaUnavailableError ? new RegistryError('UNAVAILABLE', 'the catalog is unavailable while the metadata store is unreachable', { cause: e }) : e;
    });
    const names = repos.map((r) => displayName(r, this.ctx.deps.defaultUpstream)).sort();
    return { ...paginate(names, n, last), cache: 'hit' };
  }

  /** The referrers of a manifest, optionally filtered by artifactType. Nothing is stored unless upstream answered. */
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
      if (!(await this.ctx.manifestType(ref, digest))) this.ctx.assertOnline('manifest', ref);
      manifests = [];
    } else {
      try {
        const got = await this.fetchReferrers(ref, digest, algorithm, hex);
        manifests = got.manifests;
        if (!got.keep) return { index: { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] }, filtered: artifactType !== undefined, stale: false };
        await deps.meta.putDoc(ref, docName, { fetchedAt: deps.now(), body: manifests });
        // Its entries are not recorded as this repository's manifests: the fallback index is whatever
        // anyone pushed under that tag, and could name another repository's private manifest. Each is
        // confirmed with upstream when asked for by digest, as any manifest not yet seen here.
        deps.observer.result('referrers', ref.upstream, 'miss');
      } catch (e) {
        if (!cached || !isUpstreamUnavailable(e)) throw e;
        manifests = cached.body as ReferrersIndex['manifests'];
        stale = true;
        deps.observer.result('referrers', ref.upstream, 'stale');
      }
    }
    const filtered = artifactType !== undefined;
    const list = filtered ? manifests.filter((m) => m.artifactType === artifactType) : manifests;
    return { index: { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: list }, filtered, stale };
  }

  /** `keep: false`: an answer not to store (a subject upstream does not have). */
  private async fetchReferrers(ref: RepoRef, digest: string, algorithm: string, hex: string): Promise<{ manifests: ReferrersIndex['manifests']; keep: boolean }> {
    const upstream = this.ctx.upstream(ref);
    const body = await upstream.getReferrers(ref.repo, digest);
    if (body !== undefined) return { manifests: manifestsOf(body), keep: true };
    // No referrers API upstream: the answer is ours to give, as the spec asks it of a registry.
    if (!(await this.ctx.manifestType(ref, digest)) && !(await this.subjectKnown(ref, digest))) return { manifests: [], keep: false };
    // The OCI fallback: an index tagged <alg>-<hex>.
    try {
      const res = await upstream.getManifest(ref.repo, `${algorithm}-${hex}`, [MediaTypes.ociIndex]);
      return { manifests: manifestsOf(JSON.parse(res.bytes.toString('utf8'))), keep: true };
    } catch (e) {
      if (isUpstreamError(e) && e.notFound) return { manifests: [], keep: true };
      if (e instanceof SyntaxError) return { manifests: [], keep: true };
      throw e;
    }
  }

  /**
   * Whether upstream has the subject. The spec wants a 200, never a 404, from a repository that
   * exists: an unknown subject there has no referrers (false; the empty answer is not stored, so
   * digests a client makes up leave no records). An unknown repository stays a 404 (NAME_UNKNOWN,
   * or whatever else upstream said). A HEAD carries no error code, so its 404 is asked again with a
   * GET, whose envelope tells the two apart.
   */
  private async subjectKnown(ref: RepoRef, digest: string): Promise<boolean> {
    const upstream = this.ctx.upstream(ref);
    try {
      await upstream.headManifest(ref.repo, digest, ALL_MANIFEST_TYPES);
      return true;
    } catch (e) {
      if (!isUpstreamError(e) || !e.notFound) throw e;
    }
    try {
      await upstream.getManifest(ref.repo, digest, ALL_MANIFEST_TYPES);
      return true;
    } catch (e) {
      if (isUpstreamError(e) && e.notFound && e.code === 'MANIFEST_UNKNOWN') return false;
      throw e;
    }
  }
}

function stringsOf(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((t): t is string => typeof t === 'string') : [];
}

function manifestsOf(body: unknown): ReferrersIndex['manifests'] {
  const m = (body as { manifests?: unknown })?.manifests;
  return Array.isArray(m) ? (m as unknown[]).filter((x): x is ReferrersIndex['manifests'][number] => typeof x === 'object' && x !== null) : [];
}

/** Lexical pagination as the distribution spec describes: entries after `last`, at most `n`. */
export function paginate(all: string[], n: number | undefined, last: string | undefined): { items: string[]; next: string | undefined } {
  const sorted = [...all].sort();
  const after = last === undefined ? sorted : sorted.filter((t) => t > last);
  if (n === undefined || after.length <= n) return { items: after, next: undefined };
  const items = after.slice(0, n);
  return { items, next: items.length > 0 ? items[items.length - 1] : undefined };
}
