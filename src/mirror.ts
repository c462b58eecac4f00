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
import { createAdminApp } from './admin/app.js';
import { CachingBlobStore } from './cache/caching-blob-store.js';
import { CachingMetaStore } from './cache/caching-meta-store.js';
import { CacheStats } from './cache/stats.js';
import type { Config } from './config.js';
import { AdminError, CacheAdminService } from './lifecycle/admin.js';
import { Evictor } from './lifecycle/evictor.js';
import { takeInventory } from './lifecycle/inventory.js';
import { PinSet } from './lifecycle/pins.js';
import { RecentEvictions } from './lifecycle/recent-evictions.js';
import { Remover } from './lifecycle/remover.js';
import type { CacheAdmin } from './lifecycle/types.js';
import { UsageTracker } from './lifecycle/usage.js';
import { Metrics } from './metrics.js';
import type { Logger } from './observability/types.js';
import { InflightDownloads } from './transfer/inflight.js';
import { NegativeCache } from './registry/negative-cache.js';
import { Registry } from './registry/service.js';
import { FsMetaStore } from './storage/fs-meta-store.js';
import { FsBlobStore } from './storage/fs-store.js';
import { AvailabilityGuard } from './upstream/availability.js';
import { UpstreamClient } from './upstream/client.js';
import { UpstreamHealth } from './upstream/health.js';
import type { Upstream } from './upstream/types.js';

export interface MirrorOptions {
  dispatcher?: Dispatcher;
  now?: () => number;
  logger?: Logger;
  promRegistry?: PromRegistry;
  processMetrics?: boolean;
  /** false: no periodic saving of use figures, no background eviction or start-up GC (tests drive them). */
  lifecycleTimers?: boolean;
}

export interface Mirror {
  app: ReturnType<typeof createApp>;
  /** The admin API (its own listener). */
  adminApp: ReturnType<typeof createAdminApp>;
  admin: CacheAdmin;
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

interface Stores {
  stats: CacheStats;
  blobs: FsBlobStore;
  meta: FsMetaStore;
  /** The stores as the services see them: memory caches in front. */
  cachedBlobs: CachingBlobStore;
  cachedMeta: CachingMetaStore;
}

async function openStores(config: Config, onAdded: (digest: string) => void): Promise<Stores> {
  const stats = new CacheStats();
  const blobs = new FsBlobStore(config.dataDir, {
    added: (d, n) => {
      stats.added(d, n);
      onAdded(d);
    },
    removed: (d, n) => stats.removed(d, n),
  });
  await blobs.init();
  const meta = new FsMetaStore(config.dataDir);
  return { stats, blobs, meta, cachedBlobs: new CachingBlobStore(blobs, { memoryBytes: config.cache.memoryBytes }), cachedMeta: new CachingMetaStore(meta) };
}

interface Lifecycle {
  usage: UsageTracker;
  remover: Remover;
  recentEvictions: RecentEvictions;
  evictor: Evictor;
  admin: CacheAdminService;
}

async function buildLifecycle(config: Config, stores: Stores, deps: { now: () => number; logger: Logger; metrics?: Metrics; onDeleted?: (digest: string) => void }): Promise<Lifecycle> {
  const { cachedMeta: meta, cachedBlobs: blobs, stats } = stores;
  const usage = new UsageTracker(meta, deps.now);
  await usage.load();
  const pins = new PinSet(config.cache.pin, meta);
  await pins.load();
  const recentEvictions = new RecentEvictions(deps.now);
  const remover = new Remover({
    meta,
    blobs,
    usage,
    onDeleted: (d) => {
      recentEvictions.evicted(d);
      deps.onDeleted?.(d);
    },
  });
  const inventory = async () => {
    const mark = remover.mark();
    return { ...(await takeInventory({ meta, blobs, usage, now: deps.now })), mark };
  };
  const evictor = new Evictor({
    limits: { maxBytes: config.cache.maxBytes, minFreeBytes: config.cache.minFreeBytes, minFreePercent: config.cache.minFreePercent, lowWatermark: config.cache.lowWatermark },
    cacheBytes: () => stats.bytes,
    space: () => blobs.space(),
    inventory,
    remover,
    pinned: (img) => pins.matches(img),
    usage,
    observer: deps.metrics?.evictionObserver() ?? { evicted: () => undefined },
    logger: deps.logger,
  });
  const admin = new CacheAdminService({
    meta,
    blobs,
    usage,
    pins,
    remover,
    evictor,
    cacheBytes: () => ({ bytes: stats.bytes, blobs: stats.blobs }),
    figures: () => deps.metrics?.figures() ?? Promise.resolve({ hits: 0, misses: 0, bytesSaved: 0 }),
    limitBytes: config.cache.maxBytes,
    now: deps.now,
    logger: deps.logger,
    tempGraceMs: 60 * 60 * 1000,
    onPurged: (blobsRemoved, bytes) => deps.metrics?.evictionObserver().evicted('purge', blobsRemoved, bytes),
  });
  return { usage, remover, recentEvictions, evictor, admin };
}

/** The pid of another live process serving the data directory, from its pid file, if any. */
function servingPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'state', 'serving.pid'), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined; // a crash left the file: nobody serves
  }
}

