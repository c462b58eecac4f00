/**
 * `import`: an OCI layout bundle (tar or directory) becomes cached images, verified first; hostile
 * bundles are refused naming the first bad entry, with no record changed; never an upstream call.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleError, MAX_INDEX_BYTES } from '../../src/airgap/layout.js';
import { dirEntries, tarEntries } from '../../src/airgap/source.js';
import { Readable } from 'node:stream';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { allBlobs, blobOf, descriptorOf, makeImage, makeIndex, makeLayer, MT, writeOciLayout } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { entriesOf, layoutEntries, tarOf } from './bundle.js';

const shared = makeLayer([{ path: 'shared', content: 'a layer two images share' }]);
const app1 = makeImage({ layers: [shared, makeLayer([{ path: 'one', content: 'app one' }])] });
const app2 = makeImage({ layers: [shared, makeLayer([{ path: 'two', content: 'app two' }])], format: 'docker' });
const amd = makeImage({ layers: [makeLayer([{ path: 'p', content: 'amd64' }])], architecture: 'amd64' });
const arm = makeImage({ layers: [makeLayer([{ path: 'p', content: 'arm64' }])], architecture: 'arm64' });
const multi = makeIndex([amd, arm]);
const REFS = { 'docker.io/library/app1:1.0': app1.manifest, 'docker.io/acme/app2:2.0': app2.manifest, 'docker.io/library/multi:latest': multi };
const THINGS = [app1, app2, amd, arm, multi];

const emptyIndex = blobOf(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] }), MT.ociIndex);
const objectIndex = blobOf(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: { 0: descriptorOf(amd.manifest) } }), MT.ociIndex);
/** An offline mirror with no upstream running. */
const offlineMirror = () => startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true });

