/**
 * Anonymous access by network with a client that really comes from another source address (issue 11).
 *
 * The test creates a network namespace `rmtest-<random>` joined to the host by a veth pair and gives
 * the namespace end a random 127.2xx.x.x/32 address (loopback range only: no private ranges). Linux
 * treats 127/8 on a non-lo interface as martian unless `route_localnet=1` on that interface, and the
 * host's local table routes all of 127/8 to lo; so both veth ends get route_localnet=1, the host gets a
 * more specific /32 route to the client address in table `local` via its veth end, and the namespace
 * (its lo left down) routes 127.0.0.1/32 through its veth end. A client in the namespace dialling
 * 127.0.0.1:PORT then reaches the mirror listening on the host's 127.0.0.1, and the mirror sees the
 * connection coming from 127.2xx.x.x. Deleting the namespace removes the veth pair and the route.
 *
 * Policy: anonymous allowed from 127.0.0.1/32 only. From the namespace: curl gets 401 with the Bearer
 * challenge, skopeo is refused, and dockerd (started in the namespace with `nsenter --net`, used as
 * `registry-mirrors`) cannot pull; from 127.0.0.1 skopeo and a host dockerd with the same
 * `registry-mirrors` pull fine.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allBlobs, busyboxImage, writeOciLayout } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { authFiles, authRaw } from '../access/helpers.js';
import { startDistribution, type Distribution } from './harness/distribution.js';
import { startDockerd } from './harness/dockerd.js';
import { pushOciLayout } from './harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run, runOk, toolPath } from './harness/tools.js';

const img = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo netns-e2e'], extraFile: { path: 'etc/which', content: 'netns\n' } });
const absent = (tools: string[]) => tools.filter((t) => !hasTool(t));
const SKIP = !isRoot()
  ? 'not root (network namespaces need root)'
  : absent(['ip', 'nsenter', 'curl', 'docker-registry', 'skopeo']).length
    ? `missing: ${absent(['ip', 'nsenter', 'curl', 'docker-registry', 'skopeo']).join(', ')}`
    : img
      ? undefined
      : 'no static busybox';
const DKD_SKIP = SKIP ?? (absent(['dockerd', 'docker', 'containerd', 'runc']).length ? 'dockerd/docker/containerd/runc missing' : undefined);
if (SKIP) console.log(`access-netns: skipped: ${SKIP}`);
else if (DKD_SKIP) console.log(`access-netns: dockerd case skipped: ${DKD_SKIP}`);

const POLICY = `
anonymous: { networks: [127.0.0.1/32] }
rules:
  - subjects: [anonymous, authenticated]
    allow: [docker.io/library/*]
`;

interface Netns {
  name: string;
  /** The namespace end's address, as the mirror sees it. */
  addr: string;
  /** Runs a command inside the namespace (network only: `nsenter --net`, same mounts and cgroups). */
  exec(cmd: string, args: readonly string[], timeoutMs?: number): ReturnType<typeof run>;
  remove(): Promise<void>;
}

async function createNetns(): Promise<Netns> {
  const id = randomBytes(3).toString('hex');
  const name = `rmtest-${id}`;
  const hostIf = `rmh${id}`;
  const nsIf = `rmn${id}`;
  const addr = `127.${randomInt(200, 250)}.${randomInt(0, 256)}.${randomInt(2, 250)}`;
  const ip = (...args: string[]) => runOk('ip', args, { timeoutMs: 10_000 });
  const inNs = (...args: string[]) => runOk('ip', ['netns', 'exec', name, ...args], { timeoutMs: 10_000 });
  const remove = async () => {
    // Deleting the namespace destroys its veth end, hence the pair and the host route through it.
    await run('ip', ['netns', 'del', name], { timeoutMs: 10_000 }).catch(() => undefined);
    await run('ip', ['link', 'del', hostIf], { timeoutMs: 10_000 }).catch(() => undefined);
  };
  try {
    await ip('netns', 'add', name);
    await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    await ip('link', 'set', nsIf, 'netns', name);
    await runOk('sysctl', ['-qw', `net.ipv4.conf.${hostIf}.route_localnet=1`]);
    await ip('link', 'set', hostIf, 'up');
    await ip('route', 'add', 'table', 'local', `${addr}/32`, 'dev', hostIf, 'src', '127.0.0.1');
    await inNs('sysctl', '-qw', `net.ipv4.conf.${nsIf}.route_localnet=1`);
    await inNs('ip', 'addr', 'add', `${addr}/32`, 'dev', nsIf);
    await inNs('ip', 'link', 'set', nsIf, 'up');
    await inNs('ip', 'route', 'add', '127.0.0.1/32', 'dev', nsIf, 'src', addr);
  } catch (e) {
    await remove();
    throw e;
  }
  return {
    name,
    addr,
    exec: (cmd, args, timeoutMs = 60_000) => run('nsenter', [`--net=/run/netns/${name}`, '--', cmd, ...args], { timeoutMs }),
    remove,
  };
}

