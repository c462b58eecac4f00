/**
 * A MetaStore with bounded in-memory caches in front (a decorator with the same interface, like
 * distribution's cached blob descriptor store): a cached tag, a known link or a manifest record is
 * answered without touching the store. Never the source of truth: every entry can be read again,
 * and losing one only costs a read. Writes go through to the store first, then into memory.
 */
import type { LRUCache } from 'lru-cache';
import type { MetaStore, RepoKey, StateName, StoredDoc, TagRecord } from '../storage/meta-store.js';
import { boundedLru } from '../util/lru.js';

export interface CachingMetaStoreOptions {
  /** Entries for links and manifest records (tags get at most half as many). Default 100 000. */
  maxEntries?: number;
}

const key = (ref: RepoKey, s: string) => `${ref.upstream}/${ref.repo}@${s}`;

export class CachingMetaStore implements MetaStore {
  private readonly tags: LRUCache<string, TagRecord>;
  /** Only positive answers: a link absent now may be added by another writer later. */
  private readonly links: LRUCache<string, true>;
  private readonly manifests: LRUCache<string, string>;

  constructor(private readonly store: MetaStore, opts: CachingMetaStoreOptions = {}) {
    const max = opts.maxEntries ?? 100_000;
    this.tags = boundedLru(Math.min(max, 50_000));
    this.links = boundedLru(max);
    this.manifests = boundedLru(max);
  }

  async getTag(ref: RepoKey, tag: string): Promise<TagRecord | undefined> {
    const k = key(ref, `tag:${tag}`);
    const hit = this.tags.get(k);
    if (hit) return hit;
    const rec = await this.store.getTag(ref, tag);
    if (rec) this.tags.set(k, rec);
    return rec;
  }

  async putTag(ref: RepoKey, tag: string, record: TagRecord): Promise<void> {
    await this.store.putTag(ref, tag, record);
    this.tags.set(key(ref, `tag:${tag}`), record);
  }

  async hasLink(ref: RepoKey, digest: string): Promise<boolean> {
    const k = key(ref, digest);
    if (this.links.has(k)) return true;
    if (!(await this.store.hasLink(ref, digest))) return false;
    this.links.set(k, true);
    return true;
  }

  /** Writes only the links not already known. */
  async addLinks(ref: RepoKey, digests: string[]): Promise<void> {
    const missing = [...new Set(digests)].filter((d) => !this.links.has(key(ref, d)));
    if (missing.length === 0) return;
    await this.store.addLinks(ref, missing);
    for (const d of missing) this.links.set(key(ref, d), true);
  }

  async getManifestType(ref: RepoKey, digest: string): Promise<string | undefined> {
    const k = key(ref, digest);
    const hit = this.manifests.get(k);
    if (hit !== undefined) return hit;
    const t = await this.store.getManifestType(ref, digest);
    if (t !== undefined) this.manifests.set(k, t);
    return t;
  }

  /** Writes only the records that change. */
  async addManifests(ref: RepoKey, manifests: Array<{ digest: string; mediaType: string }>): Promise<void> {
    const changed = manifests.filter((m) => this.manifests.get(key(ref, m.digest)) !== m.mediaType);
    if (changed.length === 0) return;
    await this.store.addManifests(ref, changed);
    for (const m of changed) this.manifests.set(key(ref, m.digest), m.mediaType);
  }

  getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined> {
    return this.store.getDoc(ref, name);
  }

  putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void> {
    return this.store.putDoc(ref, name, doc);
  }

  listRepos(): Promise<RepoKey[]> {
    return this.store.listRepos();
  }

  listTags(ref: RepoKey): Promise<string[]> {
    return this.store.listTags(ref);
  }

  async deleteTag(ref: RepoKey, tag: string): Promise<void> {
    this.tags.delete(key(ref, `tag:${tag}`));
    await this.store.deleteTag(ref, tag);
  }

  listManifests(ref: RepoKey): Promise<Array<{ digest: string; mediaType: string }>> {
    return this.store.listManifests(ref);
  }

  listLinks(ref: RepoKey): Promise<string[]> {
    return this.store.listLinks(ref);
  }

  async forget(ref: RepoKey, digests: string[]): Promise<void> {
    for (const d of digests) {
      this.links.delete(key(ref, d));
      this.manifests.delete(key(ref, d));
    }
    await this.store.forget(ref, digests);
  }

  async deleteRepo(ref: RepoKey): Promise<void> {
    // Rare (an operator's purge): drop every cached entry of the repository.
    const prefix = `${ref.upstream}/${ref.repo}@`;
    const drop = (cache: { keys(): IterableIterator<string>; delete(k: string): boolean }) => {
      for (const k of [...cache.keys()]) if (k.startsWith(prefix)) cache.delete(k);
    };
    drop(this.tags);
    drop(this.links);
    drop(this.manifests);
    await this.store.deleteRepo(ref);
  }

  getState(name: StateName): Promise<unknown> {
    return this.store.getState(name);
  }

  putState(name: StateName, value: unknown): Promise<void> {
    return this.store.putState(name, value);
  }
}
