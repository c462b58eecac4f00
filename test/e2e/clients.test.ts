/**
 * Real clients through the mirror, with Debian's docker-registry (distribution 2.8) as the upstream:
 * skopeo, containerd's ctr (hosts.toml, `?ns=docker.io`) and dockerd (`registry-mirrors`), then
 * `docker run` of what was pulled. The upstream's access log tells what crossed the upstream link.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf as digestOfBytes } from '../helpers/digest.js';
import { allBlobs, busyboxImage, hostArchitecture, makeImage, makeIndex, makeLayer, makeRandomLayer, MT, writeDirLayout, writeOciLayout, type Blob, type Image } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { waitFor } from '../helpers/wait.js';
import { startContainerd } from './harness/containerd.js';
import { startDistribution, type Distribution } from './harness/distribution.js';
import { startDockerd } from './harness/dockerd.js';
import { pushDirLayout, pushIndex, pushOciLayout } from './harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from './harness/tools.js';

const missing = (tools: string[], root = false): string | undefined => {
  const absent = tools.filter((t) => !hasTool(t));
  if (absent.length) return `missing tool(s): ${absent.join(', ')}`;
  return root && !isRoot() ? 'needs root' : undefined;
};
const img1 = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo mirror-e2e-one; cat /etc/which'], extraFile: { path: 'etc/which', content: 'tag-one\n' } });
const img2 = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo mirror-e2e-two; cat /etc/which'], extraFile: { path: 'etc/which', content: 'tag-two\n' } });
const REG_SKIP = missing(['docker-registry', 'skopeo']) ?? (img1 ? undefined : 'no static /bin/busybox (busybox-static) for a runnable image');
const CTD_SKIP = REG_SKIP ?? missing(['containerd', 'ctr'], true);
const DKD_SKIP = REG_SKIP ?? missing(['dockerd', 'docker', 'containerd', 'runc'], true);
for (const [part, why] of [['skopeo', REG_SKIP], ['containerd', CTD_SKIP], ['dockerd', DKD_SKIP]] as const) {
  if (why) console.warn(`[e2e] skipping ${part} end-to-end tests: ${why}`);
}

const blobGets = /^\/v2\/library\/[a-z]+\/blobs\/sha256:/;

/** `skopeo copy` into `dir:`: the top manifest's digest and every other file by its digest (each checked against its bytes). */
function readDirCopy(dir: string): { top: string; manifests: string[]; blobs: string[] } {
  const digestOfFile = (file: string) => digestOfBytes(readFileSync(join(dir, file)));
  const manifests: string[] = [];
  const blobs: string[] = [];
  for (const f of readdirSync(dir).sort()) {
    if (f === 'manifest.json' || f === 'version') continue;
    const m = /^([0-9a-f]{64})(\.manifest\.json)?$/.exec(f);
    if (!m) throw new Error(`unexpected file ${f} in ${dir}`);
    expect(digestOfFile(f), `${dir}/${f}`).toBe(`sha256:${m[1]}`);
    (m[2] ? manifests : blobs).push(`sha256:${m[1]}`);
  }
  return { top: digestOfFile('manifest.json'), manifests, blobs };
}

