/**
 * Upstream "does not exist" answers, remembered for a short window: a client (or fifty) asking again
 * and again for a missing tag or blob costs one upstream request per window, not one per request.
 * Consulted only after the cache had no answer, so a cached positive answer is never hidden by it.
 */
import type { LRUCache } from 'lru-cache';
import { boundedLru } from '../util/lru.js';

interface Entry {
  error: unknown;
  until: number;
}

export class NegativeCache {
  private readonly entries: LRUCache<string, Entry>;

  /** @param ttlMs how long an answer is remembered (0: never). */
  constructor(private readonly ttlMs: number, private readonly now: () => number, max = 10_000) {
    this.entries = boundedLru(max);
  }

  /** Throws the remembered error when one is still current for the key. */
  check(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    if (e.until > this.now()) throw e.error;
    this.entries.delete(key);
  }

  remember(key: string, error: unknown): void {
    if (this.ttlMs > 0) this.entries.set(key, { error, until: this.now() + this.ttlMs });
  }

  forget(key: string): void {
    this.entries.delete(key);
  }
}
