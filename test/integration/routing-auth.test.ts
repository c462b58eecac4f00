import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, MT } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

const img = makeImage({ layers: [makeLayer([{ path: 'x', content: 'routing' }])] });
const fakes: FakeUpstream[] = [];
let mirror: TestMirror | undefined;

afterEach(async () => {
  await mirror?.stop();
  mirror = undefined;
  await Promise.all(fakes.splice(0).map((f) => f.close()));
});

async function fake(opts: Parameters<typeof FakeUpstream.start>[0] = {}) {
  const f = await FakeUpstream.start(opts);
  fakes.push(f);
  return f;
}

describe('upstream routing', () => {
  it('routes by ?ns=, by a host as first path part, and defaults to docker.io', async () => {
    const hub = await fake();
    const ghcr = await fake({ auth: 'none', cdn: false });
    hub.putImage('library/alpine', img, 'latest');
    ghcr.putImage('owner/repo', img, 'v1');
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, aliases: ['registry-1.docker.io'] }, 'ghcr.io': { url: ghcr.url } },
    });
    const h = { headers: { accept: DOCKER_ACCEPT } };
    expect((await mirror.request('/v2/alpine/manifests/latest', h)).status).toBe(200);
    expect((await mirror.request('/v2/library/alpine/manifests/latest?ns=docker.io', h)).status).toBe(200);
    expect((await mirror.request('/v2/docker.io/library/alpine/manifests/latest', h)).status).toBe(200);
    expect((await mirror.request('/v2/registry-1.docker.io/alpine/manifests/latest', h)).status).toBe(200);
    expect((await mirror.request('/v2/owner/repo/manifests/v1?ns=ghcr.io', h)).status).toBe(200);
    // containerd's override_path on a /v2/ghcr.io mirror sends the host in the path and in ns.
    expect((await mirror.request('/v2/ghcr.io/owner/repo/manifests/v1?ns=ghcr.io', h)).status).toBe(200);
    const viaPath = await mirror.request(`/v2/ghcr.io/owner/repo/blobs/${img.layers[0]!.digest}`);
    expect(viaPath.status).toBe(200);
    expect(ghcr.count({ kind: 'manifest', method: 'GET' })).toBe(1);
    expect(ghcr.count({ path: /ghcr\.io/ })).toBe(0);
    expect(ghcr.count({ kind: 'blob', method: 'GET' })).toBe(1);
    expect(hub.count({ kind: 'manifest', method: 'GET', status: 200 })).toBe(1);

    const unknown = await mirror.request('/v2/owner/repo/manifests/v1?ns=evil.example.com', h);
    expect(unknown.status).toBe(404);
    const body = await unknown.json() as any;
    expect(body.errors[0].code).toBe('NAME_UNKNOWN');
    expect(body.errors[0].message).toContain('evil.example.com');
    expect((await mirror.request('/v2/quay.io/x/y/manifests/latest', h)).status).toBe(404);
    // Routes are remembered per name and ns (registry/service.ts): a refusal stays a refusal, and the
    // same name without ns goes to the default upstream, not to the one a cached ns picked.
    expect((await mirror.request('/v2/owner/repo/manifests/v1?ns=evil.example.com', h)).status).toBe(404);
    expect(hub.count({ path: /owner\/repo/ })).toBe(0);
    expect((await mirror.request('/v2/owner/repo/manifests/v1', h)).status).toBe(404);
    expect(hub.count({ path: /owner\/repo/ })).toBeGreaterThan(0);
    expect(ghcr.count({ kind: 'manifest', method: 'GET' })).toBe(1);
  });
});

