/**
 * buildMirror: wires the concrete pieces (filesystem stores, undici upstream clients, in-memory index,
 * metrics) into an app from a Config. main.ts calls it; so do the tests, with their own dispatcher,
 * clock, logger and metrics registry.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
// The S3 SDK and the Redis client are loaded only when the configuration asks for them (about 20 MiB
// of RSS and 100-250 ms of start-up each, for a mirror on the default filesystem store that needs neither).
import type { S3Client } from '@aws-sdk/client-s3';
import type { Redis } from 'ioredis';
import { Registry as PromRegistry } from 'prom-client';
import { Agent, type Dispatcher } from 'undici';
import { createApp } from './app.js';
import type { AccessControl } from './access/service.js';
import { limitUpstream } from './access/upstream-limit.js';
import { createAdminApp, localHostsOnly, requireAdmin } from './admin/app.js';
import { Airgap } from './airgap/service.js';
import { PrefetchJobs, type PrefetchDeps } from './airgap/prefetch.js';
import { CachingBlobStore } from './cache/caching-blob-store.js';
import { CachingMetaStore } from './cache/caching-meta-store.js';
import { metaStoreMetrics } from './cache/meta-store-metrics.js';
import { OutageTolerantBlobStore } from './cache/outage-tolerant-blob-store.js';
import { OutageTolerantMetaStore, type MetaModeObserver } from './cache/outage-tolerant-meta-store.js';
import { CacheStats } from './cache/stats.js';
import { ConfigError, type Config } from './config.js';
import { FiguresHistory } from './console/history.js';
import { mountConsole } from './console/routes.js';
import type { ConsoleDeps, UpstreamInfo } from './console/types.js';
import { FleetCoordinator } from './fleet/coordinator.js';
import { Leases } from './fleet/leases.js';
import { redact, RedisLink } from './fleet/link.js';
import { FleetMetrics } from './fleet/metrics.js';
import { PeerClient } from './fleet/peer-client.js';
import { peerHandler } from './fleet/peer-endpoint.js';
import { FleetReaders, TrackedBlobStore } from './fleet/readers.js';
import { ScratchStore } from './fleet/scratch-store.js';
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
import { DownloadThread } from './offload/download-thread.js';
import { InflightDownloads, type InflightOptions } from './transfer/inflight.js';
import { DEFAULT_READER_STALL_MS } from './transfer/download.js';
import { MIN_PROGRESS_BYTES } from './transfer/fill.js';
import { NegativeCache } from './registry/negative-cache.js';
import { Registry } from './registry/service.js';
import { routeName, type RoutingTable } from './registry/reference.js';
import { FsMetaStore } from './storage/fs-meta-store.js';
import { BEAT_MS, lockDataDir, processLockDeps, type LockRole } from './storage/data-lock.js';
import { FsBlobStore } from './storage/fs-store.js';
import type { MetaStore } from './storage/meta-store.js';
import { RedisMetaStore } from './storage/redis-meta-store.js';
import type { BlobStore } from './storage/store.js';
import { AvailabilityGuard } from './upstream/availability.js';
import { BufferPool } from './util/buffer-pool.js';
import { UpstreamClient } from './upstream/client.js';
import { UpstreamHealth } from './upstream/health.js';
import type { Upstream } from './upstream/types.js';

export interface MirrorOptions {
  dispatcher?: Dispatcher;
  /**
   * Whether blob bodies are written by the download thread (offload/) when the mirror builds its own
   * dispatcher: started at the first download ('lazy', the default), with the mirror ('at-start': the
   * server, so its first cold download does not wait ~0.15 s for the worker), or never ('off').
   */
  downloadThread?: 'lazy' | 'at-start' | 'off';
  /** Told each time the download thread's worker is online (main.ts: the young generation's cap, src/heap.ts). */
  onThreadOnline?: () => void;
  now?: () => number;
  logger?: Logger;
  promRegistry?: PromRegistry;
  processMetrics?: boolean;
  /** false: no periodic saving of use figures, no background eviction or start-up GC (tests drive them). */
  lifecycleTimers?: boolean;
  /** Who holds the data directory's lock: the server ('serve', the default) or `regmirror prefetch --data-dir`. */
  role?: 'serve' | 'prefetch';
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
  /** The blob store itself (filesystem or S3), without the memory cache. */
  blobs: BlobStore;
  /** Fleet mode (fleet.enabled): the peer endpoint's handler, for main.ts to put on fleet.listen. */
  fleet: { peerHandler: (req: IncomingMessage, res: ServerResponse) => void; replicaId: string } | undefined;
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
  blobs: BlobStore;
  meta: MetaStore;
  /** The stores as the services see them: memory caches in front. */
  cachedBlobs: CachingBlobStore;
  cachedMeta: CachingMetaStore;
  /** The Redis connection of the metadata (storage.redis.url), for coordination to share; undefined on fs. */
  redis: Redis | undefined;
  /** Read buffers of served blobs, shared by the store's answers and the downloads' readers. */
  buffers: BufferPool;
  /** Releases the backends' connections (S3 sockets, the Redis connection). */
  close(): Promise<void>;
}

