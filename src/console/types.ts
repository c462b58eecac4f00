/**
 * What the operator console reads, and the JSON shapes of the admin API routes it adds
 * (GET /admin/downloads, /admin/upstreams, /admin/history, /admin/live, /admin/live/events,
 * GET /admin/prefetch). The composition root (mirror.ts) supplies every dependency; nothing here
 * builds a store, an upstream client or a metric.
 */
import type { PrefetchSnapshot } from '../airgap/prefetch.js';
import type { CacheAdmin } from '../lifecycle/types.js';
import type { Charts } from './chart.js';
import type { FiguresHistory } from './history.js';

/** One blob download from upstream under way. */
export interface DownloadInfo {
  digest: string;
  /** `<upstream>/<repo>` whose pull started it. */
  origin: string;
  /** Bytes received so far. */
  received: number;
  /** Full size, once upstream said. */
  size: number | undefined;
}

export interface UpstreamInfo {
  name: string;
  /** The upstream's base URL (never its credentials). */
  url: string;
  /** Last request's outcome: up, down, or unknown before any (offline mode: unknown). */
  health: 'up' | 'down' | 'unknown';
  /** online, or assumed offline (served from the cache) until the next probe in `retryAfter` s. */
  availability: 'online' | 'offline';
  retryAfter: number | undefined;
  /** Docker Hub style pull limit, from the upstream's ratelimit-* headers (undefined: never seen). */
  rateLimitRemaining: number | undefined;
  rateLimitLimit: number | undefined;
}

/** The cheap figures (no inventory walk): read every second for the live view. */
export interface LiveFigures {
  cacheBytes: number;
  blobs: number;
  limitBytes: number | undefined;
  hits: number;
  misses: number;
  bytesSaved: number;
}

/** GET /admin/live and each `live` event of /admin/live/events. */
export interface LiveSnapshot {
  at: number;
  figures: LiveFigures & { hitRatio: number | undefined };
  downloads: DownloadInfo[];
  prefetch: PrefetchSnapshot[];
  upstreams: UpstreamInfo[];
  charts: Charts;
}

export interface ConsoleDeps {
  admin: CacheAdmin;
  figures(): Promise<LiveFigures>;
  downloads(): DownloadInfo[];
  prefetch(): PrefetchSnapshot[];
  upstreams(): Promise<UpstreamInfo[]>;
  history: FiguresHistory;
  now(): number;
  /** Shown in the page footer. */
  version: string;
  /** The compiled client (dist/console/client/console.js); undefined when it was not built. */
  clientScript(): Promise<string | undefined>;
  /** How often the live stream sends a snapshot. */
  liveIntervalMs: number;
}
