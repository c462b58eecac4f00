import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, makeRandomLayer, MT } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

const sha = (b: ArrayBuffer | Buffer) => digestOf(b);

describe('pulling through the mirror from a fake Docker Hub', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  const base = makeRandomLayer(300_000, 'base');
  const appA = makeLayer([{ path: 'a.txt', content: 'a' }]);
  const appB = makeLayer([{ path: 'b.txt', content: 'b' }]);
  const imgA = makeImage({ layers: [base, appA], format: 'docker' });
  const imgB = makeImage({ layers: [base, appB], format: 'docker' });
  const amd = makeImage({ layers: [appA], architecture: 'amd64' });
  const arm = makeImage({ layers: [appB], architecture: 'arm64' });
  const index = makeIndex([amd, arm]);

  beforeAll(async () => {
    hub = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 100 } });
    hub.putImage('library/app', imgA, 'a');
    hub.putImage('library/app', imgB, 'b');
    hub.putImage('other/thing', imgA, 'v1');
    hub.putIndex('library/multi', index, [amd, arm], 'latest');
  });
  afterAll(async () => {
    await hub.close();
  });
  afterEach(async () => {
    await mirror?.stop();
    hub.resetCounters();
  });

  const start = async () => {
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    return mirror;
  };

  it('serves /v2/ with the API version header', async () => {
    await start();
    const res = await mirror.request('/v2/');
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('pulls two images sharing a layer, fetching the shared layer from upstream once', async () => {
    await start();
    for (const [tag, img] of [['a', imgA], ['b', imgB]] as const) {
      const m = await mirror.request(`/v2/app/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } });
      expect(m.status).toBe(200);
      expect(m.headers.get('content-type')).toBe(MT.dockerManifest);
      expect(m.headers.get('docker-content-digest')).toBe(img.manifest.digest);
      expect(m.headers.get('etag')).toBe(`"${img.manifest.digest}"`);
      expect(Number(m.headers.get('content-length'))).toBe(img.manifest.size);
      expect(sha(await m.arrayBuffer())).toBe(img.manifest.digest);
      for (const blob of [img.config, ...img.layers]) {
        const r = await mirror.request(`/v2/library/app/blobs/${blob.digest}`);
        expect(r.status).toBe(200);
        expect(r.headers.get('content-encoding')).toBeNull();
        expect(Number(r.headers.get('content-length'))).toBe(blob.size);
        expect(sha(await r.arrayBuffer())).toBe(blob.digest);
      }
    }
    const baseFetches = hub.count({ kind: 'cdn', path: new RegExp(base.digest.slice(7)) });
    expect(baseFetches).toBe(1);
    // Every unique blob crossed the upstream link once: 2 configs + base + 2 app layers.
    expect(hub.count({ kind: 'cdn' })).toBe(5);
    expect(hub.cdnRejectedAuth).toBe(0);
    // Tokens are cached per scope: one for library/app.
    expect(hub.count({ kind: 'token' })).toBe(1);
    expect(hub.count({ kind: 'manifest', method: 'GET', status: 200 })).toBe(2);
    // The first request of a scope meets the 401 challenge; after that the cached token is sent up front.
    expect(hub.count({ status: 401 })).toBe(1);
  });

  it('ten concurrent GETs of a cold blob cause one upstream fetch and ten correct bodies', async () => {
    await start();
    await mirror.request('/v2/app/manifests/a', { headers: { accept: DOCKER_ACCEPT } });
    hub.resetCounters();
    const bodies = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const r = await mirror.request(`/v2/library/app/blobs/${base.digest}`);
        expect(r.status).toBe(200);
        return sha(await r.arrayBuffer());
      }),
    );
    expect(bodies.every((d) => d === base.digest)).toBe(true);
    expect(hub.count({ kind: 'cdn' })).toBe(1);
    expect(await mirror.metric('mirror_coalesced_requests_total')).toBe(9);
  });

  it('serves ranges on a miss and on a hit, and 416 when unsatisfiable', async () => {
    await start();
    await mirror.request('/v2/app/manifests/a', { headers: { accept: DOCKER_ACCEPT } });
    const miss = await mirror.request(`/v2/library/app/blobs/${base.digest}`, { headers: { range: 'bytes=100-199' } });
    expect(miss.status).toBe(206);
    expect(miss.headers.get('content-range')).toBe(`bytes 100-199/${base.size}`);
    expect(Buffer.from(await miss.arrayBuffer()).equals(base.bytes.subarray(100, 200))).toBe(true);
    // The download finishes (stored) before the next request, which is then a hit.
    expect(await mirror.registry.drain(5000)).toBe(true);
    const hit = await mirror.request(`/v2/library/app/blobs/${base.digest}`, { headers: { range: `bytes=${base.size - 10}-` } });
    expect(hit.status).toBe(206);
    expect(hit.headers.get('x-mirror-cache')).toBe('hit');
    expect(Buffer.from(await hit.arrayBuffer()).equals(base.bytes.subarray(base.size - 10))).toBe(true);
    const bad = await mirror.request(`/v2/library/app/blobs/${base.digest}`, { headers: { range: `bytes=${base.size}-` } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${base.size}`);
    expect(hub.count({ kind: 'cdn' })).toBe(1);
  });

  it('HEAD on an uncached blob asks upstream with a HEAD and downloads nothing', async () => {
    await start();
    const r = await mirror.request(`/v2/library/app/blobs/${appA.digest}`, { method: 'HEAD' });
    expect(r.status).toBe(200);
    expect(Number(r.headers.get('content-length'))).toBe(appA.size);
    expect(r.headers.get('docker-content-digest')).toBe(appA.digest);
    expect(hub.count({ kind: 'blob', method: 'HEAD', status: 200 })).toBe(1);
    expect(hub.count({ kind: 'cdn' })).toBe(0);
    expect(hub.count({ kind: 'blob', method: 'GET' })).toBe(0);
  });

  it('twenty concurrent HEADs of an uncached blob cause one upstream HEAD', async () => {
    await start();
    const all = await Promise.all(Array.from({ length: 20 }, () => mirror.request(`/v2/library/app/blobs/${appB.digest}`, { method: 'HEAD' })));
    for (const r of all) expect(Number(r.headers.get('content-length'))).toBe(appB.size);
    expect(hub.count({ kind: 'blob', method: 'HEAD', status: 200 })).toBe(1);
    expect(hub.count({ kind: 'cdn' })).toBe(0);
  });

  it('manifests by digest are immutable: no upstream call once cached', async () => {
    await start();
    const first = await mirror.request(`/v2/library/app/manifests/${imgA.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
    expect(first.status).toBe(200);
    hub.resetCounters();
    for (let i = 0; i < 3; i++) {
      const again = await mirror.request(`/v2/library/app/manifests/${imgA.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
      expect(again.status).toBe(200);
      const head = await mirror.request(`/v2/library/app/manifests/${imgA.manifest.digest}`, { method: 'HEAD', headers: { accept: DOCKER_ACCEPT } });
      expect(head.headers.get('docker-content-digest')).toBe(imgA.manifest.digest);
      expect(Number(head.headers.get('content-length'))).toBe(imgA.manifest.size);
    }
    expect(hub.requests.length).toBe(0);
  });

  it('serves an OCI index and its platform manifests, honouring Accept', async () => {
    await start();
    const idx = await mirror.request('/v2/multi/manifests/latest', { headers: { accept: `${MT.ociIndex}, ${MT.ociManifest}` } });
    expect(idx.status).toBe(200);
    expect(idx.headers.get('content-type')).toBe(MT.ociIndex);
    expect(idx.headers.get('docker-content-digest')).toBe(index.digest);
    const child = await mirror.request(`/v2/multi/manifests/${arm.manifest.digest}`, { headers: { accept: MT.ociManifest } });
    expect(child.status).toBe(200);
    expect(child.headers.get('content-type')).toBe(MT.ociManifest);
    // A client that accepts only Docker schema 2 never gets the OCI index.
    const refused = await mirror.request('/v2/multi/manifests/latest', { headers: { accept: MT.dockerManifest } });
    expect(refused.status).toBe(404);
    expect((await refused.json() as any).errors[0].code).toBe('MANIFEST_UNKNOWN');
    // By digest, the content is what it is: served whatever the Accept, with its real type (as the registry does).
    const byDigest = await mirror.request(`/v2/multi/manifests/${index.digest}`, { headers: { accept: MT.dockerManifest } });
    expect(byDigest.status).toBe(200);
    expect(byDigest.headers.get('content-type')).toBe(MT.ociIndex);
    expect(byDigest.headers.get('docker-content-digest')).toBe(index.digest);
  });

  it('serves a Docker manifest list and its schema 2 manifests', async () => {
    const d1 = makeImage({ layers: [appA], architecture: 'amd64', format: 'docker' });
    const d2 = makeImage({ layers: [appB], architecture: 'arm64', format: 'docker' });
    const list = makeIndex([d1, d2], 'docker');
    hub.putIndex('library/dlist', list, [d1, d2], 'latest');
    await start();
    const r = await mirror.request('/v2/dlist/manifests/latest', { headers: { accept: DOCKER_ACCEPT } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe(MT.dockerList);
    expect(r.headers.get('docker-content-digest')).toBe(list.digest);
    const child = await mirror.request(`/v2/dlist/manifests/${d2.manifest.digest}`, { headers: { accept: MT.dockerManifest } });
    expect(child.status).toBe(200);
    expect(child.headers.get('content-type')).toBe(MT.dockerManifest);
    expect(sha(await child.arrayBuffer())).toBe(d2.manifest.digest);
  });

  it('does not serve a blob under a repository that is not known to hold it', async () => {
    await start();
    await mirror.request('/v2/app/manifests/a', { headers: { accept: DOCKER_ACCEPT } });
    expect((await mirror.request(`/v2/library/app/blobs/${appA.digest}`)).status).toBe(200);
    hub.resetCounters();
    // library/empty has no such blob upstream: the mirror asks and refuses.
    const r = await mirror.request(`/v2/library/empty/blobs/${appA.digest}`);
    expect(r.status).toBe(404);
    expect((await r.json() as any).errors[0].code).toBe('BLOB_UNKNOWN');
    expect(hub.count({ kind: 'cdn' })).toBe(0);
    // other/thing does hold it upstream: confirmed with a HEAD, served from the cache.
    const ok = await mirror.request(`/v2/other/thing/blobs/${appA.digest}`);
    expect(ok.status).toBe(200);
    expect(sha(await ok.arrayBuffer())).toBe(appA.digest);
    expect(hub.count({ kind: 'blob', method: 'HEAD' })).toBe(2);
    expect(hub.count({ kind: 'cdn' })).toBe(0);
  });
});
