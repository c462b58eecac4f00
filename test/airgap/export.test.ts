/**
 * `export`: cached images as an OCI layout tar streamed from the store, each blob once, full
 * references in index.json; a delta leaves out what `base` lists or what was stored before `since`;
 * the bundle imports elsewhere.
 */
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleError } from '../../src/airgap/layout.js';
import { parseSince, runExportCli } from '../../src/cli/export.js';
import { openAirgap } from '../../src/mirror.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, MT } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { collector, entriesOf, filesOf, waitStored } from './bundle.js';
import { allBlobs } from '../helpers/images.js';

const shared = makeLayer([{ path: 'shared', content: 'shared layer' }]);
const app1 = makeImage({ layers: [shared, makeLayer([{ path: 'one', content: 'one' }])] });
const app2 = makeImage({ layers: [shared, makeLayer([{ path: 'two', content: 'two' }])], format: 'docker' });
const amd = makeImage({ layers: [makeLayer([{ path: 'p', content: 'amd' }])], architecture: 'amd64' });
const arm = makeImage({ layers: [makeLayer([{ path: 'p', content: 'arm' }])], architecture: 'arm64' });
const multi = makeIndex([amd, arm]);
const ALL = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest].join(', ');

async function pullAll(m: TestMirror, repo: string, tag: string): Promise<void> {
  const res = await m.request(`/v2/${repo}/manifests/${tag}`, { headers: { accept: ALL } });
  expect(res.status).toBe(200);
  const json = (await res.json()) as any;
  for (const d of json.manifests ? json.manifests.map((c: any) => c.digest) : [res.headers.get('docker-content-digest')]) {
    const man = (await (await m.request(`/v2/${repo}/manifests/${d}`, { headers: { accept: ALL } })).json()) as any;
    for (const b of [man.config, ...man.layers]) expect((await m.request(`/v2/${repo}/blobs/${b.digest}`)).status).toBe(200);
  }
}

