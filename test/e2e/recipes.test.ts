/**
 * The client recipes in docs/clients.md, each with the real client: containerd hosts.toml for a
 * non-Docker-Hub registry (via `ns`) and with `override_path`, and podman's registries.conf mirror
 * with a path prefix.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allBlobs, busyboxImage, writeOciLayout } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { DEAD_END_SERVER, startContainerd } from './harness/containerd.js';
import { startDistribution, type Distribution } from './harness/distribution.js';
import { pushOciLayout } from './harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from './harness/tools.js';

const img = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo recipe-ok'], extraFile: { path: 'etc/recipe', content: 'recipe\n' } });
const missing = (tools: string[], root = false): string | undefined => {
  const absent = tools.filter((t) => !hasTool(t));
  if (absent.length) return `missing tool(s): ${absent.join(', ')}`;
  if (!img) return 'no static /bin/busybox (busybox-static)';
  return root && !isRoot() ? 'needs root' : undefined;
};
const BASE_SKIP = missing(['docker-registry', 'skopeo']);
const CTD_SKIP = BASE_SKIP ?? missing(['containerd', 'ctr'], true);
const PODMAN_SKIP = BASE_SKIP ?? missing(['podman'], true);
for (const [part, why] of [['containerd recipes', CTD_SKIP], ['podman recipe', PODMAN_SKIP]] as const) {
  if (why) console.warn(`[e2e] skipping ${part}: ${why}`);
}
/** Fallbacks to the real registries must fail locally, never reach for DNS or the internet. */
const NO_EGRESS = { HTTP_PROXY: 'http://127.0.0.1:1', HTTPS_PROXY: 'http://127.0.0.1:1', NO_PROXY: '127.0.0.1,localhost', http_proxy: 'http://127.0.0.1:1', https_proxy: 'http://127.0.0.1:1', no_proxy: '127.0.0.1,localhost' };

describe.skipIf(BASE_SKIP !== undefined)('client recipes', () => {
  let work = '';
  let hubUp: Distribution;
  let ghcrUp: Distribution;
  let mirror: TestMirror;

  beforeAll(async () => {
    work = makeTempDir('recipes');
    hubUp = await startDistribution();
    ghcrUp = await startDistribution();
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { app: img!.manifest }, allBlobs(img!));
    await pushOciLayout(layout, 'app', hubUp.url, 'library/recipe', 'v1');
    await pushOciLayout(layout, 'app', ghcrUp.url, 'acme/tool', 'v1');
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: hubUp.url, libraryPrefix: true }, 'ghcr.io': { url: ghcrUp.url } },
      listen: true,
    });
  }, 120_000);

  afterAll(async () => {
    await mirror?.stop();
    await hubUp?.stop();
    await ghcrUp?.stop();
    if (work) await cleanupDir(work);
  });

  it.skipIf(CTD_SKIP !== undefined)('containerd: ghcr.io through the mirror via ns=, and with override_path on /v2/ghcr.io', async () => {
    const ctd = await startContainerd();
    try {
      // Recipe 1: certs.d/ghcr.io/hosts.toml -> mirror root; containerd adds ?ns=ghcr.io.
      const plain = join(work, 'hosts-ns');
      mkdirSync(join(plain, 'ghcr.io'), { recursive: true });
      writeFileSync(join(plain, 'ghcr.io', 'hosts.toml'), `server = "${DEAD_END_SERVER}"\n\n[host."${mirror.url}"]\n  capabilities = ["pull", "resolve"]\n`);
      const a = await ctd.ctr(['images', 'pull', '--hosts-dir', plain, '--plain-http', '--snapshotter', ctd.snapshotter, 'ghcr.io/acme/tool:v1'], { timeoutMs: 120_000, env: NO_EGRESS });
      expect(a.code, a.stderr).toBe(0);
      await ctd.removeImage('ghcr.io/acme/tool:v1');
      // Recipe 2: override_path: the host URL is the API root including the registry prefix.
      const over = join(work, 'hosts-override');
      mkdirSync(join(over, 'ghcr.io'), { recursive: true });
      writeFileSync(
        join(over, 'ghcr.io', 'hosts.toml'),
        `server = "${DEAD_END_SERVER}"\n\n[host."${mirror.url}/v2/ghcr.io"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n`,
      );
      const b = await ctd.ctr(['images', 'pull', '--hosts-dir', over, '--plain-http', '--snapshotter', ctd.snapshotter, 'ghcr.io/acme/tool:v1'], { timeoutMs: 120_000, env: NO_EGRESS });
      expect(b.code, b.stderr).toBe(0);
      const ran = await ctd.ctrRun('ghcr.io/acme/tool:v1', ['/bin/cat', '/etc/recipe']);
      expect(ran.stdout).toContain('recipe');
      await ghcrUp.settle();
      const blobGets = ghcrUp.countRequests({ method: 'GET', pathRegex: /^\/v2\/acme\/tool\/blobs\//, status: 200 });
      expect(blobGets).toBe(img!.layers.length + 1); // every blob once, however many pulls
    } finally {
      await ctd.stop();
    }
  }, 180_000);

  it.skipIf(PODMAN_SKIP !== undefined)('podman: registries.conf [[registry.mirror]] with a path prefix', async () => {
    const dir = join(work, 'podman');
    mkdirSync(dir, { recursive: true });
    const host = mirror.url.replace('http://', '');
    const conf = join(dir, 'registries.conf');
    writeFileSync(
      conf,
      [
        'unqualified-search-registries = ["docker.io"]',
        '',
        '[[registry]]',
        'location = "docker.io"',
        '[[registry.mirror]]',
        `location = "${host}/docker.io"`,
        'insecure = true',
        '',
        '[[registry]]',
        'location = "ghcr.io"',
        '[[registry.mirror]]',
        `location = "${host}/ghcr.io"`,
        'insecure = true',
        '',
      ].join('\n'),
    );
    const podman = (args: string[]) =>
      run('podman', ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none', ...args], {
        timeoutMs: 120_000,
        env: { ...NO_EGRESS, CONTAINERS_REGISTRIES_CONF: conf },
      });
    const before = await mirror.metric('mirror_http_requests_total', { route: 'manifest', status: '200' });
    try {
      const a = await podman(['pull', 'docker.io/library/recipe:v1']);
      expect(a.code, a.stderr).toBe(0);
      const b = await podman(['pull', 'ghcr.io/acme/tool:v1']);
      expect(b.code, b.stderr).toBe(0);
      const images = await podman(['images', '--format', '{{.Repository}}:{{.Tag}}']);
      expect(images.stdout).toContain('docker.io/library/recipe:v1');
      expect(images.stdout).toContain('ghcr.io/acme/tool:v1');
    } finally {
      await podman(['rmi', '-af']).catch(() => undefined);
      await run('umount', ['-R', join(dir, 'root')]).catch(() => undefined);
    }
    // Both pulls were answered by the mirror (podman does not fall back: its fallback has no egress).
    const after = await mirror.metric('mirror_http_requests_total', { route: 'manifest', status: '200' });
    expect(after - before).toBeGreaterThanOrEqual(2);
  }, 180_000);
});
