/**
 * Security against the real server process: the client's Authorization never goes upstream; upstream
 * credentials (password, Basic header, issued tokens) never appear in logs, error bodies or /metrics;
 * on a credentialed upstream a blob cached for one repository is served under another name only when
 * upstream confirms that name holds it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { MAIN_JS, ROOT, spawnMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { DOCKER_ACCEPT, expectOciError, rawGet, faultFixture } from './util.js';

const USER = 'sec-user';
const PASS = 'Upstream-S3cret-pw-7731';
const WRONG = 'Wrong-S3cret-pw-9142';
const BASIC = Buffer.from(`${USER}:${PASS}`).toString('base64');
const CLIENT_TOKEN = 'CLIENT-SECRET-TOKEN-5150';
const CLIENT_BASIC = Buffer.from('client:CLIENT-PW-8008').toString('base64');

const shared = makeLayer([{ path: 'shared.txt', content: 'in team/a and team/c' }]);
const onlyB = makeLayer([{ path: 'b.txt', content: 'only in team/b' }]);
const slow = makeRandomLayer(1024 * 1024, 'security-slow');
const imgA = makeImage({ layers: [shared, slow] });
const imgB = makeImage({ layers: [onlyB] });
const imgC = makeImage({ layers: [shared], cmd: ['c'] });

const fx = faultFixture(async () => {
  const hub = await FakeUpstream.start({ credentials: { username: USER, password: PASS } });
  hub.putImage('team/a', imgA, 'v1');
  hub.putImage('team/b', imgB, 'v1');
  hub.putImage('team/c', imgC, 'v1');
  return hub;
});

const start = () =>
  spawnMirror({
    upstreams: {
      'docker.io': { url: fx.hub.url, username: USER, password: PASS },
      // Same registry, wrong password: its failures must not leak the password either.
      'ghcr.io': { url: fx.hub.url, username: USER, password: WRONG },
    },
    defaultRegistry: 'docker.io',
    extraConfig: { log: { level: 'trace', format: 'json' } },
  });

/** Every secret that must never leave the mirror: configured passwords, the Basic header, issued tokens. */
function secrets(): string[] {
  const tokens = new Set<string>();
  for (const r of fx.hub.requests) {
    const m = /^Bearer\s+(\S+)$/i.exec(String(r.headers.authorization ?? ''));
    if (m && m[1] !== CLIENT_TOKEN) tokens.add(m[1]!);
  }
  return [PASS, WRONG, BASIC, Buffer.from(`${USER}:${WRONG}`).toString('base64'), ...tokens];
}

function expectNoSecrets(text: string, where: string): void {
  for (const s of secrets()) expect(text.includes(s), `${where} contains a secret (${s.slice(0, 6)}…)`).toBe(false);
}

