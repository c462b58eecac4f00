/**
 * Records in Redis, and Redis going away (issue 14, "Redis unreachable → each replica falls back and
 * keeps serving"): a mirror with fs blobs and its records in a real redis-server keeps serving what
 * it recorded itself, records what it learns meanwhile, even across a restart during the outage,
 * and deletes nothing (purge, GC and pinning fail rather than act on a partial view); a metric and
 * one log line per switch say so; with Redis back, records land in Redis again.
 */
import { rm } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/observability/types.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, MT, type Image } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { redisServerAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { requireTools } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';

const SKIP = requireTools('Redis meta store outage', { 'redis-server': redisServerAvailable() });

/** A logger that keeps every line (level and message) for the assertions. */
function collectingLogger(): Logger & { lines: Array<{ level: string; msg: string | undefined }> } {
  const lines: Array<{ level: string; msg: string | undefined }> = [];
  const at = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

describe.skipIf(SKIP !== undefined)('records in Redis while Redis stops and starts again', () => {
  let redis: RedisServer;
  let hub: FakeUpstream;
  let raw: Redis;
  const mk = (name: string): Image => makeImage({ layers: [makeLayer([{ path: `${name}.txt`, content: `layer of ${name}` }])] });
  const before = mk('before');
  const during = mk('during');
  const after = mk('after');

  beforeAll(async () => {
    [redis, hub] = await Promise.all([startRedis(), FakeUpstream.start()]);
    raw = new Redis(redis.url, { maxRetriesPerRequest: 1, lazyConnect: true });
    raw.on('error', () => undefined);
    hub.putImage('library/before', before, 'v1');
    hub.putImage('library/during', during, 'v1');
    hub.putImage('library/after', after, 'v1');
  });
  afterAll(async () => {
    raw?.disconnect();
    await Promise.all([redis?.close(), hub?.close()]);
  });

  const blobGets = (img: Image) => hub.requests.filter((r) => r.kind === 'blob' && r.method === 'GET' && [img.config.digest, ...img.layers.map((l) => l.digest)].some((d) => r.path.endsWith(d))).length;
  const manifestGets = (repo: string) => hub.requests.filter((r) => r.kind === 'manifest' && r.method === 'GET' && r.path.includes(`/${repo}/`)).length;
  const mode = async (m: TestMirror) => ({ remote: await m.metric('mirror_meta_store_mode', { mode: 'remote' }), local: await m.metric('mirror_meta_store_mode', { mode: 'local' }) });
  const said = (log: ReturnType<typeof collectingLogger>, prefix: string) => log.lines.filter((l) => l.msg?.startsWith(prefix)).length;

  /** Pulls by tag as a client does; every body checked against its digest. */
  const pull = async (m: TestMirror, repo: string, img: Image) => {
    const res = await m.request(`/v2/${repo}/manifests/v1`, { headers: { accept: MT.ociManifest } });
    expect(res.status, `${repo}:v1 manifest`).toBe(200);
    expect(digestOf(Buffer.from(await res.arrayBuffer()))).toBe(img.manifest.digest);
    for (const b of [img.config, ...img.layers]) {
      const r = await m.request(`/v2/${repo}/blobs/${b.digest}`);
      expect(r.status, `${repo} blob ${b.digest}`).toBe(200);
      expect(digestOf(Buffer.from(await r.arrayBuffer()))).toBe(b.digest);
    }
  };

  it('serves its own records while Redis is down (also after a restart), says so once, and writes to Redis again once it is back', async () => {
    const start = (log: Logger, dataDir?: string) =>
      startMirror({
        upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
        ...(dataDir ? { dataDir } : {}),
        raw: { storage: { type: 'fs', redis: { url: redis.url, keyPrefix: 'outage:' } } },
        mirrorOptions: { lifecycleTimers: false, logger: log },
      });
    const log1 = collectingLogger();
    const first = await start(log1);
    let second: TestMirror | undefined;
    let firstRunning = true;
    try {
      expect(await mode(first)).toEqual({ remote: 1, local: 0 });
      expect(await first.metric('mirror_meta_store_transitions_total', { to: 'local' })).toBe(0);
      await pull(first, 'before', before);
      expect(blobGets(before)).toBe(2);
      expect(await raw.hexists('outage:tags|docker.io/library/before', 'v1')).toBe(1);

      await redis.stop();
      await waitFor(async () => (await mode(first)).local === 1, 10_000, 'the mirror to notice Redis is gone');
      // The same pull, and a new image: served and recorded without Redis.
      await pull(first, 'before', before);
      await pull(first, 'during', during);
      await pull(first, 'during', during);
      expect(blobGets(before)).toBe(2);
      expect(blobGets(during)).toBe(2);
      // The catalog is the shared store's whole list: unavailable, not partial.
      expect((await first.request('/v2/_catalog')).status).toBe(503);
      // The lifecycle never works from a partial local view: purge, GC and pinning fail and delete nothing.
      await expect(first.admin.purge({ upstream: 'docker.io', repo: 'library/before' })).rejects.toThrow(/unavailable/);
      await expect(first.admin.gc()).rejects.toThrow(/unavailable/);
      await expect(first.admin.pin('docker.io/library/before')).rejects.toThrow(/unavailable/);
      expect(await first.admin.pins()).toEqual([]);
      expect(await mode(first)).toEqual({ remote: 0, local: 1 });
      expect(await first.metric('mirror_meta_store_transitions_total', { to: 'local' })).toBe(1);
      expect(said(log1, 'metadata store lost')).toBe(1);
      expect(log1.lines.find((l) => l.msg?.startsWith('metadata store lost'))?.level).toBe('warn');

      // A replica restarted during the outage (empty memory caches) serves both from its own records.
      await first.stop({ keepData: true });
      firstRunning = false;
      const log2 = collectingLogger();
      second = await start(log2, first.dataDir);
      expect(await mode(second)).toEqual({ remote: 0, local: 1 });
      const manifestsBefore = manifestGets('before') + manifestGets('during');
      await pull(second, 'before', before);
      await pull(second, 'during', during);
      expect(blobGets(before) + blobGets(during)).toBe(4);
      expect(manifestGets('before') + manifestGets('during')).toBe(manifestsBefore); // tag records still fresh
      expect(said(log2, 'metadata store lost')).toBe(1);

      await redis.start();
      await waitFor(async () => (await mode(second!)).remote === 1, 10_000, 'the mirror to reach Redis again');
      expect(await second.metric('mirror_meta_store_transitions_total', { to: 'remote' })).toBe(1);
      expect(said(log2, 'metadata store restored')).toBe(1);
      // Redis restarted empty (no persistence): what the mirror learns now lands there again.
      await pull(second, 'after', after);
      expect(await raw.hexists('outage:tags|docker.io/library/after', 'v1')).toBe(1);
      expect(await raw.sismember('outage:links|docker.io/library/after', after.layers[0]!.digest)).toBe(1);
      expect((await second.request('/v2/_catalog')).status).toBe(200);
      expect(said(log2, 'metadata store lost')).toBe(1);
    } finally {
      await second?.stop();
      if (firstRunning) await first.stop({ keepData: true });
      await rm(first.dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
