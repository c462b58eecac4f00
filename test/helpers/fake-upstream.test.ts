import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from './digest.js';
import { deferred } from './wait.js';
import { FakeUpstream } from './fake-upstream.js';
import { MT, blobOf, makeImage, makeIndex, makeLayer, makeRandomLayer, type Image } from './images.js';

interface Res {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** One HTTP exchange, no redirects followed, headers flattened. */
async function http(url: string, init: { method?: 'GET' | 'HEAD' | 'POST'; headers?: Record<string, string>; body?: string; signal?: AbortSignal } = {}): Promise<Res> {
  const r = await request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, body: init.body ?? null, signal: init.signal ?? null });
  const body = Buffer.from(await r.body.arrayBuffer());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
  return { status: r.statusCode, headers, body };
}

/** Parses `Bearer realm="..",service="..",scope=".."` the way registry clients do. */
function parseChallenge(h: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of h.replace(/^Bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

/** The Docker client dance: request, read the challenge, fetch a token for its scope. */
async function tokenFor(up: FakeUpstream, path: string, headers: Record<string, string> = {}): Promise<string> {
  const first = await http(`${up.url}${path}`);
  expect(first.status).toBe(401);
  const c = parseChallenge(first.headers['www-authenticate']!);
  const q = new URLSearchParams({ service: c.service! });
  if (c.scope) q.set('scope', c.scope);
  const t = await http(`${c.realm}?${q}`, { headers });
  expect(t.status).toBe(200);
  return (JSON.parse(t.body.toString()) as { token: string }).token;
}

const ACCEPT_ALL = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ');

describe('FakeUpstream (bearer, CDN)', () => {
  let up: FakeUpstream;
  let img: Image;
  let arm: Image;
  let token: string;
  const big = makeRandomLayer(300_000, 'big');

  beforeAll(async () => {
    up = await FakeUpstream.start();
    img = makeImage({ layers: [makeLayer([{ path: 'a', content: 'a' }]), big], cmd: ['/a'] });
    arm = makeImage({ layers: [makeLayer([{ path: 'b', content: 'b' }])], architecture: 'arm64' });
    up.putImage('library/alpine', img, 'latest');
    up.putIndex('library/alpine', makeIndex([img, arm]), [img, arm], 'multi');
    for (const t of ['3.18', '3.19', '3.20', 'edge']) up.putImage('library/alpine', img, t);
    token = await tokenFor(up, '/v2/library/alpine/manifests/latest');
    up.resetCounters();
  });
  afterAll(() => up.close());
  afterEach(async () => {
    await up.resetFaults();
    up.resetCounters();
  });
  const auth = () => ({ authorization: `Bearer ${token}` });

  /** GET a blob the Docker way: registry with token, then the redirect without it. */
  async function fetchBlob(digest: string, range?: string): Promise<Res> {
    const r = await http(`${up.url}/v2/library/alpine/blobs/${digest}`, { headers: auth() });
    expect(r.status).toBe(307);
    return http(r.headers.location!, { headers: range ? { range } : {} });
  }

  describe('auth', () => {
    it('challenges /v2/ and repository requests, and accepts the issued token', async () => {
      const base = await http(`${up.url}/v2/`);
      expect(base.status).toBe(401);
      expect(base.headers['www-authenticate']).toBe(`Bearer realm="${up.url}/token",service="fake-hub"`);
      expect(base.headers['docker-distribution-api-version']).toBe('registry/2.0');
      const m = await http(`${up.url}/v2/library/alpine/manifests/latest`);
      expect(m.status).toBe(401);
      expect(m.headers['www-authenticate']).toBe(`Bearer realm="${up.url}/token",service="fake-hub",scope="repository:library/alpine:pull"`);
      expect(JSON.parse(m.body.toString()).errors[0].code).toBe('UNAUTHORIZED');

      const t = await http(`${up.url}/token?service=fake-hub&scope=repository:library/alpine:pull`);
      const j = JSON.parse(t.body.toString());
      expect(j).toMatchObject({ expires_in: 300 });
      expect(j.token).toBe(j.access_token);
      expect(Date.parse(j.issued_at)).toBeGreaterThan(Date.now() - 60_000);
      expect((await http(`${up.url}/v2/`, { headers: { authorization: `Bearer ${j.token}` } })).status).toBe(200);
      expect((await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: { authorization: `Bearer ${j.token}`, accept: ACCEPT_ALL } })).status).toBe(200);
      expect(up.count({ kind: 'token', status: 200 })).toBe(1);
      expect(up.requests.find((r) => r.kind === 'token')?.server).toBe('token');
    });

    it('rejects a token for another repository, an unknown token and an expired one', async () => {
      up.putImage('other/repo', img, 'latest');
      const r = await http(`${up.url}/v2/other/repo/manifests/latest`, { headers: auth() });
      expect(r.status).toBe(401);
      expect(parseChallenge(r.headers['www-authenticate']!)).toMatchObject({ scope: 'repository:other/repo:pull', error: 'insufficient_scope' });
      const bogus = await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: { authorization: 'Bearer nope' } });
      expect(parseChallenge(bogus.headers['www-authenticate']!).error).toBe('invalid_token');

      const short = await tokenFor(up, '/v2/other/repo/tags/list');
      expect((await http(`${up.url}/v2/other/repo/tags/list`, { headers: { authorization: `Bearer ${short}` } })).status).toBe(200);
      up.expireTokens();
      expect((await http(`${up.url}/v2/other/repo/tags/list`, { headers: { authorization: `Bearer ${short}` } })).status).toBe(401);
      token = await tokenFor(up, '/v2/library/alpine/manifests/latest'); // later tests need a live one
    });

    it('tokens expire after tokenTtlSeconds on the injected clock', async () => {
      const clock = { now: Date.parse('2024-05-01T12:00:00Z') };
      const u = await FakeUpstream.start({ tokenTtlSeconds: 60, cdn: false, now: () => clock.now });
      try {
        u.putImage('x/y', img, 't');
        const first = await http(`${u.url}/v2/x/y/tags/list`);
        const c = parseChallenge(first.headers['www-authenticate']!);
        const issued = JSON.parse((await http(`${c.realm}?service=${c.service}&scope=${c.scope}`)).body.toString()) as { token: string; expires_in: number; issued_at: string };
        expect(issued).toMatchObject({ expires_in: 60, issued_at: '2024-05-01T12:00:00.000Z' });
        const list = () => http(`${u.url}/v2/x/y/tags/list`, { headers: { authorization: `Bearer ${issued.token}` } });
        clock.now += 59_999;
        expect((await list()).status).toBe(200);
        clock.now += 1;
        const expired = await list();
        expect(expired.status).toBe(401);
        expect(parseChallenge(expired.headers['www-authenticate']!).error).toBe('invalid_token');
      } finally {
        await u.close();
      }
    });
  });

  describe('manifests', () => {
    it('GET and HEAD by tag and digest carry type, digest, length and ETag', async () => {
      for (const ref of ['latest', img.manifest.digest]) {
        for (const method of ['GET', 'HEAD'] as const) {
          const r = await http(`${up.url}/v2/library/alpine/manifests/${ref}`, { method, headers: { ...auth(), accept: ACCEPT_ALL } });
          expect(r.status).toBe(200);
          expect(r.headers).toMatchObject({
            'content-type': MT.ociManifest,
            'docker-content-digest': img.manifest.digest,
            'content-length': String(img.manifest.size),
            etag: `"${img.manifest.digest}"`,
          });
          expect(r.body.equals(method === 'GET' ? img.manifest.bytes : Buffer.alloc(0))).toBe(true);
        }
      }
      const idx = await http(`${up.url}/v2/library/alpine/manifests/multi`, { headers: { ...auth(), accept: ACCEPT_ALL } });
      expect(idx.headers['content-type']).toBe(MT.ociIndex);
      expect(JSON.parse(idx.body.toString()).manifests).toHaveLength(2);
    });

    it('honours Accept like Docker Hub: an unaccepted type is MANIFEST_UNKNOWN', async () => {
      const r = await http(`${up.url}/v2/library/alpine/manifests/multi`, { headers: { ...auth(), accept: `${MT.dockerManifest}, ${MT.ociManifest}` } });
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
      for (const accept of ['*/*', `${MT.ociManifest};q=0.5, ${MT.ociIndex};q=0.9`, '']) {
        expect((await http(`${up.url}/v2/library/alpine/manifests/multi`, { headers: { ...auth(), ...(accept ? { accept } : {}) } })).status).toBe(200);
      }
    });

    it('answers the OCI error codes for unknown names, manifests and blobs', async () => {
      const code = async (path: string) => {
        const r = await http(`${up.url}${path}`, { headers: auth() });
        return `${r.status} ${JSON.parse(r.body.toString()).errors[0].code}`;
      };
      expect(await code('/v2/library/alpine/manifests/nope')).toBe('404 MANIFEST_UNKNOWN');
      expect(await code(`/v2/library/alpine/manifests/sha256:${'0'.repeat(64)}`)).toBe('404 MANIFEST_UNKNOWN');
      expect(await code(`/v2/library/alpine/blobs/sha256:${'0'.repeat(64)}`)).toBe('404 BLOB_UNKNOWN');
      expect(await code('/v2/library/alpine/blobs/sha256:xyz')).toBe('400 DIGEST_INVALID');
      up.putBlob('library/other', blobOf('elsewhere', 'application/octet-stream'));
      // A blob is only served under the repos it was put into.
      expect(await code(`/v2/library/alpine/blobs/${blobOf('elsewhere', 'x').digest}`)).toBe('404 BLOB_UNKNOWN');
      const t = await tokenFor(up, '/v2/library/missing/manifests/latest');
      const r = await http(`${up.url}/v2/library/missing/manifests/latest`, { headers: { authorization: `Bearer ${t}` } });
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body.toString()).errors[0]).toMatchObject({ code: 'NAME_UNKNOWN', message: expect.any(String) });
    });
  });

  describe('blobs', () => {
    it('GET redirects (307) to the CDN on 127.0.0.2, which serves the bytes', async () => {
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() });
      expect(r.status).toBe(307);
      const loc = new URL(r.headers.location!);
      expect(loc.origin).toBe(up.cdnUrl);
      expect(loc.hostname).toBe('127.0.0.2');
      expect(loc.pathname).toBe(`/blobs/sha256/${big.digest.slice(7)}`);
      expect(Number(loc.searchParams.get('expires'))).toBeGreaterThan(Date.now() / 1000);
      const body = await http(r.headers.location!);
      expect(body.status).toBe(200);
      expect(digestOf(body.body)).toBe(big.digest);
      expect(body.headers['content-length']).toBe(String(big.size));
      expect(up.count({ kind: 'blob', status: 307 })).toBe(1);
      expect(up.count({ kind: 'cdn', status: 200 })).toBe(1);
    });

    it('the CDN refuses requests carrying Authorization, and counts them', async () => {
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() });
      const refused = await http(r.headers.location!, { headers: auth() });
      expect(refused.status).toBe(400);
      expect(refused.body.toString()).toContain('Only one auth mechanism allowed');
      expect(up.cdnRejectedAuth).toBe(1);
      expect((await http(`${up.cdnUrl}/blobs/sha256/${big.digest.slice(7)}`)).status).toBe(403); // no expires=
    });

    it('honours single Range requests with 206 and Content-Range, and 416 past the end', async () => {
      const cases: Array<[string, number, number]> = [
        ['bytes=0-99', 0, 99],
        ['bytes=1000-', 1000, big.size - 1],
        ['bytes=-10', big.size - 10, big.size - 1],
        [`bytes=100-${big.size + 5000}`, 100, big.size - 1],
      ];
      for (const [range, a, b] of cases) {
        const r = await fetchBlob(big.digest, range);
        expect(r.status).toBe(206);
        expect(r.headers['content-range']).toBe(`bytes ${a}-${b}/${big.size}`);
        expect(r.body.equals(big.bytes.subarray(a, b + 1))).toBe(true);
      }
      const past = await fetchBlob(big.digest, `bytes=${big.size}-`);
      expect(past.status).toBe(416);
      expect(past.headers['content-range']).toBe(`bytes */${big.size}`);
    });

    it('HEAD is answered by the registry itself', async () => {
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { method: 'HEAD', headers: auth() });
      expect(r.status).toBe(200);
      expect(r.headers).toMatchObject({ 'content-length': String(big.size), 'docker-content-digest': big.digest });
      expect(up.count({ kind: 'cdn' })).toBe(0);
    });

    it('CDN URLs expire 20 minutes after the redirect, on the injected clock', async () => {
      const clock = { now: Date.parse('2024-05-01T12:00:00Z') };
      const u = await FakeUpstream.start({ auth: 'none', now: () => clock.now });
      try {
        u.putBlob('x/y', big);
        const r = await http(`${u.url}/v2/x/y/blobs/${big.digest}`);
        expect(r.status).toBe(307);
        expect(new URL(r.headers.location!).searchParams.get('expires')).toBe(String(clock.now / 1000 + 1200));
        clock.now += 1200_000;
        expect((await http(r.headers.location!, { method: 'HEAD' })).status).toBe(200);
        clock.now += 1000;
        expect((await http(r.headers.location!, { method: 'HEAD' })).status).toBe(403);
      } finally {
        await u.close();
      }
    });
  });

  it('paginates tags with Link headers', async () => {
    const seen: string[] = [];
    let next: string | undefined = '/v2/library/alpine/tags/list?n=2';
    let pages = 0;
    while (next) {
      const r = await http(`${up.url}${next}`, { headers: auth() });
      expect(r.status).toBe(200);
      const j = JSON.parse(r.body.toString());
      expect(j.name).toBe('library/alpine');
      seen.push(...j.tags);
      next = /^<([^>]+)>; rel="next"$/.exec(r.headers.link ?? '')?.[1];
      pages++;
    }
    expect(seen).toEqual(['3.18', '3.19', '3.20', 'edge', 'latest', 'multi']);
    expect(pages).toBe(3);
    const all = JSON.parse((await http(`${up.url}/v2/library/alpine/tags/list`, { headers: auth() })).body.toString());
    expect(all.tags).toEqual(seen);
  });

  it('serves referrers from stored subjects, with the artifactType filter', async () => {
    const sig = makeImage({ layers: [makeLayer([{ path: 's', content: 's' }])], artifactType: 'application/vnd.example.sig', subject: img.manifest, annotations: { k: 'v' } });
    const sbom = makeImage({ layers: [makeLayer([{ path: 'b', content: 'sbom' }])], artifactType: 'application/spdx+json', subject: img.manifest });
    up.putImage('library/alpine', sig);
    up.putImage('library/alpine', sbom);
    const r = await http(`${up.url}/v2/library/alpine/referrers/${img.manifest.digest}`, { headers: auth() });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe(MT.ociIndex);
    expect(r.headers['oci-filters-applied']).toBeUndefined();
    const j = JSON.parse(r.body.toString());
    expect(j.manifests.map((d: { digest: string }) => d.digest).sort()).toEqual([sig.manifest.digest, sbom.manifest.digest].sort());
    const f = await http(`${up.url}/v2/library/alpine/referrers/${img.manifest.digest}?artifactType=application/vnd.example.sig`, { headers: auth() });
    expect(f.headers['oci-filters-applied']).toBe('artifactType');
    expect(JSON.parse(f.body.toString()).manifests).toEqual([
      { mediaType: MT.ociManifest, digest: sig.manifest.digest, size: sig.manifest.size, artifactType: 'application/vnd.example.sig', annotations: { k: 'v' } },
    ]);
  });

  it('records every request with server, kind and final status', async () => {
    up.resetCounters();
    await http(`${up.url}/v2/library/alpine/manifests/latest`, { method: 'HEAD', headers: auth() });
    await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: auth() });
    await fetchBlob(big.digest);
    expect(up.requests.map((r) => `${r.server} ${r.kind} ${r.method} ${r.status}`)).toEqual([
      'registry manifest HEAD 200',
      'registry manifest GET 200',
      'registry blob GET 307',
      'cdn cdn GET 200',
    ]);
    expect(up.count({ method: 'get', kind: 'manifest' })).toBe(1);
    expect(up.count({ path: /\/blobs\/sha256[:/]/ })).toBe(2);
    expect(up.requests[0]!.headers.authorization).toBe(`Bearer ${token}`);
    expect(up.requests[3]!.host).toBe(new URL(up.cdnUrl!).host);
    up.resetCounters();
    expect(up.requests).toHaveLength(0);
  });

  describe('faults', () => {
    it('down: 503 UNAVAILABLE to everything, token endpoint included', async () => {
      up.faults.down = true;
      for (const p of ['/v2/', '/token?service=fake-hub', '/v2/library/alpine/manifests/latest']) {
        const r = await http(`${up.url}${p}`, { headers: auth() });
        expect(r.status).toBe(503);
        expect(JSON.parse(r.body.toString()).errors[0].code).toBe('UNAVAILABLE');
      }
      up.faults.down = false;
      expect((await http(`${up.url}/v2/`, { headers: auth() })).status).toBe(200);
    });

    it('rateLimited and status: injected errors after auth', async () => {
      up.faults.rateLimited = { retryAfter: 7 };
      const r = await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: auth() });
      expect(r.status).toBe(429);
      expect(r.headers['retry-after']).toBe('7');
      expect(JSON.parse(r.body.toString()).errors[0].code).toBe('TOOMANYREQUESTS');
      expect((await http(`${up.url}/v2/library/alpine/manifests/latest`)).status).toBe(401);
      delete up.faults.rateLimited;
      up.faults.status = 502;
      expect((await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() })).status).toBe(502);
    });

    it('truncateBlobAfter: the body stops short; a Range retry gets the rest', async () => {
      up.faults.truncateBlobAfter = 1000;
      up.faults.truncateBlobTimes = 1;
      await expect(fetchBlob(big.digest)).rejects.toThrow();
      expect(up.count({ kind: 'cdn', status: 200 })).toBe(1);
      const rest = await fetchBlob(big.digest, 'bytes=1000-');
      expect(rest.status).toBe(206);
      expect(rest.body.equals(big.bytes.subarray(1000))).toBe(true);
    });

    it('truncateBlobAfter without a count cuts every response, receiving exactly N bytes', async () => {
      up.faults.truncateBlobAfter = 5000;
      const got: Buffer[] = [];
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() });
      const res = await request(r.headers.location!, { headers: { range: 'bytes=100-' } });
      await expect(
        (async () => {
          for await (const c of res.body) got.push(c as Buffer);
        })(),
      ).rejects.toThrow();
      expect(Buffer.concat(got).equals(big.bytes.subarray(100, 5100))).toBe(true);
    });

    it('corruptBlob flips one byte: same length, wrong digest', async () => {
      up.faults.corruptBlob = true;
      const r = await fetchBlob(big.digest);
      expect(r.body.length).toBe(big.size);
      expect(digestOf(r.body)).not.toBe(big.digest);
      expect(r.body.filter((b, i) => b !== big.bytes[i]).length).toBe(1);
      expect((await fetchBlob(big.digest, 'bytes=0-99')).body.equals(big.bytes.subarray(0, 100))).toBe(true);
    });

    it('corruptManifest keeps length and JSON but breaks the digest', async () => {
      up.faults.corruptManifest = true;
      const r = await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: { ...auth(), accept: ACCEPT_ALL } });
      expect(r.headers['docker-content-digest']).toBe(img.manifest.digest);
      expect(r.body.length).toBe(img.manifest.size);
      expect(digestOf(r.body)).not.toBe(img.manifest.digest);
      expect(() => JSON.parse(r.body.toString())).not.toThrow();
    });

    it('goDown refuses connections; goUp listens on the same port again', async () => {
      await up.goDown();
      expect(up.faults.refuse).toBe(true);
      await expect(http(`${up.url}/v2/`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      await expect(http(`${up.cdnUrl}/`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      await up.goUp();
      expect((await http(`${up.url}/v2/`, { headers: auth() })).status).toBe(200);
    });

    it('redirectLoop and redirectTo', async () => {
      up.faults.redirectLoop = true;
      const path = `/v2/library/alpine/blobs/${big.digest}`;
      expect((await http(`${up.url}${path}`, { headers: auth() })).headers.location).toBe(`${up.url}${path}`);
      up.faults.redirectLoop = false;
      up.faults.redirectTo = 'ftp://x/y';
      expect((await http(`${up.url}${path}`, { headers: auth() })).headers.location).toBe('ftp://x/y');
    });

    it('stallBlobAfter sends N bytes and then nothing', async () => {
      up.faults.stallBlobAfter = 2000;
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() });
      const res = await request(r.headers.location!, { signal: AbortSignal.timeout(500) });
      let got = 0;
      await expect(
        (async () => {
          for await (const c of res.body) got += (c as Buffer).length;
        })(),
      ).rejects.toThrow();
      expect(got).toBe(2000);
    });

    it('holdBlobBody sends N bytes, then the rest once the gate opens', async () => {
      const gate = deferred();
      up.faults.holdBlobBody = { after: 1000, until: gate.promise };
      const r = await http(`${up.url}/v2/library/alpine/blobs/${big.digest}`, { headers: auth() });
      const res = await request(r.headers.location!);
      const chunks: Buffer[] = [];
      let got = 0;
      let opened = false;
      for await (const c of res.body) {
        chunks.push(c as Buffer);
        got += (c as Buffer).length;
        if (!opened) expect(got).toBeLessThanOrEqual(1000); // nothing past the gate before it opens
        if (got === 1000 && !opened) {
          opened = true;
          gate.resolve();
        }
      }
      expect(opened).toBe(true);
      expect(Buffer.concat(chunks).equals(big.bytes)).toBe(true);

      // At 0 the headers still go out: the client has its answer while the gate is closed.
      const gate0 = deferred();
      up.faults.holdBlobBody = { after: 0, until: gate0.promise };
      const held = await request(r.headers.location!);
      expect(held.statusCode).toBe(200);
      gate0.resolve();
      expect(Buffer.from(await held.body.arrayBuffer()).equals(big.bytes)).toBe(true);
    });

    it('delayMs and trickle slow responses down', async () => {
      up.faults.delayMs = 200;
      let t0 = Date.now();
      await http(`${up.url}/v2/`, { headers: auth() });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
      delete up.faults.delayMs;
      up.faults.trickle = { bytesPerTick: 50, tickMs: 20 };
      t0 = Date.now();
      const r = await fetchBlob(big.digest, 'bytes=0-499'); // 10 ticks
      expect(r.body.equals(big.bytes.subarray(0, 500))).toBe(true);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(180);
    });

    it('hugeManifestBytes streams an oversized manifest body', async () => {
      up.faults.hugeManifestBytes = 5_000_000;
      const r = await http(`${up.url}/v2/library/alpine/manifests/latest`, { headers: { ...auth(), accept: ACCEPT_ALL } });
      expect(r.headers['content-length']).toBe('5000000');
      expect(r.body.length).toBe(5_000_000);
      expect(r.body.subarray(0, 16).toString()).toBe('{"schemaVersion"');
    });
  });
});