/** What every download is held to: the main ones, and in fleet mode a takeover's or a peer's stream. */
type DownloadRules = Pick<InflightOptions, 'readerStallMs' | 'minProgress' | 'maxBlobBytes' | 'observer'>;

/** The S3 client of `storage.s3`: static credentials when given, else the SDK's default chain. */
async function s3Client(config: Config): Promise<S3Client> {
  const { S3Client } = await import('@aws-sdk/client-s3');
  const { addOutageBreaker } = await import('./storage/s3-breaker.js');
  const { s3ClientConfig } = await import('./storage/s3-client.js');
  const s3 = config.storage.s3;
  const client = new S3Client(
    s3ClientConfig({
      region: s3.region,
      endpoint: s3.endpoint,
      forcePathStyle: s3.forcePathStyle,
      ...(s3.accessKeyId && s3.secretAccessKey ? { credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } : {}),
      connectTimeoutMs: config.timeouts.connect,
    }),
  );
  // An endpoint that does not answer costs one client one timeout per 5 s, not every client each.
  addOutageBreaker(client, 5000);
  return client;
}

async function openStores(
  config: Config,
  onAdded: (digest: string) => void,
  opts: {
    /** Who writes here (the data directory's lock, taken before the sweep); undefined: a read-only opening that neither sweeps nor locks. */
    lock: LockRole | undefined;
    logger?: Logger;
    /** The serving mirror: records on Redis get a local fallback for outages. */
    metaFallback?: { observer: MetaModeObserver };
  },
): Promise<Stores> {
  // First: another writer's tmp/ must not be swept, nor its records written under it.
  // The server waits out a lock from another container or host that may be a crashed holder's
  // (stale after three missed beats); the offline tools say at once who holds it.
  const lock = opts.lock ? await lockDataDir(config.dataDir, opts.lock, processLockDeps(), { waitMs: opts.lock === 'serve' ? 4 * BEAT_MS : 0 }) : undefined;
  const closers: Array<() => Promise<void> | void> = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers) await c();
    await lock?.release();
  };
  try {
    return await openStoresWith(config, onAdded, { ...opts, sweep: lock !== undefined }, closers, closeAll);
  } catch (e) {
    await closeAll().catch(() => undefined);
    throw e;
  }
}

