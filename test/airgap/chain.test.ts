/**
 * Chained mirrors: an inner mirror whose upstream is another regmirror (a DMZ mirror). Concurrent
 * pulls through the inner one, and through the outer one directly, reach the real upstream once
 * per digest.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

const img = makeImage({ layers: [makeLayer([{ path: 'a', content: 'chain' }]), makeRandomLayer(512 * 1024, 'chain big')] });

describe('a mirror whose upstream is another regmirror', () => {
  let hub: FakeUpstream;
  let outer: TestMirror;
  let inner: TestMirror;
  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app', img, '1.0');
    outer = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, listen: true });
    inner = await startMirror({ upstreams: { 'docker.io': { url: outer.url, libraryPrefix: true } } });
  });
  afterAll(async () => {
    await inner.stop();
    await outer.stop();
    await hub.close();
  });

  const pull = async (m: TestMirror) => {
    const res = await m.request('/v2/library/app/manifests/1.0', { headers: { accept: DOCKER_ACCEPT } });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(img.manifest.digest);
    for (const b of [img.config, ...img.layers]) {
      const r = await m.request(`/v2/library/app/blobs/${b.digest}`);
      expect(r.status).toBe(200);
      expect(Buffer.from(await r.arrayBuffer()).equals(b.bytes)).toBe(true);
    }
  };

  it('keeps one fetch per digest across the chain', async () => {
    await Promise.all([pull(inner), pull(inner), pull(inner), pull(outer)]);
    await pull(inner);
    const served = (filter: Parameters<FakeUpstream['count']>[0]) => hub.count(filter) - hub.count({ ...filter, status: 401 });
    for (const b of [img.config, ...img.layers]) expect(served({ kind: 'blob', method: 'GET', path: new RegExp(b.digest) }), b.digest).toBe(1);
    expect(served({ kind: 'manifest', method: 'GET' })).toBeLessThanOrEqual(2);
    expect(await outer.metric('mirror_upstream_requests_total')).toBeGreaterThan(0);
  });
});
