/**
 * Manifests: by digest from the cache forever (once the repository is known to hold them); by tag
 * from the cache within the TTL, then revalidated with a HEAD (free against Docker Hub's pull limit)
 * and fetched with a GET only when the digest changed; stale when upstream fails.
 */
import { createHash } from 'node:crypto';
import type { TagRecord, TagVariant } from '../storage/meta-store.js';
import type { ManifestResult } from '../upstream/types.js';
import { RegistryContext, repoKey, type CacheResult } from './context.js';
import { RegistryError, isUpstreamFailure } from './errors.js';
import { accepts, ALL_MANIFEST_TYPES, parseManifest, upstreamAccept } from './manifest.js';
import { isDigest, parseDigest, validateTag, type RepoRef } from './reference.js';
import { MemoryIndex, type CachedManifest } from '../cache/index.js';
import { SingleFlight } from './single-flight.js';

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
  private readonly confirmations = new SingleFlight<void>();

  constructor(private readonly ctx: RegistryContext) {}

  async get(ref: RepoRef, reference: string, accept: Set<string> | undefined): Promise<ManifestResponse> {
    const res = isDigest(reference) ? await this.byDigest(ref, reference, accept) : await this.byTag(ref, reference, accept);
    this.ctx.deps.observer.result('manifest', ref.upstream, res.cache);
    return res;
  }

  private async byDigest(ref: RepoRef, digest: string, accept: Set<string> | undefined): Promise<ManifestResponse> {
    parseDigest(digest);
    const cached = await this.ctx.localManifest(digest);
    if (cached) {
      if (!(await this.ctx.linked(ref, digest))) {
        // Held for another repository: serve it here only once upstream confirms this one has it too.
        this.ctx.assertOnline('manifest', ref);
        await this.confirmations.run(`${repoKey(ref)}@${digest}`, async () => {
          await this.ctx.upstream(ref).headManifest(ref.repo, digest, [...ALL_MANIFEST_TYPES, cached.mediaType]);
          await this.ctx.link(ref, [digest, ...cached.references]);
        });
      }
      if (!accepts(accept, cached.mediaType)) throw notAcceptable(cached.mediaType);
      return { bytes: cached.bytes, mediaType: cached.mediaType, digest, cache: 'hit' };
    }
    this.ctx.assertOnline('manifest', ref);
    return this.fetch(ref, digest, accept, undefined);
  }

  private async byTag(ref: RepoRef, tag: string, accept: Set<string> | undefined): Promise<ManifestResponse> {
    validateTag(tag);
    const { deps } = this.ctx;
    const record = await this.loadTag(ref, tag);
    const variant = pickVariant(record, accept);
    const cached = variant ? await this.ctx.localManifest(variant.digest) : undefined;
    const fromCache = (cache: CacheResult): ManifestResponse => ({ bytes: cached!.bytes, mediaType: cached!.mediaType, digest: variant!.digest, cache });
    if (variant && cached) {
      const fresh = deps.now() - variant.fetchedAt < deps.tagTtl(ref.upstream) * 1000;
      if (fresh) return fromCache('hit');
      if (deps.offline) return fromCache('stale');
    }
    this.ctx.assertOnline('manifest', ref);
    try {
      if (variant && cached) {
        return await this.flights.run(flightKey(ref, `${tag}?revalidate`, accept), async () => {
          const head = await this.ctx.upstream(ref).headManifest(ref.repo, tag, upstreamAccept(accept));
          if (head.digest !== variant.digest) return this.fetchOnce(ref, tag, accept, tag);
          await this.saveTag(ref, tag, { ...variant, fetchedAt: deps.now() });
          return fromCache('revalidated');
        });
      }
      return await this.fetch(ref, tag, accept, tag);
    } catch (e) {
      if (variant && cached && isUpstreamFailure(e)) {
        deps.logger.warn({ repo: ref.repo, upstream: ref.upstream, tag, err: (e as Error).message }, 'upstream failed; serving the cached manifest (stale)');
        return fromCache('stale');
      }
      throw e;
    }
  }

  /** GETs a manifest from upstream (coalesced), verifies and stores it, and records the tag. */
  private fetch(ref: RepoRef, reference: string, accept: Set<string> | undefined, tag: string | undefined): Promise<ManifestResponse> {
    return this.flights.run(flightKey(ref, reference, accept), () => this.fetchOnce(ref, reference, accept, tag));
  }

  private async fetchOnce(ref: RepoRef, reference: string, accept: Set<string> | undefined, tag: string | undefined): Promise<ManifestResponse> {
    const res = await this.ctx.upstream(ref).getManifest(ref.repo, reference, upstreamAccept(accept));
    let digest: string;
    try {
      digest = verifyManifest(res, tag === undefined ? reference : undefined);
    } catch (e) {
      this.ctx.deps.observer.rejected(ref.upstream);
      throw e;
    }
    const parsed = parseManifest(res.bytes, res.mediaType);
    if (!parsed) throw new RegistryError('MANIFEST_INVALID', 'upstream sent a manifest that is not JSON', { status: 502, detail: { digest } });
    // The upstream's Content-Type is what a client would have seen from upstream; trust it over inference.
    const mediaType = res.mediaType || parsed.mediaType;
    if (!accepts(accept, mediaType)) throw notAcceptable(mediaType);
    const { deps } = this.ctx;
    await deps.blobs.put(digest, res.bytes);
    const entry: CachedManifest = { bytes: res.bytes, mediaType, references: parsed.references };
    deps.index.manifests?.set(digest, entry);
    deps.index.blobSizes.set(digest, res.bytes.length);
    await this.ctx.link(ref, [digest, ...parsed.references]);
    if (tag !== undefined) {
      const record = (await this.loadTag(ref, tag)) ?? { variants: [] };
      await this.saveTag(ref, tag, { digest, mediaType, size: res.bytes.length, fetchedAt: deps.now() }, record);
    }
    return { bytes: res.bytes, mediaType, digest, cache: 'miss' };
  }

  private async loadTag(ref: RepoRef, tag: string): Promise<TagRecord | undefined> {
    const { index, meta } = this.ctx.deps;
    const key = MemoryIndex.tagKey(ref.upstream, ref.repo, tag);
    const hit = index.tags.get(key);
    if (hit) return hit;
    const rec = await meta.getTag(ref, tag);
    if (rec) index.tags.set(key, rec);
    return rec;
  }

  /** Upserts one variant (one per media type) and persists the record. */
  private async saveTag(ref: RepoRef, tag: string, variant: TagVariant, base?: TagRecord): Promise<void> {
    const { index, meta } = this.ctx.deps;
    const current = base ?? (await this.loadTag(ref, tag)) ?? { variants: [] };
    const record: TagRecord = { variants: [...current.variants.filter((v) => v.mediaType !== variant.mediaType), variant] };
    index.tags.set(MemoryIndex.tagKey(ref.upstream, ref.repo, tag), record);
    await meta.putTag(ref, tag, record);
  }
}

