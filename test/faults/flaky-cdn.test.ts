/**
 * A flaky CDN against the real server process (issue 16): transfers are resumed with Range as long
 * as each attempt delivers new bytes, however many cuts that takes; attempts that deliver nothing back
 * off; clients keep their connection through it all and get the complete, correct blob, and upstream
 * sees one download plus its resumes.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { blobFile, rawGet, faultFixture } from './util.js';

const MiB = 1024 * 1024;
const flakyLayer = makeRandomLayer(4 * MiB, 'flaky-cdn');
const outageLayer = makeRandomLayer(3 * MiB, 'flaky-cdn-outage');
const img = makeImage({ layers: [flakyLayer, outageLayer] });

const fx = faultFixture(async () => {
  const hub = await FakeUpstream.start();
  hub.putImage('library/app', img, 'v1');
  return hub;
});

const start = () =>
  spawnMirror({
    upstreams: { 'docker.io': { url: fx.hub.url, libraryPrefix: true } },
    extraConfig: { timeouts: { connect: 1000, headers: 2000, bodyIdle: 2000 }, upstreamHealth: { offlineMinMs: 300, offlineMaxMs: 1000 } },
  });

const blobUrl = (m: SpawnedMirror, digest: string) => `${m.url}/v2/library/app/blobs/${digest}`;
const cdnGets = (digest: string) => fx.hub.requests.filter((r) => r.kind === 'cdn' && r.method === 'GET' && r.path.endsWith(digest.slice(7)));
const rangeStart = (h: string | string[] | undefined) => Number(/^bytes=(\d+)-$/.exec(String(h ?? ''))?.[1] ?? 0);

describe('a CDN that cuts every response for a while, then recovers', () => {
  it('10 concurrent clients all get the complete, correct blob; upstream saw one download plus its resumes', async () => {
    fx.mirror = await start();
    // Each of the next 8 responses stops after 400 KiB (a tenth of the blob): more cuts than the
    // old fixed three resumes allowed, each one making progress. Then the CDN is healthy again.
    const CUTS = 8;
    const CUT = 400 * 1024;
    fx.hub.faults.truncateBlobAfter = CUT;
    fx.hub.faults.truncateBlobTimes = CUTS;
    const results = await Promise.all(Array.from({ length: 10 }, () => rawGet(blobUrl(fx.mirror!, flakyLayer.digest), { timeoutMs: 20_000 })));
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.error).toBeUndefined();
      expect(r.complete).toBe(true);
      expect(r.body.length).toBe(flakyLayer.size);
      expect(digestOf(r.body)).toBe(flakyLayer.digest);
    }
    const gets = cdnGets(flakyLayer.digest);
    const offsets = gets.map((g) => rangeStart(g.headers.range));
    // One download (from 0) and one Range resume per cut (at the cut), each further on than the last.
    // (A heavily loaded machine may add a resume of its own, after a body-idle timeout.)
    expect(offsets[0]).toBe(0);
    for (let i = 1; i < offsets.length; i++) expect(offsets[i], JSON.stringify(offsets)).toBeGreaterThan(offsets[i - 1]!);
    for (let i = 1; i <= CUTS; i++) expect(offsets, JSON.stringify(offsets)).toContain(i * CUT);
    expect(await fx.mirror.metric('mirror_download_resumes_total')).toBe(gets.length - 1);
    expect(await fx.mirror.metric('mirror_coalesced_requests_total')).toBe(9);
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, flakyLayer.digest)), 5000, `${flakyLayer.digest} in the cache`);
    const slowest = Math.max(...results.map((r) => r.ms));
    console.log(`[flaky-cdn] ${CUTS} cuts: ${gets.length} CDN GETs (offsets ${offsets.join(', ')}); 10 clients complete and correct, slowest ${Math.round(slowest)} ms`);
  });

  it('an upstream refusing connections for a moment mid-transfer: the download backs off, waits for the probe and completes', async () => {
    fx.mirror = await start();
    // Trickled, so the transfer is under way when the upstream goes away.
    fx.hub.faults.trickle = { bytesPerTick: 128 * 1024, tickMs: 20 };
    let total = 0;
    const pending = Promise.all(
      Array.from({ length: 3 }, (_, i) => rawGet(blobUrl(fx.mirror!, outageLayer.digest), { timeoutMs: 20_000, onData: (_c, n) => void (i === 0 && (total = n)) })),
    );
    await waitFor(() => total >= 512 * 1024, 10_000, 'the clients streaming');
    await fx.hub.goDown();
    const downAt = performance.now();
    // The resume is refused: the upstream is assumed offline; the download waits for the probe.
    await waitFor(async () => (await fx.mirror!.metric('mirror_upstream_online', { upstream: 'docker.io' })) === 0, 5000, 'docker.io assumed offline');
    await fx.hub.goUp();
    const results = await pending;
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.error).toBeUndefined();
      expect(r.body.length).toBe(outageLayer.size);
      expect(digestOf(r.body)).toBe(outageLayer.digest);
    }
    const offsets = cdnGets(outageLayer.digest).map((g) => rangeStart(g.headers.range));
    expect(offsets[0]).toBe(0);
    expect(offsets.at(-1)).toBeGreaterThan(0);
    expect(await fx.mirror.metric('mirror_upstream_online', { upstream: 'docker.io' })).toBe(1);
    console.log(`[flaky-cdn] refused mid-transfer: completed ${Math.round(performance.now() - downAt)} ms after the upstream went away; CDN GET offsets ${offsets.join(', ')}`);
  });
});
