/**
 * The one typed configuration object: the embedded YAML default, a user file merged over it, then
 * environment overrides; validated with messages that name the offending key.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { validatePin } from './lifecycle/pins.js';

/** The longest delay a Node timer honours (2^31 - 1 ms); past it the timer fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface UpstreamConfig {
  /** The key clients use for this registry (`docker.io`, `ghcr.io`): in `ns=`, path prefixes, disk layout. */
  name: string;
  /** Base URL of the registry API (without /v2). */
  url: string;
  /** Other host names that route here (`registry-1.docker.io`). */
  aliases: string[];
  /** One-part names get `library/` (Docker Hub). */
  libraryPrefix: boolean;
  /** Credentials the mirror uses upstream (HTTP Basic at the token realm or the registry). */
  username?: string;
  password?: string;
  /** Seconds a tag is trusted without revalidation (default: cache.tagTtl). */
  tagTtl: number;
}

export interface CacheConfig {
  /** Seconds a tag is trusted without revalidation (upstreams may override). */
  tagTtl: number;
  /** Bytes of manifests kept in memory. */
  memoryBytes: number;
  /** Seconds an upstream "not found" is remembered. */
  negativeTtl: number;
  /** Byte cap of the blobs on disk (undefined: none). Above it, least recently used images are evicted. */
  maxBytes: number | undefined;
  /** Free bytes to keep on the cache's filesystem (undefined: none). */
  minFreeBytes: number | undefined;
  /** Free share (0–100) of the cache's filesystem to keep (undefined: none). */
  minFreePercent: number | undefined;
  /** Eviction goes down to this fraction of the cap (0.5–1). */
  lowWatermark: number;
  /** Images never evicted: reference patterns (`docker.io/library/postgres:14.5`, `ghcr.io/acme/**`). */
  pin: string[];
  /** Seconds between checks of the limits (eviction also runs soon after new blobs arrive). */
  evictionInterval: number;
}

/** Client authentication and access policy (src/access/); off: anyone who can connect pulls anything. */
export interface AuthConfig {
  enabled: boolean;
  /** htpasswd file of users with bcrypt hashes (`htpasswd -B`); required when enabled. */
  htpasswd: string | undefined;
  /** The access policy file (groups, anonymous networks, trusted proxies, rules); required when enabled. */
  policy: string | undefined;
  /** The service name in challenges and tokens (issuer and audience). */
  service: string;
  /** The token endpoint URL sent in challenges; empty: the listener's own origin + /token. */
  realm: string;
  /** Seconds a token is valid. */
  tokenTtl: number;
  /** File holding the token signing key (at least 32 bytes); empty: a random key per process. */
  tokenKeyFile: string | undefined;
  /** Policy group whose members may use the admin API. */
  adminGroup: string;
  /** Seconds a checked Basic login is remembered (bcrypt is slow on purpose); 0: check every request. */
  basicCacheSeconds: number;
  /** Failed logins per user and per address before each attempt waits 2^n s, up to maxDelaySeconds. */
  failedLogins: { free: number; maxDelaySeconds: number };
  /** Upstream fetches (cache misses) per client per minute; 0: no limit. */
  missesPerMinute: number;
}

/** Several replicas sharing one cache (src/fleet/): one upstream fetch per blob per fleet. Off: a single mirror. */
export interface FleetConfig {
  enabled: boolean;
  /** Redis for leases, fleet-wide readers and the eviction lock (`redis://[:password@]host:port[/db]`). Required when enabled. */
  redisUrl: string | undefined;
  /** This replica's id, unique in the fleet (empty in the file: host name and pid). */
  replicaId: string;
  /** The internal peer endpoint's listener (replicas stream in-progress downloads from each other). */
  listen: { host: string; port: number };
  /** URL other replicas reach this one's peer endpoint at (empty in the file: http://<host name>:<listen port>). */
  advertiseUrl: string;
  /** Shared secret every replica sends to the peer endpoint (at least 16 characters). Required when enabled. */
  secret: string | undefined;
  /** Milliseconds a download lease lives without renewal (renewed every third): how long waiters wait for a dead owner. */
  leaseTtlMs: number;
  /** Prefix of every Redis key the fleet uses (several fleets may share one Redis). */
  keyPrefix: string;
}

/** An S3-compatible object store holding the blobs (`storage.type: s3`). */
export interface S3StorageConfig {
  /** Endpoint URL (Ceph RGW, MinIO, R2); undefined: AWS's endpoint for the region. */
  endpoint: string | undefined;
  region: string;
  bucket: string;
  /** Prefix of every key (several mirrors can share a bucket); may be empty. */
  prefix: string;
  /** Bucket in the path instead of the host name (Ceph RGW, MinIO). */
  forcePathStyle: boolean;
  /** Static credentials; undefined: the SDK's default chain (AWS_* variables, profile, web identity, instance role). */
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  /** Bytes per multipart part (at least 5 MiB); blobs smaller than one part are one PUT. */
  partSize: number;
}

