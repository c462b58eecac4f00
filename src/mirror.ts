/**
 * buildMirror: wires the concrete pieces (filesystem stores, undici upstream clients, in-memory index,
 * metrics) into an app from a Config. main.ts calls it; so do the tests, with their own dispatcher,
 * clock, logger and metrics registry.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { Agent, type Dispatcher } from 'undici';
import { createApp } from './app.js';
import { AccessControl } from './access/service.js';
import { limitUpstream } from './access/upstream-limit.js';
import { createAdminApp, requireAdmin } from './admin/app.js';
import { Airgap } from './airgap/service.js';
import { PrefetchJobs, type PrefetchDeps } from './airgap/prefetch.js';
import { CachingBlobStore } from './cache/caching-blob-store.js';
import { CachingMetaStore } from './cache/caching-meta-store.js';
import { CacheStats } from './cache/stats.js';
import { ConfigError, type Config } from './config.js';
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
import { routeName, type RoutingTable } from './registry/reference.js';
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
  /** Access control, when `auth.enabled` (reload() on SIGHUP). */
  access: AccessControl | undefined;
  /** Bundles in and out of this cache (import/export; the admin API's POST /admin/import). */
  airgap: Airgap;
  /** Prefetch jobs (the admin API's /admin/prefetch). */
  prefetch: PrefetchJobs;
  /** What prefetch runs on: this mirror's Registry service and blob store. */
  prefetchDeps: PrefetchDeps;
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

async function openStores(config: Config, onAdded: (digest: string) => void, opts: { sweep?: boolean } = {}): Promise<Stores> {
  const stats = new CacheStats();
  const blobs = new FsBlobStore(config.dataDir, {
    added: (d, n) => {
      stats.added(d, n);
      onAdded(d);
    },
    removed: (d, n) => stats.removed(d, n),
  });
  // init() sweeps tmp/: never beside a running mirror (a read-only export opens the stores with sweep: false).
  if (opts.sweep !== false) await blobs.init();
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

/** How client-visible names map to upstreams, from the config (as the Registry routes them). */
function routingOf(config: Config): RoutingTable {
  const aliases = new Map<string, string>();
  for (const u of Object.values(config.upstreams)) {
    aliases.set(u.name, u.name);
    for (const a of u.aliases) aliases.set(a, u.name);
  }
  return { defaultUpstream: config.defaultRegistry, resolve: (h) => aliases.get(h), addsLibraryPrefix: (n) => config.upstreams[n]?.libraryPrefix ?? false };
}

/**
 * Bundle import/export over a data directory, in-process, without a server or upstream (for
 * `regmirror import|export`). `forImport`: the mirror must be stopped (its memory caches would not
 * see the new tags); export only reads and works beside a running mirror.
 */
export async function openAirgap(config: Config, opts: { now?: () => number; forImport: boolean }): Promise<{ airgap: Airgap; close(): Promise<void> }> {
  const serving = servingPid(config.dataDir);
  if (opts.forImport && serving !== undefined) {
    throw new Error(`a mirror (pid ${serving}) is serving ${config.dataDir}: use its admin API (--admin URL) instead of the data directory`);
  }
  const stores = await openStores(config, () => undefined, { sweep: opts.forImport });
  const table = routingOf(config);
  const airgap = new Airgap({
    blobs: stores.blobs,
    meta: stores.meta,
    now: opts.now ?? Date.now,
    route: (name) => routeName(name, undefined, table),
    maxManifestBytes: config.limits.maxManifestBytes,
  });
  return { airgap, close: async () => {} };
}

/** Access control from `auth` (undefined when off); an unreadable or invalid htpasswd, policy or key file throws, naming it. */
function buildAccess(config: Config, now: () => number): AccessControl | undefined {
  const a = config.auth;
  if (!a.enabled) return undefined;
  let tokenKey: Uint8Array = randomBytes(32);
  if (a.tokenKeyFile) {
    try {
      tokenKey = readFileSync(a.tokenKeyFile);
    } catch (e) {
      throw new ConfigError('auth.tokenKeyFile', `cannot read ${a.tokenKeyFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (tokenKey.length < 32) throw new ConfigError('auth.tokenKeyFile', `${a.tokenKeyFile} holds fewer than 32 bytes`);
  }
  return new AccessControl({
    htpasswdFile: a.htpasswd!,
    policyFile: a.policy!,
    service: a.service,
    tokenTtlSeconds: a.tokenTtl,
    tokenKey,
    adminGroup: a.adminGroup,
    basicCacheSeconds: a.basicCacheSeconds,
    failedLogins: a.failedLogins,
    missesPerMinute: a.missesPerMinute,
    now,
  });
}

/**
 * A mirror without a listener for `regmirror prefetch --data-dir/--config`: the data directory must
 * not be served by another process (its pid file and memory caches belong to that one).
 */
export async function openPrefetch(config: Config, opts: MirrorOptions = {}): Promise<{ deps: PrefetchDeps; close(): Promise<void> }> {
  const serving = servingPid(config.dataDir);
  if (serving !== undefined) {
    throw new Error(`a mirror (pid ${serving}) is serving ${config.dataDir}: use its admin API (--admin URL) instead of the data directory`);
  }
  const mirror = await buildMirror(config, { lifecycleTimers: false, ...opts });
  return { deps: mirror.prefetchDeps, close: () => mirror.close() };
}

export async function buildMirror(config: Config, opts: MirrorOptions = {}): Promise<Mirror> {
  const now = opts.now ?? Date.now;
  const logger = opts.logger ?? silentLogger;
  // First: a bad htpasswd or policy file stops start-up before anything is opened.
  const access = buildAccess(config, now);
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
  // The per-client limit on upstream fetches (access control): outermost, so refused calls reach no upstream.
  if (access) for (const [k, u] of upstreams) upstreams.set(k, limitUpstream(u, access.callers, access.limiter));
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
    ...(access ? { access: { control: access, realm: config.auth.realm } } : {}),
    ...(config.serve.accelRedirect !== undefined ? { accelRedirect: config.serve.accelRedirect } : {}),
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

  const airgap = new Airgap({
    blobs: stores.cachedBlobs,
    meta: stores.cachedMeta,
    now,
    route: (name) => registry.route(name, undefined),
    maxManifestBytes: config.limits.maxManifestBytes,
  });
  const prefetchDeps: PrefetchDeps = {
    getManifest: (ref, reference, accept) => registry.getManifest(ref, reference, accept),
    openBlob: (ref, digest) => registry.openBlob(ref, digest, undefined),
    route: (name) => registry.route(name, undefined),
    has: async (digest) => (await stores.cachedBlobs.stat(digest)) !== undefined,
  };
  const prefetch = new PrefetchJobs(prefetchDeps, now);
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
    airgap,
    prefetch,
  );
  // The admin API asks for a member of auth.adminGroup when access control is on.
  const guardedAdmin = access ? requireAdmin(adminApp, (authorization, address) => access.mayAdminister(authorization, access.clientAddress(address, undefined))) : adminApp;
  if (opts.lifecycleTimers !== false) {
    lifecycle.usage.start(5000);
    lifecycle.evictor.start(config.cache.evictionInterval * 1000);
    // Leftovers of a crash (an eviction cut short, temp files): swept once, in the background.
    void scanned.then(() => lifecycle.admin.gc()).catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'start-up GC failed'));
  }

  return {
    app,
    adminApp: guardedAdmin,
    admin: lifecycle.admin,
    access,
    airgap,
    prefetch,
    prefetchDeps,
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