describe.skipIf(REG_SKIP !== undefined)('real clients through the mirror', () => {
  let work = '';
  let upstream: Distribution;
  let arm: Image;
  let index: ReturnType<typeof makeIndex>;
  // A two-platform Docker manifest list (library/dlist:latest) and what `skopeo copy --all` makes of it straight from upstream.
  let dAmd: Image;
  let dArm: Image;
  let dlist: Blob;
  let dlistDirect: ReturnType<typeof readDirCopy>;

  beforeAll(async () => {
    work = makeTempDir('mirror-e2e');
    upstream = await startDistribution();
    arm = makeImage({ layers: [makeLayer([{ path: 'hello.txt', content: 'arm64\n' }])], architecture: 'arm64' });
    index = makeIndex([img1!, arm]);
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { one: img1!.manifest, two: img2!.manifest, multi: index }, allBlobs(img1!, img2!, arm, index));
    await pushOciLayout(layout, 'one', upstream.url, 'library/busy', '1');
    await pushOciLayout(layout, 'two', upstream.url, 'library/busy', '2');
    await pushIndex(layout, 'multi', upstream.url, 'library/multi', 'latest');
    dAmd = makeImage({ layers: [makeLayer([{ path: 'which.txt', content: 'docker amd64\n' }], MT.dockerLayerGzip)], format: 'docker', architecture: 'amd64' });
    dArm = makeImage({ layers: [makeLayer([{ path: 'which.txt', content: 'docker arm64\n' }], MT.dockerLayerGzip)], format: 'docker', architecture: 'arm64' });
    dlist = makeIndex([dAmd, dArm], 'docker');
    await writeDirLayout(join(work, 'dlist-layout'), dlist, allBlobs(dAmd, dArm));
    await pushDirLayout(join(work, 'dlist-layout'), upstream.url, 'library/dlist', 'latest', { all: true });
    const direct = join(work, 'dlist-direct');
    const r = await run('skopeo', ['--insecure-policy', 'copy', '--all', '--src-tls-verify=false', `docker://${upstream.host}/library/dlist:latest`, `dir:${direct}`], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    dlistDirect = readDirCopy(direct);
    await upstream.settle();
    upstream.clearRequests();
  }, 120_000);

  afterAll(async () => {
    await upstream?.stop();
    if (work) await cleanupDir(work);
  });

  async function freshMirror(): Promise<TestMirror> {
    await upstream.settle();
    upstream.clearRequests();
    return startMirror({ upstreams: { 'docker.io': { url: upstream.url, libraryPrefix: true } }, listen: true });
  }

  /** Upstream blob GETs per digest (after the access log settles). */
  async function upstreamBlobFetches(): Promise<Map<string, number>> {
    await upstream.settle();
    const out = new Map<string, number>();
    for (const e of upstream.requests()) {
      if (e.method === 'GET' && blobGets.test(e.path) && e.status < 300) {
        const d = e.path.slice(e.path.lastIndexOf('/') + 1);
        out.set(d, (out.get(d) ?? 0) + 1);
      }
    }
    return out;
  }

  it('skopeo copies two tags sharing a layer through the mirror; the shared layer crosses upstream once', async () => {
    const mirror = await freshMirror();
    try {
      const host = mirror.url.replace('http://', '');
      for (const tag of ['1', '2']) {
        const dest = join(work, `skopeo-${tag}`);
        await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/library/busy:${tag}`, `dir:${dest}`], { timeoutMs: 60_000 }).then((r) => {
          expect(r.code, r.stderr).toBe(0);
        });
      }
      // skopeo with a one-part name through the mirror's Docker Hub naming rules
      const r = await run('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', `docker://${host}/busy:1`], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).Digest).toBe(img1!.manifest.digest);
      const fetches = await upstreamBlobFetches();
      const shared = img1!.layers[0]!.digest;
      expect(shared).toBe(img2!.layers[0]!.digest);
      expect(fetches.get(shared)).toBe(1);
      const unique = new Set(allBlobs(img1!, img2!).filter((b) => b.digest !== img1!.manifest.digest && b.digest !== img2!.manifest.digest).map((b) => b.digest));
      expect([...fetches.keys()].sort()).toEqual([...unique].sort());
      expect([...fetches.values()].every((n) => n === 1)).toBe(true);
    } finally {
      await mirror.stop();
    }
  }, 120_000);

  describe('a multi-arch tag is never replaced by one platform\'s manifest', () => {
    const base = (mirror: TestMirror) => `${mirror.url}/v2/library/dlist/manifests/latest`;
    /** Names the list's digests in failure messages: 'amd64 child sha256:…' says more than a bare digest. */
    const named = (digest: string) =>
      `${digest === dlist.digest ? 'the list' : digest === dAmd.manifest.digest ? 'amd64 child' : digest === dArm.manifest.digest ? 'arm64 child' : 'unknown'} ${digest}`;

    /** One manifest GET of the tag through the mirror: the digest it answered with (checked against the body), named. */
    async function getTag(mirror: TestMirror, accept: string): Promise<{ digest: string; mediaType: string }> {
      const res = await fetch(base(mirror), { headers: { accept } });
      const body = Buffer.from(await res.arrayBuffer());
      expect(res.status, body.toString()).toBe(200);
      const digest = digestOfBytes(body);
      expect(res.headers.get('docker-content-digest')).toBe(digest);
      return { digest: named(digest), mediaType: res.headers.get('content-type') ?? '' };
    }

    /** `skopeo copy --all` of the tag through the mirror must equal the same copy straight from upstream. */
    async function copyAllThrough(mirror: TestMirror, dest: string): Promise<void> {
      const host = mirror.url.replace('http://', '');
      const r = await run('skopeo', ['--insecure-policy', 'copy', '--all', '--src-tls-verify=false', `docker://${host}/library/dlist:latest`, `dir:${join(work, dest)}`], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const through = readDirCopy(join(work, dest));
      expect(named(through.top), 'top-level manifest of skopeo --all through the mirror').toBe(named(dlist.digest));
      expect(through).toEqual(dlistDirect);
    }

    /** Every config and layer of both platforms crossed the upstream link exactly once, and nothing else did. */
    async function expectEachBlobFetchedOnce(): Promise<void> {
      const fetches = await upstreamBlobFetches();
      const wanted = allBlobs(dAmd, dArm).filter((b) => b !== dAmd.manifest && b !== dArm.manifest).map((b) => b.digest);
      expect([...fetches.keys()].sort(), 'blobs fetched from upstream').toEqual(wanted.sort());
      for (const [d, n] of fetches) expect(n, `upstream GETs of ${d}`).toBe(1);
    }

    it('sanity: upstream answers the list to a broad Accept and the amd64 child to a Docker-v2-only Accept; the direct copy is the list', async () => {
      expect(dlistDirect.top).toBe(dlist.digest);
      expect(dlistDirect.manifests).toEqual([dAmd.manifest.digest, dArm.manifest.digest].sort());
      for (const [accept, want] of [[MT.dockerManifest, dAmd.manifest.digest], [DOCKER_ACCEPT, dlist.digest]] as const) {
        const res = await fetch(`${upstream.url}/v2/library/dlist/manifests/latest`, { headers: { accept } });
        expect(res.status).toBe(200);
        expect(digestOfBytes(Buffer.from(await res.arrayBuffer())), accept).toBe(want);
      }
    });

    it('an old client (Docker v2 manifests only) gets the amd64 child, and skopeo --all afterwards still gets the whole list', async () => {
      const mirror = await freshMirror();
      try {
        expect(await getTag(mirror, MT.dockerManifest)).toEqual({ digest: named(dAmd.manifest.digest), mediaType: MT.dockerManifest });
        await copyAllThrough(mirror, 'dlist-narrow-then-all');
        // And the old client still gets its answer from the same cache.
        expect((await getTag(mirror, MT.dockerManifest)).digest).toBe(named(dAmd.manifest.digest));
        await expectEachBlobFetchedOnce();
      } finally {
        await mirror.stop();
      }
    });

    it('broad then narrow: the list, then the amd64 child, then skopeo --all still gets the whole list', async () => {
      const mirror = await freshMirror();
      try {
        expect(await getTag(mirror, DOCKER_ACCEPT)).toEqual({ digest: named(dlist.digest), mediaType: MT.dockerList });
        expect(await getTag(mirror, MT.dockerManifest)).toEqual({ digest: named(dAmd.manifest.digest), mediaType: MT.dockerManifest });
        await copyAllThrough(mirror, 'dlist-broad-narrow-all');
        expect((await getTag(mirror, DOCKER_ACCEPT)).digest).toBe(named(dlist.digest));
        await expectEachBlobFetchedOnce();
      } finally {
        await mirror.stop();
      }
    });
  });

  it.skipIf(CTD_SKIP !== undefined)('ctr pulls through a hosts.toml mirror (?ns=docker.io), a multi-arch index included', async () => {
    const mirror = await freshMirror();
    const ctd = await startContainerd();
    try {
      await ctd.ctrPull('docker.io/library/busy:1', { mirrorUrl: mirror.url, hostsDir: join(work, 'hosts') });
      await ctd.ctrPull('docker.io/library/busy:2', { mirrorUrl: mirror.url, hostsDir: join(work, 'hosts') });
      await ctd.ctrPull('docker.io/library/multi:latest', { mirrorUrl: mirror.url, hostsDir: join(work, 'hosts') });
      const ran = await ctd.ctrRun('docker.io/library/busy:2', ['/bin/sh', '-c', 'cat /etc/which']);
      expect(ran.stdout).toContain('tag-two');
      const fetches = await upstreamBlobFetches();
      expect(fetches.get(img1!.layers[0]!.digest)).toBe(1);
      expect([...fetches.values()].every((n) => n === 1)).toBe(true);
      // The mirror answered containerd's ns-qualified requests.
      expect(await mirror.metric('mirror_http_requests_total', { route: 'manifest', status: '200' })).toBeGreaterThanOrEqual(3);
    } finally {
      await ctd.stop();
      await mirror.stop();
    }
  }, 180_000);

  it.skipIf(DKD_SKIP !== undefined)('dockerd with registry-mirrors pulls a multi-arch image and two tags sharing layers, then runs them', async () => {
    const mirror = await freshMirror();
    const host = mirror.url.replace('http://', '');
    const dkd = await startDockerd({ mirrors: [mirror.url], insecureRegistries: [host] });
    try {
      for (const ref of ['busy:1', 'busy:2', 'multi:latest']) {
        const r = await dkd.docker(['pull', ref], { timeoutMs: 120_000 });
        expect(r.code, `${ref}: ${r.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
      }
      const one = await dkd.docker(['run', '--rm', '--network', 'none', 'busy:1'], { timeoutMs: 60_000 });
      expect(one.code, one.stderr).toBe(0);
      expect(one.stdout).toContain('mirror-e2e-one');
      expect(one.stdout).toContain('tag-one');
      const multi = await dkd.docker(['run', '--rm', '--network', 'none', 'multi:latest'], { timeoutMs: 60_000 });
      expect(multi.code, multi.stderr).toBe(0);
      expect(multi.stdout).toContain('mirror-e2e-one');
      const fetches = await upstreamBlobFetches();
      expect(fetches.get(img1!.layers[0]!.digest)).toBe(1);
      expect([...fetches.values()].every((n) => n === 1)).toBe(true);
      // Docker went through the mirror, not around it.
      expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob' })).toBeGreaterThan(0);
      upstream.clearRequests();
      // A second daemon-free client now finds everything in the mirror's cache: no upstream blob traffic.
      const again = await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/library/busy:2`, `dir:${join(work, 'again')}`], { timeoutMs: 60_000 });
      expect(again.code, again.stderr).toBe(0);
      expect((await upstreamBlobFetches()).size).toBe(0);
    } finally {
      await dkd.stop();
      await mirror.stop();
    }
  }, 300_000);

  it.skipIf(DKD_SKIP !== undefined)('dockerd pulls through a mirror capped a bit above one image: every pull succeeds while eviction runs; an evicted image pulls again, its blobs crossing upstream once more', async () => {
    // Three images of ~200 KiB each over a shared 16 KiB base; the cap holds one image (plus the base), not two.
    const arch = hostArchitecture() ?? { architecture: 'amd64' };
    const base = makeRandomLayer(16 * 1024, 'evict-base');
    const imgs = Object.fromEntries(
      (['eva', 'evb', 'evc'] as const).map((name) => [name, makeImage({ layers: [base, makeRandomLayer(200 * 1024, `evict-${name}`)], ...arch })]),
    ) as Record<'eva' | 'evb' | 'evc', Image>;
    const layout = join(work, 'evict-layout');
    await writeOciLayout(layout, { eva: imgs.eva.manifest, evb: imgs.evb.manifest, evc: imgs.evc.manifest }, allBlobs(imgs.eva, imgs.evb, imgs.evc));
    for (const name of ['eva', 'evb', 'evc'] as const) expect((await pushOciLayout(layout, name, upstream.url, `library/${name}`, '1')).code).toBe(0);
    const unique = (i: Image) => [i.config.digest, i.layers[1]!.digest];
    const maxBytes = 300 * 1024;
    const bytesOf = (blobs: Blob[]) => blobs.reduce((n, b) => n + b.size, 0);
    // One image fits; two (sharing the base) do not.
    expect(bytesOf(allBlobs(imgs.eva))).toBeLessThan(maxBytes);
    expect(bytesOf(allBlobs(imgs.eva, imgs.evb))).toBeGreaterThan(maxBytes);

    await upstream.settle();
    upstream.clearRequests();
    const mirror = await startMirror({
      upstreams: { 'docker.io': { url: upstream.url, libraryPrefix: true } },
      listen: true,
      raw: { cache: { tagTtl: 300, maxBytes: '300KiB', evictionInterval: 1 } },
    });
    const host = mirror.url.replace('http://', '');
    const dkd = await startDockerd({ mirrors: [mirror.url], insecureRegistries: [host] });
    const fetchesOf = async () => {
      await upstream.settle();
      const out = new Map<string, number>();
      for (const e of upstream.requests()) {
        const m = /^\/v2\/library\/ev[abc]\/blobs\/(sha256:[0-9a-f]{64})$/.exec(e.path);
        if (e.method === 'GET' && m && e.status < 300) out.set(m[1]!, (out.get(m[1]!) ?? 0) + 1);
      }
      return out;
    };
    const cached = async () => (await mirror.admin.images()).map((i) => i.repo).sort();
    const settled = async () => {
      const s = await mirror.admin.summary();
      return s.bytes <= maxBytes ? s : undefined;
    };
    const pull = async (ref: string) => {
      const r = await dkd.docker(['pull', ref], { timeoutMs: 120_000 });
      expect(r.code, `${ref}: ${r.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
    };
    try {
      // Back to back: eviction runs in the background while the next pull is under way.
      for (const name of ['eva', 'evb', 'evc']) await pull(`${name}:1`);
      // dockerd has a layer once it is verified, before the store commits it and counts its bytes.
      expect(await mirror.registry.drain(5000)).toBe(true);
      await waitFor(async () => !(await cached()).includes('library/eva') && (await settled()), 20_000, `eva evicted and the cache within ${maxBytes} bytes`);
      expect(await mirror.metric('mirror_cache_evictions_total', { reason: 'size' })).toBeGreaterThan(0);
      expect(await mirror.metric('mirror_cache_evicted_bytes_total', { reason: 'size' })).toBeGreaterThanOrEqual(200 * 1024);
      // The most recently pulled image stays whole; the base it shares with eva stays with it.
      expect(await cached()).toContain('library/evc');
      const first = await fetchesOf();
      for (const b of [base.digest, ...unique(imgs.eva), ...unique(imgs.evb), ...unique(imgs.evc)]) expect(first.get(b), `first upstream GETs of ${b}`).toBe(1);

      // eva again, gone from dockerd too: it comes through the mirror, its blobs from upstream once more.
      upstream.clearRequests();
      const rmi = await dkd.docker(['rmi', 'eva:1'], { timeoutMs: 60_000 });
      expect(rmi.code, rmi.stderr).toBe(0);
      await pull('eva:1');
      expect(await mirror.registry.drain(5000)).toBe(true);
      await waitFor(async () => (await cached()).includes('library/eva') && (await settled()), 20_000, `eva cached again and the cache within ${maxBytes} bytes`);
      const again = await fetchesOf();
      for (const b of unique(imgs.eva)) expect(again.get(b), `upstream GETs of eva's ${b} after its eviction`).toBe(1);
      // The shared base was never evicted (evc, retained, references it): not fetched again.
      expect(again.get(base.digest)).toBeUndefined();
      expect([...again.keys()].sort()).toEqual(unique(imgs.eva).sort());
      expect(await mirror.metric('mirror_cache_refetched_after_eviction_total')).toBe(unique(imgs.eva).length);
      expect((await mirror.admin.summary()).bytes).toBeLessThanOrEqual(maxBytes);
    } finally {
      await dkd.stop();
      await mirror.stop();
    }
  }, 300_000);
});
