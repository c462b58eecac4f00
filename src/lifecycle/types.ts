/**
 * The cache lifecycle as the admin API and the CLI see it: what the cache holds, and what an
 * operator can do to it. Sizes are bytes; times are ms since the epoch (undefined: never used since
 * the use figures began).
 */

export interface CacheSummary {
  /** Bytes of verified blobs (manifests included) on disk. */
  bytes: number;
  blobs: number;
  /** Image units (a tag's or digest's root manifest with what it references), across repositories. */
  images: number;
  repositories: number;
  /** The byte cap (cache.maxBytes), or undefined when none. */
  limitBytes: number | undefined;
  /** Free bytes on the cache's filesystem, and the floor kept (cache.minFreeBytes / minFreePercent). */
  freeBytes: number | undefined;
  minFreeBytes: number | undefined;
  /** Hits over hits + misses, over the process's life (undefined before any). */
  hitRatio: number | undefined;
  /** Bytes served from the cache (that did not cross the upstream link) over the process's life. */
  bytesSaved: number;
  /** Last use of the least recently used image or blob. */
  oldestUse: number | undefined;
  pins: string[];
}

export interface RepositoryInfo {
  /** `<upstream>/<repo>`, e.g. `docker.io/library/alpine`. */
  name: string;
  upstream: string;
  repo: string;
  /** Bytes of the blobs its images reference (a blob shared with another repository counts in both). */
  bytes: number;
  images: number;
  tags: string[];
  lastUsed: number | undefined;
  pinned: boolean;
}

export interface ImageInfo {
  /** `<upstream>/<repo>@<digest>` of the root manifest. */
  ref: string;
  upstream: string;
  repo: string;
  digest: string;
  mediaType: string;
  tags: string[];
  /** `os/arch[/variant]` of an index's children; empty for a single-platform image. */
  platforms: string[];
  bytes: number;
  blobs: number;
  lastUsed: number | undefined;
  pinned: boolean;
}

/** What to remove: everything, a repository, a tag of it, or an image of it by digest. */
export type PurgeTarget = { all: true } | { upstream: string; repo: string; tag?: string; digest?: string };

export interface PurgeResult {
  tags: number;
  images: number;
  blobs: number;
  bytes: number;
}

export interface EvictionResult {
  reason: EvictionReason;
  images: number;
  blobs: number;
  bytes: number;
  /** Bytes on disk after the pass. */
  after: number;
}

export type EvictionReason = 'size' | 'free_disk' | 'purge';

export interface GcResult {
  /** Blobs no repository record refers to, removed. */
  blobs: number;
  bytes: number;
  /** Links, manifest records and use records of content no longer on disk, removed. */
  records: number;
  /** Temp files left by a crash, removed (only at start or with the mirror stopped). */
  tempFiles: number;
}

/** The operations behind the admin API and `regmirror cache`. */
export interface CacheAdmin {
  summary(): Promise<CacheSummary>;
  repositories(): Promise<RepositoryInfo[]>;
  images(filter?: { upstream: string; repo: string }): Promise<ImageInfo[]>;
  purge(target: PurgeTarget): Promise<PurgeResult>;
  /** The tag is revalidated with upstream on its next request, whatever its TTL. */
  revalidate(upstream: string, repo: string, tag: string): Promise<boolean>;
  pins(): Promise<string[]>;
  pin(pattern: string): Promise<string[]>;
  unpin(pattern: string): Promise<string[]>;
  /** Runs one eviction pass now (down to the low mark, if above the high mark). */
  evict(): Promise<EvictionResult | undefined>;
  gc(): Promise<GcResult>;
}
