/**
 * buildMirror: wires the concrete pieces (filesystem stores, undici upstream clients, in-memory index,
 * metrics) into an app from a Config. main.ts calls it; so do the tests, with their own dispatcher,
 * clock, logger and metrics registry.
 */
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { Agent, type Dispatcher } from 'undici';
import { createApp } from './app.js';
import { CachingBlobStore } from './cache/caching-blob-store.js';
import { CachingMetaStore } from './cache/caching-meta-store.js';
import { CacheStats } from './cache/stats.js';
import type { Config } from './config.js';
import { Metrics } from './metrics.js';
import type { Logger } from './observability/types.js';
import { InflightDownloads } from './transfer/inflight.js';
import { NegativeCache } from './registry/negative-cache.js';
import { Registry } from './registry/service.js';
import { FsMetaStore } from './storage/fs-meta-store.js';
import { FsBlobStore } from './storage/fs-store.js';
import { UpstreamClient } from './upstream/client.js';
import { UpstreamHealth } from './upstream/health.js';
import type { Upstream } from './upstream/types.js';

export interface MirrorOptions {
  dispatcher?: Dispatcher;
  now?: () => number;
  logger?: Logger;
  promRegistry?: PromRegistry;
  processMetrics?: boolean;
}

export interface Mirror {
  app: ReturnType<typeof createApp>;
  registry: Registry;
  metrics: Metrics;
  promRegistry: PromRegistry;
  blobs: FsBlobStore;
  /** Waits (at most a few seconds) for downloads under way to be stored, then releases upstream connections. */
  close(): Promise<void>;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** The version in package.json (one directory above both src/ and dist/). */
export function mirrorVersion(): string {
  try {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof version === 'string' ? version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export async function buildMirror(config: Config, opts: MirrorOptions = {}): Promise<Mirror> {
  const now = opts.now ?? Date.now;
  const logger = opts.logger ?? silentLogger;
  const ownDispatcher = opts.dispatcher === undefined;
  const dispatcher =
    opts.dispatcher ??
    new Agent({
      connect: { timeout: config.timeouts.connect },
      headersTimeout: config.timeouts.headers,
      bodyTimeout: config.timeouts.bodyIdle,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
  const promRegistry = opts.promRegistry ?? new PromRegistry();
  const stats = new CacheStats();
  const blobs = new FsBlobStore(config.dataDir, stats);
  await blobs.init();
  const scanned = stats.scan(blobs.list()).catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'cache size scan failed'));
  const meta = new FsMetaStore(config.dataDir);

  // The gauge reads the downloads at scrape time, after both exist.
  const metrics: Metrics = new Metrics(promRegistry, { inflightDownloads: (): number => inflight.size, processMetrics: opts.processMetrics ?? false, cacheStats: stats });
  const inflight: InflightDownloads = new InflightDownloads({ store: blobs, observer: metrics.inflightObserver() });

  const names = Object.keys(config.upstreams);
  metrics.initialiseSeries(names);
  const health = new UpstreamHealth(names);
  const metricsObserver = metrics.upstreamObserver();
  const healthObserver = health.observer();
  const observer = {
    ...metricsObserver,
    request: (...a: Parameters<typeof metricsObserver.request>) => {
      metricsObserver.request(...a);
      healthObserver.request(...a);
    },
  };
  const userAgent = `regmirror/${mirrorVersion()}`;
  const upstreams = new Map<string, Upstream>();
  for (const u of Object.values(config.upstreams)) {
    upstreams.set(
      u.name,
      new UpstreamClient({
        name: u.name,
        url: u.url,
        ...(u.username !== undefined && u.password !== undefined ? { credentials: { username: u.username, password: u.password } } : {}),
        dispatcher,
        now,
        observer,
        timeouts: { headers: config.timeouts.headers, bodyIdle: config.timeouts.bodyIdle },
        maxManifestBytes: config.limits.maxManifestBytes,
        userAgent,
      }),
    );
  }
  const aliases = new Map<string, string>();
  for (const u of Object.values(config.upstreams)) {
    aliases.set(u.name, u.name);
    for (const a of u.aliases) aliases.set(a, u.name);
  }

  const registry = new Registry(
    {
      blobs: new CachingBlobStore(blobs, { memoryBytes: config.cache.memoryBytes }),
      meta: new CachingMetaStore(meta),
      inflight,
      upstreams,
      tagTtl: (name) => config.upstreams[name]?.tagTtl ?? config.cache.tagTtl,
      negative: new NegativeCache(config.cache.negativeTtl * 1000, now),
      now,
      offline: config.offline,
      observer: metrics.cacheObserver(),
      logger,
      maxPageSize: config.limits.maxPageSize,
      defaultUpstream: config.defaultRegistry,
    },
    {
      defaultUpstream: config.defaultRegistry,
      resolve: (host) => aliases.get(host),
      addsLibraryPrefix: (name) => config.upstreams[name]?.libraryPrefix ?? false,
    },
  );

  const app = createApp({
    registry,
    metrics,
    promRegistry,
    logger,
    readiness: {
      storage: async () => {
        const probe = join(config.dataDir, 'tmp', `.ready-${process.pid}`);
        await mkdir(join(config.dataDir, 'tmp'), { recursive: true });
        await writeFile(probe, 'ok');
        await rm(probe, { force: true });
        return true;
      },
      upstreams: () => (config.offline ? Object.fromEntries(names.map((n) => [n, 'unknown' as const])) : health.snapshot()),
    },
  });

  return {
    app,
    registry,
    metrics,
    promRegistry,
    blobs,
    close: async () => {
      // A client may have all its bytes before the blob is renamed into place: let that finish.
      await registry.drain(5000);
      await scanned;
      if (ownDispatcher) await dispatcher.close();
    },
  };
}
