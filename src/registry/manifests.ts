/**
 * Manifests: by digest from the cache forever (once the repository is known to hold them as
 * manifests), whatever the client's Accept; by tag from the cache within the TTL, then revalidated
 * with a HEAD (free against Docker Hub's pull limit) and fetched with a GET only when the digest
 * changed; stale when upstream is unavailable.
 *
 * A tag answers each client with what upstream would give that client's Accept: upstream answers a
 * client that does not accept a tag's index with one platform's manifest, and such a narrowed answer
 * is kept apart (see tag-variants.ts), never served to a client that accepts the index.
 */
import { createHash } from 'node:crypto';
import type { TagRecord, TagVariant } from '../storage/meta-store.js';
import { isUpstreamError, UpstreamError } from '../upstream/errors.js';
import type { ManifestResult } from '../upstream/types.js';
import { SingleFlight } from '../util/single-flight.js';
import { RegistryContext, repoKey, type CacheResult } from './context.js';
import { RegistryError } from './errors.js';
import { accepts, ALL_MANIFEST_TYPES, EVERY_MANIFEST_TYPE, parseManifest, upstreamAccept } from './media-types.js';
import { parseDigest, validateTag, type RepoRef } from './reference.js';
import { signedPayloadDigest } from './schema1.js';
import { acceptKey, pickVariant, upgradeRecord, variantFor } from './tag-variants.js';
import { isUpstreamUnavailable } from './upstream-errors.js';

export interface ManifestResponse {
  bytes: Buffer;
  mediaType: string;
  digest: string;
  cache: CacheResult;
}

export class ManifestService {
  /** One upstream exchange per (repository, reference, accept set) at a time: fifty clients, one request. */
  private readonly flights = new SingleFlight<ManifestResponse>();
  /** One upstream HEAD at a time confirming a cached manifest belongs to another repository too. */
  private readonly confirmations = new SingleFlight<string>();

  constructor(private readonly ctx: RegistryContext) {}

  async get(ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined): Promise<ManifestResponse> {
    let res: ManifestResponse;
    if (DIGEST_SHAPED.test(reference)) {
      parseDigest(reference);
      res = await this.byDigest(ref, reference);
    } else {
      // Neither a digest nor a tag, so no such manifest (as the registry and the conformance suite answer).
      if (!isTag(reference)) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown: not a valid tag', { detail: { reference: reference.slice(0, 200) } });
      res = await this.byTag(ref, reference, accept);
    }
    this.ctx.deps.observer.result('manifest', ref.upstream, res.cache);
    this.ctx.deps.usage.manifest(ref.upstream, ref.repo, res.digest);
    return res;
  }

  /** A digest names one content: served as it is, with its real media type, whatever the Accept. */
  private async byDigest(ref: RepoRef, digest: string): Promise<ManifestResponse> {
    const { ctx } = this;
    let mediaType = await ctx.manifestType(ref, digest);
    if (mediaType === undefined && (await ctx.localBlobSize(digest)) !== undefined) {
      // Stored for another repository (or as a blob here): serve it here only once upstream says this
      // repository has it as a manifest, and of which type.
      ctx.assertOnline('manifest', ref);
      mediaType = await this.confirm(ref, digest);
    }
    if (mediaType !== undefined) {
      const bytes = await ctx.deps.blobs.read(digest);
      if (bytes) return { bytes, mediaType, digest, cache: 'hit' };
    }
    ctx.assertOnline('manifest', ref);
    return this.fetch(ref, digest, undefined, undefined);
  }

  private confirm(ref: RepoRef, digest: string): Promise<string> {
    return this.confirmations.run(`${repoKey(ref)}@${digest}`, async () => {
      const key = negativeKey(ref, digest, undefined);
      this.ctx.deps.negative.check(key);
      let mediaType: string;
      try {
        mediaType = (await this.ctx.upstream(ref).headManifest(ref.repo, digest, ALL_MANIFEST_TYPES)).mediaType;
      } catch (e) {
        if (isUpstreamError(e) && e.notFound) this.ctx.deps.negative.remember(key, e);
        throw e;
      }
      const bytes = await this.ctx.deps.blobs.read(digest);
      const parsed = bytes ? parseManifest(bytes) : undefined;
      const type = mediaType || parsed?.mediaType || 'application/octet-stream';
      // Its children and foreign layers are not vouched for: each is confirmed when asked for here.
      await this.ctx.recordManifests(ref, [{ digest, mediaType: type }]);
      await this.ctx.link(ref, parsed?.vouched ?? []);
      return type;
    });
  }

