/**
 * Digests evicted recently, to tell thrashing (the same blob evicted and fetched again within the
 * hour: the cap is too small for the working set) from ordinary refills. Bounded; memory only.
 */
import type { LRUCache } from 'lru-cache';
import { boundedLru } from '../util/lru.js';

export class RecentEvictions {
  private readonly at: LRUCache<string, number>;

  constructor(private readonly now: () => number, private readonly windowMs = 60 * 60 * 1000, max = 100_000) {
    this.at = boundedLru(max);
  }

  evicted(digest: string): void {
    this.at.set(digest, this.now());
  }

  /** Whether a download of this digest refetches a blob evicted within the window (and forgets it). */
  refetched(digest: string): boolean {
    const t = this.at.get(digest);
    if (t === undefined) return false;
    this.at.delete(digest);
    return this.now() - t < this.windowMs;
  }
}