/** Where the cache is kept. */
export interface StorageConfig {
  /** fs: blobs under dataDir; s3: blobs in an S3 bucket (in-progress bytes still spool under dataDir). */
  type: 'fs' | 's3';
  s3: S3StorageConfig;
  /** Redis for tag records, membership and lifecycle state; url undefined: they stay under dataDir. */
  redis: { url: string | undefined; keyPrefix: string };
}

export interface ServeConfig {
  /**
   * nginx in front (deploy/nginx/regmirror.conf): the prefix of nginx's internal location over
   * `<dataDir>/blobs/` (e.g. `/_regmirror/blobs`). A cache hit of a complete blob on the filesystem
   * store, asked for by a request carrying `X-Regmirror-Accel: on`, is answered after the usual checks
   * with an empty body and `X-Accel-Redirect: <prefix>/<alg>/<2 hex>/<hex>`; nginx sends the file.
   * Undefined (the default, an empty string in the file): off, the mirror streams every blob.
   */
  accelRedirect: string | undefined;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * The one configuration object. Every default is in config/default.yaml (the only source): a file and
 * the environment are merged over it, and validateConfig refuses a tree missing any of its keys.
 */
export interface Config {
  /** Address of the registry listener. */
  listen: { host: string; port: number };
  /** Where blobs, records and state live. */
  dataDir: string;
  /** Never contact an upstream; serve only what is cached. */
  offline: boolean;
  /** The upstream of names that name none (no `ns=`, no host as the first path part). */
  defaultRegistry: string;
  /** Log level and format (JSON lines, or one pretty line per record for a terminal). */
  log: { level: LogLevel; format: 'json' | 'pretty' };
  cache: CacheConfig;
  /** The admin API's listener (cache summary, purge, pins, eviction); undefined: none. */
  admin: {
    listen: { host: string; port: number } | undefined;
    /** Host names the admin API answers by besides addresses, localhost and this machine's name (without auth: DNS rebinding). */
    hosts: string[];
  };
  /** How blobs leave the mirror. */
  serve: ServeConfig;
  /** Cold blob bodies are written to the filesystem store by a worker thread (src/offload/), off the event loop. */
  downloads: { thread: boolean };
  /**
   * V8's old generation may grow to (1 + growthPercent/100) × what survived the last full collection;
   * its young generation to two semi-spaces of maxSemiSpaceMiB. 0: V8 decides (src/heap.ts).
   */
  heap: { growthPercent: number; maxSemiSpaceMiB: number };
  /** Largest manifest and blob accepted from upstream (bytes); largest `n` of a page. */
  limits: { maxManifestBytes: number; maxBlobBytes: number; maxPageSize: number };
  /**
   * Milliseconds; `revalidate` is how long a tag revalidation may hold a client before the cached
   * copy is served; `clientIdle` closes a client connection with nothing read or written for that
   * long (0: never).
   */
  timeouts: { connect: number; headers: number; bodyIdle: number; revalidate: number; clientIdle: number };
  /** Assumed offline (upstream/availability.ts): the first and the longest offline period, ms; offlineMinMs 0 switches it off. */
  upstreamHealth: { offlineMinMs: number; offlineMaxMs: number };
  /** Certificate and key files: the registry listener serves HTTPS. */
  tls?: { cert: string; key: string };
  /** The registries mirrored, by key (`docker.io`). */
  upstreams: Record<string, UpstreamConfig>;
  auth: AuthConfig;
  fleet: FleetConfig;
  /** Blob store and metadata backends (filesystem by default; S3 and Redis for a fleet). */
  storage: StorageConfig;
}

export class ConfigError extends Error {
  constructor(readonly key: string, message: string) {
    super(`config: ${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Raw = Record<string, unknown>;

const isObject = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseYamlConfig(text: string, source: string): Raw {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(source, `not valid YAML: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (!isObject(doc)) throw new ConfigError(source, 'the top level must be a mapping');
  return doc;
}

/** Merges `over` onto `base`: mappings recursively, except `upstreams`, which is replaced whole. */
export function mergeRaw(base: Raw, over: Raw, path = ''): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const key = path ? `${path}.${k}` : k;
    out[k] = isObject(v) && isObject(base[k]) && key !== 'upstreams' ? mergeRaw(base[k], v, key) : v;
  }
  return out;
}

/** Applies MIRROR_* variables to the raw tree (so validation names the key they set). */
export function applyEnv(raw: Raw, env: Record<string, string | undefined>): Raw {
  const out = mergeRaw(raw, {});
  const set = (path: string[], value: unknown) => {
    let node: Raw = out;
    for (const p of path.slice(0, -1)) {
      node[p] = isObject(node[p]) ? { ...node[p] } : {};
      node = node[p] as Raw;
    }
    node[path[path.length - 1]!] = value;
  };
  if (env.MIRROR_LISTEN !== undefined) set(['listen'], env.MIRROR_LISTEN);
  if (env.MIRROR_DATA_DIR !== undefined) set(['dataDir'], env.MIRROR_DATA_DIR);
  if (env.MIRROR_OFFLINE !== undefined) set(['offline'], env.MIRROR_OFFLINE);
  if (env.MIRROR_TAG_TTL !== undefined) set(['cache', 'tagTtl'], env.MIRROR_TAG_TTL);
  if (env.MIRROR_CACHE_MAX_BYTES !== undefined) set(['cache', 'maxBytes'], env.MIRROR_CACHE_MAX_BYTES);
  if (env.MIRROR_ADMIN_LISTEN !== undefined) set(['admin', 'listen'], env.MIRROR_ADMIN_LISTEN);
  if (env.MIRROR_LOG_LEVEL !== undefined) set(['log', 'level'], env.MIRROR_LOG_LEVEL);
  if (env.MIRROR_LOG_FORMAT !== undefined) set(['log', 'format'], env.MIRROR_LOG_FORMAT);
  if (env.MIRROR_DEFAULT_REGISTRY !== undefined) set(['defaultRegistry'], env.MIRROR_DEFAULT_REGISTRY);
  const fleetVars: Array<[string, string]> = [['ENABLED', 'enabled'], ['REDIS_URL', 'redisUrl'], ['REPLICA_ID', 'replicaId'], ['LISTEN', 'listen'], ['ADVERTISE_URL', 'advertiseUrl'], ['SECRET', 'secret']];
  for (const [suffix, field] of fleetVars) {
    const v = env[`MIRROR_FLEET_${suffix}`];
    if (v !== undefined && v !== '') set(['fleet', field], v);
  }
  if (env.MIRROR_STORAGE_TYPE !== undefined) set(['storage', 'type'], env.MIRROR_STORAGE_TYPE);
  for (const [name, key] of [['ENDPOINT', 'endpoint'], ['REGION', 'region'], ['BUCKET', 'bucket'], ['PREFIX', 'prefix'], ['FORCE_PATH_STYLE', 'forcePathStyle'], ['ACCESS_KEY_ID', 'accessKeyId'], ['SECRET_ACCESS_KEY', 'secretAccessKey']] as const) {
    const v = env[`MIRROR_S3_${name}`];
    if (v !== undefined) set(['storage', 's3', key], v);
  }
  if (env.MIRROR_REDIS_URL !== undefined) set(['storage', 'redis', 'url'], env.MIRROR_REDIS_URL);
  if (env.MIRROR_REDIS_KEY_PREFIX !== undefined) set(['storage', 'redis', 'keyPrefix'], env.MIRROR_REDIS_KEY_PREFIX);
  if (env.MIRROR_SERVE_ACCEL_REDIRECT !== undefined) set(['serve', 'accelRedirect'], env.MIRROR_SERVE_ACCEL_REDIRECT);
  if (env.MIRROR_DOWNLOADS_THREAD !== undefined && env.MIRROR_DOWNLOADS_THREAD !== '') set(['downloads', 'thread'], env.MIRROR_DOWNLOADS_THREAD);
  if (env.MIRROR_HEAP_GROWTH_PERCENT !== undefined && env.MIRROR_HEAP_GROWTH_PERCENT !== '') set(['heap', 'growthPercent'], env.MIRROR_HEAP_GROWTH_PERCENT);
  if (env.MIRROR_HEAP_MAX_SEMI_SPACE_MIB !== undefined && env.MIRROR_HEAP_MAX_SEMI_SPACE_MIB !== '') set(['heap', 'maxSemiSpaceMiB'], env.MIRROR_HEAP_MAX_SEMI_SPACE_MIB);
  const upstreams = isObject(out.upstreams) ? out.upstreams : {};
  const fields: Array<[string, string]> = [['URL', 'url'], ['USERNAME', 'username'], ['PASSWORD', 'password'], ['TAG_TTL', 'tagTtl']];
  const used = new Set<string>();
  for (const name of Object.keys(upstreams)) {
    const key = envKey(name);
    for (const [suffix, field] of fields) {
      const variable = `MIRROR_UPSTREAM_${key}_${suffix}`;
      const v = env[variable];
      used.add(variable);
      // An empty variable (a Secret key left blank, a compose default) means "not set".
      if (v !== undefined && v !== '') set(['upstreams', name, field], v);
    }
  }
  // A variable for an upstream the configuration does not have (a typo, a key spelt as the host):
  // ignoring it would run with the credentials or URL it meant to replace.
  for (const [variable, v] of Object.entries(env)) {
    if (!variable.startsWith('MIRROR_UPSTREAM_') || used.has(variable) || v === undefined || v === '') continue;
    const keys = Object.keys(upstreams).map(envKey).join(', ');
    throw new ConfigError(variable, `sets no field of a configured upstream (MIRROR_UPSTREAM_<KEY>_URL|USERNAME|PASSWORD|TAG_TTL; keys: ${keys || 'none'})`);
  }
  return out;
}

export const envKey = (upstreamName: string) => upstreamName.toUpperCase().replace(/[^A-Z0-9]/g, '_');

/** Turns the raw tree into a Config or throws a ConfigError naming the key. */
export function validateConfig(raw: Raw): Config {
  const str = (key: string, v: unknown): string => {
    if (typeof v !== 'string' || v === '') throw new ConfigError(key, 'must be a non-empty string');
    return v;
  };
  const num = (key: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) throw new ConfigError(key, `must be a number between ${min} and ${max}`);
    return n;
  };
  const bool = (key: string, v: unknown): boolean => {
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new ConfigError(key, 'must be true or false');
  };
  const obj = (key: string, v: unknown): Raw => {
    if (v === undefined || v === null) return {};
    if (!isObject(v)) throw new ConfigError(key, 'must be a mapping');
    return v;
  };
  // Defaults live in config/default.yaml only: loadConfig merges it under every file, so a key missing
  // here was removed from it by hand.
  const req = (key: string, v: unknown): unknown => {
    if (v === undefined || v === null) throw new ConfigError(key, 'missing (config/default.yaml sets it; a file may override it, not remove it)');
    return v;
  };
  const known = (key: string, o: Raw, keys: string[]) => {
    for (const k of Object.keys(o)) if (!keys.includes(k)) throw new ConfigError(key ? `${key}.${k}` : k, 'unknown key');
  };

