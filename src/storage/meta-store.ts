/**
 * Per-repository metadata: tag records, the links that say which digests a repository is known to
 * contain, and the last upstream answer of list-like queries (tags/list, referrers).
 */
import type { RepoKey } from './paths.js';

export type { RepoKey } from './paths.js';

/** One cached answer for a tag: what upstream gave a request with a particular Accept. */
export interface TagVariant {
  digest: string;
  mediaType: string;
  size: number;
  /** When upstream last confirmed this digest for the tag (ms since epoch). */
  fetchedAt: number;
  /**
   * Present when the answer may be one platform's manifest picked for that request (it was not an
   * index, and the request did not accept every index type): the index types the request accepted.
   * Absent when the answer is the tag's own content.
   */
  narrowedFor?: string[];
}

export interface TagRecord {
  /** 2 since variants say whether they were narrowed; older records are read as narrowed. */
  version?: number;
  variants: TagVariant[];
}

/** When things were last used (ms since epoch), by key; see lifecycle/usage.ts for the keys. */
export interface UsageSnapshot {
  savedAt: number;
  entries: Record<string, number>;
}

export type StateName = 'usage' | 'pins';

export interface StoredDoc {
  fetchedAt: number;
  /** Whatever JSON the caller stored. */
  body: unknown;
}

export interface MetaStore {
  getTag(ref: RepoKey, tag: string): Promise<TagRecord | undefined>;
  /** Replaces the record atomically (readers see the old or the new one, never a torn write). */
  putTag(ref: RepoKey, tag: string, record: TagRecord): Promise<void>;
  hasLink(ref: RepoKey, digest: string): Promise<boolean>;
  /** Records that the repository contains these digests. Idempotent. */
  addLinks(ref: RepoKey, digests: string[]): Promise<void>;
  /**
   * The media type the digest was stored with as a manifest of this repository, or undefined when
   * it is not known as one (a config or layer blob never is).
   */
  getManifestType(ref: RepoKey, digest: string): Promise<string | undefined>;
  /** Records digests as manifests of the repository, with their media types. Idempotent (last write wins). */
  addManifests(ref: RepoKey, manifests: Array<{ digest: string; mediaType: string }>): Promise<void>;
  getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined>;
  putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void>;
  /** Every repository holding a cached manifest or tag, in no particular order. */
  listRepos(): Promise<RepoKey[]>;

  // ---- for the cache lifecycle (eviction, purge, GC): rare, may be slow ----

  /** The tags with a record in the repository. */
  listTags(ref: RepoKey): Promise<string[]>;
  /** Removes a tag record; absent is fine. */
  deleteTag(ref: RepoKey, tag: string): Promise<void>;
  /** The digests recorded as manifests of the repository, with their media types. */
  listManifests(ref: RepoKey): Promise<Array<{ digest: string; mediaType: string }>>;
  /** The digests the repository is linked to. */
  listLinks(ref: RepoKey): Promise<string[]>;
  /** Removes manifest records and links of these digests in the repository; absent is fine. */
  forget(ref: RepoKey, digests: string[]): Promise<void>;
  /** Removes everything recorded for the repository. */
  deleteRepo(ref: RepoKey): Promise<void>;
  /** A saved state document of the cache lifecycle ('usage': UsageSnapshot, 'pins': string[]), or undefined. */
  getState(name: StateName): Promise<unknown>;
  /** Replaces a state document (atomically). */
  putState(name: StateName, value: unknown): Promise<void>;
}

/**
 * A remote metadata store (Redis) cannot be reached now: a lost connection, a refused one, a reply
 * that took too long. Not a statement about the record asked for: callers may answer from elsewhere
 * (cache/outage-tolerant-meta-store.ts) and ask again later. An error the backend did answer with
 * (a script bug, a wrong type) is never this.
 */
export class MetaUnavailableError extends Error {
  constructor(cause: unknown) {
    super(`metadata store is unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'MetaUnavailableError';
  }
}
