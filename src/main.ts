#!/usr/bin/env node
/**
 * The composition root and CLI: the only place that reads argv and the environment, opens the
 * listening socket, handles signals and exits.
 *
 *   regmirror [serve] [--config FILE]  start the mirror (embedded default config when no file)
 *   regmirror --print-config           print the effective configuration (credentials hidden) and exit
 *   regmirror cache <command> …        the cache lifecycle CLI (src/cli/cache.ts), on a running
 *                                      mirror's admin API or a stopped mirror's data directory
 *   regmirror import|export|prefetch …  air-gapped and CI sites (src/cli/import.ts, export.ts, prefetch.ts)
 */
import { existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline/promises';
import { runCacheCli, type CacheCliDeps } from './cli/cache.js';
import type { AirgapCliDeps } from './cli/airgap-common.js';
import { runExportCli } from './cli/export.js';
import { runImportCli } from './cli/import.js';
import { runPrefetchCli } from './cli/prefetch.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createServer } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { createMirrorServer } from './http/server.js';
import { HtpasswdError } from './access/htpasswd-error.js';
import { PolicyError } from './access/policy.js';
import { applyHeapGrowth, capYoungGeneration } from './heap.js';
import { createLogger } from './logger.js';
import { buildMirror, openAirgap, openCacheAdmin, openPrefetch } from './mirror.js';
import { DataDirBusyError } from './storage/data-lock.js';

const SHUTDOWN_DEADLINE_MS = 25_000;
const DEFAULT_CONFIG_URL = new URL('../config/default.yaml', import.meta.url);

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  if (argv[0] === 'cache') {
    // `regmirror cache ls | head`: a reader that went away ends the command quietly.
    process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 1));
    const code = await runCacheCli(argv.slice(1), cacheCliDeps(env));
    // Exit once what was written has been handed to the OS (nothing the cache opened keeps us here).
    process.stdout.write('', () => process.exit(code));
    return;
  }
  if (argv[0] === 'prefetch') {
    process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 1));
    const common = airgapCliDeps(env);
    const code = await runPrefetchCli(argv.slice(1), {
      stdout: common.stdout,
      stderr: common.stderr,
      env,
      fetch: common.fetch,
      loadConfig: (file) => common.loadConfig(file),
      openPrefetch: (config) => openPrefetch(config),
      // Ctrl-C cancels the job (a second one exits at once); what was fetched stays cached.
      onInterrupt: (cancel) => process.once('SIGINT', () => {
        process.once('SIGINT', () => process.exit(130));
        cancel();
      }),
    });
    process.stdout.write('', () => process.exit(code));
    return;
  }
  if (argv[0] === 'import' || argv[0] === 'export') {
    process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 1));
    const run = argv[0] === 'import' ? runImportCli : runExportCli;
    const code = await run(argv.slice(1), airgapCliDeps(env));
    process.stdout.write('', () => process.exit(code));
    return;
  }
  const args = parseArgs(argv[0] === 'serve' ? argv.slice(1) : argv);
  let config: Config;
  try {
    config = loadConfig({ defaults: readFileSync(DEFAULT_CONFIG_URL, 'utf8'), ...(args.config ? { file: args.config } : {}), env });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`regmirror: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (args.printConfig) {
    process.stdout.write(`${JSON.stringify(redact(config), null, 2)}\n`);
    return;
  }
  const logger = createLogger(config);
  // The server only: a CLI command's short life gains nothing from a tighter heap.
  applyHeapGrowth(config.heap.growthPercent);
  const young = capYoungGeneration(config.heap.maxSemiSpaceMiB);
  let mirror: Awaited<ReturnType<typeof buildMirror>>;
  try {
    mirror = await buildMirror(config, { logger, processMetrics: true, downloadThread: 'at-start', onThreadOnline: young.reassert });
  } catch (e) {
    // An unreadable or invalid htpasswd, policy or token key file (auth): say which, and stop.
    // A data directory that cannot be one (a file, no permission): the path and the reason, not a stack.
    const fsError = (e as NodeJS.ErrnoException)?.code !== undefined && (e as NodeJS.ErrnoException)?.path !== undefined;
    // Another process holding the data directory (a mirror, an offline import): who, and stop.
    if (e instanceof ConfigError || e instanceof HtpasswdError || e instanceof PolicyError || e instanceof DataDirBusyError || fsError) {
      process.stderr.write(`regmirror: cannot start: ${(e as Error).message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const tls = config.tls ? { cert: readTlsFile('tls.cert', config.tls.cert), key: readTlsFile('tls.key', config.tls.key) } : undefined;
  const server = createMirrorServer({ fetch: mirror.app.fetch, idleTimeoutMs: config.timeouts.clientIdle, ...(tls ? { tls } : {}) });
  server.listen(config.listen.port, config.listen.host, () => {
    const info = server.address() as AddressInfo;
    logger.info(
      { address: info.address, port: info.port, tls: Boolean(tls), dataDir: config.dataDir, offline: config.offline, upstreams: Object.keys(config.upstreams) },
      'regmirror listening',
    );
  });
  server.on('error', (e: NodeJS.ErrnoException) => {
    // Before it listens: the address cannot be had (in use, not this host's): one line naming the key, as a bad config.
    if (!server.listening && e.syscall !== undefined) {
      process.stderr.write(`regmirror: cannot start: listen: cannot listen on ${config.listen.host}:${config.listen.port}: ${e.code ?? e.message}\n`);
      process.exit(2);
    }
    logger.error({ err: e.message }, 'server error');
    process.exit(1);
  });
  // The admin API on its own listener (plain HTTP; loopback by default).
  const adminListen = config.admin.listen;
  const adminListener = getRequestListener(mirror.adminApp.fetch);
  const adminServer = adminListen ? createServer((req, res) => void adminListener(req, res)) : undefined;
  if (adminServer && adminListen) {
    adminServer.listen(adminListen.port, adminListen.host, () => {
      const info = adminServer.address() as AddressInfo;
      logger.info({ address: info.address, port: info.port }, 'admin API listening');
    });
    // The registry keeps serving without its admin API (say so loudly): pulls matter more than purges.
    adminServer.on('error', (e) => logger.error({ err: e.message, address: `${adminListen.host}:${adminListen.port}` }, 'admin API not available'));
  }

  // Fleet mode: the internal peer endpoint on its own listener (kept off the load balancer; see src/fleet/peer-endpoint.ts).
  const fleetListen = config.fleet.listen;
  const peerServer = mirror.fleet ? createServer(mirror.fleet.peerHandler) : undefined;
  if (peerServer) {
    // As on the registry listener: a peer that stopped reading (frozen, partitioned) must not hold
    // a download's reader or an open blob (which eviction then skips) for ever.
    peerServer.timeout = config.timeouts.clientIdle;
    peerServer.listen(fleetListen.port, fleetListen.host, () => {
      const info = peerServer.address() as AddressInfo;
      logger.info({ address: info.address, port: info.port, replicaId: mirror.fleet?.replicaId }, 'fleet peer endpoint listening');
    });
    // Without it the other replicas cannot join this one's downloads: they wait for its leases, then fetch themselves.
    peerServer.on('error', (e) => logger.error({ err: e.message, address: `${fleetListen.host}:${fleetListen.port}` }, 'fleet peer endpoint not available'));
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const deadline = Date.now() + SHUTDOWN_DEADLINE_MS;
    logger.info({ signal, inflightDownloads: mirror.registry.inflightDownloads }, 'shutting down: no new connections; in-flight work gets 25 s');
    // Stop accepting; idle keep-alive connections go now, busy ones when their response ends.
    const closed = new Promise<void>((r) => server.close(() => r()));
    adminServer?.close();
    adminServer?.closeAllConnections();
    // Peers streaming from this replica keep their connections until its downloads end (drain below).
    peerServer?.close();
    // Keep-alive connections turn idle as their responses end: close them as they do.
    const closeIdle = () => (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    closeIdle();
    setInterval(closeIdle, 250).unref();
    void (async () => {
      // Downloads finish (verified, renamed into the cache) or are left in tmp/, which the next start
      // sweeps: either way the cache stays consistent.
      const drained = await mirror.registry.drain(Math.max(0, deadline - Date.now()));
      await closed;
      await mirror.close();
      logger.info({ drained }, 'stopped');
      process.exit(0);
    })();
    setTimeout(() => {
      logger.warn({ inflightDownloads: mirror.registry.inflightDownloads }, 'shutdown deadline reached; exiting (partial downloads are swept at next start)');
      process.exit(0);
    }, SHUTDOWN_DEADLINE_MS).unref();
  };
  // SIGHUP: reread the htpasswd and policy files (auth); open connections are untouched, a bad file keeps the old ones.
  process.on('SIGHUP', () => {
    if (!mirror.access) return logger.info({}, 'SIGHUP: access control is off; nothing to reload');
    const err = mirror.access.reload();
    if (err) logger.error({ err: err.message }, 'SIGHUP: access files not reloaded; the previous ones stay in force');
    else logger.info({}, 'SIGHUP: htpasswd and policy reloaded');
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function parseArgs(argv: string[]): { config?: string; printConfig: boolean } {
  const out: { config?: string; printConfig: boolean } = { printConfig: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c' || a.startsWith('--config=')) {
      const file = a.startsWith('--config=') ? a.slice('--config='.length) : argv[++i];
      // Without this the server would start on the embedded defaults, not the file meant.
      if (!file) usageError(`${a.replace(/=$/, '')} needs a file`);
      out.config = file;
    }
    else if (a === '--print-config') out.printConfig = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        [
          'usage: regmirror [serve] [--config FILE | -c FILE] [--print-config]',
          '       regmirror cache <command> [options]   inspect and manage the cache (regmirror cache --help)',
          '       regmirror import BUNDLE.tar|DIR|-     add an OCI layout bundle to the cache (regmirror import --help)',
          '       regmirror export -o BUNDLE.tar IMAGE… write cached images as an OCI layout tar (regmirror export --help)',
          '       regmirror prefetch IMAGE…             fill the cache ahead of pulls (regmirror prefetch --help)',
          '',
          'FILE (or MIRROR_CONFIG) is merged over the embedded defaults; MIRROR_* variables over both (README).',
          'exit: 0 stopped cleanly; 1 a failure while running; 2 bad usage or configuration (one line says which).',
          '',
        ].join('\n'),
      );
      process.exit(0);
    } else usageError(`unknown argument ${a}`);
  }
  if (out.config === undefined && process.env.MIRROR_CONFIG) out.config = process.env.MIRROR_CONFIG;
  return out;
}

/** A TLS file the config names; unreadable: one line naming the key, exit 2. */
function readTlsFile(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    process.stderr.write(`regmirror: cannot start: ${key}: cannot read ${file}: ${(e as Error).message}\n`);
    process.exit(2);
  }
}

/** One line saying what is wrong, the usage, exit 2. */
function usageError(message: string): never {
  process.stderr.write(`regmirror: ${message}\n${SERVE_USAGE}\n`);
  process.exit(2);
}

const SERVE_USAGE = 'usage: regmirror [serve] [--config FILE | -c FILE] [--print-config]   (regmirror --help for every command)';

/** What the cache CLI gets from the process: streams, terminal, fetch, config, the stopped-mirror admin. */
function cacheCliDeps(env: NodeJS.ProcessEnv): CacheCliDeps {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdinIsTTY: process.stdin.isTTY === true,
    prompt: async (question) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(question);
      } finally {
        rl.close();
      }
    },
    env,
    // With auth on, the admin API wants a member of auth.adminGroup: MIRROR_ADMIN_USER / MIRROR_ADMIN_PASSWORD.
    fetch: (input, init) => fetch(input, adminCredentials(init, env)),
    loadConfig: (file) => loadConfig({ defaults: readFileSync(DEFAULT_CONFIG_URL, 'utf8'), ...(file ? { file } : {}), env }),
    openCacheAdmin: async (config) => {
      if (!existsSync(config.dataDir)) throw new Error(`data directory ${config.dataDir} does not exist`);
      return openCacheAdmin(config);
    },
  };
}