  known('', raw, ['listen', 'dataDir', 'offline', 'defaultRegistry', 'log', 'cache', 'admin', 'limits', 'timeouts', 'upstreamHealth', 'tls', 'upstreams', 'auth', 'storage', 'fleet', 'serve', 'downloads', 'heap']);
  // YAML reads a bare port (`listen: 8080`) as a number.
  const listen = parseListen(typeof raw.listen === 'number' ? String(raw.listen) : str('listen', raw.listen));
  const log = obj('log', raw.log);
  known('log', log, ['level', 'format']);
  const level = str('log.level', req('log.level', log.level));
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) throw new ConfigError('log.level', 'must be one of fatal, error, warn, info, debug, trace, silent');
  const format = str('log.format', req('log.format', log.format));
  if (format !== 'json' && format !== 'pretty') throw new ConfigError('log.format', 'must be json or pretty');
  const cache = obj('cache', raw.cache);
  known('cache', cache, ['tagTtl', 'memoryBytes', 'negativeTtl', 'maxBytes', 'minFreeBytes', 'minFreePercent', 'lowWatermark', 'pin', 'evictionInterval']);
  /** A size: bytes, or a string such as `64GiB` or `500MB`. */
  const size = (key: string, v: unknown, min: number, max?: number) => num(key, typeof v === 'string' ? parseSize(key, v) : v, min, max);
  const optNum = (key: string, v: unknown, min: number, max?: number) => (v === undefined || v === null || v === '' ? undefined : size(key, v, min, max));
  const pin = req('cache.pin', cache.pin);
  if (!Array.isArray(pin) || pin.some((p) => typeof p !== 'string')) throw new ConfigError('cache.pin', 'must be a list of reference patterns');
  for (const [i, p] of (pin as string[]).entries()) {
    const bad = validatePin(p);
    if (bad) throw new ConfigError(`cache.pin[${i}]`, bad);
  }
  const admin = obj('admin', raw.admin);
  known('admin', admin, ['listen', 'hosts']);
  const adminHosts = admin.hosts ?? [];
  if (!Array.isArray(adminHosts) || adminHosts.some((h) => typeof h !== 'string' || !isHostName(h))) throw new ConfigError('admin.hosts', 'must be a list of host names');
  const tagTtl = num('cache.tagTtl', req('cache.tagTtl', cache.tagTtl), 0, 365 * 86400);
  const serveRaw = obj('serve', req('serve', raw.serve));
  known('serve', serveRaw, ['accelRedirect']);
  const accel = req('serve.accelRedirect', serveRaw.accelRedirect);
  if (typeof accel !== 'string') throw new ConfigError('serve.accelRedirect', 'must be a string: the internal nginx location prefix, or empty');
  // It becomes the start of a header and of an nginx URI: plain path segments only, no dot segments.
  if (accel !== '' && (!/^(\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$/.test(accel) || accel.split('/').some((p) => p === '.' || p === '..'))) {
    throw new ConfigError('serve.accelRedirect', 'must be an absolute path like /_regmirror/blobs (letters, digits, . _ ~ -; no trailing slash, no dot segments), or empty for off');
  }
  const downloadsRaw = obj('downloads', req('downloads', raw.downloads));
  known('downloads', downloadsRaw, ['thread']);
  const heapRaw = obj('heap', req('heap', raw.heap));
  known('heap', heapRaw, ['growthPercent', 'maxSemiSpaceMiB']);
  const growthPercent = num('heap.growthPercent', req('heap.growthPercent', heapRaw.growthPercent), 0, 1000);
  if (!Number.isInteger(growthPercent)) throw new ConfigError('heap.growthPercent', 'must be a whole number of percent (0: V8 decides)');
  const maxSemiSpaceMiB = num('heap.maxSemiSpaceMiB', req('heap.maxSemiSpaceMiB', heapRaw.maxSemiSpaceMiB), 0, 1024);
  if (!Number.isInteger(maxSemiSpaceMiB)) throw new ConfigError('heap.maxSemiSpaceMiB', 'must be a whole number of MiB (0: V8 decides)');
  const limits = obj('limits', raw.limits);
  known('limits', limits, ['maxManifestBytes', 'maxBlobBytes', 'maxPageSize']);
  const timeouts = obj('timeouts', raw.timeouts);
  known('timeouts', timeouts, ['connect', 'headers', 'bodyIdle', 'revalidate', 'clientIdle']);
  const health = obj('upstreamHealth', raw.upstreamHealth);
  known('upstreamHealth', health, ['offlineMinMs', 'offlineMaxMs']);
  const offlineMinMs = num('upstreamHealth.offlineMinMs', req('upstreamHealth.offlineMinMs', health.offlineMinMs), 0, 3_600_000);
  const offlineMaxMs = num('upstreamHealth.offlineMaxMs', req('upstreamHealth.offlineMaxMs', health.offlineMaxMs), 0, 86_400_000);
  if (offlineMaxMs < offlineMinMs) throw new ConfigError('upstreamHealth.offlineMaxMs', 'must be at least upstreamHealth.offlineMinMs');
  const tlsRaw = raw.tls === undefined || raw.tls === null ? undefined : obj('tls', raw.tls);
  if (tlsRaw) known('tls', tlsRaw, ['cert', 'key']);

  const upstreamsRaw = obj('upstreams', raw.upstreams);
  const upstreams: Record<string, UpstreamConfig> = {};
  for (const [name, v] of Object.entries(upstreamsRaw)) {
    const key = `upstreams.${name}`;
    if (!/^[a-z0-9.-]+(:[0-9]+)?$/.test(name)) throw new ConfigError(key, 'an upstream key must be a registry host name like docker.io');
    const u = obj(key, v);
    known(key, u, ['url', 'aliases', 'libraryPrefix', 'username', 'password', 'tagTtl']);
    const url = str(`${key}.url`, u.url);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`${key}.url`, 'must be an http(s) URL');
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(`${key}.url`, 'must be an http(s) URL');
    const aliases = u.aliases ?? [];
    if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== 'string')) throw new ConfigError(`${key}.aliases`, 'must be a list of host names');
    const username = u.username === undefined || u.username === null ? undefined : str(`${key}.username`, u.username);
    const password = u.password === undefined || u.password === null ? undefined : str(`${key}.password`, u.password);
    if ((username === undefined) !== (password === undefined)) throw new ConfigError(`${key}.password`, 'username and password go together');
    upstreams[name] = {
      name,
      url: url.replace(/\/+$/, ''),
      aliases: (aliases as string[]).map((a) => a.toLowerCase()),
      libraryPrefix: bool(`${key}.libraryPrefix`, u.libraryPrefix ?? false),
      tagTtl: num(`${key}.tagTtl`, u.tagTtl ?? tagTtl, 0, 365 * 86400),
      ...(username !== undefined ? { username, password: password! } : {}),
    };
  }
  if (Object.keys(upstreams).length === 0) throw new ConfigError('upstreams', 'at least one upstream is needed');
  const defaultRegistry = str('defaultRegistry', req('defaultRegistry', raw.defaultRegistry));
  if (!upstreams[defaultRegistry]) throw new ConfigError('defaultRegistry', `names ${defaultRegistry}, which is not among the upstreams`);

  const authRaw = obj('auth', raw.auth);
  known('auth', authRaw, ['enabled', 'htpasswd', 'policy', 'service', 'realm', 'tokenTtl', 'tokenKeyFile', 'adminGroup', 'basicCacheSeconds', 'failedLogins', 'missesPerMinute']);
  const optStr = (key: string, v: unknown): string | undefined => (v === undefined || v === null || v === '' ? undefined : str(key, v));
  const authEnabled = bool('auth.enabled', req('auth.enabled', authRaw.enabled));
  const failedLogins = obj('auth.failedLogins', req('auth.failedLogins', authRaw.failedLogins));
  known('auth.failedLogins', failedLogins, ['free', 'maxDelaySeconds']);
  const auth: AuthConfig = {
    enabled: authEnabled,
    htpasswd: optStr('auth.htpasswd', authRaw.htpasswd),
    policy: optStr('auth.policy', authRaw.policy),
    service: str('auth.service', req('auth.service', authRaw.service)),
    realm: typeof req('auth.realm', authRaw.realm) === 'string' ? (authRaw.realm as string) : str('auth.realm', authRaw.realm),
    // At least 60: the docker client raises a shorter expires_in to 60 s and would keep using an expired token.
    tokenTtl: num('auth.tokenTtl', req('auth.tokenTtl', authRaw.tokenTtl), 60, 86400),
    tokenKeyFile: optStr('auth.tokenKeyFile', authRaw.tokenKeyFile),
    adminGroup: str('auth.adminGroup', req('auth.adminGroup', authRaw.adminGroup)),
    basicCacheSeconds: num('auth.basicCacheSeconds', req('auth.basicCacheSeconds', authRaw.basicCacheSeconds), 0, 3600),
    failedLogins: {
      free: num('auth.failedLogins.free', req('auth.failedLogins.free', failedLogins.free), 0, 1000),
      maxDelaySeconds: num('auth.failedLogins.maxDelaySeconds', req('auth.failedLogins.maxDelaySeconds', failedLogins.maxDelaySeconds), 1, 86400),
    },
    missesPerMinute: num('auth.missesPerMinute', req('auth.missesPerMinute', authRaw.missesPerMinute), 0),
  };
  if (auth.enabled && auth.htpasswd === undefined) throw new ConfigError('auth.htpasswd', 'an htpasswd file is required when auth.enabled is true');
  if (auth.enabled && auth.policy === undefined) throw new ConfigError('auth.policy', 'a policy file is required when auth.enabled is true');
  if (auth.realm !== '' && !/^https?:\/\/[^\s"]+$/.test(auth.realm)) throw new ConfigError('auth.realm', 'must be an http(s) URL of the token endpoint, or empty');

  const fleet = validateFleet(obj('fleet', raw.fleet), { str, num, bool, req, known });
  const storageRaw = obj('storage', raw.storage);
  known('storage', storageRaw, ['type', 's3', 'redis']);
  const storageType = str('storage.type', req('storage.type', storageRaw.type));
  if (storageType !== 'fs' && storageType !== 's3') throw new ConfigError('storage.type', 'must be fs or s3');
  const s3Raw = obj('storage.s3', req('storage.s3', storageRaw.s3));
  known('storage.s3', s3Raw, ['endpoint', 'region', 'bucket', 'prefix', 'forcePathStyle', 'accessKeyId', 'secretAccessKey', 'partSize']);
  const s3Endpoint = optStr('storage.s3.endpoint', s3Raw.endpoint);
  if (s3Endpoint !== undefined && !/^https?:\/\/[^\s/]+\/?$/.test(s3Endpoint)) throw new ConfigError('storage.s3.endpoint', 'must be an http(s) URL of the S3 endpoint (scheme, host and port only)');
  const s3Bucket = optStr('storage.s3.bucket', s3Raw.bucket);
  if (storageType === 's3' && s3Bucket === undefined) throw new ConfigError('storage.s3.bucket', 'a bucket is required when storage.type is s3');
  const s3Prefix = req('storage.s3.prefix', s3Raw.prefix);
  if (typeof s3Prefix !== 'string' || !/^[A-Za-z0-9!_.*'()/-]*$/.test(s3Prefix) || s3Prefix.startsWith('/')) throw new ConfigError('storage.s3.prefix', 'must be a key prefix of S3\'s safe characters such as "regmirror/" (may be empty)');
  const accessKeyId = optStr('storage.s3.accessKeyId', s3Raw.accessKeyId);
  const secretAccessKey = optStr('storage.s3.secretAccessKey', s3Raw.secretAccessKey);
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) throw new ConfigError('storage.s3.secretAccessKey', 'accessKeyId and secretAccessKey go together (both empty: the SDK default credential chain)');
  const partSizeRaw = req('storage.s3.partSize', s3Raw.partSize);
  const redisRaw = obj('storage.redis', req('storage.redis', storageRaw.redis));
  known('storage.redis', redisRaw, ['url', 'keyPrefix']);
  const redisUrl = optStr('storage.redis.url', redisRaw.url);
  if (redisUrl !== undefined && !/^rediss?:\/\/\S+$/.test(redisUrl)) throw new ConfigError('storage.redis.url', 'must be a redis:// or rediss:// URL');
  const keyPrefix = req('storage.redis.keyPrefix', redisRaw.keyPrefix);
  if (typeof keyPrefix !== 'string' || /\s/.test(keyPrefix)) throw new ConfigError('storage.redis.keyPrefix', 'must be a string without spaces (may be empty)');
  const storage: StorageConfig = {
    type: storageType,
    s3: {
      endpoint: s3Endpoint?.replace(/\/$/, ''),
      region: str('storage.s3.region', req('storage.s3.region', s3Raw.region)),
      bucket: s3Bucket ?? '',
      prefix: s3Prefix,
      forcePathStyle: bool('storage.s3.forcePathStyle', req('storage.s3.forcePathStyle', s3Raw.forcePathStyle)),
      accessKeyId,
      secretAccessKey,
      partSize: size('storage.s3.partSize', partSizeRaw, 5 * 1024 * 1024, 5 * 1024 ** 3),
    },
    redis: { url: redisUrl, keyPrefix },
  };

  return {
    listen,
    dataDir: str('dataDir', raw.dataDir),
    offline: bool('offline', req('offline', raw.offline)),
    defaultRegistry,
    log: { level: level as LogLevel, format },
    admin: {
      listen: admin.listen === undefined || admin.listen === null || admin.listen === '' ? undefined : parseListen(typeof admin.listen === 'number' ? String(admin.listen) : str('admin.listen', admin.listen), 'admin.listen'),
      hosts: (adminHosts as string[]).map((h) => h.toLowerCase()),
    },
    cache: {
      tagTtl,
      maxBytes: optNum('cache.maxBytes', cache.maxBytes, 1),
      minFreeBytes: optNum('cache.minFreeBytes', cache.minFreeBytes, 0),
      // A percentage, not a size: `10` or `10%` (a size such as 5b is refused).
      minFreePercent:
        cache.minFreePercent === undefined || cache.minFreePercent === null || cache.minFreePercent === ''
          ? undefined
          : num('cache.minFreePercent', typeof cache.minFreePercent === 'string' ? cache.minFreePercent.replace(/^\s*(\d+(?:\.\d+)?)\s*%?\s*$/, '$1') : cache.minFreePercent, 0, 99),
      lowWatermark: num('cache.lowWatermark', req('cache.lowWatermark', cache.lowWatermark), 0.5, 1),
      pin: pin as string[],
      evictionInterval: num('cache.evictionInterval', req('cache.evictionInterval', cache.evictionInterval), 1, 86400),
      memoryBytes: num('cache.memoryBytes', req('cache.memoryBytes', cache.memoryBytes), 0),
      negativeTtl: num('cache.negativeTtl', req('cache.negativeTtl', cache.negativeTtl), 0, 86400),
    },
    serve: { accelRedirect: accel === '' ? undefined : accel },
    downloads: { thread: bool('downloads.thread', req('downloads.thread', downloadsRaw.thread)) },
    heap: { growthPercent, maxSemiSpaceMiB },
    limits: {
      maxManifestBytes: num('limits.maxManifestBytes', req('limits.maxManifestBytes', limits.maxManifestBytes), 1024),
      maxBlobBytes: size('limits.maxBlobBytes', req('limits.maxBlobBytes', limits.maxBlobBytes), 1024 * 1024),
      maxPageSize: num('limits.maxPageSize', req('limits.maxPageSize', limits.maxPageSize), 1),
    },
    timeouts: {
      // At most what a Node timer takes (2^31 - 1 ms, ~24.8 days): a longer one fires at once.
      connect: num('timeouts.connect', req('timeouts.connect', timeouts.connect), 1, MAX_TIMER_MS),
      headers: num('timeouts.headers', req('timeouts.headers', timeouts.headers), 1, MAX_TIMER_MS),
      bodyIdle: num('timeouts.bodyIdle', req('timeouts.bodyIdle', timeouts.bodyIdle), 1, MAX_TIMER_MS),
      revalidate: num('timeouts.revalidate', req('timeouts.revalidate', timeouts.revalidate), 1, MAX_TIMER_MS),
      clientIdle: num('timeouts.clientIdle', req('timeouts.clientIdle', timeouts.clientIdle), 0, MAX_TIMER_MS),
    },
    upstreamHealth: { offlineMinMs, offlineMaxMs },
    ...(tlsRaw ? { tls: { cert: str('tls.cert', tlsRaw.cert), key: str('tls.key', tlsRaw.key) } } : {}),
    upstreams,
    auth,
    storage,
    fleet,
  };
}

interface Checks {
  str: (key: string, v: unknown) => string;
  num: (key: string, v: unknown, min: number, max?: number) => number;
  bool: (key: string, v: unknown) => boolean;
  req: (key: string, v: unknown) => unknown;
  known: (key: string, o: Raw, keys: string[]) => void;
}

function validateFleet(f: Raw, { str, num, bool, req, known }: Checks): FleetConfig {
  known('fleet', f, ['enabled', 'redisUrl', 'replicaId', 'listen', 'advertiseUrl', 'secret', 'leaseTtlMs', 'keyPrefix']);
  const text = (key: string, v: unknown): string => {
    const r = req(`fleet.${key}`, v);
    if (typeof r !== 'string') throw new ConfigError(`fleet.${key}`, 'must be a string');
    return r;
  };
  const enabled = bool('fleet.enabled', req('fleet.enabled', f.enabled));
  const redisUrl = text('redisUrl', f.redisUrl);
  const secret = text('secret', f.secret);
  const advertiseUrl = text('advertiseUrl', f.advertiseUrl);
  const replicaId = text('replicaId', f.replicaId);
  const listenRaw = req('fleet.listen', f.listen);
  const listen = parseListen(typeof listenRaw === 'number' ? String(listenRaw) : str('fleet.listen', listenRaw), 'fleet.listen');
  if (enabled) {
    if (!/^rediss?:\/\/[^\s]+$/.test(redisUrl)) throw new ConfigError('fleet.redisUrl', 'a redis:// or rediss:// URL is required when fleet.enabled is true');
    if (secret.length < 16) throw new ConfigError('fleet.secret', 'a shared secret of at least 16 characters is required when fleet.enabled is true (the same on every replica)');
  }
  if (advertiseUrl !== '' && !/^https?:\/\/[^\s/]+\/?$/.test(advertiseUrl)) throw new ConfigError('fleet.advertiseUrl', 'must be an http(s) URL of scheme, host and port only, or empty');
  if (replicaId !== '' && !/^[A-Za-z0-9._-]{1,64}$/.test(replicaId)) throw new ConfigError('fleet.replicaId', 'must be 1-64 letters, digits, dots, dashes or underscores, or empty');
  return {
    enabled,
    redisUrl: redisUrl === '' ? undefined : redisUrl,
    replicaId,
    listen,
    advertiseUrl: advertiseUrl.replace(/\/+$/, ''),
    secret: secret === '' ? undefined : secret,
    leaseTtlMs: num('fleet.leaseTtlMs', req('fleet.leaseTtlMs', f.leaseTtlMs), 500, 600_000),
    keyPrefix: str('fleet.keyPrefix', req('fleet.keyPrefix', f.keyPrefix)),
  };
}

/** `10GiB`, `500 MB`, `1e9` or a plain number of bytes. */
function parseSize(key: string, s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$/i.exec(s);
  if (!m) throw new ConfigError(key, 'must be a size such as 10GiB, 500MB or a number of bytes');
  const units: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3, tb: 1e12, tib: 1024 ** 4 };
  return Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]!);
}

