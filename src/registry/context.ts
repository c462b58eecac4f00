/**
 * What the registry services share: their dependencies, and the questions every request asks of the
 * cache: "is this digest known to be in this repository?" and "is it a manifest there, of what type?".
 */
import type { UsageRecorder } from '../lifecycle/usage.js';
import type { CacheObserver, Logger } from '../observability/types.js';
import type { BlobStore } from '../storage/store.js';
import type { MetaStore } from '../storage/meta-store.js';
import type { Upstream } from '../upstream/types.js';
import { RegistryError } from './errors.js';
import type { BlobCoordinator, InflightDownloads } from '../transfer/inflight.js';
import type { NegativeCache } from './negative-cache.js';
import type { RepoRef } from './reference.js';

export type { CacheKind, CacheObserver, CacheResult, Logger } from '../observability/types.js';

/** What the services are built from. The stores may be decorated with memory caches (cache/); services see stores only. */
export interface RegistryDeps {
  blobs: BlobStore;
  meta: MetaStore;
  inflight: InflightDownloads;
  /** Decides who fetches a blob when several replicas share the cache (fleet mode); absent: `inflight` alone. */
  coordinator?: BlobCoordinator;
  upstreams: ReadonlyMap<string, Upstream>;
  /** Seconds a tag (or referrers answer) is trusted without asking upstream, per upstream. */
  tagTtl: (upstream: string) => number;
  /** Records pulls (served or fetched) for the least-recently-used order; a Map write per call. */
  usage: UsageRecorder;
  /** Upstream "does not exist" answers, remembered briefly. */
  negative: NegativeCache;
  now: () => number;
  offline: boolean;
  observer: CacheObserver;
  logger: Logger;
  maxPageSize: number;
  /** limits.maxBlobBytes: a HEAD answers for a larger blob as its GET does (refused); absent: no cap. */
  maxBlobBytes?: number;
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
  linked(ref: RepoRef, digest: string): Promise<boolean> {
    return this.deps.meta.hasLink(ref, digest);
  }

  link(ref: RepoRef, digests: string[]): Promise<void> {
    return this.deps.meta.addLinks(ref, digests);
  }

  /** The media type the digest was stored with as a manifest of the repository, or undefined. */
  manifestType(ref: RepoRef, digest: string): Promise<string | undefined> {
    return this.deps.meta.getManifestType(ref, digest);
  }

  /** Records manifests of the repository (and their membership). */
  async recordManifests(ref: RepoRef, manifests: ManifestEntry[]): Promise<void> {
    await this.deps.meta.addManifests(ref, manifests);
    await this.link(ref, manifests.map((m) => m.digest));
  }

  /** The size of a complete local blob, or undefined. */
  async localBlobSize(digest: string): Promise<number | undefined> {
    return (await this.deps.blobs.stat(digest))?.size;
  }
}

export const repoKey = (ref: RepoRef) => `${ref.upstream}/${ref.repo}`;
