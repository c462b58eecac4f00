import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { deferred } from '../helpers/wait.js';
import { digestOf } from '../helpers/digest.js';

/** After a scripted pull, /metrics must add up to what happened. */
describe('/metrics after a scripted pull', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  const shared = makeRandomLayer(200_000, 'metrics-shared');
  const a = makeImage({ layers: [shared, makeLayer([{ path: 'a', content: 'a' }])] });
  const b = makeImage({ layers: [shared, makeLayer([{ path: 'b', content: 'b' }])] });

  beforeAll(async () => {
    hub = await FakeUpstream.start({ rateLimit: { limit: 200, remaining: 150 } });
    hub.putImage('library/m', a, 'a');
    hub.putImage('library/m', b, 'b');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    for (const [tag, img] of [['a', a], ['b', b], ['a', a]] as const) {
      await (await mirror.request(`/v2/m/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } })).arrayBuffer();
      for (const blob of [img.config, ...img.layers]) await (await mirror.request(`/v2/m/blobs/${blob.digest}`)).arrayBuffer();
    }
    // A client has every byte before the blob is renamed into the cache: wait for that.
    expect(await mirror.registry.drain(5000)).toBe(true);
  });
  afterAll(async () => {
    await mirror.stop();
    await hub.close();
  });

  it('exposes the metrics in Prometheus text format', async () => {
    const res = await mirror.request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    for (const name of [
      'mirror_http_requests_total',
      'mirror_http_request_duration_seconds_bucket',
      'mirror_cache_requests_total',
      'mirror_served_bytes_total',
      'mirror_upstream_requests_total',
      'mirror_upstream_bytes_total',
      'mirror_inflight_downloads',
      'mirror_cache_size_bytes',
      'mirror_upstream_ratelimit_remaining',
    ]) {
      expect(text).toContain(name);
    }
  });

  it('bytes from upstream equal the unique manifests and blobs pulled', async () => {
    const unique = new Map<string, number>();
    for (const img of [a, b]) for (const blob of [img.manifest, img.config, ...img.layers]) unique.set(blob.digest, blob.size);
    const expected = [...unique.values()].reduce((x, y) => x + y, 0);
    expect(await mirror.metric('mirror_upstream_bytes_total', { upstream: 'docker.io' })).toBe(expected);
    expect(await mirror.metric('mirror_cache_size_bytes')).toBe(expected);
    expect(await mirror.metric('mirror_cache_blobs')).toBe(unique.size);
  });

  it('cache results, bytes served by source and requests by route add up', async () => {
    // blobs: 3 + 3 + 3 requests; unique blobs: a.config, b.config, shared, a2, b2 = 5 misses, 4 hits
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'miss' })).toBe(5);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'hit' })).toBe(4);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest', result: 'miss' })).toBe(2);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest', result: 'hit' })).toBe(1);
    const blobBytes = (img: typeof a) => [img.config, ...img.layers].reduce((x, y) => x + y.size, 0);
    const servedTotal = blobBytes(a) * 2 + blobBytes(b) + a.manifest.size * 2 + b.manifest.size;
    const fromCache = await mirror.metric('mirror_served_bytes_total', { source: 'cache' });
    const fromUpstream = await mirror.metric('mirror_served_bytes_total', { source: 'upstream' });
    expect(fromCache + fromUpstream).toBe(servedTotal);
    // From the cache: the whole repeat pull of a, and b's shared layer.
    expect(fromCache).toBe(a.manifest.size + blobBytes(a) + shared.size);
    expect(await mirror.metric('mirror_http_requests_total', { route: 'blob', status: '200' })).toBe(9);
    expect(await mirror.metric('mirror_http_requests_total', { route: 'manifest', status: '200' })).toBe(3);
    expect(await mirror.metric('mirror_upstream_ratelimit_remaining', { upstream: 'docker.io' })).toBe(hub.rateLimit!.remaining);
    expect(await mirror.metric('mirror_inflight_downloads')).toBe(0);
  });
});

/**
 * A client has every byte of a blob once its digest is verified, before the file is synced and
 * renamed into the cache. Pulling again in that window joins the finished download: that answer
 * costs upstream nothing and must be a hit, in its header and in the metrics the console shows.
 */
describe('a pull right after a pull, while the blob is still being made durable', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  const layer = makeRandomLayer(300_000, 'metrics-durable');

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putBlob('library/d', layer);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
  });
  afterAll(async () => {
    await mirror.stop();
    await hub.close();
  });

  it('answers the second request from the verified download as a hit, and counts its bytes as saved', async () => {
    // A slow disk: the writer's fsync waits until the test lets it go.
    const synced = deferred();
    const syncing = deferred();
    const create = mirror.blobs.createWriter.bind(mirror.blobs);
    mirror.blobs.createWriter = async (digest) => {
      const w = await create(digest);
      const handle = (w as unknown as { handle: { sync(): Promise<void> } }).handle;
      const sync = handle.sync.bind(handle);
      handle.sync = async () => {
        syncing.resolve();
        await synced.promise;
        return sync();
      };
      return w;
    };
    const get = () => mirror.request(`/v2/d/blobs/${layer.digest}`);
    const first = await get();
    expect(first.headers.get('x-mirror-cache')).toBe('miss');
    expect(digestOf(Buffer.from(await first.arrayBuffer()))).toBe(layer.digest);
    await syncing.promise;
    expect(await mirror.blobs.stat(layer.digest)).toBeUndefined(); // not in the cache yet

    const second = await get();
    expect(second.headers.get('x-mirror-cache')).toBe('hit');
    expect(digestOf(Buffer.from(await second.arrayBuffer()))).toBe(layer.digest);
    synced.resolve();
    expect(await mirror.registry.drain(5000)).toBe(true);

    expect(await mirror.metric('mirror_served_bytes_total', { source: 'cache' })).toBe(layer.size);
    expect(await mirror.metric('mirror_served_bytes_total', { source: 'upstream' })).toBe(layer.size);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'hit' })).toBe(1);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'miss' })).toBe(1);
    expect(hub.count({ kind: 'blob', method: 'GET', status: 307 })).toBe(1);
    expect(hub.count({ kind: 'cdn', method: 'GET', status: 200 })).toBe(1);
  });
});
