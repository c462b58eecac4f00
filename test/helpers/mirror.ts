/**
 * Builds a mirror for tests: a temp data dir, a config pointing at local upstreams, in-process
 * (`app.request`) or listening on a loopback port. Each call gets its own metrics registry and clock.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { createMirrorServer } from '../../src/http/server.js';
import { configWithDefaults, type Config } from '../../src/config.js';
import { buildMirror, type Mirror, type MirrorOptions } from '../../src/mirror.js';
import { listenOn } from './ports.js';

export interface TestMirrorOptions {
  /** upstream key -> settings; e.g. { 'docker.io': { url: fake.url, libraryPrefix: true } } */
  upstreams: Record<string, { url: string; libraryPrefix?: boolean; username?: string; password?: string; tagTtl?: number; aliases?: string[] }>;
  defaultRegistry?: string;
  offline?: boolean;
  tagTtl?: number;
  dataDir?: string;
  /** Extra raw config merged at the top level (timeouts, limits, cache). */
  raw?: Record<string, unknown>;
  listen?: boolean;
  /** Injected clock; tests move `clock.now` forward. */
  clock?: { now: number };
  /** More options for buildMirror (e.g. `lifecycleTimers: false` to drive eviction by hand). */
  mirrorOptions?: MirrorOptions;
}

export interface TestMirror extends Mirror {
  config: Config;
  dataDir: string;
  /** Set when `listen: true`. */
  url: string;
  /** GET/HEAD etc. in-process through app.request. */
  request(path: string, init?: RequestInit): Promise<Response>;
  /** Reads a metric's current value (sums matching series). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  stop(opts?: { keepData?: boolean }): Promise<void>;
}

/** The embedded default config: what the mirror starts from, under each test's settings. */
const DEFAULT_CONFIG = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8');

export async function startMirror(opts: TestMirrorOptions): Promise<TestMirror> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'mirror-test-')));
  const config = configWithDefaults(DEFAULT_CONFIG, {
    listen: '127.0.0.1:0',
    dataDir,
    offline: opts.offline ?? false,
    defaultRegistry: opts.defaultRegistry ?? 'docker.io',
    log: { level: 'silent' },
    cache: { tagTtl: opts.tagTtl ?? 300 },
    timeouts: { connect: 2000, headers: 5000, bodyIdle: 5000 },
    upstreams: opts.upstreams,
    ...(opts.raw ?? {}),
  });
  const clock = opts.clock;
  const mirror = await buildMirror(config, { ...(clock ? { now: () => clock.now } : {}), ...opts.mirrorOptions });
  let server: Server | undefined;
  let url = '';
  if (opts.listen) {
    server = createMirrorServer({ fetch: mirror.app.fetch, idleTimeoutMs: config.timeouts.clientIdle });
    url = `http://127.0.0.1:${await listenOn(server)}`;
  }
  return {
    ...mirror,
    config,
    dataDir,
    url,
    request: async (path, init) => mirror.app.request(path, init),
    metric: async (name, labels = {}) => {
      const m = (await mirror.promRegistry.getMetricsAsJSON()).find((x) => x.name === name);
      if (!m) throw new Error(`no metric ${name}`);
      let sum = 0;
      for (const v of m.values as Array<{ value: number; labels: Record<string, string | number> }>) {
        if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) sum += v.value;
      }
      return sum;
    },
    stop: async ({ keepData = false } = {}) => {
      if (server) {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        await new Promise<void>((r) => server.close(() => r()));
      }
      await mirror.close();
      if (!keepData && !opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The Accept header docker sends for manifests. */
export const DOCKER_ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
].join(', ');
