/**
 * deploy/Dockerfile built and run for real, with the dockerd the end-to-end tests use
 * (test/e2e/harness/dockerd.ts: private roots and socket, --bridge=none, --iptables=false).
 *
 * No Docker Hub: the base image the Dockerfile names, node:20-bookworm-slim, is made from this Debian
 * machine and this machine's Node 20 (node-base-image.ts) and `docker import`ed under that name.
 * dockerd runs with HTTP(S)_PROXY pointing at a closed port, so any registry pull it tried would fail
 * the build. The build's RUN steps use the host network (there is no bridge) and reach the npm
 * registry only. The context is the repository minus deploy/Dockerfile.dockerignore (build-context.ts).
 *
 * Then, as an operator would: run it with a named volume, wait for its HEALTHCHECK, pull through it
 * with skopeo and with dockerd (registry-mirrors), stop it with SIGTERM, start a new container on the
 * same volume (read-only root, no capabilities, as deploy/docker-compose.yml runs it) and pull again
 * with nothing fetched upstream. The containers use the host network with MIRROR_LISTEN on a free
 * loopback port; the upstream is Debian's docker-registry on loopback.
 *
 * dockerd's data lives on tmpfs (/dev/shm) when there is one: this disk deletes files slowly (discard),
 * and removing the ~30k files of the build's layers took over a minute there, against 4 s on tmpfs.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allBlobs, busyboxImage, writeOciLayout } from '../helpers/images.js';
import { freePort } from '../helpers/ports.js';
import { httpGet, metricValue, ROOT } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { startDistribution, type Distribution } from '../e2e/harness/distribution.js';
import { startDockerd, type Dockerd } from '../e2e/harness/dockerd.js';
import { pushOciLayout } from '../e2e/harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from '../e2e/harness/tools.js';
import { stageContext } from './build-context.js';
import { nodeBaseImage } from './node-base-image.js';

const img = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo served-by-the-container; cat /etc/which'], extraFile: { path: 'etc/which', content: 'deploy-image\n' } });
const SKIP = !isRoot()
  ? 'needs root (dockerd)'
  : (['dockerd', 'docker', 'containerd', 'runc', 'docker-registry', 'skopeo', 'dpkg-query', 'tar'].filter((t) => !hasTool(t)).join(', ') || (img ? '' : 'no static busybox')) || undefined;
if (SKIP) console.warn(`[deploy] skipping the container image test: ${SKIP}`);

const IMAGE = 'regmirror:test';
const VOLUME = 'regmirror-data';
const blobGets = (u: Distribution) => u.countRequests({ method: 'GET', pathRegex: /\/blobs\/sha256:/ });

/** A tmpfs with room for the build (~1 GiB), if the machine has one. */
function tmpfsDir(): string | undefined {
  try {
    const shm = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === '/dev/shm');
    if (!shm || !/ - tmpfs /.test(shm)) return undefined;
    const s = statfsSync('/dev/shm');
    return s.bavail * s.bsize > 3 * 2 ** 30 ? '/dev/shm' : undefined;
  } catch {
    return undefined;
  }
}

