/**
 * Access control end to end, in-process with forged client addresses (the socket's remoteAddress):
 * the token flow, Basic, anonymous networks, repository rules on every route, private upstream content
 * kept private (also from cache and with the upstream down), failed-login slowing, tokens refused,
 * the admin role, audit lines without secrets, and reload.
 */
import { writeFile } from 'node:fs/promises';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/observability/types.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { blobOf, makeImage, makeIndex, makeLayer, MT } from '../helpers/images.js';

/** Every manifest type, as containerd asks. */
const ALL_TYPES = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest].join(', ');
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { authFiles, authRaw, basic, from, PASSWORDS, POLICY, tokenFor, type AuthFiles } from './helpers.js';

const pub = makeImage({ layers: [makeLayer([{ path: 'p', content: 'public' }])] });
const priv = makeImage({ layers: [makeLayer([{ path: 's', content: 'private stuff' }])] });
const secret = makeImage({ layers: [makeLayer([{ path: 'x', content: 'top secret' }])] });
const H = { accept: DOCKER_ACCEPT };
const LOCAL = '127.0.0.1';
const REMOTE = '10.0.0.1';
const bob = basic('bob', PASSWORDS.bob);
const alice = basic('alice', PASSWORDS.alice);

let hub: FakeUpstream;
let mirror: TestMirror;
let files: AuthFiles;
const clock = { now: Date.now() };
const logs: Array<Record<string, unknown>> = [];
const logger: Logger = {
  debug() {},
  info: (o: object) => void logs.push({ ...o }),
  warn: (o: object) => void logs.push({ ...o }),
  error: (o: object) => void logs.push({ ...o }),
};

beforeAll(async () => {
  // A private upstream: everything needs the mirror's own credentials.
  hub = await FakeUpstream.start({ credentials: { username: 'mirror', password: 'upstream-pw' }, cdn: false });
  hub.putImage('library/alpine', pub, 'latest');
  hub.putImage('acme/private', priv, 'v1');
  hub.putImage('acme/secret', secret, 'v1');
  files = await authFiles();
  mirror = await startMirror({
    upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'mirror', password: 'upstream-pw' } },
    raw: authRaw(files, { failedLogins: { free: 3, maxDelaySeconds: 8 } }),
    clock,
    mirrorOptions: { logger, lifecycleTimers: false },
  });
});

afterAll(async () => {
  await mirror?.stop();
  await hub?.close();
});