describe('export', () => {
  let hub: FakeUpstream;
  let a: TestMirror;
  let b: TestMirror | undefined;
  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app1', app1, '1.0');
    hub.putImage('acme/app2', app2, '2.0');
    hub.putIndex('library/multi', multi, [amd, arm], 'latest');
    a = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    await pullAll(a, 'library/app1', '1.0');
    await pullAll(a, 'acme/app2', '2.0');
    await pullAll(a, 'library/multi', 'latest');
    await waitStored(a, allBlobs(app1, app2, amd, arm, multi).map((x) => x.digest));
  });
  afterAll(async () => {
    await a.stop();
    await hub.close();
  });
  afterEach(async () => {
    await b?.stop();
    b = undefined;
  });

  const bundle = async (refs: Parameters<TestMirror['airgap']['planExport']>[0], opts: Parameters<TestMirror['airgap']['planExport']>[1] = {}) => {
    const plan = await a.airgap.planExport(refs, opts);
    const out = collector();
    await a.airgap.writeBundle(plan, out.stream);
    return { plan, tar: out.bytes() };
  };

  it('writes an OCI layout with every blob once and full references; it imports into an empty offline mirror', async () => {
    const { plan, tar } = await bundle(await a.airgap.all());
    const files = await filesOf(tar);
    expect([...files.keys()].slice(0, 2)).toEqual(['oci-layout', 'index.json']);
    const index = JSON.parse(files.get('index.json')!.toString());
    expect(index.manifests.map((m: any) => m.annotations['org.opencontainers.image.ref.name']).sort()).toEqual([
      'docker.io/acme/app2:2.0',
      'docker.io/library/app1:1.0',
      'docker.io/library/multi:latest',
    ]);
    // shared once; 3 roots + 2 platform manifests + 4 configs + 5 distinct layers
    expect(plan.blobs.length).toBe(3 + 2 + 4 + 5);
    expect(files.size).toBe(2 + plan.blobs.length);
    expect(files.get(`blobs/sha256/${shared.digest.slice(7)}`)).toEqual(shared.bytes);

    b = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true });
    const r = await b.airgap.import(entriesOf(tar));
    expect(r.images).toHaveLength(3);
    for (const [repo, tag] of [['library/app1', '1.0'], ['acme/app2', '2.0'], ['library/multi', 'latest']] as const) await pullAll(b, repo, tag);
    const res = await b.request('/v2/acme/app2/manifests/2.0', { headers: { accept: DOCKER_ACCEPT } });
    expect(res.headers.get('content-type')).toBe(MT.dockerManifest);
    // Upstream served each blob once in all of this.
    expect(hub.count({ kind: 'blob', path: new RegExp(shared.digest) })).toBe(1);
  });

  it('a delta (base = the digests of the first bundle) carries only the new blobs, and completes the set', async () => {
    const first = await bundle([{ upstream: 'docker.io', repo: 'library/app1', tag: '1.0' }]);
    const second = await bundle([{ upstream: 'docker.io', repo: 'acme/app2', tag: '2.0' }], { base: new Set(first.plan.digests) });
    expect(second.plan.skipped).toBe(1);
    expect(second.plan.blobs.map((x) => x.digest)).not.toContain(shared.digest);
    expect(second.plan.digests).toEqual(expect.arrayContaining(first.plan.digests));
    b = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true });
    await b.airgap.import(entriesOf(first.tar));
    await b.airgap.import(entriesOf(second.tar));
    await pullAll(b, 'acme/app2', '2.0');
  });

  it('--platform keeps the index and only the chosen platforms', async () => {
    const { plan } = await bundle([{ upstream: 'docker.io', repo: 'library/multi', tag: 'latest' }], { platforms: ['linux/arm64'] });
    const digests = plan.blobs.map((x) => x.digest);
    expect(digests).toContain(multi.digest);
    expect(digests).toContain(arm.manifest.digest);
    expect(digests).not.toContain(amd.manifest.digest);
  });

  it('--since leaves out the blobs stored before DATE (the store reports when each blob arrived), and completes the set', async () => {
    const first = await bundle([{ upstream: 'docker.io', repo: 'library/app1', tag: '1.0' }]);
    // File times come from a coarse kernel clock: keep clear of DATE on both sides.
    await new Promise((r) => setTimeout(r, 50));
    const since = Date.now();
    await new Promise((r) => setTimeout(r, 50));
    const app3 = makeImage({ layers: [shared, makeLayer([{ path: 'three', content: 'three, after the date' }])] });
    hub.putImage('library/app3', app3, '3.0');
    await pullAll(a, 'library/app3', '3.0');
    await waitStored(a, allBlobs(app3).map((x) => x.digest));

    const refs = [
      { upstream: 'docker.io', repo: 'library/app1', tag: '1.0' },
      { upstream: 'docker.io', repo: 'library/app3', tag: '3.0' },
    ];
    const delta = await bundle(refs, { since });
    // app1 (all 4 blobs) and app3's shared layer are older than DATE; app3's manifest, config and new layer are not.
    expect(delta.plan.blobs.map((x) => x.digest).sort()).toEqual([app3.manifest.digest, app3.config.digest, app3.layers[1]!.digest].sort());
    expect(delta.plan.skipped).toBe(4);
    expect(delta.plan.images.map((i) => i.reference)).toEqual(['docker.io/library/app1:1.0', 'docker.io/library/app3:3.0']);
    expect(delta.plan.digests).toEqual(expect.arrayContaining(allBlobs(app1, app3).map((x) => x.digest)));
    // A date before everything leaves nothing out; the stat through the caching store reports the time.
    expect((await a.airgap.planExport(refs, { since: since - 3_600_000 })).skipped).toBe(0);

    b = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true });
    // Alone it is incomplete (the shared layer is missing) and changes nothing...
    await expect(b.airgap.import(entriesOf(delta.tar))).rejects.toThrow(BundleError);
    // ...after the first bundle it completes the set.
    await b.airgap.import(entriesOf(first.tar));
    await b.airgap.import(entriesOf(delta.tar));
    await pullAll(b, 'library/app3', '3.0');
  });

  it('the CLI takes --since DATE (documented in --help) and refuses what is not a date', async () => {
    const run = async (argv: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const code = await runExportCli(argv, {
        stdout: new Writable({
          write(c: Buffer, _e, cb) {
            out.push(c.toString());
            cb();
          },
        }),
        stderr: { write: (s: string) => err.push(s) },
        stdin: process.stdin,
        env: {},
        fetch: (u, i) => fetch(u, i),
        loadConfig: () => a.config,
        openAirgap: (cfg, o) => openAirgap(cfg, o),
      });
      return { code, out: out.join(''), err: err.join('') };
    };
    expect((await run(['--help'])).out).toMatch(/--since DATE/);
    const bad = await run(['-o', '-', '--all', '--since', 'yesterday', '--data-dir', a.dataDir]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--since yesterday: expected a date/);
    expect(parseSince('2026-11-01')).toBe(Date.UTC(2026, 10, 1));
    expect(parseSince('2026-11-01T08:00:00Z')).toBe(Date.UTC(2026, 10, 1, 8));
    const future = await run(['-o', '-', 'library/app1:1.0', '--since', '2999-01-01', '--data-dir', a.dataDir]);
    expect(future.code, future.err).toBe(0);
    expect(future.err).toMatch(/1 image, 0 blobs, .*\(4 blobs left out: stored before --since\)/);
  });

  it('refuses an image that is not cached, before writing anything', async () => {
    await expect(a.airgap.planExport([{ upstream: 'docker.io', repo: 'library/nope', tag: '1' }])).rejects.toThrow(BundleError);
    await expect(a.airgap.planExport([{ upstream: 'docker.io', repo: 'library/nope', tag: '1' }])).rejects.toThrow('docker.io/library/nope:1 is not cached');
  });
});