  private async byTag(ref: RepoRef, tag: string, accept: ReadonlySet<string> | undefined): Promise<ManifestResponse> {
    const { deps } = this.ctx;
    const record = await this.loadTag(ref, tag);
    const variant = pickVariant(record, accept);
    const cached = variant ? await deps.blobs.read(variant.digest) : undefined;
    const fromCache = (cache: CacheResult): ManifestResponse => ({ bytes: cached!, mediaType: variant!.mediaType, digest: variant!.digest, cache });
    if (variant && cached) {
      const fresh = deps.now() - variant.fetchedAt < deps.tagTtl(ref.upstream) * 1000;
      if (fresh) return fromCache('hit');
      if (deps.offline) return fromCache('stale');
    }
    this.ctx.assertOnline('manifest', ref);
    try {
      if (variant && cached) {
        const upstream = this.ctx.upstream(ref);
        const revalidation = this.flights.run(flightKey(ref, `${tag}?revalidate`, accept), async () => {
          const head = await upstream.headManifest(ref.repo, tag, upstreamAccept(accept));
          if (head.digest !== variant.digest) {
            const got = await this.fetchOnce(ref, tag, accept, tag);
            // A HEAD that named no digest (neither header nor ETag) took a GET to tell: the same content is still a revalidation.
            return head.digest === undefined && got.digest === variant.digest ? { ...got, cache: 'revalidated' } : got;
          }
          // The HEAD says what upstream gives *this* Accept: recorded as such. A client accepting no
          // index confirms the tag's own content only for clients like it; upstream may have
          // narrowed a new list to this very manifest, which a client accepting the list must not get.
          await this.saveTag(ref, tag, variantFor({ digest: variant.digest, mediaType: variant.mediaType, size: variant.size, fetchedAt: deps.now() }, accept));
          return fromCache('revalidated');
        });
        // Slow is not dead: past the budget the client gets the cached copy (stale), and the
        // revalidation finishes in the background, updating the tag for the next client.
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), upstream.revalidateBudgetMs ?? 2000)));
        try {
          const first = await Promise.race([revalidation, late]);
          if (first !== 'late') return first;
        } finally {
          clearTimeout(timer);
        }
        revalidation.catch(() => undefined);
        deps.logger.debug({ repo: ref.repo, upstream: ref.upstream, tag }, 'tag revalidation over budget; serving the cached manifest (stale) while it finishes');
        return fromCache('stale');
      }
      return await this.fetch(ref, tag, accept, tag);
    } catch (e) {
      if (variant && cached && isUpstreamUnavailable(e)) {
        // Assumed offline is logged once, at the transition; not again per request.
        const fields = { repo: ref.repo, upstream: ref.upstream, tag, err: (e as Error).message };
        if (isUpstreamError(e) && e.assumedOffline) deps.logger.debug(fields, 'upstream assumed offline; serving the cached manifest (stale)');
        else deps.logger.warn(fields, 'upstream unavailable; serving the cached manifest (stale)');
        return fromCache('stale');
      }
      throw e;
    }
  }

  /** GETs a manifest from upstream (coalesced), verifies and stores it, and records the tag. */
  private fetch(ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined, tag: string | undefined): Promise<ManifestResponse> {
    return this.flights.run(flightKey(ref, reference, accept), async () => {
      const key = negativeKey(ref, reference, accept);
      this.ctx.deps.negative.check(key);
      try {
        return await this.fetchOnce(ref, reference, accept, tag);
      } catch (e) {
        // Not found upstream, or found in a type this Accept does not take (the key has the Accept):
        // either way the same answer for a while, not a GET (a pull, on Docker Hub) per request.
        if ((isUpstreamError(e) && e.notFound) || (e instanceof RegistryError && e.code === 'MANIFEST_UNKNOWN')) this.ctx.deps.negative.remember(key, e);
        throw e;
      }
    });
  }

  private async fetchOnce(ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined, tag: string | undefined): Promise<ManifestResponse> {
    // By digest the client's Accept does not matter: ask for every type, so upstream sends the content as it is.
    const wanted = tag === undefined ? [...new Set([...EVERY_MANIFEST_TYPE, ...(accept ?? [])])] : upstreamAccept(accept);
    const upstream = this.ctx.upstream(ref);
    const res = await upstream.getManifest(ref.repo, reference, wanted);
    let digest: string;
    let signedSchema1: boolean;
    try {
      ({ digest, signedSchema1 } = verifyManifest(res, tag === undefined ? reference : undefined, upstream.name));
    } catch (e) {
      this.ctx.deps.observer.rejected(ref.upstream);
      throw e;
    }
    const parsed = parseManifest(res.bytes, res.mediaType);
    if (!parsed) throw new UpstreamError('protocol', upstream.name, 'upstream sent a manifest that is not JSON', { code: 'MANIFEST_INVALID' });
    // The upstream's Content-Type is what a client would have seen from upstream; trust it over inference.
    const mediaType = res.mediaType || parsed.mediaType;
    if (tag !== undefined && !accepts(accept, mediaType)) {
      throw new RegistryError('MANIFEST_UNKNOWN', `manifest is ${mediaType}, which the client does not accept`, { detail: { mediaType } });
    }
    const { deps } = this.ctx;
    if (signedSchema1) {
      // Served as upstream sent it, verified, but not kept: the store names content by the digest of
      // its bytes, which this one's is not. Its layers are linked as any manifest's are.
      await this.ctx.link(ref, parsed.vouched);
      return { bytes: res.bytes, mediaType, digest, cache: 'miss' };
    }
    await deps.blobs.put(digest, res.bytes);
    // Only what upstream vouches is in this repository becomes servable from it without asking (see
    // ParsedManifest.vouched); an index's children are recorded as each is fetched or confirmed.
    await this.ctx.recordManifests(ref, [{ digest, mediaType }]);
    await this.ctx.link(ref, parsed.vouched);
    if (tag !== undefined) await this.saveTag(ref, tag, variantFor({ digest, mediaType, size: res.bytes.length, fetchedAt: deps.now() }, accept));
    return { bytes: res.bytes, mediaType, digest, cache: 'miss' };
  }

  private async loadTag(ref: RepoRef, tag: string): Promise<TagRecord | undefined> {
    const stored = await this.ctx.deps.meta.getTag(ref, tag);
    return stored && upgradeRecord(stored);
  }

  /** Upserts one variant (one per media type and narrowing) and persists the record. */
  private async saveTag(ref: RepoRef, tag: string, variant: TagVariant): Promise<void> {
    const current = (await this.loadTag(ref, tag)) ?? { version: 2, variants: [] };
    const same = (v: TagVariant) => v.mediaType === variant.mediaType && acceptKey(v.narrowedFor) === acceptKey(variant.narrowedFor);
    const record: TagRecord = { version: 2, variants: [...current.variants.filter((v) => !same(v)), variant] };
    await this.ctx.deps.meta.putTag(ref, tag, record);
  }
}