describe('client authentication', () => {
  it('challenges with the token realm, service and scope; allows anonymous only from listed networks', async () => {
    const r = await from(mirror, REMOTE, '/v2/');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="http://localhost/token",service="regmirror"');
    expect(((await r.json()) as any).errors[0].code).toBe('UNAUTHORIZED');
    expect((await from(mirror, LOCAL, '/v2/')).status).toBe(200);
    expect((await from(mirror, '::ffff:127.0.0.1', '/v2/')).status).toBe(200);
    const m = await from(mirror, REMOTE, '/v2/library/alpine/manifests/latest', { headers: H });
    expect(m.status).toBe(401);
    expect(m.headers.get('www-authenticate')).toContain('scope="repository:docker.io/library/alpine:pull"');
  });

  it('issues scoped tokens for Basic credentials; a token for one repository does not read another', async () => {
    const token = await tokenFor(mirror, REMOTE, bob, 'repository:acme/private:pull');
    const auth = { authorization: `Bearer ${token}` };
    expect((await from(mirror, REMOTE, '/v2/', { headers: auth })).status).toBe(200);
    const m = await from(mirror, REMOTE, '/v2/acme/private/manifests/v1', { headers: { ...H, ...auth } });
    expect(m.status).toBe(200);
    expect(m.headers.get('docker-content-digest')).toBe(priv.manifest.digest);
    const other = await from(mirror, REMOTE, '/v2/library/alpine/manifests/latest', { headers: { ...H, ...auth } });
    expect(other.status).toBe(401);
    expect(other.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    // Asking for a repository the policy denies gives a token without it.
    const t2 = await tokenFor(mirror, REMOTE, bob, 'repository:acme/secret:pull');
    expect((await from(mirror, REMOTE, '/v2/acme/secret/manifests/v1', { headers: { ...H, authorization: `Bearer ${t2}` } })).status).toBe(401);
  });

  it('accepts HTTP Basic on /v2/ too; wrong passwords get 401', async () => {
    expect((await from(mirror, REMOTE, '/v2/acme/private/manifests/v1', { headers: { ...H, authorization: bob } })).status).toBe(200);
    expect((await from(mirror, REMOTE, '/v2/', { headers: { authorization: basic('bob', 'nope') } })).status).toBe(401);
    expect((await from(mirror, REMOTE, '/v2/', { headers: { authorization: basic('mallory', 'nope') } })).status).toBe(401);
    expect((await from(mirror, REMOTE, '/token', { headers: { authorization: basic('bob', 'nope') } })).status).toBe(401);
    expect((await from(mirror, REMOTE, '/token')).status).toBe(401);
  });

  it('refuses tampered, expired, wrong-audience and foreign-key tokens', async () => {
    const token = await tokenFor(mirror, REMOTE, bob, 'repository:acme/private:pull');
    const path = '/v2/acme/private/manifests/v1';
    const use = (t: string) => from(mirror, REMOTE, path, { headers: { ...H, authorization: `Bearer ${t}` } });
    const [h, p, s] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const forged = Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'docker.io/acme/secret', actions: ['pull'] }] })).toString('base64url');
    expect((await use(`${h}.${forged}.${s}`)).status).toBe(401);
    expect((await use(`${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BB' : 'AA'}`)).status).toBe(401);
    const sign = (aud: string, key: Uint8Array) =>
      new SignJWT({ access: claims.access }).setProtectedHeader({ alg: 'HS256' }).setIssuer('regmirror').setAudience(aud).setSubject('bob').setExpirationTime(Math.floor(clock.now / 1000) + 60).sign(key);
    expect((await use(await sign('regmirror', files.keyBytes))).status).toBe(200);
    expect((await use(await sign('another-service', files.keyBytes))).status).toBe(401);
    expect((await use(await sign('regmirror', Buffer.alloc(32, 9)))).status).toBe(401);
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
    expect((await use(none)).status).toBe(401);
    // Expired (300 s) past distribution's 60 s leeway for clocks that differ: refused.
    clock.now += 330_000;
    try {
      expect((await use(token)).status).toBe(200);
      clock.now += 31_000;
      expect((await use(token)).status).toBe(401);
    } finally {
      clock.now -= 361_000;
    }
    // Issued by a replica whose clock is 30 s ahead of this one's (not yet valid by ours): accepted.
    const ahead = await new SignJWT({ access: claims.access }).setProtectedHeader({ alg: 'HS256' }).setIssuer('regmirror').setAudience('regmirror').setSubject('bob')
      .setNotBefore(Math.floor(clock.now / 1000) + 30).setExpirationTime(Math.floor(clock.now / 1000) + 330).sign(files.keyBytes);
    expect((await use(ahead)).status).toBe(200);
  });

  it('slows failed logins per user and per address', async () => {
    const addr = '10.0.0.77';
    for (let i = 0; i < 3; i++) expect((await from(mirror, addr, '/v2/', { headers: { authorization: basic('carol', 'bad') } })).status).toBe(401);
    const slowed = await from(mirror, addr, '/v2/', { headers: { authorization: basic('carol', PASSWORDS.carol) } });
    expect(slowed.status).toBe(429);
    expect(Number(slowed.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another user from that address is slowed too (per address); the same user from elsewhere is
    // not: failing in someone's name from one address must not lock them out everywhere.
    expect((await from(mirror, addr, '/v2/', { headers: { authorization: basic('bob', 'wrong') } })).status).toBe(429);
    expect((await from(mirror, '10.0.0.78', '/token', { headers: { authorization: basic('carol', PASSWORDS.carol) } })).status).toBe(200);
    expect((await from(mirror, '10.0.0.79', '/v2/', { headers: { authorization: basic('carol', 'wrong') } })).status).toBe(401);
    // One host cycling through the addresses of its IPv6 /64 counts as one address.
    for (const host of ['a', 'b', 'c']) expect((await from(mirror, `2001:db8:1:2::${host}`, '/v2/', { headers: { authorization: basic('dave', 'bad') } })).status).toBe(401);
    expect((await from(mirror, '2001:db8:1:2::d', '/v2/', { headers: { authorization: basic('dave', 'bad') } })).status).toBe(429);
    clock.now += 10_000;
    expect((await from(mirror, addr, '/v2/', { headers: { authorization: basic('carol', PASSWORDS.carol) } })).status).toBe(200);
  });
});

