import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, MT } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

describe('tags: TTL, HEAD revalidation, stale-if-error, offline', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  const v1 = makeImage({ layers: [makeLayer([{ path: 'v', content: '1' }])] });
  const v2 = makeImage({ layers: [makeLayer([{ path: 'v', content: '2' }])] });
  const clock = { now: 1_000_000 };
  const get = (tag = 'latest') => mirror.request(`/v2/tool/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } });

  beforeAll(async () => {
    hub = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 100 } });
  });
  afterAll(() => hub.close());
  afterEach(async () => {
    await mirror?.stop();
    await hub.resetFaults();
    hub.resetCounters();
  });

  it('within the TTL answers from the cache; after it revalidates with a HEAD and GETs only on change', async () => {
    hub.putImage('library/tool', v1, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock });
    expect((await get()).headers.get('docker-content-digest')).toBe(v1.manifest.digest);
    hub.resetCounters();

    clock.now += 30_000;
    const inTtl = await get();
    expect(inTtl.headers.get('x-mirror-cache')).toBe('hit');
    expect(hub.requests.length).toBe(0);

    clock.now += 60_000;
    const reval = await get();
    expect(reval.headers.get('x-mirror-cache')).toBe('revalidated');
    expect(reval.headers.get('docker-content-digest')).toBe(v1.manifest.digest);
    expect(hub.count({ kind: 'manifest', method: 'HEAD', status: 200 })).toBe(1);
    expect(hub.count({ kind: 'manifest', method: 'GET' })).toBe(0);
    hub.resetCounters();

    hub.putImage('library/tool', v2, 'latest');
    clock.now += 61_000;
    const changed = await get();
    expect(changed.headers.get('docker-content-digest')).toBe(v2.manifest.digest);
    expect(changed.headers.get('x-mirror-cache')).toBe('miss');
    expect(hub.count({ kind: 'manifest', method: 'HEAD' })).toBe(1);
    expect(hub.count({ kind: 'manifest', method: 'GET' })).toBe(1);
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest', result: 'revalidated' })).toBe(1);
  });

  it('a HEAD without Docker-Content-Digest (optional in the spec) is read by its ETag; with neither, the GET that tells is still a revalidation', async () => {
    hub.putImage('library/tool', v1, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock });
    expect((await get()).status).toBe(200);
    hub.faults.manifestHeadWithout = 'digest';
    hub.resetCounters();
    clock.now += 61_000;
    expect((await get()).headers.get('x-mirror-cache')).toBe('revalidated');
    expect(hub.requests.filter((r) => r.kind === 'manifest').map((r) => r.method)).toEqual(['HEAD']);
    hub.faults.manifestHeadWithout = 'digest-and-etag';
    hub.resetCounters();
    clock.now += 61_000;
    const told = await get();
    expect(told.headers.get('x-mirror-cache')).toBe('revalidated');
    expect(told.headers.get('docker-content-digest')).toBe(v1.manifest.digest);
    expect(hub.requests.filter((r) => r.kind === 'manifest').map((r) => r.method)).toEqual(['HEAD', 'GET']);
    // And a change is still seen.
    hub.putImage('library/tool', v2, 'latest');
    clock.now += 61_000;
    const changed = await get();
    expect(changed.headers.get('docker-content-digest')).toBe(v2.manifest.digest);
    expect(changed.headers.get('x-mirror-cache')).toBe('miss');
  });

  it('a manifest upstream sends in a type the client does not accept: refused, and remembered for that Accept (not a GET per request)', async () => {
    const oci = makeImage({ layers: [makeLayer([{ path: 'o', content: 'oci' }])], format: 'oci' });
    hub.putImage('library/ocionly', oci, 'latest');
    hub.faults.ignoreAccept = true;
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock });
    for (let i = 0; i < 3; i++) {
      const r = await mirror.request('/v2/ocionly/manifests/latest', { headers: { accept: MT.dockerManifest } });
      expect(r.status).toBe(404);
      expect(await r.text()).toContain('which the client does not accept');
    }
    expect(hub.count({ kind: 'manifest', method: 'GET', status: 200 })).toBe(1);
    // A client that takes the type is not held to that answer.
    const ok = await mirror.request('/v2/ocionly/manifests/latest', { headers: { accept: MT.ociManifest } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('docker-content-digest')).toBe(oci.manifest.digest);
  });

  it('twenty clients hitting an expired tag at once cause one upstream HEAD', async () => {
    hub.putImage('library/tool', v1, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock });
    expect((await get()).status).toBe(200);
    clock.now += 61_000;
    hub.resetCounters();
    const all = await Promise.all(Array.from({ length: 20 }, () => get()));
    for (const r of all) expect(r.headers.get('docker-content-digest')).toBe(v1.manifest.digest);
    expect(hub.count({ kind: 'manifest', method: 'HEAD', status: 200 })).toBe(1);
    expect(hub.count({ kind: 'manifest', method: 'GET' })).toBe(0);
  });

  it('serves the cached manifest, marked stale, when upstream is down, 5xx or rate-limited', async () => {
    hub.putImage('library/tool', v1, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 1 } }, clock });
    expect((await get()).status).toBe(200);
    for (const fault of [{ down: true }, { status: 500 }, { rateLimited: { retryAfter: 30 } }]) {
      Object.assign(hub.faults, fault);
      clock.now += 5_000;
      const r = await get();
      expect(r.status).toBe(200);
      expect(r.headers.get('x-mirror-cache')).toBe('stale');
      expect(r.headers.get('warning')).toContain('110');
      expect(r.headers.get('docker-content-digest')).toBe(v1.manifest.digest);
      await hub.resetFaults();
    }
    await hub.goDown();
    clock.now += 5_000;
    const refused = await get();
    expect(refused.status).toBe(200);
    expect(refused.headers.get('x-mirror-cache')).toBe('stale');
    await hub.goUp();
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest', result: 'stale' })).toBe(4);
  });

  it('with nothing cached passes a 429 on with its Retry-After, and an outage as a 503 envelope', async () => {
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock });
    hub.faults.rateLimited = { retryAfter: 42, message: 'You have reached your pull rate limit.' };
    const limited = await get('nothing');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('42');
    const body = await limited.json() as any;
    expect(body.errors[0].code).toBe('TOOMANYREQUESTS');
    expect(body.errors[0].message).toContain('pull rate limit');
    await hub.resetFaults();
    await hub.goDown();
    const down = await get('nothing');
    expect([502, 503]).toContain(down.status);
    expect((await down.json() as any).errors[0].code).toBe('UNAVAILABLE');
    await hub.goUp();
  });

  it('offline mode never contacts upstream and serves what is cached', async () => {
    hub.putImage('library/tool', v1, 'latest');
    const first = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 1 } }, clock });
    expect((await first.request('/v2/tool/manifests/latest', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
    await first.request(`/v2/tool/blobs/${v1.layers[0]!.digest}`).then((r) => r.arrayBuffer());
    await first.stop({ keepData: true });
    hub.resetCounters();
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 1 } }, clock, offline: true, dataDir: first.dataDir });
    clock.now += 10_000;
    const r = await get();
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(v1.manifest.digest);
    const blob = await mirror.request(`/v2/tool/blobs/${v1.layers[0]!.digest}`);
    expect(blob.status).toBe(200);
    expect((await mirror.request('/v2/tool/manifests/other', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(404);
    expect((await mirror.request('/v2/tool/tags/list')).status).toBe(404);
    expect(hub.requests.length).toBe(0);
    const { rm } = await import('node:fs/promises');
    await rm(first.dataDir, { recursive: true, force: true });
  });

  it('tags/list: one upstream list paged here with n, last and a Link header; the last list, marked stale, when upstream fails', async () => {
    for (const t of ['d', 'c', 'b', 'a']) hub.putImage('library/lister', v1, t);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock });
    const all = await mirror.request('/v2/lister/tags/list');
    expect(await all.json() as any).toEqual({ name: 'lister', tags: ['a', 'b', 'c', 'd'] });
    const page = await mirror.request('/v2/lister/tags/list?n=2');
    expect((await page.json() as any).tags).toEqual(['a', 'b']);
    expect(page.headers.get('link')).toBe('</v2/lister/tags/list?n=2&last=b>; rel="next"');
    const next = await mirror.request('/v2/lister/tags/list?n=2&last=b');
    expect((await next.json() as any).tags).toEqual(['c', 'd']);
    expect(next.headers.get('link')).toBeNull();
    expect(next.headers.get('x-mirror-cache')).toBe('hit');
    // Within the TTL the pages come from the one list fetched.
    expect(hub.count({ kind: 'tags', status: 200 })).toBe(1);
    hub.faults.down = true;
    clock.now += 301_000;
    const stale = await mirror.request('/v2/lister/tags/list?n=3');
    expect(stale.status).toBe(200);
    expect(stale.headers.get('x-mirror-cache')).toBe('stale');
    expect(stale.headers.get('warning')).toContain('110');
    expect((await stale.json() as any).tags).toEqual(['a', 'b', 'c']);
    expect(stale.headers.get('link')).toBe('</v2/lister/tags/list?n=3&last=c>; rel="next"');
    const huge = await mirror.request('/v2/lister/tags/list?n=99999999');
    expect(huge.status).toBe(400);
    expect((await huge.json() as any).errors[0].code).toBe('PAGINATION_NUMBER_INVALID');
  });

  for (const style of ['distribution', 'quay'] as const) {
    it(`tags/list follows upstream's own pages to the end (${style === 'quay' ? "Quay's opaque next_page token on an absolute URL" : 'last and n'})`, async () => {
      const tags = Array.from({ length: 25 }, (_, i) => `t${String(i).padStart(2, '0')}`);
      for (const t of tags) hub.putImage(`library/paged-${style}`, v1, t);
      hub.faults.tagPages = { size: 10, style };
      mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock });
      const all = await mirror.request(`/v2/paged-${style}/tags/list`);
      expect(((await all.json()) as { tags: string[] }).tags).toEqual(tags);
      expect(all.headers.get('link')).toBeNull();
      expect(hub.count({ kind: 'tags', status: 200 })).toBe(3);
    });
  }

  it('_catalog lists the repositories held in the cache', async () => {
    hub.putImage('library/tool', v1, 'latest');
    hub.putImage('someone/thing', v2, 'x');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock });
    expect(await (await mirror.request('/v2/_catalog')).json() as any).toEqual({ repositories: [] });
    await get();
    await mirror.request('/v2/someone/thing/manifests/x', { headers: { accept: DOCKER_ACCEPT } });
    expect(await (await mirror.request('/v2/_catalog')).json() as any).toEqual({ repositories: ['library/tool', 'someone/thing'] });
    const p = await mirror.request('/v2/_catalog?n=1');
    expect(await p.json() as any).toEqual({ repositories: ['library/tool'] });
    expect(p.headers.get('link')).toContain('last=library%2Ftool');
  });
});