/**
 * The cache lifecycle over a data directory, with the mirror stopped (for `regmirror cache`): no
 * server, no upstream. Temp files of any age are a crash's leftovers here.
 */
export async function openCacheAdmin(config: Config, opts: { logger?: Logger; now?: () => number } = {}): Promise<{ admin: CacheAdmin; close(): Promise<void> }> {
  const serving = servingPid(config.dataDir);
  if (serving !== undefined) {
    throw new Error(`a mirror (pid ${serving}) is serving ${config.dataDir}: use its admin API (--admin URL) instead of the data directory`);
  }
  const stores = await openStores(config, () => undefined);
  await stores.stats.scan(stores.blobs.list());
  const lifecycle = await buildLifecycle(config, stores, { now: opts.now ?? Date.now, logger: opts.logger ?? silentLogger });
  return { admin: lifecycle.admin, close: () => lifecycle.usage.stop() };
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
  const stores = await openStores(config, (digest) => {
    lifecycle.remover.added(digest);
    lifecycle.evictor.poke();
  });
  // Says to `regmirror cache --data-dir` that this directory is being served (removed at close).
  const pidFile = join(config.dataDir, 'state', 'serving.pid');
  await mkdir(join(config.dataDir, 'state'), { recursive: true });
  await writeFile(pidFile, String(process.pid));
  const { stats, blobs } = stores;
  const scanned = stats.scan(blobs.list()).catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'cache size scan failed'));

  // The gauges read the downloads and the lifecycle at scrape time, after they exist.
  const metrics: Metrics = new Metrics(promRegistry, {
    inflightDownloads: (): number => inflight.size,
    processMetrics: opts.processMetrics ?? false,
    cacheStats: stats,
    cacheLimit: () => config.cache.maxBytes,
    oldestUse: () => lifecycle.usage.oldest(),
  });
  const lifecycle: Lifecycle = await buildLifecycle(config, stores, { now, logger, metrics, onDeleted: (d) => inflight.removed(d) });
  const downloads = metrics.inflightObserver();
  const inflight: InflightDownloads = new InflightDownloads({
    store: blobs,
    observer: {
      ...downloads,
      started: (digest) => {
        downloads.started(digest);
        if (lifecycle.recentEvictions.refetched(digest)) metrics.refetchedAfterEviction.inc();
      },
    },
  });

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
  // Assumed offline (upstream/availability.ts): each client behind a guard; transitions reach metrics and /readyz.
  const availability = metrics.availabilityObserver();
  const guards: AvailabilityGuard[] = [];
  const guarded = (client: UpstreamClient): AvailabilityGuard => {
    const guard = new AvailabilityGuard(client, {
      ...config.upstreamHealth,
      now,
      logger,
      revalidateBudgetMs: config.timeouts.revalidate,
      observer: {
        transition: (name, to) => {
          availability.transition(name, to);
          health.set(name, to === 'online' ? 'up' : 'down');
        },
        probe: (name, ok) => availability.probe(name, ok),
      },
    });
    guards.push(guard);
    return guard;
  };
  for (const u of Object.values(config.upstreams)) {
    upstreams.set(
      u.name,
      guarded(new UpstreamClient({
        name: u.name,
        url: u.url,
        ...(u.username !== undefined && u.password !== undefined ? { credentials: { username: u.username, password: u.password } } : {}),
        dispatcher,
        now,
        observer,
        timeouts: { headers: config.timeouts.headers, bodyIdle: config.timeouts.bodyIdle },
        maxManifestBytes: config.limits.maxManifestBytes,
        userAgent,
      })),
    );
  }
  const aliases = new Map<string, string>();
  for (const u of Object.values(config.upstreams)) {
    aliases.set(u.name, u.name);
    for (const a of u.aliases) aliases.set(a, u.name);
  }

  const registry = new Registry(
    {
      blobs: stores.cachedBlobs,
      meta: stores.cachedMeta,
      usage: lifecycle.usage,
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
      availability: () => Object.fromEntries(guards.map((g) => [g.name, g.snapshot()])),
    },
  });

  const adminApp = createAdminApp(
    lifecycle.admin,
    (name) => {
      try {
        return registry.route(name, undefined);
      } catch (e) {
        throw new AdminError('invalid', (e as Error).message);
      }
    },
    logger,
  );
  if (opts.lifecycleTimers !== false) {
    lifecycle.usage.start(5000);
    lifecycle.evictor.start(config.cache.evictionInterval * 1000);
    // Leftovers of a crash (an eviction cut short, temp files): swept once, in the background.
    void scanned.then(() => lifecycle.admin.gc()).catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'start-up GC failed'));
  }

  return {
    app,
    adminApp,
    admin: lifecycle.admin,
    registry,
    metrics,
    promRegistry,
    blobs,
    close: async () => {
      // A client may have all its bytes before the blob is renamed into place: let that finish.
      await registry.drain(5000);
      await scanned;
      await lifecycle.evictor.stop();
      await lifecycle.usage.stop().catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'saving the use figures failed'));
      await rm(pidFile, { force: true });
      for (const g of guards) g.close();
      if (ownDispatcher) await dispatcher.close();
    },
  };
}