describe('credentials', () => {
  it('never forwards the client Authorization; never shows upstream credentials in logs, errors or /metrics', async () => {
    fx.mirror = await start();
    const allRequests: typeof fx.hub.requests = [];
    const m = await rawGet(`${fx.mirror.url}/v2/team/a/manifests/v1`, { headers: { accept: DOCKER_ACCEPT, authorization: `Bearer ${CLIENT_TOKEN}` } });
    expect(m.status).toBe(200);
    for (const b of [imgA.config, shared, slow]) {
      const r = await rawGet(`${fx.mirror.url}/v2/team/a/blobs/${b.digest}`, { headers: { authorization: `Basic ${CLIENT_BASIC}` } });
      expect(r.status).toBe(200);
      expect(digestOf(r.body)).toBe(b.digest);
    }
    const head = await rawGet(`${fx.mirror.url}/v2/team/c/blobs/${shared.digest}`, { method: 'HEAD', headers: { authorization: `Bearer ${CLIENT_TOKEN}` } });
    expect(head.status).toBe(200);

    // Errors of every kind: unknown upstream repo, refused credentials, upstream down, bad input.
    const errors = [
      await rawGet(`${fx.mirror.url}/v2/team/missing/manifests/v1`, { headers: { accept: DOCKER_ACCEPT, authorization: `Bearer ${CLIENT_TOKEN}` } }),
      await rawGet(`${fx.mirror.url}/v2/ghcr.io/team/a/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } }),
      await rawGet(`${fx.mirror.url}/v2/ghcr.io/team/a/blobs/${shared.digest}`),
      await rawGet(`${fx.mirror.url}/v2/team/a/manifests/Bad Tag`.replace(' ', '%20')),
    ];
    allRequests.push(...fx.hub.requests);
    await fx.hub.goDown();
    errors.push(await rawGet(`${fx.mirror.url}/v2/team/b/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } }));
    await fx.hub.goUp();
    for (const e of errors) {
      expect(e.status).toBeGreaterThanOrEqual(400);
      expectOciError(e, [400, 401, 403, 404, 502, 503]);
      expectNoSecrets(e.body.toString('latin1'), `error body ${e.status}`);
      expectNoSecrets(JSON.stringify(e.headers), `error headers ${e.status}`);
    }
    // ghcr.io (wrong password) must not have been served anything.
    expect(errors[1]!.status).not.toBe(200);
    expect(errors[2]!.status).not.toBe(200);

    // Upstream never saw the client's credentials; the CDN never saw any.
    expect(allRequests.length).toBeGreaterThan(0);
    for (const r of allRequests) {
      const auth = String(r.headers.authorization ?? '');
      expect(auth).not.toContain(CLIENT_TOKEN);
      expect(auth).not.toContain(CLIENT_BASIC);
      if (r.kind === 'cdn') expect(r.headers.authorization).toBeUndefined();
    }
    expect(fx.hub.cdnRejectedAuth).toBe(0);
    // The registry did get the configured credentials (so the check above is not vacuous).
    expect(allRequests.some((r) => r.kind === 'token' && r.headers.authorization === `Basic ${BASIC}`)).toBe(true);

    const metrics = await fx.mirror.metrics();
    expectNoSecrets(metrics, '/metrics');
    expect(metrics).not.toContain(CLIENT_TOKEN);
    // Request lines are written as responses end: wait for them before reading the output.
    await waitFor(() => fx.mirror!.lines.length > 5, 5000, () => `request log lines (have ${fx.mirror!.lines.length})`);
    expectNoSecrets(fx.mirror.output(), 'stdout/stderr (log level trace)');
    expect(fx.mirror.output()).not.toContain(CLIENT_TOKEN);
    expect(fx.mirror.output()).not.toContain(CLIENT_BASIC);

    // --print-config hides them too.
    const printed = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [MAIN_JS, '--config', fx.mirror!.configPath, '--print-config'], { cwd: ROOT, timeout: 15_000 }, (err, out, errOut) => (err ? reject(err) : resolve(out + errOut))),
    );
    expect(printed).toContain('docker.io');
    expectNoSecrets(printed, '--print-config');
  });

  it('--print-config hides the fleet secret and a password in its Redis URL; --config without a file is a usage error', async () => {
    const run = (args: string[], env: Record<string, string> = {}) =>
      new Promise<{ code: number; out: string }>((resolve) =>
        execFile(process.execPath, [MAIN_JS, ...args], { cwd: ROOT, timeout: 15_000, env: { ...process.env, ...env } }, (err, out, errOut) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: out + errOut }),
        ),
      );
    const fleetSecret = 'fleet-secret-0123456789';
    const printed = await run(['--print-config'], { MIRROR_FLEET_SECRET: fleetSecret, MIRROR_FLEET_REDIS_URL: 'redis://:hunter2-redis@127.0.0.1:6379' });
    expect(printed.code).toBe(0);
    expect(printed.out).toContain('[redacted]');
    expect(printed.out).not.toContain(fleetSecret);
    expect(printed.out).not.toContain('hunter2-redis');
    for (const args of [['--config'], ['--config='], ['-c']]) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.out).toMatch(/needs a file\nusage: regmirror/);
    }
    const bogus = await run(['--bogus']);
    expect(bogus.code).toBe(2);
    expect(bogus.out).toMatch(/unknown argument --bogus\nusage: regmirror/);
    // What the configuration names but cannot be used: one line, exit 2, no stack trace.
    const dir = await mkdtemp(join(tmpdir(), 'cli-start-'));
    try {
      await writeFile(join(dir, 'a-file'), 'not a directory');
      const onFile = await run([], { MIRROR_DATA_DIR: join(dir, 'a-file'), MIRROR_LISTEN: '127.0.0.1:0', MIRROR_ADMIN_LISTEN: '' });
      expect(onFile.code).toBe(2);
      expect(onFile.out).toMatch(/^regmirror: cannot start: .*a-file/m);
      expect(onFile.out).not.toMatch(/\n\s+at /);
      await writeFile(join(dir, 'tls.yaml'), `dataDir: ${join(dir, 'data')}\nlisten: "127.0.0.1:0"\nadmin:\n  listen: ""\ntls:\n  cert: ${join(dir, 'none.crt')}\n  key: ${join(dir, 'none.key')}\n`);
      const noTls = await run(['--config', join(dir, 'tls.yaml')]);
      expect(noTls.code).toBe(2);
      expect(noTls.out).toMatch(/regmirror: cannot start: tls\.cert: cannot read .*none\.crt/);
      expect(noTls.out).not.toMatch(/\n\s+at /);
      // An address that cannot be had: one line naming it, exit 2 (not a logged 'server error', exit 1).
      const holder = createNetServer();
      await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
      const taken = `127.0.0.1:${(holder.address() as AddressInfo).port}`;
      const inUse = await run([], { MIRROR_DATA_DIR: join(dir, 'data'), MIRROR_LISTEN: taken, MIRROR_ADMIN_LISTEN: '' });
      holder.close();
      expect(inUse.code).toBe(2);
      expect(inUse.out).toContain(`regmirror: cannot start: listen: cannot listen on ${taken}: EADDRINUSE\n`);
      const badHost = await run([], { MIRROR_DATA_DIR: join(dir, 'data'), MIRROR_LISTEN: 'bad host:5000' });
      expect(badHost.code).toBe(2);
      expect(badHost.out).toContain('listen: "bad host" is not an IP address or host name');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('repository isolation on a credentialed upstream', () => {
  it('serves a cached blob under another name only when upstream confirms that name holds it', async () => {
    fx.mirror = await start();
    const man = await rawGet(`${fx.mirror.url}/v2/team/a/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } });
    expect(man.status).toBe(200);
    for (const b of [imgA.config, shared]) expect((await rawGet(`${fx.mirror.url}/v2/team/a/blobs/${b.digest}`)).status).toBe(200);
    const cdnBefore = fx.hub.count({ kind: 'cdn' });

    // team/b does not hold it upstream: refused (GET and HEAD), manifest by digest too.
    const b = await rawGet(`${fx.mirror.url}/v2/team/b/blobs/${shared.digest}`);
    expectOciError(b, [404], ['BLOB_UNKNOWN']);
    expect(b.body.includes(shared.bytes)).toBe(false);
    const bHead = await rawGet(`${fx.mirror.url}/v2/team/b/blobs/${shared.digest}`, { method: 'HEAD' });
    expect(bHead.status).toBe(404);
    const bMan = await rawGet(`${fx.mirror.url}/v2/team/b/manifests/${imgA.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } });
    expectOciError(bMan, [404], ['MANIFEST_UNKNOWN']);
    // Asking again does not flip it (no negative result cached as positive).
    expect((await rawGet(`${fx.mirror.url}/v2/team/b/blobs/${shared.digest}`)).status).toBe(404);
    // A repository that does not exist upstream at all.
    expect((await rawGet(`${fx.mirror.url}/v2/team/nothere/blobs/${shared.digest}`)).status).toBe(404);

    // team/c holds it upstream: confirmed with a HEAD and served from the cache (no new download).
    const c = await rawGet(`${fx.mirror.url}/v2/team/c/blobs/${shared.digest}`);
    expect(c.status).toBe(200);
    expect(digestOf(c.body)).toBe(shared.digest);
    expect(fx.hub.count({ kind: 'cdn' })).toBe(cdnBefore);
    expect(fx.hub.count({ kind: 'blob', method: 'HEAD', path: `/v2/team/c/blobs/${shared.digest}` })).toBeGreaterThanOrEqual(1);

    // The same name on another upstream (wrong credentials there) is not served from this cache.
    const other = await rawGet(`${fx.mirror.url}/v2/ghcr.io/team/a/blobs/${shared.digest}`);
    expect(other.status).not.toBe(200);

    // Joining a download under way: team/b must be confirmed first, and is refused.
    fx.hub.faults.trickle = { bytesPerTick: 64 * 1024, tickMs: 50 };
    const [aSlow, bSlow] = await Promise.all([
      rawGet(`${fx.mirror.url}/v2/team/a/blobs/${slow.digest}`, { timeoutMs: 20_000 }),
      // team/b asks once team/a's download is under way (the CDN has been asked for the bytes).
      waitFor(() => fx.hub.count({ kind: 'cdn', method: 'GET', path: new RegExp(slow.digest.slice(7)) }) > 0, 5000, 'the download for team/a to start').then(() => rawGet(`${fx.mirror!.url}/v2/team/b/blobs/${slow.digest}`, { timeoutMs: 20_000 })),
    ]);
    expect(aSlow.status).toBe(200);
    expect(digestOf(aSlow.body)).toBe(slow.digest);
    expectOciError(bSlow, [404], ['BLOB_UNKNOWN']);
    await fx.hub.resetFaults();

    // Upstream down: nothing to confirm with, so team/b is still refused; team/a is served.
    await fx.hub.goDown();
    const bDown = await rawGet(`${fx.mirror.url}/v2/team/b/blobs/${shared.digest}`);
    expect(bDown.status).not.toBe(200);
    expectOciError(bDown, [404, 502, 503]);
    expect((await rawGet(`${fx.mirror.url}/v2/team/a/blobs/${shared.digest}`)).status).toBe(200);
    // And after a restart (membership read back from disk), still the same.
    await fx.mirror.restart();
    expect((await rawGet(`${fx.mirror.url}/v2/team/b/blobs/${shared.digest}`)).status).not.toBe(200);
    expect((await rawGet(`${fx.mirror.url}/v2/team/b/manifests/${imgA.manifest.digest}`, { headers: { accept: DOCKER_ACCEPT } })).status).not.toBe(200);
    const aAfter = await rawGet(`${fx.mirror.url}/v2/team/a/blobs/${shared.digest}`);
    expect(aAfter.status).toBe(200);
    expect(digestOf(aAfter.body)).toBe(shared.digest);
    const cAfter = await rawGet(`${fx.mirror.url}/v2/team/c/blobs/${shared.digest}`);
    expect(cAfter.status).toBe(200);
    await fx.hub.goUp();
  });
});
