/**
 * Faults inside a transfer, against the real server process: a body cut halfway (Range resume), a
 * corrupted byte (nothing kept, every client aborted), a manifest that does not match its digest,
 * a stalled and a trickling upstream, and a client hanging up mid-stream.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { blobFile, DOCKER_ACCEPT, expectOciError, rawGet, tmpEntries, tree, faultFixture } from './util.js';

const MiB = 1024 * 1024;
const truncLayer = makeRandomLayer(3 * MiB, 'transfer-trunc');
const corruptLayer = makeRandomLayer(2 * MiB, 'transfer-corrupt');
const stallLayer = makeRandomLayer(4 * MiB, 'transfer-stall');
const trickleLayer = makeRandomLayer(1 * MiB, 'transfer-trickle');
const crawlLayer = makeRandomLayer(1 * MiB, 'transfer-crawl');
const hangLayer = makeRandomLayer(3 * MiB, 'transfer-hang');
const hangLayer2 = makeRandomLayer(3 * MiB, 'transfer-hang-2');
const warmLayer = makeRandomLayer(300_000, 'transfer-warm');
const img = makeImage({ layers: [truncLayer, corruptLayer, stallLayer, trickleLayer, crawlLayer, hangLayer, hangLayer2, warmLayer] });
const manifestImg = makeImage({ layers: [warmLayer], cmd: ['corrupt-manifest'] });

const fx = faultFixture(async () => {
  const hub = await FakeUpstream.start();
  hub.putImage('library/app', img, 'v1');
  hub.putImage('library/man', manifestImg, 'v1');
  return hub;
});

const start = (extraConfig?: Record<string, unknown>) =>
  spawnMirror({ upstreams: { 'docker.io': { url: fx.hub.url, libraryPrefix: true } }, ...(extraConfig ? { extraConfig } : {}) });

const blobUrl = (m: SpawnedMirror, digest: string, repo = 'library/app') => `${m.url}/v2/${repo}/blobs/${digest}`;
const cdnGets = (digest: string) => fx.hub.requests.filter((r) => r.kind === 'cdn' && r.method === 'GET' && r.path.endsWith(digest.slice(7)));

describe('body cut halfway', () => {
  it('resumes with Range: bytes=N- and every client gets the complete, correct body', async () => {
    fx.mirror = await start();
    fx.hub.faults.truncateBlobAfter = 1 * MiB;
    fx.hub.faults.truncateBlobTimes = 1;
    // Trickled, so the clients are mid-stream when the body is cut.
    fx.hub.faults.trickle = { bytesPerTick: 128 * 1024, tickMs: 20 };
    const totals = [0, 0, 0, 0];
    let atResume: number[] | undefined;
    const resumeSeen = () => cdnGets(truncLayer.digest).some((g) => g.headers.range !== undefined);
    const watch = (async () => {
      for (let i = 0; i < 2000 && !atResume; i++) {
        if (resumeSeen()) atResume = [...totals];
        else await sleep(5);
      }
    })();
    const results = await Promise.all(totals.map((_, i) => rawGet(blobUrl(fx.mirror!, truncLayer.digest), { timeoutMs: 20_000, onData: (_c, n) => void (totals[i] = n) })));
    await watch;
    expect(atResume, 'a Range request was seen').toBeDefined();
    // Clients were streaming when the cut happened (they had bytes before the resume started).
    expect(Math.max(...atResume!)).toBeGreaterThan(0);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.error).toBeUndefined();
      expect(r.body.length).toBe(truncLayer.size);
      expect(digestOf(r.body)).toBe(truncLayer.digest);
    }
    const gets = cdnGets(truncLayer.digest);
    const ranged = gets.filter((g) => /^bytes=\d+-$/.test(String(g.headers.range ?? '')));
    expect(ranged.length, JSON.stringify(gets.map((g) => g.headers.range ?? null))).toBeGreaterThanOrEqual(1);
    const offset = Number(/^bytes=(\d+)-$/.exec(String(ranged[0]!.headers.range))![1]);
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(1 * MiB);
    expect(await fx.mirror.metric('mirror_download_resumes_total')).toBeGreaterThanOrEqual(1);
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, truncLayer.digest)), 5000, `${truncLayer.digest} in the cache`);
    console.log(`[transfer] truncation: resumed at bytes=${offset}-; ${gets.length} upstream GETs; clients had ${atResume!.join('/')} bytes at the resume; all 4 got ${truncLayer.size} correct bytes`);
  });
});

describe('a corrupted byte', () => {
  it('keeps nothing, aborts every client mid-stream, counts digest_mismatch, and tries upstream again next time', async () => {
    fx.mirror = await start();
    fx.hub.faults.corruptBlob = true;
    // Slow enough that all clients are streaming when the mismatch is found.
    fx.hub.faults.trickle = { bytesPerTick: 256 * 1024, tickMs: 50 };
    const clients = await Promise.all(Array.from({ length: 6 }, () => rawGet(blobUrl(fx.mirror!, corruptLayer.digest), { timeoutMs: 20_000 })));
    const summary = clients.map((c) => `${c.status}:${c.body.length}:${c.error ?? 'complete'}`);
    for (const c of clients) {
      // Either an error status, or an aborted/short body: never all bytes delivered as a success.
      const completeWrong = c.status === 200 && c.complete && c.body.length === corruptLayer.size;
      expect(completeWrong, summary.join(' ')).toBe(false);
      if (c.status === 200) {
        expect(c.error !== undefined || c.body.length < corruptLayer.size, summary.join(' ')).toBe(true);
        expect(c.body.length).toBeLessThan(corruptLayer.size);
      }
      expect(digestOf(c.body)).not.toBe(corruptLayer.digest);
    }
    expect(existsSync(blobFile(fx.mirror.dataDir, corruptLayer.digest))).toBe(false);
    await waitFor(() => tmpEntries(fx.mirror!.dataDir).length === 0, 3000, () => `an empty tmp/ (has ${tmpEntries(fx.mirror!.dataDir).join(', ')})`);
    const fetches = cdnGets(corruptLayer.digest).length;
    expect(fetches).toBeGreaterThanOrEqual(1);
    expect(await fx.mirror.metric('mirror_blob_downloads_total', { result: 'digest_mismatch' })).toBe(fetches);

    // The fault is gone: the next request goes upstream again and gets the right bytes.
    await fx.hub.resetFaults();
    const again = await rawGet(blobUrl(fx.mirror, corruptLayer.digest), { timeoutMs: 20_000 });
    expect(again.status).toBe(200);
    expect(again.complete).toBe(true);
    expect(digestOf(again.body)).toBe(corruptLayer.digest);
    expect(cdnGets(corruptLayer.digest).length).toBe(fetches + 1);
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, corruptLayer.digest)), 5000, `${corruptLayer.digest} in the cache`);
    console.log(`[transfer] corrupt byte: clients (status:bytes:outcome) ${summary.join(' ')}; upstream fetches ${fetches}`);
  });
});

describe('a manifest whose bytes do not match', () => {
  it('rejects a corrupted manifest asked for by digest with MANIFEST_INVALID and keeps nothing', async () => {
    fx.mirror = await start();
    fx.hub.faults.corruptManifest = true;
    const before = tree(fx.mirror.dataDir).filter((p) => p.startsWith('blobs'));
    const r = await rawGet(`${fx.mirror.url}/v2/man/manifests/${manifestImg.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
    expectOciError(r, [400, 422, 500, 502, 503], ['MANIFEST_INVALID']);
    expect(existsSync(blobFile(fx.mirror.dataDir, manifestImg.manifest.digest))).toBe(false);
    // Nothing stored under any digest (the corrupted bytes hash to another one).
    expect(tree(fx.mirror.dataDir).filter((p) => p.startsWith('blobs'))).toEqual(before);
    // By tag: the upstream's Docker-Content-Digest no longer matches the bytes either.
    const byTag = await rawGet(`${fx.mirror.url}/v2/man/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } });
    expectOciError(byTag, [400, 422, 500, 502, 503], ['MANIFEST_INVALID']);
    expect(tree(fx.mirror.dataDir).filter((p) => p.startsWith('blobs') || p.includes('_tags'))).toEqual(before);
    // Not remembered as bad either: once upstream is fixed it is served.
    fx.hub.faults.corruptManifest = false;
    const ok = await rawGet(`${fx.mirror.url}/v2/man/manifests/${manifestImg.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
    expect(ok.status).toBe(200);
    expect(digestOf(ok.body)).toBe(manifestImg.manifest.digest);
  });
});

describe('slow upstream', () => {
  it('aborts a transfer that stops delivering within a few seconds with bodyIdle: 1000, keeping nothing', async () => {
    fx.mirror = await start({ timeouts: { bodyIdle: 1000 } });
    // The first response stalls after 256 KiB; every resume then stalls before its first byte.
    // (A resume that delivers new bytes is resumed again: see flaky-cdn.test.ts.)
    fx.hub.faults.stallBlobAfter = 256 * 1024;
    const pending = rawGet(blobUrl(fx.mirror, stallLayer.digest), { timeoutMs: 30_000 });
    await waitFor(() => cdnGets(stallLayer.digest).length >= 1, 10_000, 'the first CDN GET');
    fx.hub.faults.stallBlobAfter = 0;
    const r = await pending;
    const short = r.status !== 200 || r.error !== undefined || r.body.length < stallLayer.size;
    expect(short, `${r.status} ${r.body.length} ${r.error}`).toBe(true);
    expect(r.error).not.toBe('timeout');
    // The first stall, then at most three resumes that deliver nothing (each waits out bodyIdle, which
    // undici's coarse timers stretch to up to ~1.5 s), with their short backoffs.
    expect(r.ms, `stalled transfer took ${Math.round(r.ms)} ms`).toBeLessThan(15_000);
    expect(existsSync(blobFile(fx.mirror.dataDir, stallLayer.digest))).toBe(false);
    await waitFor(() => tmpEntries(fx.mirror!.dataDir).length === 0, 3000, () => `an empty tmp/ (has ${tmpEntries(fx.mirror!.dataDir).join(', ')})`);
    console.log(`[transfer] stall: client saw ${r.status}/${r.body.length} bytes/${r.error ?? 'complete'} after ${Math.round(r.ms)} ms; upstream GETs ${cdnGets(stallLayer.digest).length}`);
  });

  it('completes a trickle that makes progress (64 KiB every 200 ms) correctly', async () => {
    fx.mirror = await start({ timeouts: { bodyIdle: 1000 } });
    fx.hub.faults.trickle = { bytesPerTick: 64 * 1024, tickMs: 200 };
    const r = await rawGet(blobUrl(fx.mirror, trickleLayer.digest), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(digestOf(r.body)).toBe(trickleLayer.digest);
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, trickleLayer.digest)), 5000, `${trickleLayer.digest} in the cache`);
    expect(cdnGets(trickleLayer.digest).length).toBe(1);
    console.log(`[transfer] trickle: ${trickleLayer.size} bytes in ${Math.round(r.ms)} ms, one upstream GET`);
  });

  it('cuts a trickle that never idles but brings next to nothing (1 KiB every 100 ms; the floor is 64 KiB a bodyIdle), keeping nothing', async () => {
    fx.mirror = await start({ timeouts: { bodyIdle: 1000 } });
    fx.hub.faults.trickle = { bytesPerTick: 1024, tickMs: 100 };
    const r = await rawGet(blobUrl(fx.mirror, crawlLayer.digest), { timeoutMs: 30_000 });
    // At 10 KiB/s the whole layer would take ~100 s; bodyIdle alone would never end it.
    expect(r.complete).toBe(false);
    expect(r.body.length).toBeLessThan(64 * 1024);
    expect(r.ms, `took ${Math.round(r.ms)} ms`).toBeLessThan(10_000);
    expect(cdnGets(crawlLayer.digest)).toHaveLength(1);
    expect(fx.mirror.output()).toMatch(/fewer than 65536: too slow/);
    expect(existsSync(blobFile(fx.mirror.dataDir, crawlLayer.digest))).toBe(false);
    await waitFor(() => tmpEntries(fx.mirror!.dataDir).length === 0, 3000, () => `an empty tmp/ (has ${tmpEntries(fx.mirror!.dataDir).join(', ')})`);
    console.log(`[transfer] crawl: client saw ${r.status}/${r.body.length} bytes after ${Math.round(r.ms)} ms`);
  });
});

describe('the client hangs up mid-stream', () => {
  it('the download continues for the cache, other readers get full bodies, no file descriptors leak', async () => {
    fx.mirror = await start();
    // Warm up pools and lazily opened handles so the fd baseline is steady.
    const w = await rawGet(blobUrl(fx.mirror, warmLayer.digest));
    expect(w.status, `${w.error} ${w.body.toString().slice(0, 300)}\n${fx.mirror.output().slice(-3000)}\n${JSON.stringify(fx.hub.requests.slice(-6).map((q) => [q.method, q.path, q.status, q.headers.range]))}`).toBe(200);
    expect(digestOf(w.body)).toBe(warmLayer.digest);
    await sleep(300);
    const fdBefore = fx.mirror.fdCount();

    fx.hub.faults.trickle = { bytesPerTick: 128 * 1024, tickMs: 40 };
    // The only client hangs up: the cache still wants the blob.
    const lone = await rawGet(blobUrl(fx.mirror, hangLayer.digest), { hangUpAfterBytes: 200 * 1024 });
    expect(lone.error).toBe('hung up by the client');
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, hangLayer.digest)), 15_000, `${hangLayer.digest} in the cache`);

    // One hangs up while two others read the same download.
    const [quitter, a, b] = await Promise.all([
      rawGet(blobUrl(fx.mirror, hangLayer2.digest), { hangUpAfterBytes: 100 * 1024 }),
      rawGet(blobUrl(fx.mirror, hangLayer2.digest), { timeoutMs: 20_000 }),
      rawGet(blobUrl(fx.mirror, hangLayer2.digest), { timeoutMs: 20_000 }),
    ]);
    expect(quitter.error).toBe('hung up by the client');
    for (const r of [a, b]) {
      expect(r.status).toBe(200);
      expect(r.complete).toBe(true);
      expect(digestOf(r.body)).toBe(hangLayer2.digest);
    }
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, hangLayer2.digest)), 15_000, `${hangLayer2.digest} in the cache`);
    expect(cdnGets(hangLayer.digest).length).toBe(1);
    expect(cdnGets(hangLayer2.digest).length).toBe(1);

    // Served from the cache afterwards.
    await fx.hub.resetFaults();
    const cached = await rawGet(blobUrl(fx.mirror, hangLayer.digest));
    expect(digestOf(cached.body)).toBe(hangLayer.digest);
    expect(cdnGets(hangLayer.digest).length).toBe(1);

    // No descriptor leaks: the count comes back to the baseline once sockets and files close.
    await waitFor(() => fx.mirror!.fdCount() <= fdBefore + 4, 8000, () => `fds back to ${fdBefore} + 4 (now ${fx.mirror!.fdCount()})`, 100);
    console.log(`[transfer] hang-up: fds before ${fdBefore}, after ${fx.mirror.fdCount()}`);
  });
});