function parseListen(s: string, key = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  if (!m) throw new ConfigError(key, 'must be host:port or a port');
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(key, 'port must be at most 65535');
  const host = m[1] || m[2] || '0.0.0.0';
  // Checked here, not at bind: `bad host:5000` would otherwise fail later as a DNS error naming no key.
  if (m[1] ? isIP(host) !== 6 : !isIP(host) && !isHostName(host)) throw new ConfigError(key, `${JSON.stringify(host)} is not an IP address or host name`);
  return { host, port };
}

/** An RFC 1123 host name (letters, digits, hyphens; dot-separated labels), not a malformed IPv4 address. */
function isHostName(s: string): boolean {
  return s.length <= 253 && /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(s) && !/^[\d.]+$/.test(s);
}

export interface LoadOptions {
  /** The embedded default YAML text. */
  defaults: string;
  /** A user config file to merge over the defaults. */
  file?: string;
  env?: Record<string, string | undefined>;
}

/** A Config from a partial raw tree merged over the embedded defaults (for the tests and tools that build one in code). */
export function configWithDefaults(defaults: string, raw: Raw, env: Record<string, string | undefined> = {}): Config {
  return validateConfig(applyEnv(mergeRaw(parseYamlConfig(defaults, 'default config'), raw), env));
}

export function loadConfig(opts: LoadOptions): Config {
  let raw = parseYamlConfig(opts.defaults, 'default config');
  if (opts.file) {
    let text: string;
    try {
      text = readFileSync(opts.file, 'utf8');
    } catch (e) {
      throw new ConfigError('--config', `cannot read ${opts.file}: ${(e as Error).message}`);
    }
    raw = mergeRaw(raw, parseYamlConfig(text, opts.file));
  }
  return validateConfig(applyEnv(raw, opts.env ?? {}));
}
