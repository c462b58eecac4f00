/**
 * Per-repository metadata: tag records, the links that say which digests a repository is known to
 * contain, and the last upstream answer of list-like queries (tags/list, referrers).
 */
import type { RepoKey } from './paths.js';

export type { RepoKey } from './paths.js';

/** One cached answer for a tag under one media type. */
export interface TagVariant {
  digest: string;
  mediaType: string;
  size: number;
  /** When upstream last confirmed this digest for the tag (ms since epoch). */
  fetchedAt: number;
}

export interface TagRecord {
  variants: TagVariant[];
}

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
  getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined>;
  putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void>;
  /** Every repository with any metadata, in no particular order. */
  listRepos(): Promise<RepoKey[]>;
}