async function openStoresWith(
  config: Config,
  onAdded: (digest: string) => void,
  opts: { sweep: boolean; logger?: Logger; metaFallback?: { observer: MetaModeObserver } },
  closers: Array<() => Promise<void> | void>,
  close: () => Promise<void>,
): Promise<Stores> {
  const stats = new CacheStats();
  const events = {
    added: (d: string, n: number) => {
      stats.added(d, n);
      onAdded(d);
    },
    removed: (d: string, n: number) => stats.removed(d, n),
  };
  const buffers = new BufferPool();
  let blobs: BlobStore;
  if (config.storage.type === 's3') {
    const client = await s3Client(config);
    closers.push(() => client.destroy());
    const { S3BlobStore } = await import('./storage/s3-store.js');
    blobs = new S3BlobStore({
      client,
      bucket: config.storage.s3.bucket,
      prefix: config.storage.s3.prefix,
      spoolDir: join(config.dataDir, 's3-spool'),
      partSize: config.storage.s3.partSize,
      events,
    });
  } else {
    blobs = new FsBlobStore(config.dataDir, events, buffers);
  }
  // init() sweeps tmp/ (or this replica's spool): only under the lock (a read-only export takes none and does not sweep).
  if (opts.sweep) await blobs.init();
  let meta: MetaStore;
  let redis: Redis | undefined;
  if (config.storage.redis.url) {
    const logger = opts.logger ?? silentLogger;
    // Fail fast while Redis is away (no offline queue, no retry of a command, a bounded wait for a
    // reply): the serving path then answers from the local fallback at once instead of holding a
    // client for seconds; the offline tools get the error.
    const { Redis } = await import('ioredis');
    const client = new Redis(config.storage.redis.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: config.timeouts.connect,
      commandTimeout: 2000,
      retryStrategy: (times) => Math.min(100 * times, 1000),
    });
    closers.push(() => {
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.disconnect();
    });
    // ioredis reconnects by itself and reports each failed attempt: one line per 10 s says Redis is away.
    let lastWarning = -Infinity;
    client.on('error', (e: Error) => {
      if (Date.now() - lastWarning < 10_000) return;
      lastWarning = Date.now();
      logger.warn({ err: e.message }, 'redis connection failed; reconnecting');
    });
    // Without an offline queue, a command before the first connection fails: wait for it (or its failure) once.
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        client.off('ready', done);
        client.off('error', done);
        resolve();
      };
      const timer = setTimeout(done, config.timeouts.connect);
      client.on('ready', done);
      client.on('error', done);
    });
    redis = client;
    const remote = new RedisMetaStore(client, config.storage.redis.keyPrefix);
    if (opts.metaFallback) {
      // The serving mirror keeps its own records beside Redis and answers from them while Redis is away.
      const fallbackDir = join(config.dataDir, 'meta-fallback');
      const tolerant = new OutageTolerantMetaStore(remote, new FsMetaStore(fallbackDir), {
        logger,
        observer: opts.metaFallback.observer,
        remoteName: redact(config.storage.redis.url),
        localName: fallbackDir,
        // As the S3 breaker: a Redis that does not answer costs one reply timeout per 5 s, not one per call.
        probeIntervalMs: 5000,
        now: Date.now,
      });
      client.on('ready', () => tolerant.reachable(true));
      client.on('close', () => tolerant.reachable(false, 'connection closed'));
      if (client.status !== 'ready') tolerant.reachable(false, 'not connected at start');
      meta = tolerant;
    } else {
      meta = remote;
    }
  } else {
    meta = new FsMetaStore(config.dataDir);
  }
  return {
    stats,
    blobs,
    buffers,
    meta,
    cachedBlobs: new CachingBlobStore(blobs, { memoryBytes: config.cache.memoryBytes }),
    cachedMeta: new CachingMetaStore(meta),
    redis,
    close,
  };
}

interface Lifecycle {
  usage: UsageTracker;
  remover: Remover;
  recentEvictions: RecentEvictions;
  evictor: Evictor;
  admin: CacheAdminService;
}

interface LifecycleDeps {
  now: () => number;
  logger: Logger;
  metrics?: Metrics;
  onDeleted?: (digest: string) => void;
  /** Fleet mode: eviction passes under the fleet's lock, and no delete of a blob another replica reads. */
  fleet?: { lock: <T>(work: () => Promise<T>) => Promise<T | undefined>; mayDelete: (digest: string) => Promise<boolean> };
}

