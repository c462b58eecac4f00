/**
 * The mirror killed with SIGKILL mid-download: the restart sweeps the temp files, nothing partial is
 * ever served, and the next request fetches the blob again from upstream.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { httpGet, spawnMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { blobFile, expectOciError, rawGet, tmpEntries, faultFixture } from './util.js';

const layer = makeRandomLayer(2 * 1024 * 1024, 'crash-layer');
const img = makeImage({ layers: [layer] });

const fx = faultFixture(async () => {
  const hub = await FakeUpstream.start();
  hub.putImage('library/app', img, 'v1');
  return hub;
});

const cdnGets = () => fx.hub.count({ kind: 'cdn', method: 'GET', path: new RegExp(layer.digest.slice(7)) });

describe('SIGKILL mid-download', () => {
  it('restart sweeps tmp/, never serves the partial blob, and fetches it again', async () => {
    fx.mirror = await spawnMirror({ upstreams: { 'docker.io': { url: fx.hub.url, libraryPrefix: true } } });
    const url = `${fx.mirror.url}/v2/library/app/blobs/${layer.digest}`;
    fx.hub.faults.trickle = { bytesPerTick: 64 * 1024, tickMs: 100 };
    const clientP = rawGet(url, { timeoutMs: 20_000 });
    const tmpSize = () => tmpEntries(fx.mirror!.dataDir).reduce((n, e) => n + statSync(join(fx.mirror!.dataDir, 'tmp', e)).size, 0);
    await waitFor(() => tmpSize() > 256 * 1024, 10_000, () => `256 KiB in tmp/ (have ${tmpSize()})`);
    const exit = await fx.mirror.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');

    const client = await clientP;
    expect(client.complete).toBe(false);
    expect(client.body.length).toBeLessThan(layer.size);
    // The crash left a partial temp file behind, and no blob.
    const leftovers = tmpEntries(fx.mirror.dataDir);
    expect(leftovers.length).toBeGreaterThan(0);
    expect(existsSync(blobFile(fx.mirror.dataDir, layer.digest))).toBe(false);
    const fetchesBefore = cdnGets();

    // Restart with upstream down: the partial file is swept and nothing partial is served.
    await fx.hub.resetFaults();
    await fx.hub.goDown();
    await fx.mirror.restart();
    expect(tmpEntries(fx.mirror.dataDir)).toEqual([]);
    expect(existsSync(blobFile(fx.mirror.dataDir, layer.digest))).toBe(false);
    const whileDown = await rawGet(url, { timeoutMs: 10_000 });
    expectOciError(whileDown, [502, 503]);
    const head = await rawGet(url, { method: 'HEAD', timeoutMs: 10_000 });
    expect(head.status).not.toBe(200);

    // Upstream back: once the background probe finds it (the upstream was assumed offline after the
    // refused connection), fetched again (the fake's counter goes up), complete and correct.
    await fx.hub.goUp();
    const mirrorUrl = fx.mirror.url;
    await waitFor(async () => (JSON.parse((await httpGet(`${mirrorUrl}/readyz`)).body) as { availability?: Record<string, { state: string }> }).availability?.['docker.io']?.state === 'online', 15_000, 'docker.io back online in /readyz');
    const again = await rawGet(url, { timeoutMs: 20_000 });
    expect(again.status).toBe(200);
    expect(again.complete).toBe(true);
    expect(digestOf(again.body)).toBe(layer.digest);
    expect(cdnGets()).toBe(fetchesBefore + 1);
    await waitFor(() => existsSync(blobFile(fx.mirror!.dataDir, layer.digest)), 5000, `${layer.digest} in the cache`);
    console.log(`[crash] killed with ${client.body.length}/${layer.size} bytes sent; tmp/ held ${leftovers.length} file(s); swept on restart; refetched once`);
  });
});