/** One-shot server on the host's 127.0.0.1 that answers with the peer address it saw. */
async function echoPeer(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => res.end(req.socket.remoteAddress ?? ''));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe.skipIf(SKIP !== undefined)('anonymous access from a real other source address (network namespace)', () => {
  let work = '';
  let ns: Netns | undefined;
  let upstream: Distribution;
  let mirror: TestMirror;
  let host = '';

  beforeAll(async () => {
    work = makeTempDir('mirror-access-netns');
    ns = await createNetns();
    upstream = await startDistribution();
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { one: img!.manifest }, allBlobs(img!));
    await pushOciLayout(layout, 'one', upstream.url, 'library/busy', '1');
    const files = await authFiles(POLICY);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: upstream.url, libraryPrefix: true } }, raw: authRaw(files), listen: true });
    host = mirror.url.replace('http://', '');
  }, 120_000);

  afterAll(async () => {
    await ns?.remove();
    await mirror?.stop();
    await upstream?.stop();
    if (work) await cleanupDir(work);
  });

  const curlIn = (url: string, ...extra: string[]) =>
    ns!.exec('curl', ['-sS', '-i', '--noproxy', '*', '-m', '10', '-w', '\n%{http_code}', ...extra, url], 20_000);

  it('the namespace reaches the host 127.0.0.1 from its own address', async () => {
    const echo = await echoPeer();
    try {
      let seen = await curlIn(echo.url);
      // The veth pair may need a moment before the first packet goes through.
      for (let i = 0; i < 20 && seen.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        seen = await curlIn(echo.url);
      }
      expect(seen.code, `${seen.signal} ${seen.stderr}`).toBe(0);
      const lines = seen.stdout.split(/\r?\n/);
      expect(lines.at(-1)).toBe('200');
      const peer = lines.at(-2);
      expect(peer).toBe(ns!.addr);
      expect(peer).not.toBe('127.0.0.1');
    } finally {
      await echo.close();
    }
  });

  it('curl from the namespace gets 401 with the Bearer challenge; from 127.0.0.1 the same request is served', async () => {
    const path = '/v2/library/busy/manifests/1';
    const refused = await curlIn(`${mirror.url}${path}`, '-H', `accept: ${DOCKER_ACCEPT}`);
    expect(refused.code, `${refused.signal} ${refused.stderr}`).toBe(0);
    expect(refused.stdout.split('\n').at(-1)).toBe('401');
    expect(refused.stdout).toMatch(/www-authenticate: Bearer realm="[^"]+\/token",service="regmirror",scope="repository:docker\.io\/library\/busy:pull"/i);
    // A forged X-Forwarded-For from the namespace changes nothing (no trusted proxies).
    const forged = await curlIn(`${mirror.url}${path}`, '-H', `accept: ${DOCKER_ACCEPT}`, '-H', 'x-forwarded-for: 127.0.0.1');
    expect(forged.stdout.split('\n').at(-1)).toBe('401');
    const local = await fetch(`${mirror.url}${path}`, { headers: { accept: DOCKER_ACCEPT } });
    expect(local.status).toBe(200);
  });

  it('skopeo in the namespace is refused anonymously; skopeo on 127.0.0.1 pulls', async () => {
    const args = (dest: string) => ['--insecure-policy', 'copy', '--src-tls-verify=false', '--src-no-creds', `docker://${host}/library/busy:1`, `dir:${join(work, dest)}`];
    const refused = await ns!.exec('skopeo', args('sk-ns'), 60_000);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthorized|authentication required/i);
    const ok = await run('skopeo', args('sk-local'), { timeoutMs: 60_000 });
    expect(ok.code, ok.stderr).toBe(0);
  }, 120_000);

  it.skipIf(DKD_SKIP !== undefined)('dockerd registry-mirrors: pulls from 127.0.0.1, cannot pull from the namespace', async () => {
    // Host dockerd: connects from 127.0.0.1, anonymous allowed.
    const local = await startDockerd({ mirrors: [mirror.url] });
    try {
      const pulled = await local.docker(['pull', 'busy:1'], { timeoutMs: 120_000 });
      expect(pulled.code, `${pulled.stderr}${local.logs().slice(-2000)}`).toBe(0);
    } finally {
      await local.stop();
    }
    // The same dockerd binary started in the namespace: the harness looks dockerd up on PATH, so a
    // wrapper that nsenters the namespace's network goes first on PATH for this one start.
    const bin = join(work, 'nsbin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'dockerd'), `#!/bin/sh\nexec nsenter --net=/run/netns/${ns!.name} -- ${toolPath('dockerd')} "$@"\n`);
    chmodSync(join(bin, 'dockerd'), 0o755);
    const before = await mirror.metric('mirror_cache_requests_total', { kind: 'manifest' });
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath ?? ''}`;
    let inNs: Awaited<ReturnType<typeof startDockerd>>;
    try {
      inNs = await startDockerd({ mirrors: [mirror.url] });
    } finally {
      process.env.PATH = savedPath;
    }
    try {
      const refused = await inNs.docker(['pull', 'busy:1'], { timeoutMs: 120_000 });
      expect(refused.code).not.toBe(0);
      // dockerd reached the mirror and was refused there (then fell back to Docker Hub, which fails fast here).
      expect(inNs.logs()).toContain(`Head \\"${mirror.url}/v2/library/busy/manifests/1\\": unauthorized`);
      expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest' })).toBe(before);
    } finally {
      await inNs.stop();
    }
  }, 300_000);
});
