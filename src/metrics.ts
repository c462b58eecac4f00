/**
 * Every metric the mirror exports, in one place, on one injected prom-client Registry.
 * Names follow Prometheus conventions (`mirror_` prefix, units in the name, `_total` counters).
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import { CACHE_KINDS, CACHE_RESULTS, type CacheKind, type CacheObserver, type CacheResult } from './observability/types.js';
import type { InflightObserver } from './transfer/inflight.js';
import { ERROR_CLASSES, type ErrorClass, type RequestKind, type UpstreamObserver } from './upstream/types.js';

export interface MetricsOptions {
  /** Cache size figures (read at scrape time). */
  cacheStats?: { bytes: number; blobs: number };
  /** Current number of downloads under way (read at scrape time). */
  inflightDownloads?: () => number;
  /** The cache's byte cap (read at scrape time). */
  cacheLimit?: () => number | undefined;
  /** The oldest last use of the cache's content (read at scrape time). */
  oldestUse?: () => number | undefined;
  /** Node process metrics (off in tests that build many registries). */
  processMetrics?: boolean;
}

export class Metrics {
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: Histogram<'route' | 'method'>;
  readonly cacheResults: Counter<'kind' | 'upstream' | 'result'>;
  readonly servedBytes: Counter<'source'>;
  readonly upstreamRequests: Counter<'upstream' | 'kind' | 'status'>;
  readonly upstreamDuration: Histogram<'upstream' | 'kind'>;
  readonly upstreamErrors: Counter<'upstream' | 'class'>;
  readonly upstreamBytes: Counter<'upstream'>;
  readonly tokenFetches: Counter<'upstream' | 'result'>;
  readonly rateLimitRemaining: Gauge<'upstream'>;
  readonly rateLimitLimit: Gauge<'upstream'>;
  readonly inflight: Gauge;
  readonly downloads: Counter<'result'>;
  readonly coalesced: Counter;
  readonly resumes: Counter;
  readonly storeFull: Counter;
  readonly cacheBytes: Gauge;
  readonly cacheBlobs: Gauge;
  readonly evictions: Counter<'reason'>;
  readonly evictedBytes: Counter<'reason'>;
  readonly cacheLimit: Gauge;
  readonly oldestEntryAge: Gauge;
  readonly refetchedAfterEviction: Counter;
  readonly upstreamOnline: Gauge<'upstream'>;
  readonly upstreamTransitions: Counter<'upstream' | 'to'>;
  readonly upstreamProbes: Counter<'upstream' | 'result'>;

