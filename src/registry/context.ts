/**
 * What the registry services share: their dependencies, and the questions every request asks of the
 * cache: "is this digest known to be in this repository?", "is it a manifest there, of what type?"
 * and "what are this manifest's bytes?".
 */
import { MemoryIndex, type CachedManifest } from '../cache/index.js';
import type { BlobStore } from '../storage/store.js';
import type { MetaStore } from '../storage/meta-store.js';
import type { Upstream } from '../upstream/types.js';
import { RegistryError } from './errors.js';
import type { InflightDownloads } from '../transfer/inflight.js';
import { parseManifest } from './media-types.js';
import type { NegativeCache } from './negative-cache.js';
import type { RepoRef } from './reference.js';

export type CacheResult = 'hit' | 'miss' | 'stale' | 'revalidated';
export type CacheKind = 'manifest' | 'blob' | 'tags' | 'referrers';
export const CACHE_KINDS: readonly CacheKind[] = ['manifest', 'blob', 'tags', 'referrers'];
export const CACHE_RESULTS: readonly CacheResult[] = ['hit', 'miss', 'stale', 'revalidated'];

/** Cache outcomes, for metrics. Implementations must not throw. */
export interface CacheObserver {
  result(kind: CacheKind, upstream: string, result: CacheResult): void;
  /** Upstream sent a manifest whose bytes do not match its digest (rejected, not kept). */
  rejected(upstream: string): void;
}

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RegistryDeps {
  blobs: BlobStore;
  meta: MetaStore;
  index: MemoryIndex;
  inflight: InflightDownloads;
  upstreams: ReadonlyMap<string, Upstream>;
  /** Seconds a tag (or referrers answer) is trusted without asking upstream, per upstream. */
  tagTtl: (upstream: string) => number;
  /** Upstream "does not exist" answers, remembered briefly. */
  negative: NegativeCache;
  now: () => number;
  offline: boolean;
  observer: CacheObserver;
  logger: Logger;
  maxPageSize: number;
  defaultUpstream: string;
}

export interface ManifestEntry {
  digest: string;
  mediaType: string;
}

export class RegistryContext {
  constructor(readonly deps: RegistryDeps) {}

  upstream(ref: RepoRef): Upstream {
    const u = this.deps.upstreams.get(ref.upstream);
    if (!u) throw new RegistryError('NAME_UNKNOWN', `registry ${ref.upstream} is not configured on this mirror`);
    return u;
  }

  /** Throws the offline error when upstream may not be contacted. */
  assertOnline(what: 'manifest' | 'blob' | 'tags', ref: RepoRef): void {
    if (!this.deps.offline) return;
    const code = what === 'blob' ? 'BLOB_UNKNOWN' : what === 'manifest' ? 'MANIFEST_UNKNOWN' : 'NAME_UNKNOWN';
    throw new RegistryError(code, `${what} not in the cache, and the mirror is offline`, { detail: { repository: ref.repo } });
  }

  /** Whether the repository is known (from a cached manifest or an upstream answer) to contain the digest. */
  async linked(ref: RepoRef, digest: string): Promise<boolean> {
    const { index, meta } = this.deps;
    const key = linkKey(ref, digest);
    if (index.links.has(key)) return true;
    if (!(await meta.hasLink(ref, digest))) return false;
    index.links.set(key, true);
    return true;
  }

  async link(ref: RepoRef, digests: string[]): Promise<void> {
    const { index, meta } = this.deps;
    const missing = [...new Set(digests)].filter((d) => !index.links.has(linkKey(ref, d)));
    if (missing.length === 0) return;
    await meta.addLinks(ref, missing);
    for (const d of missing) index.links.set(linkKey(ref, d), true);
  }

  /** The media type the digest was stored with as a manifest of the repository, or undefined. */
  async manifestType(ref: RepoRef, digest: string): Promise<string | undefined> {
    const { index, meta } = this.deps;
    const key = linkKey(ref, digest);
    const known = index.manifestTypes.get(key);
    if (known !== undefined) return known;
    const t = await meta.getManifestType(ref, digest);
    if (t !== undefined) index.manifestTypes.set(key, t);
    return t;
  }

  /** Records manifests of the repository (and their membership). */
  async recordManifests(ref: RepoRef, manifests: ManifestEntry[]): Promise<void> {
    const { index, meta } = this.deps;
    const changed = manifests.filter((m) => index.manifestTypes.get(linkKey(ref, m.digest)) !== m.mediaType);
    if (changed.length > 0) {
      await meta.addManifests(ref, changed);
      for (const m of changed) index.manifestTypes.set(linkKey(ref, m.digest), m.mediaType);
    }
    await this.link(ref, manifests.map((m) => m.digest));
  }

  /** A manifest's bytes (and references) from memory or disk, or undefined when not stored. */
  async localManifest(digest: string): Promise<CachedManifest | undefined> {
    const { index, blobs } = this.deps;
    const hit = index.manifests?.get(digest);
    if (hit) return hit;
    const bytes = await blobs.read(digest);
    if (!bytes) return undefined;
    const m: CachedManifest = { bytes, references: parseManifest(bytes)?.references ?? [] };
    index.manifests?.set(digest, m);
    return m;
  }

  /** The size of a complete local blob, or undefined. */
  async localBlobSize(digest: string): Promise<number | undefined> {
    const { index, blobs } = this.deps;
    const known = index.blobSizes.get(digest);
    if (known !== undefined) return known;
    const info = await blobs.stat(digest);
    if (info) index.blobSizes.set(digest, info.size);
    return info?.size;
  }
}

export const repoKey = (ref: RepoRef) => `${ref.upstream}/${ref.repo}`;
const linkKey = (ref: RepoRef, digest: string) => MemoryIndex.linkKey(ref.upstream, ref.repo, digest);
