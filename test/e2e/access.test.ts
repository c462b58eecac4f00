/**
 * Access control with real clients (issue 11), Debian's docker-registry as the upstream (one start
 * for the file): skopeo with --src-creds, podman login + pull, containerd's ctr with an Authorization header in hosts.toml,
 * `docker login MIRROR` + `docker pull MIRROR/…` through the harness's dockerd (insecure-registries),
 * and dockerd's registry-mirrors (which never sends credentials) refused while the policy's anonymous
 * networks leave out 127.0.0.1, then allowed once the policy is reloaded with it.
 *
 * The refused case changes the policy rather than the client's source address: dockerd and ctr
 * connect from 127.0.0.1 whatever loopback address they dial. A real different source address
 * (127.0.0.2) is exercised in test/access/source-address.test.ts with a bound client socket.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allBlobs, busyboxImage, writeOciLayout } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { authFiles, authRaw, PASSWORDS, type AuthFiles } from '../access/helpers.js';
import { startContainerd } from './harness/containerd.js';
import { startDistribution, type Distribution } from './harness/distribution.js';
import { startDockerd } from './harness/dockerd.js';
import { pushOciLayout } from './harness/push.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from './harness/tools.js';

const img = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo access-e2e'], extraFile: { path: 'etc/which', content: 'access\n' } });
const absent = (tools: string[]) => tools.filter((t) => !hasTool(t));
const REG_SKIP = absent(['docker-registry', 'skopeo']).length ? 'docker-registry/skopeo missing' : img ? undefined : 'no static busybox';
const CTD_SKIP = REG_SKIP ?? (absent(['containerd', 'ctr']).length || !isRoot() ? 'containerd/root missing' : undefined);
const PODMAN_SKIP = REG_SKIP ?? (absent(['podman']).length || !isRoot() ? 'podman/root missing' : undefined);
const DKD_SKIP = REG_SKIP ?? (absent(['dockerd', 'docker', 'containerd', 'runc']).length || !isRoot() ? 'dockerd/root missing' : undefined);

const policy = (networks: string) => `
groups: { admin: [alice], devs: [alice, bob] }
anonymous: { networks: [${networks}] }
rules:
  - subjects: [anonymous, authenticated]
    allow: [docker.io/library/*]
  - subjects: [group:devs]
    allow: [docker.io/acme/**]
`;

describe.skipIf(REG_SKIP !== undefined)('real clients with access control', () => {
  let work = '';
  let upstream: Distribution;
  let mirror: TestMirror;
  let files: AuthFiles;
  let host = '';

  beforeAll(async () => {
    work = makeTempDir('mirror-access-e2e');
    upstream = await startDistribution();
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { one: img!.manifest }, allBlobs(img!));
    await pushOciLayout(layout, 'one', upstream.url, 'library/busy', '1');
    await pushOciLayout(layout, 'one', upstream.url, 'acme/app', '1');
    // Anonymous pulls allowed only from 127.0.0.2 at first: every local client here is refused anonymously.
    files = await authFiles(policy('127.0.0.2/32'));
    mirror = await startMirror({ upstreams: { 'docker.io': { url: upstream.url, libraryPrefix: true } }, raw: authRaw(files), listen: true });
    host = mirror.url.replace('http://', '');
  }, 120_000);

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    if (work) await cleanupDir(work);
  });

  it('skopeo pulls with --src-creds; without or with wrong credentials it is refused', async () => {
    const copy = (dest: string, ...creds: string[]) =>
      run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', ...creds, `docker://${host}/acme/app:1`, `dir:${join(work, dest)}`], { timeoutMs: 60_000 });
    const ok = await copy('sk-ok', '--src-creds', `bob:${PASSWORDS.bob}`);
    expect(ok.code, ok.stderr).toBe(0);
    const anon = await copy('sk-anon', '--src-no-creds');
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toMatch(/unauthorized|authentication required/i);
    const wrong = await copy('sk-wrong', '--src-creds', 'bob:not-the-password');
    expect(wrong.code).not.toBe(0);
    const denied = await copy('sk-carol', '--src-creds', `carol:${PASSWORDS.carol}`);
    expect(denied.code).not.toBe(0);
  }, 120_000);

  it.skipIf(PODMAN_SKIP !== undefined)('podman login MIRROR + podman pull MIRROR/…', async () => {
    const dir = join(work, 'podman');
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'registries.conf');
    writeFileSync(conf, 'unqualified-search-registries = []\n');
    const authfile = join(dir, 'auth.json');
    const podman = (args: string[], input?: string) =>
      run('podman', ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none', ...args], {
        timeoutMs: 120_000,
        env: { CONTAINERS_REGISTRIES_CONF: conf, REGISTRY_AUTH_FILE: authfile },
        ...(input !== undefined ? { input } : {}),
      });
    try {
      const anon = await podman(['pull', '--tls-verify=false', `${host}/acme/app:1`]);
      expect(anon.code).not.toBe(0);
      const bad = await podman(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host], 'wrong\n');
      expect(bad.code).not.toBe(0);
      const login = await podman(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host], `${PASSWORDS.bob}\n`);
      expect(login.code, login.stderr).toBe(0);
      const pulled = await podman(['pull', '--tls-verify=false', `${host}/acme/app:1`]);
      expect(pulled.code, pulled.stderr).toBe(0);
    } finally {
      await podman(['rmi', '-af']).catch(() => undefined);
      await run('umount', ['-R', join(dir, 'root')]).catch(() => undefined);
    }
  }, 180_000);

  it.skipIf(CTD_SKIP !== undefined)('ctr pulls with an Authorization header in hosts.toml', async () => {
    const ctd = await startContainerd();
    try {
      const hostsToml = (dir: string, header: string | undefined) => {
        mkdirSync(join(dir, 'docker.io'), { recursive: true });
        const lines = ['server = "http://127.0.0.1:1"', '', `[host."${mirror.url}"]`, '  capabilities = ["pull", "resolve"]'];
        if (header) lines.push(`  [host."${mirror.url}".header]`, `    authorization = "${header}"`);
        writeFileSync(join(dir, 'docker.io', 'hosts.toml'), `${lines.join('\n')}\n`);
        return dir;
      };
      const pull = (dir: string) => ctd.ctr(['images', 'pull', '--hosts-dir', dir, '--plain-http', '--snapshotter', ctd.snapshotter, 'docker.io/acme/app:1'], { timeoutMs: 120_000 });
      const refused = await pull(hostsToml(join(work, 'hosts-none'), undefined));
      expect(refused.code).not.toBe(0);
      const basic = `Basic ${Buffer.from(`bob:${PASSWORDS.bob}`).toString('base64')}`;
      const ok = await pull(hostsToml(join(work, 'hosts-auth'), basic));
      expect(ok.code, ok.stderr).toBe(0);
    } finally {
      await ctd.stop();
    }
  }, 180_000);

  it.skipIf(DKD_SKIP !== undefined)('docker login MIRROR + docker pull MIRROR/…; dockerd registry-mirrors refused, then allowed from 127.0.0.1 after a policy reload', async () => {
    const dkd = await startDockerd({ mirrors: [mirror.url], insecureRegistries: [host] });
    try {
      const bad = await dkd.docker(['login', host, '-u', 'bob', '--password-stdin'], { input: 'wrong-password\n', timeoutMs: 60_000 });
      expect(bad.code).not.toBe(0);
      const login = await dkd.docker(['login', host, '-u', 'bob', '--password-stdin'], { input: `${PASSWORDS.bob}\n`, timeoutMs: 60_000 });
      expect(login.code, login.stderr).toBe(0);
      const pulled = await dkd.docker(['pull', `${host}/acme/app:1`], { timeoutMs: 120_000 });
      expect(pulled.code, `${pulled.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
      // registry-mirrors sends no credentials: refused while 127.0.0.1 is not an anonymous network (dockerd then
      // falls back to Docker Hub, which the harness makes fail fast).
      const viaMirror = await dkd.docker(['pull', 'busy:1'], { timeoutMs: 120_000 });
      expect(viaMirror.code).not.toBe(0);
      writeFileSync(files.policy, policy('127.0.0.1/32'));
      expect(mirror.access!.reload()).toBeUndefined();
      const allowed = await dkd.docker(['pull', 'busy:1'], { timeoutMs: 120_000 });
      expect(allowed.code, `${allowed.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
      // And it came through the mirror.
      expect(await mirror.metric('mirror_cache_requests_total', { kind: 'manifest' })).toBeGreaterThan(0);
    } finally {
      await dkd.stop();
    }
  }, 300_000);
});
