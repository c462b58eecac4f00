/**
 * Upstream outages against the real server process: unreachable at start, down at runtime
 * (connections refused, 5xx), and Docker Hub's 429 rate limit. Cached content keeps being served
 * (tags marked stale); uncached requests fail fast with an OCI error.
 */
import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer, type Image } from '../helpers/images.js';
import { httpGet, spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { DOCKER_ACCEPT, expectOciError, rawGet, faultFixture } from './util.js';

const FAST_MS = 5000;
const base = makeRandomLayer(200_000, 'outage-base');
const img = makeImage({ layers: [base, makeLayer([{ path: 'o.txt', content: 'outage' }])] });
// Never fetched through the mirror: stays uncached.
const cold = makeImage({ layers: [makeRandomLayer(50_000, 'outage-cold')] });

const fx = faultFixture(async () => {
  const hub = await FakeUpstream.start();
  hub.putImage('library/app', img, 'v1');
  hub.putImage('library/app', cold, 'cold');
  return hub;
});

const start = (tagTtl = 0) => spawnMirror({ upstreams: { 'docker.io': { url: fx.hub.url, libraryPrefix: true, tagTtl } } });

/** Pulls the image (manifest by tag, config, layers) and the tag list through the fx.mirror. */
async function warm(m: SpawnedMirror, image: Image, tag: string): Promise<void> {
  const man = await rawGet(`${m.url}/v2/app/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } });
  expect(man.status).toBe(200);
  expect(digestOf(man.body)).toBe(image.manifest.digest);
  for (const b of [image.config, ...image.layers]) {
    const r = await rawGet(`${m.url}/v2/library/app/blobs/${b.digest}`);
    expect(r.status).toBe(200);
    expect(digestOf(r.body)).toBe(b.digest);
  }
  expect((await rawGet(`${m.url}/v2/app/tags/list`)).status).toBe(200);
}

/** Everything cached is served: the tag (stale when it had to ask), the digest and the blobs. */
async function expectCacheServed(m: SpawnedMirror, opts: { tagStale: boolean }): Promise<void> {
  const tag = await rawGet(`${m.url}/v2/app/manifests/v1`, { headers: { accept: DOCKER_ACCEPT }, timeoutMs: 10_000 });
  expect(tag.status, tag.body.toString()).toBe(200);
  expect(digestOf(tag.body)).toBe(img.manifest.digest);
  if (opts.tagStale) {
    expect(tag.headers['x-mirror-cache']).toBe('stale');
    expect(String(tag.headers.warning)).toContain('110');
  }
  const byDigest = await rawGet(`${m.url}/v2/app/manifests/${img.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
  expect(byDigest.status).toBe(200);
  expect(digestOf(byDigest.body)).toBe(img.manifest.digest);
  const upstreamBlobRequests = () => fx.hub.count({ kind: 'blob' }) + fx.hub.count({ kind: 'cdn' });
  const before = upstreamBlobRequests();
  for (const b of [img.config, ...img.layers]) {
    const r = await rawGet(`${m.url}/v2/library/app/blobs/${b.digest}`);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(digestOf(r.body)).toBe(b.digest);
  }
  // Digests are immutable: cached blobs are served without asking upstream (down or not).
  expect(upstreamBlobRequests()).toBe(before);
}

/** Uncached tag, manifest digest and blob: an OCI error, quickly. */
async function expectUncachedFailsFast(m: SpawnedMirror, statuses: number[]): Promise<number[]> {
  const times: number[] = [];
  const urls = [
    [`${m.url}/v2/app/manifests/cold`, DOCKER_ACCEPT],
    [`${m.url}/v2/app/manifests/${cold.manifest.digest}`, DOCKER_ACCEPT],
    [`${m.url}/v2/library/app/blobs/${cold.layers[0]!.digest}`, undefined],
  ] as const;
  for (const [url, accept] of urls) {
    const r = await rawGet(url, { headers: accept ? { accept } : {}, timeoutMs: 35_000 });
    times.push(Math.round(r.ms));
    expect(r.ms, `${url} took ${r.ms} ms`).toBeLessThan(FAST_MS);
    expectOciError(r, statuses);
  }
  return times;
}

describe('upstream unreachable at start', () => {
  it('starts, serves the cache, /healthz OK and /readyz reports the upstream state', async () => {
    fx.mirror = await start();
    await warm(fx.mirror, img, 'v1');
    await fx.hub.goDown();
    await fx.mirror.restart();

    const health = await httpGet(`${fx.mirror.url}/healthz`);
    expect(health.status).toBe(200);
    const ready = await httpGet(`${fx.mirror.url}/readyz`);
    expect(ready.status).toBe(200);
    const body = JSON.parse(ready.body) as { upstreams: Record<string, string> };
    expect(['down', 'unknown']).toContain(body.upstreams['docker.io']);

    await expectCacheServed(fx.mirror, { tagStale: true });
    const times = await expectUncachedFailsFast(fx.mirror, [502, 503]);
    const after = JSON.parse((await httpGet(`${fx.mirror.url}/readyz`)).body) as { upstreams: Record<string, string> };
    expect(after.upstreams['docker.io']).toBe('down');
    console.log(`[outage] unreachable at start: uncached answers in ${times.join(', ')} ms`);
  });

  it('starts with an upstream that never existed (127.0.0.1:1)', async () => {
    fx.mirror = await spawnMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:1', libraryPrefix: true } } });
    expect((await httpGet(`${fx.mirror.url}/healthz`)).status).toBe(200);
    const ready = await httpGet(`${fx.mirror.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(['down', 'unknown']).toContain((JSON.parse(ready.body) as { upstreams: Record<string, string> }).upstreams['docker.io']);
    const r = await rawGet(`${fx.mirror.url}/v2/app/manifests/v1`, { timeoutMs: 35_000 });
    expect(r.ms).toBeLessThan(FAST_MS);
    expectOciError(r, [502, 503], ['UNAVAILABLE']);
  });
});

describe('upstream goes down at runtime', () => {
  it('connection refused (goDown): cached served, tags stale, uncached fail fast', async () => {
    fx.mirror = await start();
    await warm(fx.mirror, img, 'v1');
    await fx.hub.goDown();
    await expectCacheServed(fx.mirror, { tagStale: true });
    const tags = await rawGet(`${fx.mirror.url}/v2/app/tags/list`);
    expect(tags.status).toBe(200);
    expect(tags.headers['x-mirror-cache']).toBe('stale');
    const times = await expectUncachedFailsFast(fx.mirror, [502, 503]);
    const ready = JSON.parse((await httpGet(`${fx.mirror.url}/readyz`)).body) as { upstreams: Record<string, string> };
    expect(ready.upstreams['docker.io']).toBe('down');
    console.log(`[outage] refused at runtime: uncached answers in ${times.join(', ')} ms`);

    // Back up: once the background probe finds it (within one offline period), the tag is
    // revalidated again (no longer stale).
    await fx.hub.goUp();
    const mirrorUrl = fx.mirror.url;
    await waitFor(async () => (JSON.parse((await httpGet(`${mirrorUrl}/readyz`)).body) as { availability?: Record<string, { state: string }> }).availability?.['docker.io']?.state === 'online', 15_000, 'docker.io back online in /readyz');
    const again = await rawGet(`${fx.mirror.url}/v2/app/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } });
    expect(again.status).toBe(200);
    expect(again.headers['x-mirror-cache']).not.toBe('stale');
  });

  it('503 for everything (faults.down) and 5xx statuses (faults.status): cached served, uncached fail fast', async () => {
    fx.mirror = await start();
    await warm(fx.mirror, img, 'v1');
    fx.hub.faults.down = true;
    await expectCacheServed(fx.mirror, { tagStale: true });
    await expectUncachedFailsFast(fx.mirror, [502, 503]);
    fx.hub.faults.down = false;
    for (const status of [500, 502, 503, 504]) {
      fx.hub.faults.status = status;
      await expectCacheServed(fx.mirror, { tagStale: true });
      const tags = await rawGet(`${fx.mirror.url}/v2/app/tags/list`);
      expect(tags.status).toBe(200);
      expect(tags.headers['x-mirror-cache']).toBe('stale');
      await expectUncachedFailsFast(fx.mirror, [502, 503]);
    }
  });
});

describe('Docker Hub 429 TOOMANYREQUESTS', () => {
  it('serves the cache, passes 429 on with message and Retry-After, does not hammer upstream, exports the remaining figure', async () => {
    fx.hub.rateLimit = { limit: 100, remaining: 10 };
    fx.mirror = await start();
    await warm(fx.mirror, img, 'v1');
    expect(await fx.mirror.metric('mirror_upstream_ratelimit_remaining', { upstream: 'docker.io' })).toBe(fx.hub.rateLimit.remaining);
    expect(await fx.mirror.metric('mirror_upstream_ratelimit_limit', { upstream: 'docker.io' })).toBe(100);

    // Pull limit exhausted (Docker Hub style: manifest GETs get 429, HEADs still free).
    fx.hub.rateLimit.remaining = 0;
    await expectCacheServed(fx.mirror, { tagStale: false });
    fx.hub.resetCounters();
    const r = await rawGet(`${fx.mirror.url}/v2/app/manifests/cold`, { headers: { accept: DOCKER_ACCEPT }, timeoutMs: 35_000 });
    expect(r.ms).toBeLessThan(FAST_MS);
    const e = expectOciError(r, [429], ['TOOMANYREQUESTS']);
    expect(e.message).toContain('You have reached your pull rate limit');
    expect(r.headers['retry-after']).toBe('60');
    const perRequest = fx.hub.count({ server: 'registry' }) + fx.hub.count({ server: 'token' });
    expect(perRequest, JSON.stringify(fx.hub.requests.map((q) => `${q.method} ${q.path} ${q.status}`))).toBeLessThanOrEqual(2);
    expect(await fx.mirror.metric('mirror_upstream_ratelimit_remaining', { upstream: 'docker.io' })).toBe(fx.hub.rateLimit.remaining);

    // Every kind of request rate limited, with the upstream's own message and Retry-After.
    fx.hub.faults.rateLimited = { retryAfter: 42, message: 'slow down, mirror (fake hub)' };
    await expectCacheServed(fx.mirror, { tagStale: true });
    fx.hub.resetCounters();
    const counts: number[] = [];
    for (const url of [`${fx.mirror.url}/v2/app/manifests/cold`, `${fx.mirror.url}/v2/app/manifests/${cold.manifest.digest}`, `${fx.mirror.url}/v2/library/app/blobs/${cold.layers[0]!.digest}`]) {
      const before = fx.hub.requests.length;
      const res = await rawGet(url, { headers: { accept: DOCKER_ACCEPT }, timeoutMs: 35_000 });
      expect(res.ms).toBeLessThan(FAST_MS);
      const err = expectOciError(res, [429], ['TOOMANYREQUESTS']);
      expect(err.message).toBe('slow down, mirror (fake hub)');
      expect(res.headers['retry-after']).toBe('42');
      counts.push(fx.hub.requests.length - before);
    }
    expect(Math.max(...counts), `upstream requests per client request: ${counts.join(', ')}`).toBeLessThanOrEqual(2);
    // No background retry loop: nothing more reaches upstream while no client asks.
    const settled = fx.hub.requests.length;
    await new Promise((res) => setTimeout(res, 1500));
    expect(fx.hub.requests.length).toBe(settled);
    console.log(`[outage] 429: upstream requests per client request ${counts.join(', ')}; ratelimit_remaining metric = ${fx.hub.rateLimit.remaining}`);
  });
});