describe('FakeUpstream rate limit (Docker Hub pull counting)', () => {
  it('counts manifest GETs, not HEADs, and answers 429 at zero', async () => {
    const up = await FakeUpstream.start({ auth: 'none', cdn: false, rateLimit: { limit: 100, remaining: 2 } });
    try {
      up.putImage('library/busybox', makeImage({ layers: [makeLayer([{ path: 'x', content: 'x' }])] }), 'latest');
      const url = `${up.url}/v2/library/busybox/manifests/latest`;
      const head = await http(url, { method: 'HEAD' });
      expect(head.headers['ratelimit-remaining']).toBe('2;w=21600');
      const g1 = await http(url);
      expect(g1.headers).toMatchObject({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '1;w=21600' });
      expect((await http(url)).headers['ratelimit-remaining']).toBe('0;w=21600');
      const limited = await http(url);
      expect(limited.status).toBe(429);
      expect(limited.headers['retry-after']).toBe('60');
      expect(JSON.parse(limited.body.toString()).errors[0].code).toBe('TOOMANYREQUESTS');
      expect((await http(url, { method: 'HEAD' })).status).toBe(200);
      up.rateLimit!.remaining = 5;
      expect((await http(url)).status).toBe(200);
    } finally {
      await up.close();
    }
  });
});

