/**
 * Prefetch fills the cache through the Registry service: the chosen platforms only, each blob once
 * from upstream even alongside client pulls, nothing again on a re-run; as an admin API job (start,
 * poll, cancel) and as `regmirror prefetch` (plain lines without a terminal, failures summarised).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PrefetchJob, type PrefetchSnapshot } from '../../src/airgap/prefetch.js';
import { runPrefetchCli, type PrefetchCliDeps } from '../../src/cli/prefetch.js';
import { openPrefetch } from '../../src/mirror.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { blobOf, descriptorOf, makeImage, makeIndex, makeLayer, makeRandomLayer, MT } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { waitFor } from '../helpers/wait.js';

const shared = makeLayer([{ path: 'shared', content: 'prefetch shared' }]);
const app1 = makeImage({ layers: [shared, makeLayer([{ path: 'one', content: 'prefetch one' }])] });
const app2 = makeImage({ layers: [shared, makeRandomLayer(256 * 1024, 'prefetch two')] });
const amd = makeImage({ layers: [makeLayer([{ path: 'p', content: 'prefetch amd' }])], architecture: 'amd64' });
const arm = makeImage({ layers: [makeLayer([{ path: 'p', content: 'prefetch arm' }])], architecture: 'arm64' });
const multi = makeIndex([amd, arm]);
/** An index whose one platform entry is itself an index. */
const nested = blobOf(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ ...descriptorOf(multi), platform: { os: 'linux', architecture: 'amd64' } }] }), MT.ociIndex);

