/**
 * A `CacheAdmin` over a running mirror's admin API (its own listener, `admin.listen`). The fetch
 * function is injected; nothing here opens sockets itself. Failures are `AdminApiError`s: the API's
 * error envelope (`{"errors":[{"code","message"}]}`) or why the API could not be reached.
 */
import type { CacheAdmin, CacheSummary, EvictionResult, GcResult, ImageInfo, PurgeResult, PurgeTarget, RepositoryInfo } from '../lifecycle/types.js';

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

export class AdminApiError extends Error {
  constructor(
    message: string,
    /** The HTTP status, or undefined when the API was not reached. */
    readonly status?: number,
    /** The first error code of the envelope, when there was one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'AdminApiError';
  }
}

export interface HttpCacheAdminOptions {
  /** The admin API's base URL, e.g. `http://127.0.0.1:5001`. */
  url: string;
  fetch: FetchFn;
  /** Per request; a gc or eviction pass on a large cache takes a while. Default 10 min. */
  timeoutMs?: number;
}

export class HttpCacheAdmin implements CacheAdmin {
  private readonly base: string;
  private readonly fetchFn: FetchFn;
  private readonly timeoutMs: number;

  constructor(opts: HttpCacheAdminOptions) {
    this.base = opts.url.replace(/\/+$/, '');
    this.fetchFn = opts.fetch;
    this.timeoutMs = opts.timeoutMs ?? 600_000;
  }

  get url(): string {
    return this.base;
  }

  summary(): Promise<CacheSummary> {
    return this.call<CacheSummary>('GET', '/admin/cache');
  }

  repositories(): Promise<RepositoryInfo[]> {
    return this.call<RepositoryInfo[]>('GET', '/admin/repositories');
  }

  images(filter?: { upstream: string; repo: string }): Promise<ImageInfo[]> {
    const q = filter ? `?repository=${encodeURIComponent(`${filter.upstream}/${filter.repo}`)}` : '';
    return this.call<ImageInfo[]>('GET', `/admin/images${q}`);
  }

  purge(target: PurgeTarget): Promise<PurgeResult> {
    const body =
      'all' in target
        ? { all: true }
        : {
            repository: `${target.upstream}/${target.repo}`,
            ...(target.tag !== undefined ? { tag: target.tag } : {}),
            ...(target.digest !== undefined ? { digest: target.digest } : {}),
          };
    return this.call<PurgeResult>('POST', '/admin/purge', body);
  }

  async revalidate(upstream: string, repo: string, tag: string): Promise<boolean> {
    const r = await this.call<{ revalidated?: unknown }>('POST', '/admin/revalidate', { repository: `${upstream}/${repo}`, tag });
    return r.revalidated === true;
  }

  async pins(): Promise<string[]> {
    return (await this.call<{ pins: string[] }>('GET', '/admin/pins')).pins;
  }

  async pin(pattern: string): Promise<string[]> {
    return (await this.call<{ pins: string[] }>('POST', '/admin/pins', { pattern })).pins;
  }

  async unpin(pattern: string): Promise<string[]> {
    return (await this.call<{ pins: string[] }>('DELETE', '/admin/pins', { pattern })).pins;
  }

  async evict(): Promise<EvictionResult | undefined> {
    const r = await this.call<EvictionResult | { evicted: null }>('POST', '/admin/evict');
    return 'evicted' in r && r.evicted === null ? undefined : (r as EvictionResult);
  }

  gc(): Promise<GcResult> {
    return this.call<GcResult>('POST', '/admin/gc');
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.base}${path}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method,
        headers: { accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new AdminApiError(`cannot reach the admin API at ${this.base}: ${describeFetchError(e)}`);
    }
    const text = await res.text();
    let doc: unknown;
    try {
      doc = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new AdminApiError(`${method} ${path}: the admin API answered ${res.status} with a body that is not JSON`, res.status);
    }
    if (!res.ok) {
      const first = envelopeError(doc);
      throw new AdminApiError(first?.message ?? `${method} ${path}: the admin API answered ${res.status}`, res.status, first?.code);
    }
    return doc as T;
  }
}

function envelopeError(doc: unknown): { code?: string; message: string } | undefined {
  if (typeof doc !== 'object' || doc === null) return undefined;
  const errors = (doc as { errors?: unknown }).errors;
  if (!Array.isArray(errors) || errors.length === 0) return undefined;
  const e = errors[0] as { code?: unknown; message?: unknown };
  if (typeof e.message !== 'string') return undefined;
  return { ...(typeof e.code === 'string' ? { code: e.code } : {}), message: e.message };
}

/** undici's "fetch failed" hides the reason in `cause` (ECONNREFUSED, a timeout): show that. */
export function describeFetchError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timed out';
  const cause = (e as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code} (${cause.message})` : cause.message;
  }
  return e.message;
}