describe('upstream authentication', () => {
  it('never sends Authorization to the CDN host and never forwards the client Authorization', async () => {
    const hub = await fake({ credentials: { username: 'mirror', password: 's3cret' } });
    hub.putImage('library/private', img, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'mirror', password: 's3cret' } } });
    const m = await mirror.request('/v2/private/manifests/latest', { headers: { accept: DOCKER_ACCEPT, authorization: 'Bearer client-token' } });
    expect(m.status).toBe(200);
    const b = await mirror.request(`/v2/private/blobs/${img.layers[0]!.digest}`, { headers: { authorization: 'Basic Y2xpZW50OnB3' } });
    expect(b.status).toBe(200);
    await b.arrayBuffer();
    expect(hub.cdnRejectedAuth).toBe(0);
    expect(hub.count({ kind: 'cdn', status: 200 })).toBe(1);
    for (const r of hub.requests) {
      const auth = String(r.headers.authorization ?? '');
      expect(auth).not.toContain('client-token');
      expect(auth).not.toBe('Basic Y2xpZW50OnB3');
    }
    // The token realm got the configured credentials as HTTP Basic.
    const tokenReq = hub.requests.find((r) => r.kind === 'token')!;
    expect(tokenReq.headers.authorization).toBe(`Basic ${Buffer.from('mirror:s3cret').toString('base64')}`);
    const metrics = await (await mirror.request('/metrics')).text();
    expect(metrics).not.toContain('s3cret');
  });

  it('caches tokens per scope until they expire, then fetches a new one; retries once on a 401', async () => {
    const hub = await fake({ tokenTtlSeconds: 120 });
    hub.putImage('library/one', img, 'latest');
    hub.putImage('library/two', img, 'latest');
    const clock = { now: Date.now() };
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 0 } }, clock });
    const h = { headers: { accept: DOCKER_ACCEPT } };
    for (let i = 0; i < 5; i++) expect((await mirror.request('/v2/one/manifests/latest', h)).status).toBe(200);
    expect(hub.count({ kind: 'token' })).toBe(1);
    expect((await mirror.request('/v2/two/manifests/latest', h)).status).toBe(200);
    expect(hub.count({ kind: 'token' })).toBe(2);
    clock.now += 130_000;
    expect((await mirror.request('/v2/one/manifests/latest', h)).status).toBe(200);
    expect(hub.count({ kind: 'token' })).toBe(3);
    // Upstream revokes every token: the mirror meets a 401, fetches a fresh token and retries once.
    hub.expireTokens();
    hub.resetCounters();
    expect((await mirror.request('/v2/one/manifests/latest', h)).status).toBe(200);
    expect(hub.count({ kind: 'token' })).toBe(1);
    expect(hub.count({ status: 401 })).toBe(1);
    expect(await mirror.metric('mirror_upstream_token_fetches_total', { result: 'ok' })).toBe(4);
  });

  it('works with a Basic-auth upstream', async () => {
    const reg = await fake({ auth: 'basic', credentials: { username: 'u', password: 'p' }, cdn: false });
    reg.putImage('team/app', img, '1.0');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: reg.url, libraryPrefix: true }, 'registry.local': { url: reg.url, username: 'u', password: 'p' } } });
    const r = await mirror.request('/v2/registry.local/team/app/manifests/1.0', { headers: { accept: MT.ociManifest } });
    expect(r.status).toBe(200);
    const blob = await mirror.request(`/v2/registry.local/team/app/blobs/${img.layers[0]!.digest}`);
    expect(blob.status).toBe(200);
    expect(Buffer.from(await blob.arrayBuffer()).equals(img.layers[0]!.bytes)).toBe(true);
  });

  it('a denied upstream answer is UNAUTHORIZED/DENIED, not a 500', async () => {
    const hub = await fake({ credentials: { username: 'a', password: 'b' } });
    hub.putImage('library/locked', img, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'a', password: 'wrong' } } });
    const r = await mirror.request('/v2/locked/manifests/latest', { headers: { accept: DOCKER_ACCEPT } });
    expect([401, 403]).toContain(r.status);
    expect(['UNAUTHORIZED', 'DENIED']).toContain((await r.json() as any).errors[0].code);
  });
});

describe('referrers (OCI 1.1)', () => {
  it('proxies and caches the referrers list with artifactType filtering', async () => {
    const hub = await fake();
    const sig = makeImage({ layers: [makeLayer([{ path: 'sig', content: 's' }])], artifactType: 'application/vnd.example.sig', subject: img.manifest });
    const sbom = makeImage({ layers: [makeLayer([{ path: 'sbom', content: 'b' }])], artifactType: 'application/spdx+json', subject: img.manifest });
    hub.putImage('library/signed', img, 'latest');
    hub.putImage('library/signed', sig);
    hub.putImage('library/signed', sbom);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    const all = await mirror.request(`/v2/signed/referrers/${img.manifest.digest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toBe(MT.ociIndex);
    const idx = await all.json() as any;
    expect(idx.manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sig.manifest.digest, sbom.manifest.digest].sort());
    const filtered = await mirror.request(`/v2/signed/referrers/${img.manifest.digest}?artifactType=application/spdx%2Bjson`);
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect((await filtered.json() as any).manifests.map((m: { digest: string }) => m.digest)).toEqual([sbom.manifest.digest]);
    expect(hub.count({ kind: 'referrers', status: 200 })).toBe(1);
    // The referrer manifests are now known to be in the repository.
    expect((await mirror.request(`/v2/signed/manifests/${sig.manifest.digest}`, { headers: { accept: MT.ociManifest } })).status).toBe(200);
  });

  it('falls back to the sha256-<hex> tag when upstream has no referrers API, and answers an empty index when none', async () => {
    const hub = await fake({ referrers: false });
    hub.putImage('library/plain', img, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    const r = await mirror.request(`/v2/plain/referrers/${img.manifest.digest}`);
    expect(r.status).toBe(200);
    expect(await r.json() as any).toEqual({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] });
  });

  it("the fallback index's entries are not taken as the repository's manifests: anyone can push that tag", async () => {
    const hub = await fake({ referrers: false });
    const other = makeImage({ layers: [makeLayer([{ path: 'o', content: 'another repository' }])] });
    hub.putImage('library/plain', img, 'latest');
    hub.putImage('library/other', other, 'latest');
    // Under the fallback tag of plain's manifest: an index naming other's manifest.
    hub.putManifest('library/plain', makeIndex([other]), `sha256-${img.manifest.digest.slice(7)}`);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    expect((await mirror.request('/v2/other/manifests/latest', { headers: { accept: MT.ociManifest } })).status).toBe(200);
    const r = await mirror.request(`/v2/plain/referrers/${img.manifest.digest}`);
    expect(((await r.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest)).toEqual([other.manifest.digest]);
    hub.resetCounters();
    // Cached for other, named by plain's fallback index: asked under plain, upstream is asked (and has no such thing there).
    const under = await mirror.request(`/v2/plain/manifests/${other.manifest.digest}`, { headers: { accept: MT.ociManifest } });
    expect(under.status).toBe(404);
    expect(hub.requests.filter((q) => q.kind === 'manifest').map((q) => `${q.method} ${q.status}`)).toEqual(['HEAD 404']);
  });
});
