/**
 * The per-client limit on upstream fetches, as a decorator of an Upstream: the request's caller
 * travels in an AsyncLocalStorage (set by the HTTP edge), and each upstream call made on its behalf
 * takes from its bucket. Over the limit, the call fails as a 429 from upstream would: the registry then
 * serves a cached copy if it has one (stale), and the client gets 429 TOOMANYREQUESTS with
 * Retry-After otherwise. Calls made outside any request (background work), and a download's resumes,
 * are not limited. Cache hits make no upstream call and so are never limited.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { UpstreamError } from '../upstream/errors.js';
import type { Upstream } from '../upstream/types.js';
import type { RateLimiter } from './limits.js';

export class CallerContext {
  private readonly als = new AsyncLocalStorage<string>();

  /** Runs `fn` on behalf of the client named `key` (a user or an address). */
  run<T>(key: string, fn: () => T): T {
    return this.als.run(key, fn);
  }

  current(): string | undefined {
    return this.als.getStore();
  }
}

export function limitUpstream(inner: Upstream, ctx: CallerContext, limiter: RateLimiter): Upstream {
  const take = () => {
    const key = ctx.current();
    if (key === undefined) return;
    const wait = limiter.take(key);
    if (wait > 0) throw new UpstreamError('status', inner.name, 'too many upstream fetches from this client: try again later', { status: 429, code: 'TOOMANYREQUESTS', retryAfter: wait });
  };
  return {
    name: inner.name,
    get revalidateBudgetMs() {
      return inner.revalidateBudgetMs;
    },
    getManifest: async (repo, reference, accept) => (take(), inner.getManifest(repo, reference, accept)),
    headManifest: async (repo, reference, accept) => (take(), inner.headManifest(repo, reference, accept)),
    headBlob: async (repo, digest) => (take(), inner.headBlob(repo, digest)),
    // A download is charged once, when it starts: its resumes (offset > 0) run in the context of the
    // request that started it, and refusing one would cut every client sharing the download.
    getBlob: async (repo, digest, offset, sink) => (offset === 0 && take(), inner.getBlob(repo, digest, offset, sink)),
    getTags: async (repo, page) => (take(), inner.getTags(repo, page)),
    getReferrers: async (repo, digest) => (take(), inner.getReferrers(repo, digest)),
  };
}