async function pull(m: TestMirror, repo: string, tag: string): Promise<{ digest: string; blobs: number }> {
  const res = await m.request(`/v2/${repo}/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } });
  expect(res.status, `${repo}:${tag}`).toBe(200);
  const digest = res.headers.get('docker-content-digest')!;
  const json = (await res.json()) as any;
  const images = json.manifests ? json.manifests.map((c: any) => c.digest) : [digest];
  let blobs = 0;
  for (const d of images) {
    const mres = await m.request(`/v2/${repo}/manifests/${d}`, { headers: { accept: DOCKER_ACCEPT } });
    expect(mres.status).toBe(200);
    const man = (await mres.json()) as any;
    for (const b of [man.config, ...man.layers]) {
      const bres = await m.request(`/v2/${repo}/blobs/${b.digest}`);
      expect(bres.status, b.digest).toBe(200);
      expect(Buffer.from(await bres.arrayBuffer()).length).toBe(b.size);
      blobs++;
    }
  }
  return { digest, blobs };
}

describe('import', () => {
  let m: TestMirror | undefined;
  afterEach(async () => {
    await m?.stop();
    m = undefined;
  });

  it('imports a tar bundle into an offline mirror: every image pulls, shared blobs once', async () => {
    m = await offlineMirror();
    const result = await m.airgap.import(entriesOf(await tarOf(layoutEntries(REFS, THINGS))));
    expect(result.images.map((i) => i.reference).sort()).toEqual(['docker.io/acme/app2:2.0', 'docker.io/library/app1:1.0', 'docker.io/library/multi:latest']);
    expect(result.images.find((i) => i.reference.endsWith('multi:latest'))!.platforms).toBe(2);
    expect(result.newBlobs).toBe(result.blobs);
    expect((await pull(m, 'library/app1', '1.0')).digest).toBe(app1.manifest.digest);
    expect((await pull(m, 'acme/app2', '2.0')).digest).toBe(app2.manifest.digest);
    expect((await pull(m, 'library/multi', 'latest')).blobs).toBe(4);
    // A client that accepts no index gets the linux/amd64 manifest, as from upstream.
    const narrow = await m.request('/v2/library/multi/manifests/latest', { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(narrow.status).toBe(200);
    expect(narrow.headers.get('docker-content-digest')).toBe(amd.manifest.digest);
    // Idempotent: again, nothing new, the same answers.
    const again = await m.airgap.import(entriesOf(await tarOf(layoutEntries(REFS, THINGS))));
    expect(again.newBlobs).toBe(0);
    expect((await pull(m, 'library/app1', '1.0')).digest).toBe(app1.manifest.digest);
  });

  it('imports through the admin API (POST /admin/import) and an OCI layout directory', async () => {
    m = await offlineMirror();
    const res = await m.adminApp.request('/admin/import', { method: 'POST', body: await tarOf(layoutEntries({ 'docker.io/library/app1:1.0': app1.manifest }, [app1])) });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).images[0].reference).toBe('docker.io/library/app1:1.0');
    await pull(m, 'library/app1', '1.0');

    const dir = await mkdtemp(join(tmpdir(), 'layout-'));
    try {
      await writeOciLayout(dir, { '3.0': app2.manifest }, app2.layers.concat(app2.config));
      // A plain tag (as skopeo writes REF) needs the repository.
      await expect(m.airgap.import(dirEntries(dir))).rejects.toThrow(/plain tag: give the repository/);
      const r = await m.airgap.import(dirEntries(dir), { repository: 'acme/app2' });
      expect(r.images[0]!.reference).toBe('docker.io/acme/app2:3.0');
      await pull(m, 'acme/app2', '3.0');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const bad = await m.adminApp.request('/admin/import', { method: 'POST', body: await tarOf([{ name: '../evil', content: 'x' }]) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).errors[0].message).toMatch(/path traversal/);
  });

  it('a delta bundle imports where the earlier blobs are cached, and only there', async () => {
    m = await offlineMirror();
    await m.airgap.import(entriesOf(await tarOf(layoutEntries({ 'docker.io/library/app1:1.0': app1.manifest }, [app1]))));
    // app2 without the layer it shares with app1.
    const delta = await tarOf(layoutEntries({ 'docker.io/acme/app2:2.0': app2.manifest }, [app2], { omit: [shared.digest] }));
    const m2 = await offlineMirror();
    try {
      await expect(m2.airgap.import(entriesOf(delta))).rejects.toThrow(`layer ${shared.digest}: neither in the bundle nor in the cache`);
    } finally {
      await m2.stop();
    }
    const r = await m.airgap.import(entriesOf(delta));
    expect(r.newBlobs).toBe(3); // manifest, config, own layer
    await pull(m, 'acme/app2', '2.0');
  });

  const hostile: Array<[string, () => Promise<Buffer>, RegExp]> = [
    ['a blob with the wrong digest', () => tarOf(layoutEntries(REFS, THINGS, { corrupt: app2.layers[1]!.digest })), /blobs\/sha256\/[0-9a-f]+: content does not match its digest/],
    [
      'a truncated blob',
      async () => {
        const full = await tarOf(layoutEntries(REFS, THINGS));
        return full.subarray(0, full.length - 1024 - 700);
      },
      /not a complete tar archive/,
    ],
    ['a manifest referencing a missing blob', () => tarOf(layoutEntries(REFS, THINGS, { omit: [arm.config.digest] })), /multi:latest: config sha256:[0-9a-f]+: neither in the bundle nor in the cache/],
    ['../ in a name', async () => tarOf([...layoutEntries(REFS, THINGS), { name: 'blobs/../../etc/passwd', content: 'x' }]), /path traversal/],
    ['an absolute name', async () => tarOf([{ name: '/etc/cron.d/x', content: 'x' }, ...layoutEntries(REFS, THINGS)]), /absolute path/],
    ['a symlink', async () => tarOf([...layoutEntries(REFS, THINGS), { name: 'blobs/sha256/link', type: 'symlink', linkname: '/etc/passwd' }]), /links are not allowed/],
    ['a hard link', async () => tarOf([{ name: 'index.json', type: 'link', linkname: '/etc/shadow' }, ...layoutEntries(REFS, THINGS)]), /links are not allowed/],
    [
      'a huge index.json',
      async () => tarOf([{ name: 'oci-layout', content: '{"imageLayoutVersion":"1.0.0"}' }, { name: 'index.json', content: Buffer.alloc(MAX_INDEX_BYTES + 1, 0x20) }]),
      /index.json: \d+ bytes \(at most/,
    ],
    ['no index.json', () => tarOf(layoutEntries(REFS, THINGS).filter((e) => e.name !== 'index.json')), /no index.json/],
    ['not a tar at all', async () => Buffer.from('hello, this is not a tar archive'.repeat(40)), /not a complete tar archive/],
    ['a blob under an algorithm the mirror does not serve', async () => tarOf([...layoutEntries(REFS, THINGS), { name: `blobs/md5/${'a'.repeat(32)}`, content: 'x' }]), /blobs\/md5\/a+: not a blob name/],
    ['a descriptor with an unsupported digest', async () => tarOf(layoutEntries({ 'docker.io/library/app1:1.0': { ...app1.manifest, digest: `sha1:${'a'.repeat(40)}` } }, [])), /invalid or unsupported digest/],
    ['an index that lists no platform manifests', async () => tarOf(layoutEntries({ 'docker.io/library/app1:1.0': emptyIndex }, [emptyIndex])), /an index that lists no platform manifests/],
    ['an index whose manifests are not a list', async () => tarOf(layoutEntries({ 'docker.io/library/app1:1.0': objectIndex }, [objectIndex])), /an index that lists no platform manifests/],
  ];

  it.each(hostile)('refuses %s, naming it, and imports nothing', async (_name, make, message) => {
    m = await offlineMirror();
    const err = await m.airgap.import(entriesOf(await make())).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as Error).message).toMatch(message);
    expect(await m.admin.repositories()).toEqual([]);
    const res = await m.request('/v2/library/app1/manifests/1.0', { headers: { accept: DOCKER_ACCEPT } });
    expect(res.status).toBe(404);
    // No temp file (or its open handle) left behind by a refused blob.
    expect(await readdir(join(m.dataDir, 'tmp'))).toEqual([]);
  });

  it('holds every blob it stages or relies on from eviction and GC until its tags are written, and records the images as used', async () => {
    const { importBundle } = await import('../../src/airgap/import.js');
    const { FsBlobStore } = await import('../../src/storage/fs-store.js');
    const { FsMetaStore } = await import('../../src/storage/fs-meta-store.js');
    const dir = await mkdtemp(join(tmpdir(), 'import-hold-'));
    try {
      const blobs = new FsBlobStore(dir);
      await blobs.init();
      const meta = new FsMetaStore(dir);
      const held = new Map<string, number>();
      const atTag: string[][] = [];
      const uses: string[] = [];
      const tagging = meta.putTag.bind(meta);
      meta.putTag = async (...a: Parameters<typeof meta.putTag>) => {
        atTag.push([...held.keys()]);
        return tagging(...a);
      };
      const r = await importBundle(entriesOf(await tarOf(layoutEntries(REFS, THINGS))), {
        blobs,
        meta,
        now: () => 1,
        route: (name) => ({ upstream: 'docker.io', repo: name.replace(/^docker\.io\//, '') }),
        maxManifestBytes: 4 * 1024 * 1024,
        hold: (digests) => {
          const mine = [...digests];
          for (const d of mine) held.set(d, (held.get(d) ?? 0) + 1);
          return () => mine.forEach((d) => (held.get(d) === 1 ? held.delete(d) : held.set(d, held.get(d)! - 1)));
        },
        usage: { manifest: (u, repo, d) => void uses.push(`m ${u}/${repo}@${d}`), blob: (d) => void uses.push(`b ${d}`) },
      });
      expect(r.images).toHaveLength(3);
      // When each tag was written, every blob of every image was held.
      const every = allBlobs(...THINGS).map((b) => b.digest);
      expect(atTag).toHaveLength(3);
      for (const at of atTag) expect(at.sort()).toEqual(expect.arrayContaining(every));
      expect(held.size).toBe(0);
      expect(uses).toContain(`m docker.io/library/app1@${app1.manifest.digest}`);
      expect(uses).toContain(`b ${app1.layers[1]!.digest}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a stream of zeros (/dev/zero) instead of reading it for ever', async () => {
    let produced = 0;
    const zeros = Readable.from(
      (function* () {
        // Bounded for the test's sake: 64 MiB at most, far past where the import must give up.
        for (let i = 0; i < 1024; i++) {
          produced += 64 * 1024;
          yield Buffer.alloc(64 * 1024);
        }
      })(),
    );
    m = await offlineMirror();
    const err = await m.airgap.import(tarEntries(zeros)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as Error).message).toMatch(/without a tar entry: not a tar archive/);
    expect(produced).toBeLessThan(8 * 1024 * 1024);
  });

  it('an index listing one platform manifest many times checks it once and imports it', async () => {
    const repeated = blobOf(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: Array.from({ length: 50 }, () => ({ ...descriptorOf(amd.manifest), platform: { os: 'linux', architecture: 'amd64' } })) }), MT.ociIndex);
    m = await offlineMirror();
    const r = await m.airgap.import(entriesOf(await tarOf(layoutEntries({ 'docker.io/library/rep:1': repeated }, [amd, repeated]))));
    expect(r.images).toEqual([expect.objectContaining({ reference: 'docker.io/library/rep:1', platforms: 1 })]);
    expect((await pull(m, 'library/rep', '1')).digest).toBe(repeated.digest);
  });
});

describe('imported tags online', () => {
  let hub: FakeUpstream;
  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app1', app1, '1.0');
  });
  afterAll(() => hub.close());

  it('are fresh from the import time, then revalidated with a HEAD after the TTL; import itself contacts no upstream', async () => {
    const clock = { now: 10_000_000 };
    const m = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock, tagTtl: 60 });
    try {
      await m.airgap.import(entriesOf(await tarOf(layoutEntries({ 'docker.io/library/app1:1.0': app1.manifest }, [app1]))));
      expect(hub.count()).toBe(0);
      await pull(m, 'library/app1', '1.0');
      expect(hub.count({ kind: 'manifest' }) + hub.count({ kind: 'blob' })).toBe(0);
      clock.now += 61_000;
      const res = await m.request('/v2/library/app1/manifests/1.0', { headers: { accept: DOCKER_ACCEPT } });
      expect(res.status).toBe(200);
      expect(hub.count({ kind: 'manifest', method: 'HEAD', status: 200 })).toBe(1);
      expect(hub.count({ kind: 'manifest', method: 'GET' })).toBe(0);
    } finally {
      await m.stop();
    }
  });
});