describe('repository policy and private content', () => {
  it('denies by rule with 403 whether or not the repository exists', async () => {
    const a = await from(mirror, REMOTE, '/v2/acme/secret/manifests/v1', { headers: { ...H, authorization: bob } });
    const b = await from(mirror, REMOTE, '/v2/acme/secret-nothing/manifests/v1', { headers: { ...H, authorization: bob } });
    expect(a.status).toBe(403);
    expect(b.status).toBe(403);
    expect(await a.text()).toBe(await b.text());
    expect(hub.count({ path: /acme\/secret/ })).toBe(0);
  });

  it('keeps private content private on every route, from cache and with the upstream down', async () => {
    // bob caches the private image (manifest, config, layer, tags).
    const auth = { authorization: bob };
    expect((await from(mirror, REMOTE, '/v2/acme/private/manifests/v1', { headers: { ...H, ...auth } })).status).toBe(200);
    for (const b of [priv.config, ...priv.layers]) expect((await from(mirror, REMOTE, `/v2/acme/private/blobs/${b.digest}`, { headers: auth })).status).toBe(200);
    expect((await from(mirror, REMOTE, '/v2/acme/private/tags/list', { headers: auth })).status).toBe(200);
    expect((await from(mirror, LOCAL, '/v2/library/alpine/manifests/latest', { headers: H })).status).toBe(200);

    const probe = async () => {
      const before = hub.requests.length;
      const paths = [
        '/v2/acme/private/manifests/v1',
        `/v2/acme/private/manifests/${priv.manifest.digest}`,
        `/v2/acme/private/blobs/${priv.layers[0]!.digest}`,
        `/v2/acme/private/blobs/${priv.config.digest}`,
        '/v2/acme/private/tags/list',
        `/v2/acme/private/referrers/${priv.manifest.digest}`,
      ];
      for (const path of paths) {
        for (const method of ['GET', 'HEAD']) {
          const r = await from(mirror, LOCAL, path, { method, headers: H });
          expect([401, 404], `${method} ${path}`).toContain(r.status);
          if (method === 'GET') expect(await r.text()).not.toContain('sha256:');
        }
        const r = await from(mirror, REMOTE, path, { headers: H });
        expect(r.status, `remote ${path}`).toBe(401);
      }
      const carol = await from(mirror, REMOTE, `/v2/acme/private/blobs/${priv.layers[0]!.digest}`, { headers: { authorization: basic('carol', PASSWORDS.carol) } });
      expect(carol.status).toBe(403);
      const cat = (await (await from(mirror, LOCAL, '/v2/_catalog')).json()) as { repositories: string[] };
      expect(cat.repositories).toEqual(['library/alpine']);
      expect(hub.requests.length - before, 'no upstream call for refused requests').toBe(0);
      // An allowed repository's name does not open the private blob either (membership: upstream is asked, says 404).
      for (const method of ['GET', 'HEAD']) {
        const r = await from(mirror, LOCAL, `/v2/library/alpine/blobs/${priv.layers[0]!.digest}`, { method });
        expect([404, 503], method).toContain(r.status);
      }
    };
    await probe();
    const bobCat = (await (await from(mirror, REMOTE, '/v2/_catalog', { headers: auth })).json()) as { repositories: string[] };
    expect(bobCat.repositories).toEqual(['acme/private', 'library/alpine']);
    const page1 = await from(mirror, REMOTE, '/v2/_catalog?n=1', { headers: auth });
    expect(((await page1.json()) as { repositories: string[] }).repositories).toEqual(['acme/private']);
    expect(page1.headers.get('link')).toBe('</v2/_catalog?n=1&last=acme%2Fprivate>; rel="next"');
    const page2 = await from(mirror, REMOTE, '/v2/_catalog?n=1&last=acme%2Fprivate', { headers: auth });
    expect(((await page2.json()) as { repositories: string[] }).repositories).toEqual(['library/alpine']);
    expect(page2.headers.get('link')).toBeNull();
    // Anonymous, paging past a hidden name shows nothing of it.
    expect(((await (await from(mirror, LOCAL, '/v2/_catalog?n=1&last=acme')).json()) as { repositories: string[] }).repositories).toEqual(['library/alpine']);
    expect((await from(mirror, REMOTE, '/v2/_catalog')).status).toBe(401);

    await hub.goDown();
    try {
      await probe();
      // bob still gets it, from the cache.
      const m = await from(mirror, REMOTE, `/v2/acme/private/manifests/${priv.manifest.digest}`, { headers: { ...H, ...auth } });
      expect(m.status).toBe(200);
    } finally {
      await hub.goUp();
    }
  });

  it("a public repository's manifest naming private content (a foreign layer, a sparse index's child) does not open it", async () => {
    const layer = priv.layers[0]!;
    // bob caches the private image.
    expect((await from(mirror, REMOTE, '/v2/acme/private/manifests/v1', { headers: { ...H, authorization: bob } })).status).toBe(200);
    expect((await from(mirror, REMOTE, `/v2/acme/private/blobs/${layer.digest}`, { headers: { authorization: bob } })).status).toBe(200);
    // Pushed by anyone to a public repository: registries never check a foreign layer or a sparse index's child exists.
    const own = makeImage({ layers: [makeLayer([{ path: 'o', content: 'own' }])] });
    hub.putImage('library/lure', own);
    const foreign = {
      schemaVersion: 2,
      mediaType: MT.dockerManifest,
      config: { mediaType: MT.dockerConfig, digest: own.config.digest, size: own.config.bytes.length },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: layer.digest, size: layer.bytes.length, urls: ['https://example.invalid/layer'] }],
    };
    hub.putManifest('library/lure', blobOf(JSON.stringify(foreign), MT.dockerManifest), 'foreign');
    hub.putManifest('library/lure', makeIndex([priv]), 'sparse');
    for (const tag of ['foreign', 'sparse']) { const r = await from(mirror, LOCAL, `/v2/library/lure/manifests/${tag}`, { headers: { accept: ALL_TYPES } }); expect(r.status, await r.text()).toBe(200); }
    hub.resetCounters();
    // Asked by digest under the public name: upstream is asked, and says it has no such thing there.
    const blob = await from(mirror, LOCAL, `/v2/library/lure/blobs/${layer.digest}`);
    expect(blob.status).toBe(404);
    expect(await blob.text()).not.toContain('private stuff');
    const child = await from(mirror, LOCAL, `/v2/library/lure/manifests/${priv.manifest.digest}`, { headers: { accept: ALL_TYPES } });
    expect(child.status).toBe(404);
    expect(hub.requests.map((r) => `${r.method} ${r.kind} ${r.status}`)).toEqual(['HEAD blob 404', 'HEAD manifest 404']);
    // The config the manifest names is the repository's own: served from the cache as before.
    expect((await from(mirror, LOCAL, `/v2/library/lure/blobs/${own.config.digest}`)).status).toBe(200);
  });

  it('believes X-Forwarded-For only from a trusted proxy', async () => {
    expect((await from(mirror, '10.9.9.9', '/v2/', { headers: { 'x-forwarded-for': '127.0.0.1' } })).status).toBe(200);
    expect((await from(mirror, '10.9.9.9', '/v2/', { headers: { 'x-forwarded-for': '127.0.0.1, 10.0.0.5' } })).status).toBe(401);
    expect((await from(mirror, REMOTE, '/v2/', { headers: { 'x-forwarded-for': '127.0.0.1' } })).status).toBe(401);
  });
});