/** `<algorithm>:…`: meant as a digest, so a malformed one is DIGEST_INVALID. */
const DIGEST_SHAPED = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/;

const isTag = (s: string): boolean => {
  try {
    validateTag(s);
    return true;
  } catch {
    return false;
  }
};

const flightKey = (ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined) =>
  `${repoKey(ref)}:${reference}|${accept ? [...accept].sort().join(',') : '*'}`;

/** A missing tag depends on the Accept (a list may be unknown to one client, narrowed for another); a digest does not. */
const negativeKey = (ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined) =>
  reference.includes(':') ? `manifest ${repoKey(ref)}@${reference}` : `manifest ${flightKey(ref, reference, accept)}`;

/**
 * Computes the manifest's digest and checks it against what was asked for (by digest) and what
 * upstream claimed (Docker-Content-Digest). A mismatch is never kept. A signed schema 1 manifest's
 * digest is of its payload (registry/schema1.ts).
 */
function verifyManifest(res: ManifestResult, requested: string | undefined, upstream: string): { digest: string; signedSchema1: boolean } {
  const algorithm = requested ? requested.slice(0, requested.indexOf(':')) : 'sha256';
  const payload = signedPayloadDigest(res.bytes, algorithm);
  const digest = payload ?? `${algorithm}:${createHash(algorithm).update(res.bytes).digest('hex')}`;
  if (requested !== undefined && digest !== requested) {
    throw new UpstreamError('digest_mismatch', upstream, `upstream manifest is ${digest}, not the requested ${requested}; rejected`);
  }
  if (res.digest && res.digest.startsWith(`${algorithm}:`) && res.digest !== digest) {
    throw new UpstreamError('digest_mismatch', upstream, `upstream manifest is ${digest}, not its Docker-Content-Digest ${res.digest}; rejected`);
  }
  return { digest, signedSchema1: payload !== undefined };
}