describe.skipIf(SKIP !== undefined)('deploy/Dockerfile, built and run for real', () => {
  const times: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try {
      return await f();
    } finally {
      times[name] = Date.now() - t;
    }
  };
  let work = '';
  let upstream: Distribution;
  let dockerd: Dockerd;
  let baseId = '';
  let buildLog = '';
  let port = 0;
  let url = '';
  let host = '';
  // The classic builder, whatever the environment says: its step log is what the first test reads,
  // and Debian's docker.io has no buildx for BuildKit.
  const docker = async (args: string[], timeoutMs = 120_000) => {
    const r = await dockerd.docker(args, { timeoutMs, env: { DOCKER_BUILDKIT: '0' } });
    return { ...r, ok: r.code === 0, all: `docker ${args.join(' ')} -> ${r.code}\n${r.stdout}${r.stderr}` };
  };
  const inspect = async (what: string, format: string) => (await docker(['inspect', '--format', format, what])).stdout.trim();

  /** Runs the image on the host network, the upstream at our docker-registry, the port free on loopback. */
  const runMirror = async (name: string, extra: string[] = []) => {
    const r = await docker([
      'run', '-d', '--name', name, '--network', 'host',
      '-v', `${VOLUME}:/var/lib/regmirror`,
      '-e', `MIRROR_LISTEN=127.0.0.1:${port}`,
      '-e', 'MIRROR_ADMIN_LISTEN=',
      '-e', `MIRROR_UPSTREAM_DOCKER_IO_URL=${upstream.url}`,
      // The image's own check, asked every second instead of every 30 s.
      '--health-interval', '1s',
      ...extra,
      IMAGE,
    ]);
    expect(r.ok, r.all).toBe(true);
    const t = Date.now();
    await waitFor(async () => (await inspect(name, '{{.State.Health.Status}}')) === 'healthy', 60_000, `${name} healthy (docker inspect State.Health)`);
    return Date.now() - t;
  };
  const logsOf = async (name: string) => {
    const r = await docker(['logs', name]);
    return `${r.stdout}${r.stderr}`;
  };

  beforeAll(async () => {
    const started = Date.now();
    work = makeTempDir('deploy-img');
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    host = `127.0.0.1:${port}`;
    const base = await timed('base image tar', () => nodeBaseImage());
    times['base image tar made (not cached)'] = base.made ? 1 : 0;
    const context = join(work, 'context');
    stageContext(ROOT, join(ROOT, 'deploy/Dockerfile.dockerignore'), context);

    const previous = process.env.TMPDIR;
    const shm = tmpfsDir();
    if (shm) process.env.TMPDIR = shm;
    try {
      dockerd = await timed('dockerd start', () => startDockerd({ storageDriver: 'overlay2' }));
    } finally {
      if (previous === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previous;
    }
    const imported = await timed('docker import', () => docker(['import', ...base.changes.flatMap((c) => ['--change', c]), base.tar, 'node:20-bookworm-slim'], 300_000));
    expect(imported.ok, imported.all).toBe(true);
    baseId = imported.stdout.trim();

    // The upstream and its image, while the image builds.
    const upstreamReady = (async () => {
      upstream = await startDistribution();
      const layout = join(work, 'layout');
      await writeOciLayout(layout, { busy: img!.manifest }, allBlobs(img!));
      await pushOciLayout(layout, 'busy', upstream.url, 'library/busy', '1');
      await upstream.settle();
      upstream.clearRequests();
    })();
    const proxyArgs = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'].flatMap((k) => (process.env[k] ? ['--build-arg', `${k}=${process.env[k]}`] : []));
    const build = await timed('docker build', () =>
      docker(['build', '--network', 'host', ...proxyArgs, '-f', join(ROOT, 'deploy/Dockerfile'), '-t', IMAGE, context], 900_000),
    );
    buildLog = build.all;
    expect(build.ok, build.all.slice(-6000)).toBe(true);
    await upstreamReady;
    times['setup total'] = Date.now() - started;
  }, 1_000_000);

  afterAll(async () => {
    console.log(`[deploy] container image timings (ms): ${JSON.stringify(times)}`);
    await dockerd?.stop();
    await upstream?.stop();
    if (work) await cleanupDir(work);
  }, 120_000);

  it('is built FROM the node:20-bookworm-slim made here, into an image with the promised config', async () => {
    expect(buildLog).toMatch(/Step 1\/\d+ : FROM node:20-bookworm-slim AS builder/);
    // Both stages start from the imported image (its id), not from anything pulled.
    const fromIds = [...buildLog.matchAll(/FROM node:20-bookworm-slim AS \w+\n ---> ([0-9a-f]+)/g)].map((m) => m[1]!);
    expect(fromIds).toHaveLength(2);
    for (const id of fromIds) expect(baseId).toContain(id);
    const config = JSON.parse(await inspect(IMAGE, '{{json .Config}}'));
    expect(config.User).toBe('10001:10001');
    expect(config.Entrypoint).toEqual(['node', 'dist/main.js']);
    expect(config.WorkingDir).toBe('/app');
    expect(Object.keys(config.Volumes)).toEqual(['/var/lib/regmirror']);
    expect(Object.keys(config.ExposedPorts)).toEqual(['5000/tcp']);
    expect(config.StopSignal).toBe('SIGTERM');
    expect(config.Healthcheck.Test[0]).toBe('CMD');
    expect(config.Env).toEqual(expect.arrayContaining(['NODE_ENV=production', 'MIRROR_DATA_DIR=/var/lib/regmirror', 'MIRROR_LISTEN=0.0.0.0:5000']));
    // Only the runtime pieces: no sources, no TypeScript, no dev dependencies.
    const ls = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', 'ls /app; ls /app/node_modules | grep -cx -e typescript -e vitest -e eslint || true']);
    expect(ls.ok, ls.all).toBe(true);
    expect(ls.stdout.trim().split('\n')).toEqual(['config', 'dist', 'node_modules', 'package.json', '0']);
  });

  it('runs as uid 10001 on a named volume, turns healthy, and cannot write its code tree', async () => {
    expect((await docker(['volume', 'create', VOLUME])).ok).toBe(true);
    times['first start to healthy'] = await runMirror('m1');
    const status = (await docker(['exec', 'm1', 'cat', '/proc/1/status'])).stdout;
    expect(status).toMatch(/^Uid:\s+10001\s+10001\s+10001\s+10001$/m);
    expect(status).toMatch(/^Gid:\s+10001\s+10001\s+10001\s+10001$/m);
    expect((await docker(['exec', 'm1', 'cat', '/proc/1/cmdline'])).stdout.split('\0').filter(Boolean)).toEqual(['node', 'dist/main.js']);
    // The code is root's; the process (and anything exec'd as the image's user) cannot change it.
    const write = await docker(['exec', 'm1', 'node', '-e', `
      const fs = require('fs');
      for (const p of ['/app/dist/main.js', '/app/new-file', '/app/node_modules/hono/package.json', '/app/config/default.yaml'])
        try { fs.appendFileSync(p, 'x'); console.log(p, 'WRITTEN'); } catch (e) { console.log(p, e.code); }`]);
    expect(write.stdout.trim().split('\n')).toEqual(['/app/dist/main.js EACCES', '/app/new-file EACCES', '/app/node_modules/hono/package.json EACCES', '/app/config/default.yaml EACCES']);
    const owners = await docker(['exec', 'm1', 'stat', '-c', '%n %u:%g %a', '/app', '/app/dist', '/var/lib/regmirror']);
    expect(owners.stdout.trim().split('\n')).toEqual(['/app 0:0 755', '/app/dist 0:0 755', '/var/lib/regmirror 10001:10001 750']);
  }, 120_000);

  it('serves pulls by skopeo and by dockerd (registry-mirrors), fetching each blob from upstream once', async () => {
    const sk = await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/library/busy:1`, `dir:${join(work, 'skopeo-1')}`], { timeoutMs: 60_000 });
    expect(sk.code, sk.stderr).toBe(0);
    await dockerd.setMirrors([url]);
    const pull = await docker(['pull', 'busy:1']);
    expect(pull.ok, `${pull.all}\n${dockerd.logs().slice(-2000)}`).toBe(true);
    const ran = await docker(['run', '--rm', '--network', 'none', 'busy:1']);
    expect(ran.stdout).toBe('served-by-the-container\ndeploy-image\n');
    await upstream.settle();
    for (const b of [img!.config, ...img!.layers])
      expect(upstream.countRequests({ method: 'GET', pathRegex: new RegExp(`/blobs/${b.digest}$`) }), b.digest).toBe(1);
    // dockerd went through the mirror (not around it): its blob requests were cache hits there.
    const hits = metricValue((await httpGet(`${url}/metrics`)).body, 'mirror_cache_requests_total', { kind: 'blob', result: 'hit' });
    expect(hits).toBeGreaterThanOrEqual(img!.layers.length + 1);
  }, 120_000);

  it('stops on SIGTERM with exit code 0 well within the stop timeout, and the volume keeps the cache', async () => {
    const t = Date.now();
    const stop = await docker(['stop', '--time', '30', 'm1'], 60_000);
    times['docker stop'] = Date.now() - t;
    expect(stop.ok, stop.all).toBe(true);
    expect(times['docker stop']).toBeLessThan(30_000);
    expect(await inspect('m1', '{{.State.ExitCode}} {{.State.OOMKilled}}')).toBe('0 false');
    const logs = await logsOf('m1');
    expect(logs).toMatch(/"signal":"SIGTERM".*shutting down/);
    expect(logs).toMatch(/"msg":"stopped"/);
    // The blobs are on the volume, owned by the mirror's user.
    const files = await docker(['run', '--rm', '--network', 'none', '-v', `${VOLUME}:/data:ro`, '--entrypoint', 'find', IMAGE, '/data/blobs', '-type', 'f', '-printf', '%u %P\n']);
    expect(files.ok, files.all).toBe(true);
    const listed = files.stdout.trim().split('\n');
    for (const b of [img!.manifest, img!.config, ...img!.layers]) expect(listed).toContain(`regmirror sha256/${b.digest.slice(7, 9)}/${b.digest.slice(7)}`);
    expect((await docker(['rm', 'm1'])).ok).toBe(true);
  }, 120_000);

  it('a new container on the same volume (read-only root, no capabilities) serves the cache with no upstream blob fetch', async () => {
    times['second start to healthy'] = await runMirror('m2', ['--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges:true']);
    upstream.clearRequests();
    const sk = await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/library/busy:1`, `dir:${join(work, 'skopeo-2')}`], { timeoutMs: 60_000 });
    expect(sk.code, sk.stderr).toBe(0);
    expect((await docker(['rmi', 'busy:1'])).ok).toBe(true);
    const pull = await docker(['pull', 'busy:1']);
    expect(pull.ok, pull.all).toBe(true);
    const ran = await docker(['run', '--rm', '--network', 'none', 'busy:1']);
    expect(ran.stdout).toBe('served-by-the-container\ndeploy-image\n');
    await upstream.settle();
    expect(blobGets(upstream), JSON.stringify(upstream.requests())).toBe(0);
    // Same bytes as the first pull.
    for (const f of ['manifest.json', img!.layers[0]!.digest.slice(7)])
      expect(readFileSync(join(work, 'skopeo-2', f)).equals(readFileSync(join(work, 'skopeo-1', f))), f).toBe(true);
    const metrics = (await httpGet(`${url}/metrics`)).body;
    expect(metricValue(metrics, 'mirror_cache_requests_total', { kind: 'blob', result: 'hit' })).toBeGreaterThanOrEqual(2 * (img!.layers.length + 1));
    expect(metricValue(metrics, 'mirror_cache_requests_total', { kind: 'blob', result: 'miss' })).toBe(0);
    const stop = await docker(['stop', '--time', '30', 'm2'], 60_000);
    expect(stop.ok, stop.all).toBe(true);
    expect(await inspect('m2', '{{.State.ExitCode}}')).toBe('0');
  }, 120_000);
});
