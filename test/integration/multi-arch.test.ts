/**
 * A multi-arch tag is never replaced by one platform's manifest: upstream answers a client that
 * does not accept the tag's list (or index) with its linux/amd64 child, and the mirror keeps that
 * answer for such clients only. Docker list and OCI index (a Docker-Hub-like upstream narrows both),
 * GET and HEAD, narrow-then-broad and broad-then-narrow, after a restart, offline and stale.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, MT, type Blob } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

/** containerd's and skopeo --all's Accept: every manifest type. */
const ALL_ACCEPT = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest].join(', ');

const formats = [
  { name: 'Docker manifest list', format: 'docker' as const, list: MT.dockerList, child: MT.dockerManifest },
  { name: 'OCI index', format: 'oci' as const, list: MT.ociIndex, child: MT.ociManifest },
];

describe.each(formats)('a multi-arch tag ($name)', ({ format, list: listType, child: childType }) => {
  let hub: FakeUpstream;
  let mirror: TestMirror | undefined;
  const clock = { now: 5_000_000 };
  const amd = makeImage({ layers: [makeLayer([{ path: 'p', content: `amd64 ${format}` }])], architecture: 'amd64', format });
  const arm = makeImage({ layers: [makeLayer([{ path: 'p', content: `arm64 ${format}` }])], architecture: 'arm64', format });
  const list: Blob = makeIndex([amd, arm], format);
  const repo = `library/multi-${format}`;
  const path = `/v2/${repo}/manifests/latest`;

  beforeAll(async () => {
    hub = await FakeUpstream.start({ narrowLists: 'all' });
    hub.putIndex(repo, list, [amd, arm], 'latest');
  });
  afterAll(() => hub.close());
  afterEach(async () => {
    await mirror?.stop();
    mirror = undefined;
    await hub.resetFaults();
    hub.resetCounters();
  });

  const start = async (opts: { dataDir?: string; offline?: boolean; tagTtl?: number } = {}) => {
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: opts.tagTtl ?? 300 } }, clock, ...opts });
    return mirror;
  };
  const ask = async (accept: string, method: 'GET' | 'HEAD' = 'GET') => {
    const r = await mirror!.request(path, { method, headers: { accept } });
    expect(r.status).toBe(200);
    return { digest: r.headers.get('docker-content-digest'), type: r.headers.get('content-type'), cache: r.headers.get('x-mirror-cache') };
  };
  const narrow = (method: 'GET' | 'HEAD' = 'GET') => ask(childType, method);

  for (const method of ['GET', 'HEAD'] as const) {
    it(`narrow (${method}) then broad: each client gets what upstream gives its Accept`, async () => {
      await start();
      expect(await narrow(method)).toMatchObject({ digest: amd.manifest.digest, type: childType });
      // What upstream saw: the narrow client's Accept, answered with the child.
      expect(hub.requests.filter((r) => r.kind === 'manifest' && r.status === 200).map((r) => r.headers.accept)).toEqual([childType]);
      for (const accept of [DOCKER_ACCEPT, ALL_ACCEPT, listType]) {
        for (const m of ['GET', 'HEAD'] as const) expect(await ask(accept, m)).toMatchObject({ digest: list.digest, type: listType });
      }
      // And the narrow client still gets its child, now from the cache.
      expect(await narrow()).toMatchObject({ digest: amd.manifest.digest, cache: 'hit' });
      expect(await ask(DOCKER_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'hit' });
    });

    it(`broad then narrow (${method}): the narrow answer never replaces the list`, async () => {
      await start();
      expect(await ask(DOCKER_ACCEPT, method)).toMatchObject({ digest: list.digest, type: listType });
      clock.now += 1000; // the narrow answer is the more recent one
      expect(await narrow(method)).toMatchObject({ digest: amd.manifest.digest, type: childType });
      expect(await ask(DOCKER_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'hit' });
      expect(await ask(ALL_ACCEPT, 'HEAD')).toMatchObject({ digest: list.digest, cache: 'hit' });
    });
  }

  it('after a restart, and offline or stale, the list still goes to clients that accept it', async () => {
    const first = await start({ tagTtl: 60 });
    await narrow();
    await ask(DOCKER_ACCEPT);
    clock.now += 1000;
    await narrow(); // most recent
    await first.stop({ keepData: true });
    mirror = undefined;

    // Restart, online: both answers are cached, each for its clients.
    const second = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock, dataDir: first.dataDir });
    mirror = second;
    hub.resetCounters();
    expect(await ask(ALL_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'hit' });
    expect(await narrow()).toMatchObject({ digest: amd.manifest.digest, cache: 'hit' });
    expect(hub.requests).toHaveLength(0);

    // Past the TTL with upstream down: stale, still each its own.
    clock.now += 120_000;
    await hub.goDown();
    expect(await ask(DOCKER_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'stale' });
    expect(await narrow()).toMatchObject({ digest: amd.manifest.digest, cache: 'stale' });
    await second.stop({ keepData: true });
    mirror = undefined;

    // Offline mode.
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 60 } }, clock, dataDir: first.dataDir, offline: true });
    expect(await ask(ALL_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'stale' });
    expect(await narrow('HEAD')).toMatchObject({ digest: amd.manifest.digest, cache: 'stale' });
    await mirror.stop();
    mirror = undefined;
    const { rm } = await import('node:fs/promises');
    await rm(first.dataDir, { recursive: true, force: true });
  });

  it('revalidating a list asks upstream with the list client\'s Accept (same digest, no GET)', async () => {
    await start({ tagTtl: 60 });
    await ask(DOCKER_ACCEPT);
    await narrow();
    clock.now += 61_000;
    hub.resetCounters();
    expect(await ask(DOCKER_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'revalidated' });
    expect(await narrow()).toMatchObject({ digest: amd.manifest.digest, cache: 'revalidated' });
    expect(hub.count({ kind: 'manifest', method: 'GET' })).toBe(0);
    expect(hub.count({ kind: 'manifest', method: 'HEAD', status: 200 })).toBe(2);
  });

  it('a one-platform tag that becomes a list of that same manifest: a narrow client revalidating it does not confirm it for clients that accept the list', async () => {
    const grown = `library/grown-${format}`;
    hub.putImage(grown, amd, 'latest');
    await start({ tagTtl: 60 });
    const askGrown = async (accept: string) => {
      const r = await mirror!.request(`/v2/${grown}/manifests/latest`, { headers: { accept } });
      expect(r.status).toBe(200);
      return { digest: r.headers.get('docker-content-digest'), cache: r.headers.get('x-mirror-cache') };
    };
    // The tag's own content then: one platform's manifest, for every client.
    expect(await askGrown(ALL_ACCEPT)).toMatchObject({ digest: amd.manifest.digest, cache: 'miss' });
    // Upstream makes it multi-arch, listing the same amd64 manifest (buildx imagetools create, docker manifest create).
    hub.putIndex(grown, list, [amd, arm], 'latest');
    clock.now += 61_000;
    hub.resetCounters();
    // Upstream narrows the list for this client: the same digest, so the same answer for it.
    expect(await askGrown(childType)).toMatchObject({ digest: amd.manifest.digest, cache: 'revalidated' });
    // A client that accepts the list asks upstream, and gets the list.
    clock.now += 1_000;
    expect(await askGrown(ALL_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'miss' });
    expect(hub.requests.filter((r) => r.kind === 'manifest').map((r) => `${r.method} ${r.headers.accept === childType ? 'narrow' : 'broad'}`)).toEqual(['HEAD narrow', 'HEAD broad', 'GET broad']);
    // And the narrow client's answer stays fresh for it.
    hub.resetCounters();
    expect(await askGrown(childType)).toMatchObject({ digest: amd.manifest.digest, cache: 'hit' });
    expect(await askGrown(ALL_ACCEPT)).toMatchObject({ digest: list.digest, cache: 'hit' });
    expect(hub.requests.filter((r) => r.kind === 'manifest')).toHaveLength(0);
  });
});
