/**
 * The per-client limit on upstream fetches (a client looping over uncached digests is throttled while
 * another keeps pulling; cache hits are not limited), start-up refusing bad access files, and the
 * policy file's validation messages.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Htpasswd } from '../../src/access/htpasswd.js';
import { LoginThrottle, RateLimiter } from '../../src/access/limits.js';
import { Policy } from '../../src/access/policy.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { digestOf } from '../helpers/digest.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { authFiles, authRaw, basic, from, htpasswdText, PASSWORDS, type AuthFiles } from './helpers.js';

const images = [0, 1, 2, 3].map((i) => makeImage({ layers: [makeLayer([{ path: 'f', content: `layer ${i}` }])] }));
/** Two larger layers for the resume test (cut midway). */
const cutImages = [0, 1].map((i) => makeImage({ layers: [makeRandomLayer(300_000, `limit-cut-${i}`)] }));
let hub: FakeUpstream;
let mirror: TestMirror;
let files: AuthFiles;
const clock = { now: Date.now() };

beforeAll(async () => {
  hub = await FakeUpstream.start({ auth: 'none', cdn: false });
  for (const [i, img] of images.entries()) hub.putImage('acme/app', img, `v${i}`);
  for (const [i, img] of cutImages.entries()) hub.putImage('acme/cut', img, `v${i}`);
  files = await authFiles();
  mirror = await startMirror({
    upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
    raw: authRaw(files, { missesPerMinute: 2 }),
    clock,
    mirrorOptions: { lifecycleTimers: false },
  });
});

afterAll(async () => {
  await mirror?.stop();
  await hub?.close();
});

describe('per-client upstream limit', () => {
  it('throttles a client looping over uncached digests while another keeps pulling; hits stay free', async () => {
    const bob = { authorization: basic('bob', PASSWORDS.bob) };
    const alice = { authorization: basic('alice', PASSWORDS.alice) };
    const blob = (i: number, h: Record<string, string>) => from(mirror, '10.0.0.1', `/v2/acme/app/blobs/${images[i]!.layers[0]!.digest}`, { headers: h });
    expect((await blob(0, bob)).status).toBe(200);
    expect((await blob(1, bob)).status).toBe(200);
    const upstreamBefore = hub.requests.length;
    const limited = await blob(2, bob);
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as any).errors[0].code).toBe('TOOMANYREQUESTS');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(hub.requests.length).toBe(upstreamBefore);
    // Another client is not affected; bob's cache hits are not limited.
    expect((await blob(2, alice)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await blob(0, bob)).status).toBe(200);
    expect((await blob(2, bob)).status).toBe(200); // now a hit
    expect((await blob(3, bob)).status).toBe(429);
    clock.now += 31_000; // one fetch back in the bucket
    expect((await blob(3, bob)).status).toBe(200);
  });

  it("a download's resume is not charged to the client that started it: its bucket empty, a cut body is still resumed", async () => {
    const bob = { authorization: basic('bob', PASSWORDS.bob) };
    clock.now += 61_000; // a full bucket: 2 fetches
    const layer = (i: number) => cutImages[i]!.layers[0]!;
    const get = (i: number) => from(mirror, '10.0.0.1', `/v2/acme/cut/blobs/${layer(i).digest}`, { headers: bob });
    expect((await get(0)).status).toBe(200);
    // The second takes the last fetch; upstream cuts its body midway, once.
    hub.faults.truncateBlobAfter = 100_000;
    hub.faults.truncateBlobTimes = 1;
    try {
      const r = await get(1);
      expect(r.status).toBe(200);
      expect(digestOf(Buffer.from(await r.arrayBuffer()))).toBe(layer(1).digest);
    } finally {
      await hub.resetFaults();
    }
    expect(hub.requests.filter((q) => q.kind === 'blob' && q.path.includes(layer(1).digest)).map((q) => q.headers.range ?? 'whole')).toEqual(['whole', 'bytes=100000-']);
  });
});