/** What `regmirror import|export` get from the process. */
function airgapCliDeps(env: NodeJS.ProcessEnv): AirgapCliDeps {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env,
    // Admin API uploads (import --admin) carry the admin credentials, as `regmirror cache` does.
    fetch: (input, init) => fetch(input, adminCredentials(init, env)),
    loadConfig: (file) => loadConfig({ defaults: readFileSync(DEFAULT_CONFIG_URL, 'utf8'), ...(file ? { file } : {}), env }),
    openAirgap: async (config, opts) => {
      // An import may fill a new site's empty data directory; an export needs a cache.
      if (!opts.forImport && !existsSync(config.dataDir)) throw new Error(`data directory ${config.dataDir} does not exist`);
      return openAirgap(config, opts);
    },
  };
}

/** Adds HTTP Basic from MIRROR_ADMIN_USER / MIRROR_ADMIN_PASSWORD (when both are set) to an admin API request. */
function adminCredentials(init: RequestInit | undefined, env: NodeJS.ProcessEnv): RequestInit | undefined {
  const user = env.MIRROR_ADMIN_USER;
  const password = env.MIRROR_ADMIN_PASSWORD;
  if (!user || password === undefined) return init;
  const headers = new Headers(init?.headers);
  headers.set('authorization', `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`);
  return { ...init, headers };
}