const flightKey = (ref: RepoRef, reference: string, accept: Set<string> | undefined) =>
  `${repoKey(ref)}:${reference}|${accept ? [...accept].sort().join(',') : '*'}`;

/** The most recently confirmed variant the client accepts. */
function pickVariant(record: TagRecord | undefined, accept: Set<string> | undefined): TagVariant | undefined {
  let best: TagVariant | undefined;
  for (const v of record?.variants ?? []) if (accepts(accept, v.mediaType) && (!best || v.fetchedAt > best.fetchedAt)) best = v;
  return best;
}

/**
 * Computes the manifest's digest and checks it against what was asked for (by digest) and what
 * upstream claimed (Docker-Content-Digest). A mismatch is never kept.
 */
function verifyManifest(res: ManifestResult, requested: string | undefined): string {
  const algorithm = requested ? requested.slice(0, requested.indexOf(':')) : 'sha256';
  const digest = `${algorithm}:${createHash(algorithm).update(res.bytes).digest('hex')}`;
  if (requested !== undefined && digest !== requested) {
    throw new RegistryError('MANIFEST_INVALID', 'upstream manifest does not match the requested digest; rejected', {
      status: 502,
      detail: { requested, actual: digest },
    });
  }
  if (res.digest && res.digest.startsWith(`${algorithm}:`) && res.digest !== digest) {
    throw new RegistryError('MANIFEST_INVALID', 'upstream manifest does not match its Docker-Content-Digest; rejected', {
      status: 502,
      detail: { claimed: res.digest, actual: digest },
    });
  }
  return digest;
}

function notAcceptable(mediaType: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', `manifest is ${mediaType}, which the client does not accept`, { detail: { mediaType } });
}