describe('start-up and validation', () => {
  it('an unreadable or unparseable htpasswd stops start-up, naming the file and line', async () => {
    const bad = join(files.dir, 'bad.htpasswd');
    await writeFile(bad, `${htpasswdText()}\ndave:{SHA}abcdefghijklmnopqrstuvwxyz0=\n`);
    const start = (htpasswd: string) => startMirror({ upstreams: { 'docker.io': { url: hub.url } }, raw: authRaw({ ...files, htpasswd }) });
    await expect(start(bad)).rejects.toThrow(`${bad}:4: user dave: only bcrypt hashes are accepted (htpasswd -B)`);
    await expect(start(join(files.dir, 'missing'))).rejects.toThrow(/cannot read the htpasswd file .*missing: ENOENT/);
    expect(() => Htpasswd.parse('no-colon-here', 'f')).toThrow('f:1: not a "user:hash" line');
  });

  it("an unknown user is checked against a hash of the file's usual cost (htpasswd -B writes 5): timing does not tell who exists", async () => {
    const bcrypt = (await import('bcryptjs')).default;
    const text = (cost: number, names: string[]) => names.map((u) => `${u}:${bcrypt.hashSync(`${u}-pw`, cost)}`).join('\n');
    const compare = vi.spyOn(bcrypt, 'compare');
    try {
      const users = Htpasswd.parse(`${text(5, ['carol', 'dave'])}\n${text(6, ['erin'])}`, 'f');
      expect(await users.verify('nobody', 'x')).toBe(false);
      expect(await users.verify('dave', 'dave-pw')).toBe(true);
      // The hashes compared against: the unknown user's has the cost most users have, as dave's.
      const hashes = compare.mock.calls.map((c) => String(c[1]));
      expect(hashes.map((h) => h.slice(0, 7))).toEqual(['$2b$05$', '$2b$05$']);
      expect(hashes[0]).not.toBe(hashes[1]);
    } finally {
      compare.mockRestore();
    }
  });

  it('refuses a config with auth on and no files, and a bad policy naming the entry', async () => {
    await expect(startMirror({ upstreams: { 'docker.io': { url: hub.url } }, raw: { auth: { enabled: true } } })).rejects.toThrow('config: auth.htpasswd:');
    const cases: Array<[string, string]> = [
      ['rules:\n  - subjects: [anonymous]\n    allow: ["docker.io/library/../x"]', 'rules[0].allow[0]'],
      ['rules:\n  - subjects: [someone]\n    allow: [docker.io/x]', 'rules[0].subjects[0]'],
      ['rules:\n  - subjects: [group:ops]\n', 'group ops is not defined'],
      ['anonymous:\n  networks: [10.0.0.0/33]', 'anonymous.networks[0]'],
      ['trustedProxies: [not-an-ip]', 'trustedProxies[0]'],
      ['rules:\n  - subjects: [anonymous]\n    alow: [docker.io/x]', 'rules[0].alow: unknown key'],
      ['rules: [', 'not valid YAML'],
      // Names are lower case: an upper-case deny would load and never match (fail open).
      ['rules:\n  - subjects: [authenticated]\n    allow: [docker.io/acme/**]\n    deny: [docker.io/acme/Secret]', 'rules[0].deny[0]: not a repository pattern like docker.io/library/* or ghcr.io/acme/** (lower case, as names are): docker.io/acme/Secret'],
    ];
    for (const [text, msg] of cases) expect(() => Policy.parse(text, 'p.yaml'), text).toThrow(msg);
    const policy = join(files.dir, 'bad-policy.yaml');
    await writeFile(policy, cases[0]![0]);
    await expect(startMirror({ upstreams: { 'docker.io': { url: hub.url } }, raw: authRaw({ ...files, policy }) })).rejects.toThrow('rules[0].allow[0]');
  });
});

describe('the address failed logins are counted by', () => {
  it('is an IPv4 address as it is, and an IPv6 address by its /64 (one host has the whole prefix)', async () => {
    const { throttleAddress } = await import('../../src/access/service.js');
    expect(throttleAddress('10.0.0.7')).toBe('10.0.0.7');
    expect(throttleAddress('2001:db8:1:2::7')).toBe('2001:db8:1:2::/64');
    expect(throttleAddress('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(throttleAddress('2001:0db8:0001:0002:0:0:0:1')).toBe('2001:db8:1:2::/64');
    expect(throttleAddress('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(throttleAddress('::1')).toBe('0:0:0:0::/64');
    expect(throttleAddress('fe80::1:2:3:4')).toBe('fe80:0:0:0::/64');
  });
});

describe('policy, throttle and bucket units', () => {
  it('matches * within a part and ** across parts; deny wins; anonymous needs a network', () => {
    const p = Policy.parse(
      'groups: {ci: [bot]}\nanonymous: {networks: ["192.168.0.0/16", "fd00::/8"]}\nrules:\n  - subjects: ["*"]\n    allow: [docker.io/library/*, ghcr.io/acme/**]\n    deny: [ghcr.io/acme/internal/**]\n  - subjects: [group:ci]\n    allow: [quay.io/*/*]\n',
      'p',
    );
    const anon = (address: string) => ({ user: undefined, address });
    const bot = { user: 'bot', address: '10.1.1.1' };
    expect(p.allows(anon('192.168.3.4'), 'docker.io/library/alpine')).toBe(true);
    expect(p.allows(anon('fd00::1'), 'docker.io/library/alpine')).toBe(true);
    expect(p.allows(anon('10.1.1.1'), 'docker.io/library/alpine')).toBe(false);
    expect(p.allows(anon('192.168.3.4'), 'docker.io/library/a/b')).toBe(false);
    expect(p.allows(bot, 'ghcr.io/acme/a/b/c')).toBe(true);
    expect(p.allows(bot, 'ghcr.io/acme/internal/x')).toBe(false);
    expect(p.allows(bot, 'quay.io/org/repo')).toBe(true);
    expect(p.allows({ user: 'eve', address: '10.1.1.1' }, 'quay.io/org/repo')).toBe(false);
    expect(p.allows(anon('192.168.3.4'), 'ghcr.io/acmex/y')).toBe(false);
  });

  it('login delays double per failure and a success clears them; the bucket refills over the minute', () => {
    const t = { now: 0 };
    const th = new LoginThrottle({ free: 2, maxDelaySeconds: 4, now: () => t.now });
    th.failed(['u']);
    th.failed(['u']);
    expect(th.retryAfter(['u'])).toBe(1);
    th.failed(['u']);
    expect(th.retryAfter(['u'])).toBe(2);
    th.failed(['u']);
    th.failed(['u']);
    expect(th.retryAfter(['u'])).toBe(4);
    t.now += 4000;
    expect(th.retryAfter(['u'])).toBe(0);
    th.succeeded(['u']);
    th.failed(['u']);
    expect(th.retryAfter(['u'])).toBe(0);
    const b = new RateLimiter({ perMinute: 60, now: () => t.now });
    for (let i = 0; i < 60; i++) expect(b.take('k')).toBe(0);
    expect(b.take('k')).toBe(1);
    t.now += 1000;
    expect(b.take('k')).toBe(0);
    expect(new RateLimiter({ perMinute: 0, now: () => 0 }).take('k')).toBe(0);
  });
});
