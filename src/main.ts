#!/usr/bin/env node
/**
 * The composition root and CLI: the only place that reads argv and the environment, opens the
 * listening socket, handles signals and exits.
 *
 *   regmirror [--config FILE]        start the mirror (embedded default config when no file)
 *   regmirror --print-config         print the effective configuration (credentials hidden) and exit
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createMirrorServer } from './http/server.js';
import { createLogger } from './logger.js';
import { buildMirror } from './mirror.js';

const SHUTDOWN_DEADLINE_MS = 25_000;
const DEFAULT_CONFIG_URL = new URL('../config/default.yaml', import.meta.url);

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const args = parseArgs(argv);
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
  const mirror = await buildMirror(config, { logger, processMetrics: true });
  const tls = config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : undefined;
  const server = createMirrorServer({ fetch: mirror.app.fetch, ...(tls ? { tls } : {}) });
  server.listen(config.listen.port, config.listen.host, () => {
    const info = server.address() as AddressInfo;
    logger.info(
      { address: info.address, port: info.port, tls: Boolean(tls), dataDir: config.dataDir, offline: config.offline, upstreams: Object.keys(config.upstreams) },
      'regmirror listening',
    );
  });
  server.on('error', (e) => {
    logger.error({ err: e.message }, 'server error');
    process.exit(1);
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const deadline = Date.now() + SHUTDOWN_DEADLINE_MS;
    logger.info({ signal, inflightDownloads: mirror.registry.inflightDownloads }, 'shutting down: no new connections; in-flight work gets 25 s');
    // Stop accepting; idle keep-alive connections go now, busy ones when their response ends.
    const closed = new Promise<void>((r) => server.close(() => r()));
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
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function parseArgs(argv: string[]): { config?: string; printConfig: boolean } {
  const out: { config?: string; printConfig: boolean } = { printConfig: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') out.config = argv[++i];
    else if (a.startsWith('--config=')) out.config = a.slice('--config='.length);
    else if (a === '--print-config') out.printConfig = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: regmirror [--config FILE] [--print-config]\n');
      process.exit(0);
    } else {
      process.stderr.write(`regmirror: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  if (out.config === undefined && process.env.MIRROR_CONFIG) out.config = process.env.MIRROR_CONFIG;
  return out;
}

function redact(config: Config): unknown {
  const upstreams = Object.fromEntries(Object.entries(config.upstreams).map(([k, u]) => [k, { ...u, ...(u.password ? { password: '[redacted]' } : {}) }]));
  return { ...config, upstreams };
}

main(process.argv.slice(2), process.env).catch((e: unknown) => {
  process.stderr.write(`regmirror: ${e instanceof Error && e.stack ? e.stack : String(e)}\n`);
  process.exit(1);
});