describe('FakeUpstream with credentials', () => {
  const creds = { username: 'alice', password: 's3cret' };
  const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

  it('bearer: the token endpoint requires the right Basic credentials', async () => {
    const up = await FakeUpstream.start({ credentials: creds, cdn: false });
    try {
      up.putImage('me/private', makeImage({ layers: [makeLayer([{ path: 'p', content: 'p' }])] }), 'v1');
      const tokenUrl = `${up.url}/token?service=fake-hub&scope=repository:me/private:pull`;
      expect((await http(tokenUrl)).status).toBe(401);
      expect((await http(tokenUrl, { headers: { authorization: basic('alice', 'wrong') } })).status).toBe(401);
      const t = await tokenFor(up, '/v2/me/private/manifests/v1', { authorization: basic('alice', 's3cret') });
      expect((await http(`${up.url}/v2/me/private/manifests/v1`, { headers: { authorization: `Bearer ${t}` } })).status).toBe(200);
      // The OAuth2 password grant containerd uses.
      const post = await http(`${up.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: 's3cret', service: 'fake-hub', scope: 'repository:me/private:pull', client_id: 'test' }).toString(),
      });
      expect(post.status).toBe(200);
      // Blobs are served directly without a CDN.
      const blobs = JSON.parse((await http(`${up.url}/v2/me/private/manifests/v1`, { headers: { authorization: `Bearer ${t}` } })).body.toString()).layers;
      const b = await http(`${up.url}/v2/me/private/blobs/${blobs[0].digest}`, { headers: { authorization: `Bearer ${t}`, range: 'bytes=0-9' } });
      expect(b.status).toBe(206);
      expect(b.headers['content-range']).toMatch(/^bytes 0-9\/\d+$/);
    } finally {
      await up.close();
    }
  });

  it('basic: the registry itself checks Basic credentials', async () => {
    const up = await FakeUpstream.start({ auth: 'basic', credentials: creds, cdn: false });
    try {
      const none = await http(`${up.url}/v2/`);
      expect(none.status).toBe(401);
      expect(none.headers['www-authenticate']).toBe('Basic realm="fake"');
      expect((await http(`${up.url}/v2/`, { headers: { authorization: basic('alice', 'nope') } })).status).toBe(401);
      expect((await http(`${up.url}/v2/`, { headers: { authorization: basic('alice', 's3cret') } })).status).toBe(200);
      expect((await http(`${up.url}/token`)).status).toBe(404);
    } finally {
      await up.close();
    }
  });
});