async function buildLifecycle(config: Config, stores: Stores, deps: LifecycleDeps): Promise<Lifecycle> {
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
    ...(deps.fleet ? { mayDelete: deps.fleet.mayDelete } : {}),
  });
  const inventory = async () => {
    // Pins another replica made count in this pass (records shared through Redis).
    await pins.refresh();
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
    ...(deps.fleet ? { lock: deps.fleet.lock } : {}),
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

/**
 * The cache lifecycle over a data directory, with the mirror stopped (for `regmirror cache`): no
 * server, no upstream. Temp files of any age are a crash's leftovers here.
 */
export async function openCacheAdmin(config: Config, opts: { logger?: Logger; now?: () => number } = {}): Promise<{ admin: CacheAdmin; close(): Promise<void> }> {
  const stores = await openStores(config, () => undefined, { lock: 'cache', logger: opts.logger });
  await stores.stats.scan(stores.blobs.list());
  const lifecycle = await buildLifecycle(config, stores, { now: opts.now ?? Date.now, logger: opts.logger ?? silentLogger });
  return {
    admin: lifecycle.admin,
    close: async () => {
      await lifecycle.usage.stop();
      await stores.close();
    },
  };
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
  const stores = await openStores(config, () => undefined, { lock: opts.forImport ? 'import' : undefined });
  const table = routingOf(config);
  const airgap = new Airgap({
    blobs: stores.blobs,
    meta: stores.meta,
    now: opts.now ?? Date.now,
    route: (name) => routeName(name, undefined, table),
    maxManifestBytes: config.limits.maxManifestBytes,
  });
  return { airgap, close: () => stores.close() };
}

/** Access control from `auth` (undefined when off); an unreadable or invalid htpasswd, policy or key file throws, naming it. */
async function buildAccess(config: Config, now: () => number): Promise<AccessControl | undefined> {
  const a = config.auth;
  if (!a.enabled) return undefined;
  // Loaded only when on: jose and bcryptjs (~180 modules, ~3 MiB of RSS) serve nothing else.
  const { AccessControl } = await import('./access/service.js');
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
  const mirror = await buildMirror(config, { lifecycleTimers: false, ...opts, role: 'prefetch' });
  return { deps: mirror.prefetchDeps, close: () => mirror.close() };
}

/** The upstream Agent's keep-alive and connections per origin (also the download thread's). */
const AGENT_KEEP_ALIVE_MS = 30_000;
const AGENT_CONNECTIONS = 64;

export async function buildMirror(config: Config, opts: MirrorOptions = {}): Promise<Mirror> {
  const now = opts.now ?? Date.now;
  const logger = opts.logger ?? silentLogger;
  // First: a bad htpasswd or policy file stops start-up before anything is opened.
  const access = await buildAccess(config, now);
  const ownDispatcher = opts.dispatcher === undefined;
  const dispatcher =
    opts.dispatcher ??
    new Agent({
      connect: { timeout: config.timeouts.connect },
      headersTimeout: config.timeouts.headers,
      bodyTimeout: config.timeouts.bodyIdle,
      keepAliveTimeout: AGENT_KEEP_ALIVE_MS,
      connections: AGENT_CONNECTIONS,
    });
  const promRegistry = opts.promRegistry ?? new PromRegistry();
  const stores = await openStores(
    config,
    (digest) => {
      lifecycle.remover.added(digest);
      lifecycle.evictor.poke();
    },
    { lock: opts.role ?? 'serve', logger, ...(config.storage.redis.url ? { metaFallback: { observer: metaStoreMetrics(promRegistry) } } : {}) },
  );
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
  const fleetLink = config.fleet.enabled ? await connectFleet(config, { logger, promRegistry, dispatcher }) : undefined;
  const lifecycle: Lifecycle = await buildLifecycle(config, stores, { now, logger, metrics, onDeleted: (d) => inflight.removed(d), ...(fleetLink ? { fleet: fleetLink.eviction } : {}) });
  const downloads = metrics.inflightObserver();
  // Blob bodies are written off the event loop by a worker with its own Agent, built like ours: so
  // only when we built ours (an injected dispatcher, as tests use for TLS or faults, is used as is).
  const downloadThread =
    ownDispatcher && config.downloads.thread && opts.downloadThread !== 'off'
      ? new DownloadThread({
          agent: { connect: { timeout: config.timeouts.connect }, keepAliveTimeout: AGENT_KEEP_ALIVE_MS, connections: AGENT_CONNECTIONS },
          onCrash: (e) => logger.error({ err: e.message }, 'the download thread stopped; the downloads it was writing failed'),
          ...(opts.onThreadOnline ? { onOnline: opts.onThreadOnline } : {}),
        })
      : undefined;
  if (opts.downloadThread === 'at-start') downloadThread?.prestart();
  // What every download is held to, here and (fleet mode) a takeover or a peer's stream.
  const downloadRules: DownloadRules = {
    // Well inside upstream's body timeout: a pass-through held up by one client must cut that client
    // before the upstream connection times out under all of them.
    readerStallMs: Math.min(DEFAULT_READER_STALL_MS, config.timeouts.bodyIdle / 2),
    // bodyIdle ends a body that brings no byte; this one that brings next to nothing (transfer/fill.ts).
    minProgress: { bytes: MIN_PROGRESS_BYTES, windowMs: config.timeouts.bodyIdle },
    maxBlobBytes: config.limits.maxBlobBytes,
    observer: {
      ...downloads,
      started: (digest) => {
        downloads.started(digest);
        if (lifecycle.recentEvictions.refetched(digest)) metrics.refetchedAfterEviction.inc();
      },
      failed: (digest, error, origin) => {
        downloads.failed(digest, error, origin);
        // Its clients saw a cut transfer; this line says why (a mismatch, too slow, resumes used up).
        logger.warn({ digest, origin, err: error instanceof Error ? error.message : String(error) }, 'download failed');
      },
    },
  };
  const inflight: InflightDownloads = new InflightDownloads({ store: blobs, buffers: stores.buffers, ...(downloadThread ? { sinks: downloadThread } : {}), ...downloadRules });

  const fleet = fleetLink ? await fleetLink.coordinate({ blobs, inflight, rules: downloadRules }) : undefined;

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

  // Reads while the blob store is unreachable are misses (the bytes pass through from upstream); one warning per 10 s says so.
  let lastOutageWarning = -Infinity;
  const servingBlobs = new OutageTolerantBlobStore(stores.cachedBlobs, (op, e) => {
    if (Date.now() - lastOutageWarning < 10_000) return;
    lastOutageWarning = Date.now();
    logger.warn({ op, err: e.message }, 'blob store unavailable or full: serving from upstream without caching');
  });
  const registry = new Registry(
    {
      blobs: fleetLink ? new TrackedBlobStore(servingBlobs, fleetLink.readers) : servingBlobs,
      meta: stores.cachedMeta,
      usage: lifecycle.usage,
      inflight,
      ...(fleet ? { coordinator: fleet.coordinator } : {}),
      upstreams,
      tagTtl: (name) => config.upstreams[name]?.tagTtl ?? config.cache.tagTtl,
      negative: new NegativeCache(config.cache.negativeTtl * 1000, now),
      now,
      offline: config.offline,
      observer: metrics.cacheObserver(),
      logger,
      maxPageSize: config.limits.maxPageSize,
      maxBlobBytes: config.limits.maxBlobBytes,
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
    hold: (digests) => lifecycle.remover.hold(digests),
    usage: lifecycle.usage,
  });
  const prefetchDeps: PrefetchDeps = {
    getManifest: (ref, reference, accept) => registry.getManifest(ref, reference, accept),
    openBlob: (ref, digest) => registry.openBlob(ref, digest, undefined),
    route: (name) => registry.route(name, undefined),
    // An earlier image of the job may have read this blob to its verified end a moment ago.
    has: async (digest) => inflight.holdsVerified(digest) || (await stores.cachedBlobs.stat(digest)) !== undefined,
  };
  const prefetch = new PrefetchJobs(prefetchDeps, now);
  const parseRepository = (name: string) => {
    try {
      return registry.route(name, undefined);
    } catch (e) {
      throw new AdminError('invalid', (e as Error).message);
    }
  };
  const adminApp = createAdminApp(lifecycle.admin, parseRepository, logger, airgap, prefetch);
  // The operator console (/ui) and the JSON it reads, on the admin listener.
  const liveFigures = async () => ({ cacheBytes: stats.bytes, blobs: stats.blobs, limitBytes: config.cache.maxBytes, ...(await metrics.figures()) });
  const history = new FiguresHistory({ read: liveFigures, now, capacity: 8640, intervalMs: 10_000 }); // 24 h of 10 s samples
  const consoleDeps: ConsoleDeps = {
    admin: lifecycle.admin,
    figures: liveFigures,
    downloads: () => inflight.list(),
    prefetch: () => prefetch.list().map((j) => j.snapshot()),
    upstreams: () => upstreamInfo(config, health, guards, metrics),
    history,
    now,
    version: mirrorVersion(),
    clientScript: consoleClient(),
    liveIntervalMs: 1000,
  };
  mountConsole(adminApp, consoleDeps, parseRepository);
  // The admin API asks for a member of auth.adminGroup when access control is on.
  const guardedAdmin = access ? requireAdmin(adminApp, (authorization, address) => access.mayAdminister(authorization, access.clientAddress(address, undefined))) : localHostsOnly(adminApp, [hostname(), ...(config.admin.listen ? [config.admin.listen.host] : []), ...config.admin.hosts]);
  if (opts.lifecycleTimers !== false) {
    lifecycle.usage.start(5000);
    history.start();
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
    fleet: fleet ? { peerHandler: fleet.peerHandler, replicaId: fleetLink!.replicaId } : undefined,
    close: async () => {
      // A client may have all its bytes before the blob is renamed into place: let that finish.
      await registry.drain(5000);
      await fleet?.close();
      await fleetLink?.close();
      await scanned;
      history.stop();
      await lifecycle.evictor.stop();
      await lifecycle.usage.stop().catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'saving the use figures failed'));
      for (const g of guards) g.close();
      if (ownDispatcher) await dispatcher.close();
      await downloadThread?.close();
      await stores.close();
    },
  };
}

