/**
 * The bounded cache: real pulls (manifest, config, layers) through the mirror from the fake
 * upstream, eviction of least recently used images as units, shared layers and pins kept, a reader
 * mid-stream never cut, the order surviving a restart, purge and GC, and the admin API.
 */
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { digestOf } from '../helpers/digest.js';
import { waitFor } from '../helpers/wait.js';
import { makeImage, makeRandomLayer, type Image } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

const LAYER = 100_000;
const layer = (seed: string) => makeRandomLayer(LAYER, seed);

describe('a cache that stays within its limits', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror | undefined;
  const clock = { now: 1_000_000_000 };
  const shared = layer('shared-base');
  const images: Record<string, Image> = {
    a: makeImage({ layers: [layer('a')] }),
    b: makeImage({ layers: [layer('b')] }),
    c: makeImage({ layers: [layer('c')] }),
    d: makeImage({ layers: [layer('d')] }),
    big: makeImage({ layers: [makeRandomLayer(6_000_000, 'big')] }),
    s1: makeImage({ layers: [shared, layer('s1')] }),
    s2: makeImage({ layers: [shared, layer('s2')] }),
  };

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    for (const [name, img] of Object.entries(images)) hub.putImage(`library/${name}`, img, 'latest');
  });
  afterAll(() => hub.close());
  afterEach(async () => {
    await mirror?.stop();
    mirror = undefined;
    hub.resetCounters();
  });

  const start = async (cache: Record<string, unknown> = {}, dataDir?: string) => {
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
      clock,
      raw: { cache: { tagTtl: 300, ...cache } },
      mirrorOptions: { lifecycleTimers: false },
      ...(dataDir ? { dataDir } : {}),
    });
    return mirror;
  };

  /** Pulls an image as a client does (manifest, config, layers), reading every body; returns the bytes of its blobs. */
  const pull = async (name: string): Promise<number> => {
    clock.now += 1000;
    const m = mirror!;
    const r = await m.request(`/v2/${name}/manifests/latest`, { headers: { accept: DOCKER_ACCEPT } });
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    const img = images[name]!;
    let bytes = img.manifest.size;
    for (const b of [img.config, ...img.layers]) {
      const res = await m.request(`/v2/${name}/blobs/${b.digest}`);
      expect(res.status).toBe(200);
      expect(digestOf(Buffer.from(await res.arrayBuffer()))).toBe(b.digest);
      bytes += b.size;
    }
    expect(await m.registry.drain(5000)).toBe(true);
    return bytes;
  };
  const cachedRepos = async () => (await mirror!.admin.repositories()).map((r) => r.repo).sort();
  const bytesOnDisk = async () => (await mirror!.admin.summary()).bytes;

  it('past the cap, least recently used images leave as units, and bytes on disk end within the cap', async () => {
    const one = LAYER + 3000;
    const cap = Math.floor(one * 3.5);
    await start({ maxBytes: cap });
    await pull('a');
    await pull('b');
    await pull('c');
    expect(await mirror!.admin.evict()).toBeUndefined(); // within the cap: nothing to do
    await pull('a'); // A is used again: B is now the least recently used
    await pull('d');
    const result = await mirror!.admin.evict();
    expect(result).toMatchObject({ reason: 'size', images: 1 });
    expect(await cachedRepos()).toEqual(['library/a', 'library/c', 'library/d']);
    expect(await bytesOnDisk()).toBeLessThanOrEqual(cap);
    // B left whole: no half image (its manifest, config and layer are all gone).
    for (const blob of [images.b!.manifest, images.b!.config, ...images.b!.layers]) expect(await mirror!.blobs.stat(blob.digest)).toBeUndefined();
    expect(await mirror!.metric('mirror_cache_evictions_total', { reason: 'size' })).toBe(3);
    expect(await mirror!.metric('mirror_cache_evicted_bytes_total', { reason: 'size' })).toBeGreaterThan(LAYER * 0.9);
    // B pulls again, whole and correct: each blob refetched once.
    hub.resetCounters();
    await pull('b');
    expect(hub.count({ kind: 'cdn' })).toBe(2);
    expect(hub.count({ kind: 'manifest', method: 'GET', status: 200 })).toBe(1);
    // Every blob fetched again within the hour of its eviction is counted as thrashing.
    expect(await mirror!.metric('mirror_cache_refetched_after_eviction_total')).toBe(2);
  });

  it('a layer shared with a retained image stays when the other image is evicted', async () => {
    await start({ maxBytes: Math.floor((LAYER + 3000) * 2.6) });
    await pull('s1');
    await pull('s2');
    const result = await mirror!.admin.evict();
    expect(result?.images).toBe(1);
    expect(await cachedRepos()).toEqual(['library/s2']);
    expect(await mirror!.blobs.stat(shared.digest)).toBeDefined();
    expect(await mirror!.blobs.stat(images.s1!.layers[1]!.digest)).toBeUndefined();
    // S2 is whole, offline too.
    hub.resetCounters();
    await pull('s2');
    expect(hub.count({ kind: 'cdn' })).toBe(0);
  });

  it('pinned images stay however old; pins can be added and removed at run time', async () => {
    await start({ maxBytes: Math.floor((LAYER + 3000) * 2.5), pin: ['docker.io/library/a'] });
    await pull('a');
    await pull('b');
    await pull('c');
    await mirror!.admin.evict();
    expect(await cachedRepos()).toEqual(['library/a', 'library/c']);
    expect(await mirror!.admin.pin('docker.io/library/c:latest')).toEqual(['docker.io/library/a', 'docker.io/library/c:latest']);
    await pull('d');
    await mirror!.admin.evict();
    // Both pinned, so only D could go: the cache stays above the cap rather than break a pin.
    expect(await cachedRepos()).toEqual(['library/a', 'library/c']);
    await expect(mirror!.admin.pin('../../etc')).rejects.toThrow(/not a reference pattern/);
    expect(await mirror!.admin.unpin('docker.io/library/c:latest')).toEqual(['docker.io/library/a']);
  });

  it('an image being read is not evicted: the reader gets every byte, and the image goes at a later pass', async () => {
    const bigSize = images.big!.layers[0]!.size;
    await start({ maxBytes: bigSize + LAYER / 2 });
    await pull('big');
    await pull('b');
    const big = images.big!.layers[0]!;
    const res = await mirror!.request(`/v2/big/blobs/${big.digest}`);
    const reader = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    const chunks: Buffer[] = [];
    chunks.push(await new Promise<Buffer>((resolve) => reader.once('data', resolve)));
    reader.pause();
    // BIG is the least recently used, but being read: B goes instead.
    expect(await mirror!.admin.evict()).toMatchObject({ images: 1 });
    expect(await cachedRepos()).toEqual(['library/big']);
    reader.resume();
    for await (const c of reader) chunks.push(c as Buffer);
    expect(digestOf(Buffer.concat(chunks))).toBe(big.digest);
    // Read to the end, BIG is an ordinary candidate again.
    await pull('c');
    expect(await mirror!.admin.evict()).toMatchObject({ images: 1 });
    expect(await cachedRepos()).toEqual(['library/c']);
    expect(await mirror!.blobs.stat(big.digest)).toBeUndefined();
  });

  it('eviction racing a new download of the same digest: the download completes and stays', async () => {
    await start({ maxBytes: Math.floor((LAYER + 3000) * 2.5) });
    await pull('a');
    await pull('b');
    // A is evicted and purged while a client downloads A's layer again, slowly.
    const layerA = images.a!.layers[0]!;
    await mirror!.admin.purge({ upstream: 'docker.io', repo: 'library/a' });
    expect(await mirror!.blobs.stat(layerA.digest)).toBeUndefined();
    hub.faults.trickle = { bytesPerTick: 16 * 1024, tickMs: 5 };
    try {
      const manifest = await mirror!.request('/v2/a/manifests/latest', { headers: { accept: DOCKER_ACCEPT } });
      expect(manifest.status).toBe(200);
      const res = mirror!.request(`/v2/a/blobs/${layerA.digest}`);
      await waitFor(() => hub.count({ kind: 'cdn' }) > 0, 5000, 'the download to start');
      // Passes while it runs: the blob is not on disk yet, then it arrives after the pass began.
      await mirror!.admin.evict();
      await mirror!.admin.gc();
      const body = Buffer.from(await (await res).arrayBuffer());
      expect(digestOf(body)).toBe(layerA.digest);
      expect(await mirror!.registry.drain(5000)).toBe(true);
      await mirror!.admin.gc();
      expect(await mirror!.blobs.stat(layerA.digest)).toBeDefined();
    } finally {
      delete hub.faults.trickle;
    }
    // The layer is served from the cache now (only A's config, purged and not asked for since, is fetched).
    hub.resetCounters();
    await pull('a');
    expect(hub.count({ kind: 'cdn', path: new RegExp(layerA.digest.slice('sha256:'.length)) })).toBe(0);
    expect(hub.count({ kind: 'cdn' })).toBe(1);
  });

  it('the order survives a restart', async () => {
    const first = await start({ maxBytes: Math.floor((LAYER + 3000) * 2.5) });
    await pull('a');
    await pull('b');
    await pull('a');
    await first.stop({ keepData: true });
    mirror = undefined;
    await start({ maxBytes: Math.floor((LAYER + 3000) * 2.5) }, first.dataDir);
    await pull('c');
    await mirror!.admin.evict();
    expect(await cachedRepos()).toEqual(['library/a', 'library/c']);
    await mirror!.stop();
    mirror = undefined;
    await rm(first.dataDir, { recursive: true, force: true });
  });

  it('purges a tag, an image, a repository or everything, never breaking an image that shares a layer', async () => {
    await start();
    await pull('s1');
    await pull('s2');
    await pull('a');
    const admin = mirror!.admin;
    expect(await admin.purge({ upstream: 'docker.io', repo: 'library/s1', tag: 'latest' })).toMatchObject({ tags: 1, images: 1, blobs: 3 });
    expect(await mirror!.blobs.stat(shared.digest)).toBeDefined();
    hub.resetCounters();
    await pull('s2');
    expect(hub.count({ kind: 'cdn' })).toBe(0);
    // By digest, and the whole repository.
    expect(await admin.purge({ upstream: 'docker.io', repo: 'library/a', digest: images.a!.manifest.digest })).toMatchObject({ images: 1 });
    await expect(admin.purge({ upstream: 'docker.io', repo: 'library/a' })).rejects.toThrow(/nothing cached/);
    expect(await admin.purge({ upstream: 'docker.io', repo: 'library/s2' })).toMatchObject({ images: 1, blobs: 4 });
    expect(await mirror!.metric('mirror_cache_evictions_total', { reason: 'purge' })).toBeGreaterThan(0);
    await pull('b');
    expect(await admin.purge({ all: true })).toMatchObject({ images: 1 });
    expect((await admin.summary()).bytes).toBe(0);
    expect(await (await mirror!.request('/v2/_catalog')).json()).toEqual({ repositories: [] });
  });

  it('forces a tag to be revalidated on its next request', async () => {
    await start();
    await pull('a');
    hub.resetCounters();
    await pull('a');
    expect(hub.count({ kind: 'manifest' })).toBe(0);
    expect(await mirror!.admin.revalidate('docker.io', 'library/a', 'latest')).toBe(true);
    expect(await mirror!.admin.revalidate('docker.io', 'library/a', 'nope')).toBe(false);
    const r = await mirror!.request('/v2/a/manifests/latest', { headers: { accept: DOCKER_ACCEPT } });
    expect(r.headers.get('x-mirror-cache')).toBe('revalidated');
  });

  it('GC sweeps what a crash mid-eviction leaves: records gone, blobs left, nothing of it served', async () => {
    await start();
    await pull('a');
    await pull('b');
    // As if the process died after removing A's records and before deleting its blobs.
    const meta = (await import('../../src/storage/fs-meta-store.js')).FsMetaStore;
    const raw = new meta(mirror!.dataDir);
    await raw.deleteRepo({ upstream: 'docker.io', repo: 'library/a' });
    await mirror!.stop({ keepData: true });
    const dataDir = mirror!.dataDir;
    mirror = undefined;
    await start({}, dataDir);
    expect(await mirror!.blobs.stat(images.a!.layers[0]!.digest)).toBeDefined();
    const gc = await mirror!.admin.gc();
    expect(gc).toMatchObject({ blobs: 3 });
    expect(await mirror!.blobs.stat(images.a!.layers[0]!.digest)).toBeUndefined();
    expect(await cachedRepos()).toEqual(['library/b']);
    await mirror!.stop();
    mirror = undefined;
    await rm(dataDir, { recursive: true, force: true });
  });

  it('uses are kept for content only: digests nobody has leave no trace, and GC and eviction passes forget the uses of content gone from the store', async () => {
    const savedUses = async (dataDir: string) => {
      const { FsMetaStore } = await import('../../src/storage/fs-meta-store.js');
      const state = (await new FsMetaStore(dataDir).getState('usage')) as { entries: Record<string, number> } | undefined;
      return Object.keys(state?.entries ?? {});
    };
    await start();
    await pull('a');
    const absent = Array.from({ length: 40 }, (_, i) => digestOf(Buffer.from(`nobody has this ${i}`)));
    for (const d of absent) {
      expect((await mirror!.request(`/v2/a/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
      expect((await mirror!.request(`/v2/a/blobs/${d}`)).status).toBe(404);
    }
    const dataDir = mirror!.dataDir;
    await mirror!.stop({ keepData: true });
    mirror = undefined;
    const img = images.a!;
    const before = await savedUses(dataDir);
    for (const b of [img.config, ...img.layers]) expect(before).toContain(`b ${b.digest}`);
    expect(before.filter((k) => absent.some((d) => k.includes(d)))).toEqual([]);

    // The layer's file removed behind the mirror's back: past GC's grace, its use goes with its records.
    await rm(`${dataDir}/blobs/sha256/${img.layers[0]!.digest.slice(7, 9)}/${img.layers[0]!.digest.slice(7)}`);
    await start({}, dataDir);
    clock.now += 2 * 60 * 60 * 1000;
    expect((await mirror!.admin.gc()).records).toBeGreaterThan(0);
    await mirror!.stop({ keepData: true });
    mirror = undefined;
    const after = await savedUses(dataDir);
    expect(after).not.toContain(`b ${img.layers[0]!.digest}`);
    expect(after).toContain(`b ${img.config.digest}`);
    expect(after).toContain(`m docker.io/library/a@${img.manifest.digest}`);

    // An eviction pass (its inventory) forgets them too: a full store keeps passing blobs through.
    await start({ maxBytes: Math.floor(LAYER / 2) }, dataDir);
    await rm(`${dataDir}/blobs/sha256/${img.config.digest.slice(7, 9)}/${img.config.digest.slice(7)}`);
    clock.now += 2 * 60 * 60 * 1000;
    await pull('b');
    expect(await mirror!.admin.evict()).toBeDefined();
    await mirror!.stop({ keepData: true });
    mirror = undefined;
    expect(await savedUses(dataDir)).not.toContain(`b ${img.config.digest}`);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('the admin API answers JSON: summary, repositories, images, purge, pins, evict, gc', async () => {
    await start({ maxBytes: 10_000_000 });
    await pull('a');
    const api = (path: string, init?: RequestInit) => mirror!.adminApp.request(path, init);
    const post = (path: string, body: unknown, method = 'POST') => api(path, { method, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    const summary = (await (await api('/admin/cache')).json()) as Record<string, unknown>;
    expect(summary).toMatchObject({ images: 1, repositories: 1, limitBytes: 10_000_000, blobs: 3 });
    expect(summary.bytes).toBeGreaterThan(LAYER * 0.9);
    expect(summary.hitRatio).toBeDefined();
    const repos = (await (await api('/admin/repositories')).json()) as Array<Record<string, unknown>>;
    expect(repos).toEqual([expect.objectContaining({ name: 'docker.io/library/a', images: 1, tags: ['latest'], pinned: false })]);
    const imgs = (await (await api('/admin/images?repository=docker.io/library/a')).json()) as Array<Record<string, unknown>>;
    expect(imgs).toEqual([expect.objectContaining({ digest: images.a!.manifest.digest, tags: ['latest'], blobs: 3 })]);
    expect(await (await post('/admin/pins', { pattern: 'docker.io/library/a' })).json()).toEqual({ pins: ['docker.io/library/a'] });
    expect((await post('/admin/pins', { pattern: '/etc/passwd' })).status).toBe(400);
    expect(await (await post('/admin/pins', { pattern: 'docker.io/library/a' }, 'DELETE')).json()).toEqual({ pins: [] });
    expect(await (await api('/admin/evict', { method: 'POST' })).json()).toEqual({ evicted: null });
    expect((await post('/admin/purge', { repository: 'docker.io/library/zzz' })).status).toBe(404);
    expect((await post('/admin/purge', { repository: 'Not A Name!' })).status).toBe(400);
    expect(await (await post('/admin/purge', { repository: 'a', tag: 'latest' })).json()).toMatchObject({ images: 1, blobs: 3 });
    expect(await (await api('/admin/gc', { method: 'POST' })).json()).toMatchObject({ blobs: 0 });
    expect((await api('/admin/nope')).status).toBe(404);
  });
});
