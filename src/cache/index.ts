/**
 * The in-memory index: bounded LRU caches over what is on disk, so the hot paths (a cached tag, a
 * manifest by digest, a known blob) answer without touching the filesystem. Never the source of truth:
 * every entry can be rebuilt from disk, and losing one only costs a read.
 */
import { LRUCache } from 'lru-cache';
import type { TagRecord } from '../storage/meta-store.js';

/** A manifest's bytes and what it references (its media type is per repository record, not here). */
export interface CachedManifest {
  bytes: Buffer;
  references: string[];
}

export interface MemoryIndexOptions {
  /** Bytes of manifest bodies kept in memory. */
  manifestBytes: number;
  /** Entries for tag records, links and blob sizes. */
  maxEntries?: number;
}

export class MemoryIndex {
  readonly manifests: LRUCache<string, CachedManifest> | undefined;
  readonly tags: LRUCache<string, TagRecord>;
  readonly links: LRUCache<string, true>;
  /** linkKey -> the media type the digest is recorded with as a manifest of that repository. */
  readonly manifestTypes: LRUCache<string, string>;
  readonly blobSizes: LRUCache<string, number>;

  constructor(opts: MemoryIndexOptions) {
    const max = opts.maxEntries ?? 100_000;
    this.manifests =
      opts.manifestBytes > 0
        ? new LRUCache<string, CachedManifest>({ maxSize: opts.manifestBytes, sizeCalculation: (m) => Math.max(1, m.bytes.length + 256) })
        : undefined;
    this.tags = new LRUCache({ max: Math.min(max, 50_000) });
    this.links = new LRUCache({ max });
    this.manifestTypes = new LRUCache({ max });
    this.blobSizes = new LRUCache({ max });
  }

  static tagKey(upstream: string, repo: string, tag: string): string {
    return `${upstream}/${repo}:${tag}`;
  }

  static linkKey(upstream: string, repo: string, digest: string): string {
    return `${upstream}/${repo}@${digest}`;
  }
}