/** The console's view of each upstream: its state and Docker Hub style pull limit (URLs without credentials). */
async function upstreamInfo(config: Config, health: UpstreamHealth, guards: AvailabilityGuard[], metrics: Metrics): Promise<UpstreamInfo[]> {
  const states = config.offline ? undefined : health.snapshot();
  const gauge = async (g: Metrics['rateLimitRemaining']) => new Map((await g.get()).values.map((v) => [String(v.labels.upstream), v.value]));
  const [remaining, limit] = await Promise.all([gauge(metrics.rateLimitRemaining), gauge(metrics.rateLimitLimit)]);
  return Object.values(config.upstreams).map((u) => {
    const a = guards.find((g) => g.name === u.name)?.snapshot();
    let url = u.url;
    try {
      const parsed = new URL(u.url);
      parsed.username = '';
      parsed.password = '';
      url = parsed.toString().replace(/\/$/, '');
    } catch {
      url = '';
    }
    return {
      name: u.name,
      url,
      health: states?.[u.name] ?? 'unknown',
      availability: a?.state ?? 'online',
      retryAfter: a?.retryAfter,
      rateLimitRemaining: remaining.get(u.name),
      rateLimitLimit: limit.get(u.name),
    };
  });
}

/** Reads the console's compiled client (dist/console/client/console.js, beside dist/ from src/ or dist/) once it exists. */
function consoleClient(): () => Promise<string | undefined> {
  let js: string | undefined;
  return async () => {
    if (js !== undefined) return js;
    try {
      js = await readFile(new URL('../dist/console/client/console.js', import.meta.url), 'utf8');
    } catch {
      return undefined;
    }
    return js;
  };
}