describe('prefetch', () => {
  let hub: FakeUpstream;
  let m: TestMirror | undefined;
  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app1', app1, '1.0');
    hub.putImage('library/app2', app2, '2.0');
    hub.putIndex('library/multi', multi, [amd, arm], 'latest');
    hub.putIndex('library/nested', multi, [amd, arm]);
    hub.putManifest('library/nested', nested, 'latest');
  });
  afterAll(() => hub.close());
  afterEach(async () => {
    await m?.stop();
    m = undefined;
    await hub.resetFaults();
    hub.resetCounters();
  });
  const mirror = async () => (m = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } }));
  // Blob GETs upstream answered (a 401 asking for a token is not a fetch).
  const blobGets = (digest: string) => hub.count({ kind: 'blob', method: 'GET', path: new RegExp(digest) }) - hub.count({ kind: 'blob', method: 'GET', path: new RegExp(digest), status: 401 });

  it('fills the chosen platforms, each blob once beside a client pull; a re-run fetches nothing; offline it all serves', async () => {
    const a = await mirror();
    const job = new PrefetchJob('t', { images: ['app1:1.0', 'docker.io/library/app2:2.0', 'multi'], platforms: ['linux/arm64'] }, a.prefetchDeps);
    // A client pulls app2's big layer at the same time.
    const pulled = a.request(`/v2/library/app2/blobs/${app2.layers[1]!.digest}`).then(async (r) => Buffer.from(await r.arrayBuffer()).length);
    await job.done;
    expect(await pulled).toBe(app2.layers[1]!.bytes.length);
    const s = job.snapshot();
    expect(s.state).toBe('done');
    expect(s.images.map((i) => [i.image, i.state, i.blobs])).toEqual([
      ['app1:1.0', 'done', 3],
      ['docker.io/library/app2:2.0', 'done', 3],
      ['multi', 'done', 2],
    ]);
    for (const b of [...app1.layers, ...app2.layers, arm.config, ...arm.layers]) expect(blobGets(b.digest), b.digest).toBe(1);
    expect(blobGets(amd.layers[0]!.digest)).toBe(0);

    // A blob's last bytes reach readers once verified, just before it is renamed into the store:
    // has() waits for that last step, so a re-run at once finds every blob.
    const again = new PrefetchJob('t2', { images: ['app1:1.0', 'app2:2.0', 'multi'], platforms: ['linux/arm64'] }, a.prefetchDeps);
    await again.done;
    expect(again.snapshot().images.map((i) => i.fetched)).toEqual([0, 0, 0]);
    expect(hub.count({ kind: 'blob' }) - hub.count({ kind: 'blob', status: 401 })).toBe(7);

    // What was prefetched serves with the mirror offline (same data dir).
    await a.stop({ keepData: true });
    m = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true, dataDir: a.dataDir });
    expect((await m.request('/v2/library/multi/manifests/latest', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
    expect((await m.request(`/v2/library/multi/manifests/${arm.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
    expect((await m.request(`/v2/library/multi/blobs/${arm.layers[0]!.digest}`)).status).toBe(200);
    await rm(a.dataDir, { recursive: true, force: true });
  });

  it('admin API: start, poll, failures per image; cancel; bad requests', async () => {
    const a = await mirror();
    const start = await a.adminApp.request('/admin/prefetch', { method: 'POST', body: JSON.stringify({ images: ['app1:1.0', 'nope:1'], platforms: 'all' }) });
    expect(start.status).toBe(202);
    const { id } = (await start.json()) as PrefetchSnapshot;
    const s = await waitFor(async () => {
      const r = (await (await a.adminApp.request(`/admin/prefetch/${id}`)).json()) as PrefetchSnapshot;
      return r.state !== 'running' && r;
    });
    expect(s.state).toBe('failed');
    expect(s.images[0]!.state).toBe('done');
    expect(s.images[1]).toMatchObject({ state: 'failed' });
    expect(s.images[1]!.error).toMatch(/not known/i);
    // An index inside an index has nothing this job can fetch: failed, never done with nothing.
    const n = new PrefetchJob('nested', { images: ['nested:latest'] }, a.prefetchDeps);
    await n.done;
    expect(n.snapshot().images[0]).toMatchObject({ state: 'failed', error: expect.stringMatching(/is not an image manifest/) });

    hub.faults.delayMs = 300;
    const slow = (await (await a.adminApp.request('/admin/prefetch', { method: 'POST', body: JSON.stringify({ images: ['app2:2.0', 'multi'] }) })).json()) as PrefetchSnapshot;
    const cancelled = (await (await a.adminApp.request(`/admin/prefetch/${slow.id}`, { method: 'DELETE' })).json()) as PrefetchSnapshot;
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.images.map((i) => i.state)).toEqual(['cancelled', 'cancelled']);

    expect((await a.adminApp.request('/admin/prefetch/none')).status).toBe(404);
    expect((await a.adminApp.request('/admin/prefetch', { method: 'POST', body: '{"images": []}' })).status).toBe(400);
    expect((await a.adminApp.request('/admin/prefetch', { method: 'POST', body: '{"images": ["a"], "platforms": ["amd64"]}' })).status).toBe(400);
  });

  describe('regmirror prefetch', () => {
    const run = async (argv: string[], deps: Partial<PrefetchCliDeps>) => {
      const out: string[] = [];
      const err: string[] = [];
      const stdout = Object.assign(new Writable({ write: (c: Buffer, _e, cb) => (out.push(c.toString()), cb()) }), { isTTY: false });
      const code = await runPrefetchCli(argv, {
        stdout,
        stderr: { write: (s: string) => err.push(s), isTTY: false },
        env: {},
        fetch: async () => Promise.reject(new TypeError('fetch failed')),
        loadConfig: () => m!.config,
        openPrefetch: () => Promise.reject(new Error('not here')),
        hostPlatform: 'linux/amd64',
        pollMs: 20,
        ...deps,
      });
      return { code, stdout: out.join(''), stderr: err.join('') };
    };

    it('on an admin API: one plain line per image, the summary; failures exit 1', async () => {
      const a = await mirror();
      const fetchFn: PrefetchCliDeps['fetch'] = (url, init) => Promise.resolve(a.adminApp.request(new URL(url).pathname, init));
      const list = join(tmpdir(), `prefetch-list-${process.pid}.txt`);
      await writeFile(list, '# warm-up\nmulti\n\napp2:2.0\n');
      try {
        const r = await run(['app1:1.0', '--file', list, '--admin', 'http://127.0.0.1:5001'], { fetch: fetchFn });
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/^done {4}app1:1\.0 {2}3 blobs, 3 fetched \(.*\)\ndone {4}multi {2}2 blobs, 2 fetched .*\ndone {4}app2:2\.0 {2}3 blobs, 2 fetched .*\nprefetched 3 of 3 images, .* fetched in .* s\n$/);
        expect(blobGets(arm.layers[0]!.digest)).toBe(0);
        const bad = await run(['app1:1.0', 'nope:1'], { fetch: fetchFn, env: { MIRROR_ADMIN_URL: 'http://127.0.0.1:5001' } });
        expect(bad.code).toBe(1);
        expect(bad.stdout).toContain('prefetched 1 of 2 images');
        expect(bad.stderr).toMatch(/regmirror prefetch: 1 failed:\n {2}nope:1: /);
        // With --json stdout is the JSON alone (the per-image lines go to stderr).
        const asJson = await run(['app1:1.0', 'nope:1', '--json'], { fetch: fetchFn, env: { MIRROR_ADMIN_URL: 'http://127.0.0.1:5001' } });
        expect(asJson.code).toBe(1);
        expect((JSON.parse(asJson.stdout) as PrefetchSnapshot).images.map((i) => i.state)).toEqual(['done', 'failed']);
        expect(asJson.stderr).toMatch(/done {4}app1:1\.0/);
        expect((await run([], {})).code).toBe(2);
        expect((await run(['x', '--platform', 'arm64'], {})).stderr).toMatch(/expected OS\/ARCH/);
      } finally {
        await rm(list, { force: true });
      }
    });

    it('Ctrl-C cancels the job on the mirror: listed as cancelled, exit 1', async () => {
      const a = await mirror();
      hub.faults.delayMs = 300;
      const fetchFn: PrefetchCliDeps['fetch'] = (url, init) => Promise.resolve(a.adminApp.request(new URL(url).pathname, init));
      const r = await run(['app2:2.0', 'multi', '--admin', 'http://127.0.0.1:5001'], { fetch: fetchFn, onInterrupt: (cancel) => setImmediate(cancel) });
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('cancelled app2:2.0');
      expect(r.stderr).toMatch(/2 failed:\n {2}app2:2\.0: cancelled\n {2}multi: cancelled/);
    });

    it('in-process over a data directory (--data-dir) with the config upstreams', async () => {
      const a = await mirror();
      const dir = await mkdtemp(join(tmpdir(), 'prefetch-dd-'));
      try {
        const r = await run(['app1:1.0', '--data-dir', dir], { openPrefetch: (config) => openPrefetch(config) });
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/^done {4}app1:1\.0 {2}3 blobs, 3 fetched/);
        void a;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