describe('admin, audit and reload', () => {
  it('admin API needs a member of the admin group', async () => {
    const admin = (auth?: string) => Promise.resolve(mirror.adminApp.request('/admin/pins', auth ? { headers: { authorization: auth } } : {}));
    const none = await admin();
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Basic');
    expect((await admin(bob)).status).toBe(403);
    expect((await admin(basic('alice', 'wrong'))).status).toBe(401);
    expect((await admin(alice)).status).toBe(200);
  });

  it('logs every pull with user or address, repository, reference and cache result; never secrets', async () => {
    logs.length = 0;
    const token = await tokenFor(mirror, REMOTE, bob, 'repository:acme/private:pull');
    await from(mirror, REMOTE, '/v2/acme/private/manifests/v1', { headers: { ...H, authorization: `Bearer ${token}` } });
    await from(mirror, LOCAL, '/v2/library/alpine/manifests/latest', { headers: H });
    await from(mirror, REMOTE, '/v2/', { headers: { authorization: basic('bob', 'a-wrong-password') } });
    const pulls = logs.filter((l) => l.route === 'manifest');
    expect(pulls).toEqual([
      expect.objectContaining({ user: 'bob', client: REMOTE, repo: 'docker.io/acme/private', reference: 'v1', cache: 'hit', status: 200 }),
      expect.objectContaining({ user: undefined, client: LOCAL, repo: 'docker.io/library/alpine', reference: 'latest', cache: 'hit', status: 200 }),
    ]);
    const text = JSON.stringify(logs) + (await mirror.promRegistry.metrics());
    for (const secret of [token, PASSWORDS.bob, 'a-wrong-password', 'upstream-pw', '$2y$', Buffer.from(`bob:${PASSWORDS.bob}`).toString('base64')]) expect(text).not.toContain(secret);
  });

  it('reloads the policy (SIGHUP); a bad file keeps the old one and names the entry', async () => {
    await writeFile(files.policy, `${POLICY}\n  - subjects: [anonymous]\n    allow: [docker.io/acme/private]\n`);
    expect(mirror.access!.reload()).toBeUndefined();
    expect((await from(mirror, LOCAL, '/v2/acme/private/manifests/v1', { headers: H })).status).toBe(200);
    await writeFile(files.policy, `${POLICY}\n  - subjects: [group:nobody]\n    allow: [docker.io/x]\n`);
    expect(mirror.access!.reload()?.message).toContain('rules[2].subjects[0]');
    expect((await from(mirror, LOCAL, '/v2/acme/private/manifests/v1', { headers: H })).status).toBe(200);
    await writeFile(files.policy, POLICY);
    expect(mirror.access!.reload()).toBeUndefined();
    expect((await from(mirror, LOCAL, '/v2/acme/private/manifests/v1', { headers: H })).status).toBe(401);
  });
});