/** A URL with its user and password (redis://:secret@host) replaced. */
const hideUserinfo = (url: string): string => url.replace(/\/\/([^@/]*)@/, '//[redacted]@');

function redact(config: Config): unknown {
  const upstreams = Object.fromEntries(Object.entries(config.upstreams).map(([k, u]) => [k, { ...u, ...(u.password ? { password: '[redacted]' } : {}) }]));
  const { s3, redis } = config.storage;
  const storage = {
    ...config.storage,
    s3: { ...s3, ...(s3.secretAccessKey ? { secretAccessKey: '[redacted]' } : {}) },
    // A password in the Redis URL (redis://:secret@host) is a credential too.
    redis: { ...redis, ...(redis.url ? { url: hideUserinfo(redis.url) } : {}) },
  };
  // The fleet's shared secret, and a password in its Redis URL.
  const fleet = { ...config.fleet, ...(config.fleet.secret ? { secret: '[redacted]' } : {}), ...(config.fleet.redisUrl ? { redisUrl: hideUserinfo(config.fleet.redisUrl) } : {}) };
  return { ...config, upstreams, storage, fleet };
}

main(process.argv.slice(2), process.env).catch((e: unknown) => {
  process.stderr.write(`regmirror: ${e instanceof Error && e.stack ? e.stack : String(e)}\n`);
  process.exit(1);
});