  constructor(readonly registry: Registry, opts: MetricsOptions = {}) {
    const registers = [registry];
    if (opts.processMetrics) collectDefaultMetrics({ register: registry });
    this.httpRequests = new Counter({ name: 'mirror_http_requests_total', help: 'HTTP requests answered, by route and status', labelNames: ['route', 'method', 'status'], registers });
    this.httpDuration = new Histogram({
      name: 'mirror_http_request_duration_seconds',
      help: 'Time from request to response headers (bodies stream after), by route',
      labelNames: ['route', 'method'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.cacheResults = new Counter({ name: 'mirror_cache_requests_total', help: 'Cache outcomes (hit, miss, stale, revalidated) by kind and upstream', labelNames: ['kind', 'upstream', 'result'], registers });
    this.servedBytes = new Counter({ name: 'mirror_served_bytes_total', help: 'Blob and manifest body bytes sent to clients, by source (cache or upstream)', labelNames: ['source'], registers });
    this.upstreamRequests = new Counter({ name: 'mirror_upstream_requests_total', help: 'Requests sent to upstream registries, by status (0 = no response)', labelNames: ['upstream', 'kind', 'status'], registers });
    this.upstreamDuration = new Histogram({
      name: 'mirror_upstream_request_duration_seconds',
      help: 'Upstream time to response headers, by upstream and kind',
      labelNames: ['upstream', 'kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.upstreamErrors = new Counter({ name: 'mirror_upstream_errors_total', help: 'Upstream failures by class (timeout, network, 4xx, 5xx, 429, digest_mismatch, redirect)', labelNames: ['upstream', 'class'], registers });
    this.upstreamBytes = new Counter({ name: 'mirror_upstream_bytes_total', help: 'Body bytes received from upstream registries', labelNames: ['upstream'], registers });
    this.tokenFetches = new Counter({ name: 'mirror_upstream_token_fetches_total', help: 'Token requests sent to upstream auth realms', labelNames: ['upstream', 'result'], registers });
    this.rateLimitRemaining = new Gauge({ name: 'mirror_upstream_ratelimit_remaining', help: 'Pulls left in the window, from the upstream ratelimit-remaining header', labelNames: ['upstream'], registers });
    this.rateLimitLimit = new Gauge({ name: 'mirror_upstream_ratelimit_limit', help: 'Pull limit of the window, from the upstream ratelimit-limit header', labelNames: ['upstream'], registers });
    const inflightFn = opts.inflightDownloads;
    this.inflight = new Gauge({
      name: 'mirror_inflight_downloads',
      help: 'Blob downloads from upstream under way',
      registers,
      ...(inflightFn ? { collect(this: Gauge) { this.set(inflightFn()); } } : {}),
    });
    this.downloads = new Counter({ name: 'mirror_blob_downloads_total', help: 'Blob downloads from upstream by outcome (ok, failed, digest_mismatch)', labelNames: ['result'], registers });
    this.coalesced = new Counter({ name: 'mirror_coalesced_requests_total', help: 'Blob requests that joined a download already under way instead of starting one', registers });
    this.resumes = new Counter({ name: 'mirror_download_resumes_total', help: 'Cut upstream transfers resumed with a Range request', registers });
    const stats = opts.cacheStats;
    this.cacheBytes = new Gauge({
      name: 'mirror_cache_size_bytes',
      help: 'Bytes of verified blobs and manifests on disk',
      registers,
      ...(stats ? { collect(this: Gauge) { this.set(stats.bytes); } } : {}),
    });
    this.cacheBlobs = new Gauge({
      name: 'mirror_cache_blobs',
      help: 'Verified blobs and manifests on disk',
      registers,
      ...(stats ? { collect(this: Gauge) { this.set(stats.blobs); } } : {}),
    });
    this.upstreamOnline = new Gauge({ name: 'mirror_upstream_online', help: 'Upstream availability: 1 online, 0 assumed offline (served from the cache, probed in the background)', labelNames: ['upstream'], registers });
    this.upstreamTransitions = new Counter({ name: 'mirror_upstream_state_transitions_total', help: 'Upstream availability transitions, by the state entered (online, offline)', labelNames: ['upstream', 'to'], registers });
    this.upstreamProbes = new Counter({ name: 'mirror_upstream_probes_total', help: 'Background probes of upstreams assumed offline, by result (ok, failed)', labelNames: ['upstream', 'result'], registers });
    this.evictions = new Counter({ name: 'mirror_cache_evictions_total', help: 'Blobs removed from the cache, by reason (size, free_disk, purge)', labelNames: ['reason'], registers });
    this.evictedBytes = new Counter({ name: 'mirror_cache_evicted_bytes_total', help: 'Bytes of blobs removed from the cache, by reason (size, free_disk, purge)', labelNames: ['reason'], registers });
    const limit = opts.cacheLimit;
    this.cacheLimit = new Gauge({
      name: 'mirror_cache_limit_bytes',
      help: 'The byte cap of the cache (cache.maxBytes); 0 when none',
      registers,
      ...(limit ? { collect(this: Gauge) { this.set(limit() ?? 0); } } : {}),
    });
    const oldest = opts.oldestUse;
    this.oldestEntryAge = new Gauge({
      name: 'mirror_cache_oldest_entry_age_seconds',
      help: 'Time since the least recently used image or blob was last pulled (0 when the cache is empty)',
      registers,
      ...(oldest ? { collect(this: Gauge) { const t = oldest(); this.set(t === undefined ? 0 : Math.max(0, (Date.now() - t) / 1000)); } } : {}),
    });
    this.refetchedAfterEviction = new Counter({
      name: 'mirror_cache_refetched_after_eviction_total',
      help: 'Blob downloads of a digest evicted less than an hour before (eviction thrashing: the cap is too small for the working set)',
      registers,
    });
    this.storeFull = new Counter({ name: 'mirror_store_full_total', help: 'Blobs passed through uncached because the store had no space', registers });
  }

  /**
   * Creates every known label combination at 0, so dashboards and alerts see the series before the
   * first event (a rate() over a series that appears mid-window misses its first increments).
   */
  initialiseSeries(upstreams: string[]): void {
    for (const upstream of upstreams) {
      for (const kind of CACHE_KINDS) for (const result of CACHE_RESULTS) this.cacheResults.inc({ kind, upstream, result }, 0);
      for (const cls of ERROR_CLASSES) this.upstreamErrors.inc({ upstream, class: cls }, 0);
      this.upstreamBytes.inc({ upstream }, 0);
      for (const result of ['ok', 'error']) this.tokenFetches.inc({ upstream, result }, 0);
      this.upstreamOnline.set({ upstream }, 1);
      for (const to of ['online', 'offline']) this.upstreamTransitions.inc({ upstream, to }, 0);
      for (const result of ['ok', 'failed']) this.upstreamProbes.inc({ upstream, result }, 0);
    }
    for (const source of ['cache', 'upstream']) this.servedBytes.inc({ source }, 0);
    for (const result of ['ok', 'failed', 'digest_mismatch']) this.downloads.inc({ result }, 0);
    for (const reason of ['size', 'free_disk', 'purge']) {
      this.evictions.inc({ reason }, 0);
      this.evictedBytes.inc({ reason }, 0);
    }
  }

  evictionObserver(): { evicted(reason: string, blobs: number, bytes: number): void } {
    return {
      evicted: (reason, blobs, bytes) => {
        this.evictions.inc({ reason }, blobs);
        this.evictedBytes.inc({ reason }, bytes);
      },
    };
  }

  /** Hits, misses and bytes served from the cache over the process's life (for the admin summary). */
  async figures(): Promise<{ hits: number; misses: number; bytesSaved: number }> {
    const results = (await this.cacheResults.get()).values;
    const sum = (r: string) => results.filter((v) => v.labels.result === r || (r === 'hit' && (v.labels.result === 'revalidated' || v.labels.result === 'stale'))).reduce((n, v) => n + v.value, 0);
    const served = (await this.servedBytes.get()).values.filter((v) => v.labels.source === 'cache').reduce((n, v) => n + v.value, 0);
    return { hits: sum('hit'), misses: sum('miss'), bytesSaved: served };
  }

  cacheObserver(): CacheObserver {
    return {
      result: (kind: CacheKind, upstream: string, result: CacheResult) => this.cacheResults.inc({ kind, upstream, result }),
      rejected: (upstream: string) => this.upstreamErrors.inc({ upstream, class: 'digest_mismatch' }),
    };
  }

  upstreamObserver(): UpstreamObserver {
    return {
      request: (upstream: string, kind: RequestKind, status: number, seconds: number, errorClass: ErrorClass | undefined) => {
        this.upstreamRequests.inc({ upstream, kind, status: String(status) });
        this.upstreamDuration.observe({ upstream, kind }, seconds);
        if (errorClass) this.upstreamErrors.inc({ upstream, class: errorClass });
      },
      bytes: (upstream: string, n: number) => this.upstreamBytes.inc({ upstream }, n),
      token: (upstream: string, ok: boolean) => this.tokenFetches.inc({ upstream, result: ok ? 'ok' : 'error' }),
      rateLimit: (upstream: string, remaining: number, limit: number | undefined) => {
        this.rateLimitRemaining.set({ upstream }, remaining);
        if (limit !== undefined) this.rateLimitLimit.set({ upstream }, limit);
      },
    };
  }

  /** For upstream/availability.ts (structurally its AvailabilityObserver). */
  availabilityObserver(): { transition(upstream: string, to: 'online' | 'offline'): void; probe(upstream: string, ok: boolean): void } {
    return {
      transition: (upstream, to) => {
        this.upstreamOnline.set({ upstream }, to === 'online' ? 1 : 0);
        this.upstreamTransitions.inc({ upstream, to });
      },
      probe: (upstream, ok) => this.upstreamProbes.inc({ upstream, result: ok ? 'ok' : 'failed' }),
    };
  }

  inflightObserver(): InflightObserver {
    return {
      started: () => undefined,
      joined: () => this.coalesced.inc(),
      resumed: () => this.resumes.inc(),
      completed: () => this.downloads.inc({ result: 'ok' }),
      spilled: () => this.storeFull.inc(),
      failed: (_digest: string, error: unknown, origin: string) => {
        const mismatch = (error as Error)?.name === 'DigestMismatchError';
        this.downloads.inc({ result: mismatch ? 'digest_mismatch' : 'failed' });
        if (mismatch) this.upstreamErrors.inc({ upstream: origin.slice(0, origin.indexOf('/')), class: 'digest_mismatch' });
      },
    };
  }
}