describe('offline mode', () => {
  it('keeps private content private when the mirror runs offline on the same cache', async () => {
    const dataDir = mirror.dataDir;
    await mirror.stop({ keepData: true });
    mirror = await startMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'mirror', password: 'upstream-pw' } },
      raw: authRaw(files),
      offline: true,
      dataDir,
      clock,
      mirrorOptions: { lifecycleTimers: false },
    });
    const before = hub.requests.length;
    for (const path of ['/v2/acme/private/manifests/v1', `/v2/acme/private/manifests/${priv.manifest.digest}`, `/v2/acme/private/blobs/${priv.layers[0]!.digest}`, '/v2/acme/private/tags/list']) {
      expect((await from(mirror, LOCAL, path, { headers: H })).status, path).toBe(401);
      expect((await from(mirror, REMOTE, path, { headers: { ...H, authorization: basic('carol', PASSWORDS.carol) } })).status, path).toBe(403);
      expect((await from(mirror, REMOTE, path, { headers: { ...H, authorization: bob } })).status, path).toBe(200);
    }
    // (library/lure: the public repository the membership test above cached.)
    expect(((await (await from(mirror, LOCAL, '/v2/_catalog')).json()) as { repositories: string[] }).repositories).toEqual(['library/alpine', 'library/lure']);
    expect(hub.requests.length).toBe(before);
  });
});

describe('token scopes', () => {
  it('reads the repositories asked for pull, also a name with a port (an upstream like reg.local:5000)', async () => {
    const { pullScopes } = await import('../../src/access/service.js');
    expect(pullScopes('repository:acme/private:pull')).toEqual(['acme/private']);
    expect(pullScopes('repository:reg.local:5101/lib/img:pull')).toEqual(['reg.local:5101/lib/img']);
    expect(pullScopes('repository:reg.local:5101/lib/img:push,pull repository:a/b:pull')).toEqual(['reg.local:5101/lib/img', 'a/b']);
    expect(pullScopes('repository:a/b:push')).toEqual([]);
    expect(pullScopes('registry:catalog:*')).toEqual([]);
    expect(pullScopes('repository::pull')).toEqual([]);
  });
});
