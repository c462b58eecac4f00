/**
 * With the real tools: bundles skopeo writes (oci-archive, oci: directory) import, bundles we write
 * are read by skopeo (inspect, copy), and the air-gapped flow end to end: mirror A (upstream = a
 * real docker-registry) is filled through, exports; mirror B (offline, no upstream) imports; skopeo
 * pulls every image through B; upstream served each blob once in all. Then dockerd, with B (offline,
 * no upstream) as its only `registry-mirrors`, pulls the imported images and runs a busybox one.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirEntries, tarEntries } from '../../src/airgap/source.js';
import { runExportCli } from '../../src/cli/export.js';
import { openAirgap } from '../../src/mirror.js';
import { allBlobs, busyboxImage, makeImage, makeIndex, makeLayer, writeOciLayout } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { waitStored } from './bundle.js';
import { startDistribution, type Distribution } from '../e2e/harness/distribution.js';
import { startDockerd } from '../e2e/harness/dockerd.js';
import { pushIndex, pushOciLayout, registryHost } from '../e2e/harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, runOk } from '../e2e/harness/tools.js';

const SKIP = ['docker-registry', 'skopeo'].filter((t) => !hasTool(t));
if (SKIP.length) console.warn(`[airgap] skipping skopeo interop: missing ${SKIP.join(', ')}`);
// A runnable image (static busybox) for dockerd to run from the offline mirror.
const runbox = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo airgap-runbox; cat /etc/which'], extraFile: { path: 'etc/which', content: 'imported-offline\n' } });
const DKD_MISSING = ['dockerd', 'docker', 'containerd', 'runc'].filter((t) => !hasTool(t));
const DKD_SKIP = SKIP.length
  ? 'skopeo interop skipped'
  : DKD_MISSING.length
    ? `missing ${DKD_MISSING.join(', ')}`
    : !isRoot()
      ? 'needs root'
      : !runbox
        ? 'no static /bin/busybox (busybox-static) for a runnable image'
        : undefined;
if (DKD_SKIP) console.warn(`[airgap] skipping dockerd through the offline mirror: ${DKD_SKIP}`);

const shared = makeLayer([{ path: 'shared', content: 'skopeo shared layer' }]);
const app1 = makeImage({ layers: [shared, makeLayer([{ path: 'one', content: 'skopeo one' }])] });
const app2 = makeImage({ layers: [shared, makeLayer([{ path: 'two', content: 'skopeo two' }])] });
const amd = makeImage({ layers: [makeLayer([{ path: 'p', content: 'skopeo amd64' }])], architecture: 'amd64' });
const arm = makeImage({ layers: [makeLayer([{ path: 'p', content: 'skopeo arm64' }])], architecture: 'arm64', variant: 'v8' });
const multi = makeIndex([amd, arm]);
const skopeo = (args: string[]) => runOk('skopeo', ['--insecure-policy', ...args], { timeoutMs: 30_000 });
const offline = (dataDir?: string) =>
  startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true, listen: true, ...(dataDir ? { dataDir } : {}) });

describe.skipIf(SKIP.length > 0)('air-gap with skopeo and a real registry', () => {
  let work = '';
  let upstream: Distribution;
  let a: TestMirror;
  /** Mirror B (offline, no upstream) after the import, kept for the dockerd test. */
  let b: TestMirror | undefined;

  beforeAll(async () => {
    work = makeTempDir('airgap-skopeo');
    upstream = await startDistribution();
    for (const [name, img] of [['app1', app1], ['app2', app2]] as const) {
      const dir = join(work, `src-${name}`);
      await writeOciLayout(dir, { [name]: img.manifest }, [img.config, ...img.layers]);
      await pushOciLayout(dir, name, upstream.url, `library/${name}`, name === 'app1' ? '1.0' : '2.0');
    }
    const mdir = join(work, 'src-multi');
    await writeOciLayout(mdir, { multi }, allBlobs(amd, arm));
    await pushIndex(mdir, 'multi', upstream.url, 'library/multi', 'latest');
    if (runbox) {
      const rdir = join(work, 'src-runbox');
      await writeOciLayout(rdir, { runbox: runbox.manifest }, [runbox.config, ...runbox.layers]);
      await pushOciLayout(rdir, 'runbox', upstream.url, 'library/runbox', '1');
    }
    await upstream.settle();
    upstream.clearRequests();
    a = await startMirror({ upstreams: { 'docker.io': { url: upstream.url, libraryPrefix: true } }, listen: true });
  }, 60_000);
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await upstream?.stop();
    if (work) await cleanupDir(work);
  });

  it('imports what skopeo writes: oci-archive with a plain tag, and an oci: directory with an index', async () => {
    const host = registryHost(upstream.url);
    const archive = join(work, 'skopeo-app1.tar');
    await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/library/app1:1.0`, `oci-archive:${archive}:1.0`]);
    const layout = join(work, 'skopeo-multi');
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${host}/library/multi:latest`, `oci:${layout}:latest`]);
    const c = await offline();
    try {
      const r1 = await c.airgap.import(tarEntries(createReadStream(archive)), { repository: 'docker.io/library/app1' });
      expect(r1.images[0]!.reference).toBe('docker.io/library/app1:1.0');
      const r2 = await c.airgap.import(dirEntries(layout), { repository: 'library/multi' });
      expect(r2.images[0]).toMatchObject({ reference: 'docker.io/library/multi:latest', digest: multi.digest, platforms: 2 });
      const res = await c.request('/v2/library/app1/manifests/1.0', { headers: { accept: DOCKER_ACCEPT } });
      expect(res.status).toBe(200);
      // skopeo pulls the multi-arch image through the offline mirror.
      await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${registryHost(c.url)}/library/multi:latest`, `dir:${join(work, 'from-c')}`]);
    } finally {
      await c.stop();
    }
  });

  it('A fills through, exports; skopeo reads the bundle; B (offline) imports and serves; upstream sent each blob once', async () => {
    // Only this test's traffic counts (the one above read the upstream directly).
    await upstream.settle();
    upstream.clearRequests();
    const ah = registryHost(a.url);
    await skopeo(['copy', '--src-tls-verify=false', `docker://${ah}/library/app1:1.0`, `dir:${join(work, 'a-app1')}`]);
    await skopeo(['copy', '--src-tls-verify=false', `docker://${ah}/library/app2:2.0`, `dir:${join(work, 'a-app2')}`]);
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${ah}/library/multi:latest`, `dir:${join(work, 'a-multi')}`]);
    if (runbox) await skopeo(['copy', '--src-tls-verify=false', `docker://${ah}/library/runbox:1`, `dir:${join(work, 'a-runbox')}`]);
    const extra = runbox ? [runbox] : [];

    await waitStored(a, allBlobs(app1, app2, amd, arm, multi, ...extra).map((x) => x.digest));
    const bundle = join(work, 'bundle.tar');
    const out: string[] = [];
    const report: string[] = [];
    const code = await runExportCli(['-o', bundle, '--all', '--data-dir', a.dataDir], {
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          report.push(c.toString());
          cb();
        },
      }),
      stderr: { write: (s: string) => out.push(s) },
      stdin: process.stdin,
      env: {},
      fetch: (u, i) => fetch(u, i),
      loadConfig: () => a.config,
      openAirgap: (cfg, o) => openAirgap(cfg, o),
    });
    expect(out.join('')).toBe('');
    expect(code).toBe(0);
    const blobCount = new Set(allBlobs(app1, app2, amd, arm, multi, ...extra).map((x) => x.digest)).size;
    expect(report.join('')).toMatch(new RegExp(`^exported docker.io/library/app1:1.0\n(.*\n){${2 + extra.length}}${3 + extra.length} images, ${blobCount} blobs`));

    const inspected = JSON.parse((await skopeo(['inspect', `oci-archive:${bundle}:docker.io/library/app1:1.0`])).stdout);
    expect(inspected.Digest).toBe(app1.manifest.digest);
    await skopeo(['copy', '--all', `oci-archive:${bundle}:docker.io/library/multi:latest`, `dir:${join(work, 'from-bundle')}`]);

    b = await offline(join(work, 'b-data'));
    const r = await b.airgap.import(tarEntries(createReadStream(bundle)));
    expect(r.images.map((i) => i.reference).sort()).toEqual([
      'docker.io/library/app1:1.0',
      'docker.io/library/app2:2.0',
      'docker.io/library/multi:latest',
      ...(runbox ? ['docker.io/library/runbox:1'] : []),
    ]);
    const bh = registryHost(b.url);
    await skopeo(['copy', '--src-tls-verify=false', `docker://${bh}/library/app1:1.0`, `dir:${join(work, 'b-app1')}`]);
    await skopeo(['copy', '--src-tls-verify=false', `docker://${bh}/library/app2:2.0`, `dir:${join(work, 'b-app2')}`]);
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${bh}/library/multi:latest`, `dir:${join(work, 'b-multi')}`]);
    expect(await b.metric('mirror_upstream_requests_total')).toBe(0);
    await upstream.settle();
    const manifests = new Set([app1, app2, amd, arm, ...extra].map((i) => i.manifest.digest));
    for (const blob of allBlobs(app1, app2, amd, arm, ...extra)) {
      if (manifests.has(blob.digest)) continue;
      const n = upstream.countRequests({ method: 'GET', pathRegex: new RegExp(`/blobs/${blob.digest}$`) });
      expect(n, blob.digest).toBe(1);
    }
  });

  it.skipIf(DKD_SKIP !== undefined)('dockerd with registry-mirrors = B (offline, no upstream) pulls the imported images and runs one; B saw no upstream', async () => {
    expect(b, 'mirror B from the test above').toBeDefined();
    const mirror = b!;
    const dkd = await startDockerd({ mirrors: [mirror.url], insecureRegistries: [registryHost(mirror.url)] });
    try {
      for (const ref of ['app1:1.0', 'app2:2.0', 'multi:latest', 'runbox:1']) {
        const r = await dkd.docker(['pull', ref], { timeoutMs: 120_000 });
        expect(r.code, `${ref}: ${r.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
      }
      const run = await dkd.docker(['run', '--rm', '--network', 'none', 'runbox:1'], { timeoutMs: 60_000 });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain('airgap-runbox');
      expect(run.stdout).toContain('imported-offline');
      // Docker went through B (not around it), and B never reached for an upstream.
      expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob' })).toBeGreaterThan(0);
      expect(await mirror.metric('mirror_upstream_requests_total')).toBe(0);
    } finally {
      await dkd.stop();
    }
  }, 300_000);
});