/**
 * Fleet mode, in two steps: `connectFleet` (Redis, leases, readers, the eviction lock: what the
 * lifecycle needs) before the downloads exist, then `coordinate` once they do (the coordinator the
 * blob path consults, the peer downloads into local scratch, the peer endpoint).
 */
async function connectFleet(config: Config, deps: { logger: Logger; promRegistry: PromRegistry; dispatcher: Dispatcher }) {
  const { Redis } = await import('ioredis');
  const f = config.fleet;
  const replicaId = f.replicaId || `${hostname()}-${process.pid}`;
  const advertiseUrl = f.advertiseUrl || `http://${hostname()}:${f.listen.port}`;
  const fleetMetrics = new FleetMetrics(deps.promRegistry);
  const logger = deps.logger;
  // Fail fast while Redis is away (no offline queue, one try per command): callers fall back to local coordination.
  const redis = new Redis(f.redisUrl!, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    // A reply slower than this fails the call (the caller asks again or decides locally); a lost connection switches to local at once.
    commandTimeout: Math.max(1000, Math.floor(f.leaseTtlMs / 3)),
    retryStrategy: (times) => Math.min(100 * times, 1000),
    lazyConnect: false,
  });
  const link = new RedisLink(redis, { logger, observer: fleetMetrics.link(), url: f.redisUrl! });
  const leases = new Leases(link, { id: replicaId, url: advertiseUrl }, f.keyPrefix, f.leaseTtlMs);
  const readers = new FleetReaders(link, replicaId, f.keyPrefix, Math.max(f.leaseTtlMs, 30_000));
  const eviction = {
    lock: async <T>(work: () => Promise<T>): Promise<T | undefined> => {
      let ran = false;
      try {
        const r = await leases.whileHeld(
          'evict',
          () => {
            ran = true;
            return work();
          },
          () => logger.warn({}, 'lost the fleet eviction lock to another replica (Redis was away or lost its data): two eviction passes may overlap'),
        );
        fleetMetrics.evictionPasses.inc({ result: ran ? 'taken' : 'held_elsewhere' });
        return r;
      } catch (e) {
        if (ran) throw e;
        // Without Redis no replica may know who else evicts or reads: wait for it rather than risk a reader.
        fleetMetrics.evictionPasses.inc({ result: 'unavailable' });
        logger.warn({ err: (e as Error).message }, 'eviction skipped: the fleet lock is unavailable (Redis unreachable)');
        return undefined;
      }
    },
    mayDelete: async (digest: string) => !(await readers.reading(digest)),
  };
  logger.info({ replicaId, advertiseUrl, leaseTtlMs: f.leaseTtlMs }, 'fleet mode: downloads coordinated through Redis');

  const coordinate = async (d: { blobs: BlobStore; inflight: InflightDownloads; rules: DownloadRules }) => {
    // Bytes streamed from an owner replica go to this replica's own scratch, not the shared store.
    const scratchRoot = join(config.dataDir, 'fleet-scratch', replicaId);
    const scratch = new FsBlobStore(scratchRoot);
    await scratch.init();
    let coordinator: FleetCoordinator | undefined = undefined;
    // Held to the same rules as the main downloads: a takeover from a trickling upstream fails as too slow, and is logged.
    const peers = new InflightDownloads({ store: new ScratchStore(scratch, d.blobs, (digest) => coordinator?.owns(digest) ?? false), ...d.rules });
    coordinator = new FleetCoordinator({
      link,
      leases,
      main: d.inflight,
      peers,
      store: d.blobs,
      peer: new PeerClient({ dispatcher: deps.dispatcher, secret: f.secret!, headersTimeoutMs: config.timeouts.headers, bodyIdleMs: config.timeouts.bodyIdle }),
      logger,
      observer: fleetMetrics.fleet(),
    });
    const c = coordinator;
    return {
      coordinator: c,
      peerHandler: peerHandler({ secret: f.secret!, download: (digest) => c.download(digest), store: d.blobs, logger, served: (from) => fleetMetrics.peerReads.inc({ from }) }),
      close: async () => {
        await peers.drain(5000);
        await rm(scratchRoot, { recursive: true, force: true });
      },
    };
  };
  return { replicaId, link, readers, eviction, coordinate, close: () => link.close() };
}
