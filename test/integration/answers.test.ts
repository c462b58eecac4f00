/**
 * Answers that must be what the registry would give: upstream 4xx relayed, referrers of the unknown,
 * manifests only from the manifest endpoint, manifests by digest whatever the Accept, multi-range
 * blobs, invalid tag references, negative answers remembered briefly, the User-Agent sent upstream,
 * and metric series present from the start.
 */
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { listenOn } from '../helpers/ports.js';
import { blobOf, makeImage, makeLayer, makeRandomLayer, makeSignedSchema1, MT, SCHEMA1_SIGNED } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';

const errorCode = async (r: Response) => ((await r.json()) as { errors: Array<{ code: string }> }).errors[0]!.code;

describe('answers as the registry gives them', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror | undefined;
  const clock = { now: 9_000_000 };
  const big = makeRandomLayer(200_000, 'answers-big');
  const img = makeImage({ layers: [big, makeLayer([{ path: 'x', content: 'x' }])] });

  beforeAll(async () => {
    hub = await FakeUpstream.start({ referrers: false });
    hub.putImage('library/app', img, 'v1');
  });
  afterAll(() => hub.close());
  afterEach(async () => {
    await mirror?.stop();
    mirror = undefined;
    await hub.resetFaults();
    hub.resetCounters();
  });
  const start = async () => {
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, clock });
    return mirror;
  };

  it('a signed schema 1 manifest (legacy images podman and skopeo still pull) is served as upstream sends it, named by its payload digest, and not kept', async () => {
    const layer = makeLayer([{ path: 'old', content: 'schema 1' }]);
    const old = makeSignedSchema1({ name: 'library/old', tag: 'latest', layers: [layer] });
    expect(old.digest).not.toBe(blobOf(old.bytes, SCHEMA1_SIGNED).digest);
    hub.putBlob('library/old', layer);
    hub.putManifest('library/old', old, 'latest');
    const m = await start();
    const accept = { accept: `${SCHEMA1_SIGNED}, ${DOCKER_ACCEPT}` };
    for (const ref of ['latest', old.digest, 'latest']) {
      const r = await m.request(`/v2/old/manifests/${ref}`, { headers: accept });
      expect(r.status, `${ref} ${JSON.stringify(hub.requests.slice(-2).map((q) => [q.method, q.path, q.status, q.headers.accept]))}`).toBe(200);
      expect(r.headers.get('docker-content-digest')).toBe(old.digest);
      expect(r.headers.get('content-type')).toBe(SCHEMA1_SIGNED);
      expect(Buffer.from(await r.arrayBuffer()).equals(old.bytes)).toBe(true);
    }
    // Its layer is pulled like any other; the manifest itself is not in the store (named by its bytes' digest).
    const l = await m.request(`/v2/old/blobs/${layer.digest}`);
    expect(l.status).toBe(200);
    expect(Buffer.from(await l.arrayBuffer()).equals(layer.bytes)).toBe(true);
    expect(await m.blobs.stat(old.digest)).toBeUndefined();
    expect(hub.count({ kind: 'manifest', status: 200 })).toBe(3);

    // Signatures whose header describes other bytes: the payload is not the one named, rejected.
    const forged = Buffer.from(old.bytes.toString('utf8').replace('"name": "library/old"', '"name": "library/odl"'));
    hub.putManifest('library/old', { ...old, bytes: forged, size: forged.length }, 'forged');
    const f = await m.request('/v2/old/manifests/forged', { headers: accept });
    expect(f.status).toBe(502);
    expect(await errorCode(f)).toBe('MANIFEST_INVALID');
  });

  it('a blob asked for with its own ETag in If-None-Match is a 304 with no body, only where the repository holds it', async () => {
    const m = await start();
    const etag = `"${big.digest}"`;
    for (const method of ['GET', 'HEAD']) {
      const r = await m.request(`/v2/app/blobs/${big.digest}`, { method, headers: { 'if-none-match': etag } });
      expect(r.status, method).toBe(304);
      expect(r.headers.get('etag')).toBe(etag);
      expect(r.headers.get('docker-content-digest')).toBe(big.digest);
      expect((await r.arrayBuffer()).byteLength).toBe(0);
    }
    const other = await m.request(`/v2/app/blobs/${big.digest}`, { headers: { 'if-none-match': '"sha256:0"' } });
    expect(other.status).toBe(200);
    expect(Buffer.from(await other.arrayBuffer()).equals(big.bytes)).toBe(true);
    const elsewhere = await m.request(`/v2/nobody/here/blobs/${big.digest}`, { headers: { 'if-none-match': etag } });
    expect(elsewhere.status).toBe(404);
  });

  it('a config blob, once cached, is never served from the manifest endpoint', async () => {
    const m = await start();
    expect((await m.request('/v2/app/manifests/v1', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
    const cfg = await m.request(`/v2/app/blobs/${img.config.digest}`);
    expect(cfg.status).toBe(200);
    hub.resetCounters();
    const asManifest = await m.request(`/v2/app/manifests/${img.config.digest}`, { headers: { accept: DOCKER_ACCEPT } });
    expect(asManifest.status).toBe(404);
    expect(await errorCode(asManifest)).toBe('MANIFEST_UNKNOWN');
    // Upstream was asked (the mirror does not guess from the bytes) and said it is no manifest.
    expect(hub.count({ kind: 'manifest', status: 404 })).toBe(1);
  });

  it('a manifest by digest is served whatever the Accept, with its real Content-Type', async () => {
    const m = await start();
    for (const accept of [MT.dockerList, 'text/plain', '']) {
      const r = await m.request(`/v2/app/manifests/${img.manifest.digest}`, { headers: accept ? { accept } : {} });
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(MT.ociManifest);
      expect(r.headers.get('docker-content-digest')).toBe(img.manifest.digest);
    }
    expect(hub.count({ kind: 'manifest', method: 'GET', status: 200 })).toBe(1);
  });

  it('a reference that is not a valid tag is MANIFEST_UNKNOWN (404); a malformed digest stays DIGEST_INVALID (400)', async () => {
    const m = await start();
    const r = await m.request('/v2/app/manifests/.INVALID_MANIFEST_NAME', { headers: { accept: DOCKER_ACCEPT } });
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('MANIFEST_UNKNOWN');
    const d = await m.request('/v2/app/manifests/sha256:xyz');
    expect(d.status).toBe(400);
    expect(await errorCode(d)).toBe('DIGEST_INVALID');
    expect(hub.requests).toHaveLength(0);
  });

  it('several ranges of a cached blob: 206 multipart/byteranges; on a miss: 200 with the whole body', async () => {
    const m = await start();
    const miss = await m.request(`/v2/app/blobs/${big.digest}`, { headers: { range: 'bytes=0-9,20-29' } });
    expect(miss.status).toBe(200);
    expect(Buffer.from(await miss.arrayBuffer()).equals(big.bytes)).toBe(true);
    expect(await m.registry.drain(5000)).toBe(true); // stored

    const hit = await m.request(`/v2/app/blobs/${big.digest}`, { headers: { range: 'bytes=20-29,0-9,5-12,-4' } });
    expect(hit.status).toBe(206);
    expect(hit.headers.get('x-mirror-cache')).toBe('hit');
    const ct = hit.headers.get('content-type')!;
    const boundary = /^multipart\/byteranges; boundary=(\S+)$/.exec(ct)![1]!;
    const body = Buffer.from(await hit.arrayBuffer());
    expect(Number(hit.headers.get('content-length'))).toBe(body.length);
    const size = big.bytes.length;
    const parts = parseMultipart(body, boundary);
    // One part per range, in the order asked, overlaps and all (as distribution answers).
    expect(parts.map((p) => p.range)).toEqual([`bytes 20-29/${size}`, `bytes 0-9/${size}`, `bytes 5-12/${size}`, `bytes ${size - 4}-${size - 1}/${size}`]);
    expect(parts[0]!.body.equals(big.bytes.subarray(20, 30))).toBe(true);
    expect(parts[1]!.body.equals(big.bytes.subarray(0, 10))).toBe(true);
    expect(parts[2]!.body.equals(big.bytes.subarray(5, 13))).toBe(true);
    expect(parts[3]!.body.equals(big.bytes.subarray(size - 4))).toBe(true);

    // One satisfiable range left: a plain 206; none: 416.
    const one = await m.request(`/v2/app/blobs/${big.digest}`, { headers: { range: `bytes=0-1,${size + 10}-` } });
    expect(one.status).toBe(206);
    expect(one.headers.get('content-range')).toBe(`bytes 0-1/${size}`);
    expect(Buffer.from(await one.arrayBuffer()).equals(big.bytes.subarray(0, 2))).toBe(true);
    const none = await m.request(`/v2/app/blobs/${big.digest}`, { headers: { range: `bytes=${size}-,${size + 1}-` } });
    expect(none.status).toBe(416);
    expect(none.headers.get('content-range')).toBe(`bytes */${size}`);
  });

  it('referrers of an unknown repository: 404; of an unknown subject: an empty index (the spec: never 404 for a repository that exists); nothing left behind', async () => {
    const m = await start();
    const unknownRepo = await m.request(`/v2/nobody/here/referrers/${img.manifest.digest}`);
    expect(unknownRepo.status).toBe(404);
    expect(await errorCode(unknownRepo)).toBe('NAME_UNKNOWN');
    const nobody = `sha256:${'0'.repeat(64)}`;
    const asked = () => hub.requests.filter((r) => r.path.endsWith(nobody)).length;
    for (let i = 1; i <= 2; i++) {
      const unknownSubject = await m.request(`/v2/app/referrers/${nobody}`);
      expect(unknownSubject.status).toBe(200);
      expect(unknownSubject.headers.get('content-type')).toBe('application/vnd.oci.image.index.v1+json');
      expect(await unknownSubject.json()).toEqual({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
      // Not stored: the next request asks upstream again (its referrers API, a HEAD of the subject, a GET for the error code).
      expect(asked()).toBe(3 * i);
    }
    expect(await (await m.request('/v2/_catalog')).json()).toEqual({ repositories: [] });
    // A known subject without referrers: an empty index (upstream has no referrers API; its fallback tag is absent).
    const known = await m.request(`/v2/app/referrers/${img.manifest.digest}`);
    expect(known.status).toBe(200);
    expect(((await known.json()) as { manifests: unknown[] }).manifests).toEqual([]);
    // _catalog lists repositories with cached manifests only.
    expect(await (await m.request('/v2/_catalog')).json()).toEqual({ repositories: [] });
    await m.request('/v2/app/manifests/v1', { headers: { accept: DOCKER_ACCEPT } });
    expect(await (await m.request('/v2/_catalog')).json()).toEqual({ repositories: ['library/app'] });
  });

  it('a missing tag or blob costs one upstream request per negative window, and never hides a cached answer', async () => {
    const m = await start();
    const missingTag = () => m.request('/v2/app/manifests/nope', { headers: { accept: DOCKER_ACCEPT } });
    const missingBlob = () => m.request(`/v2/app/blobs/sha256:${'1'.repeat(64)}`);
    for (let i = 0; i < 5; i++) {
      const t = await missingTag();
      expect(t.status).toBe(404);
      expect(await errorCode(t)).toBe('MANIFEST_UNKNOWN');
      expect((await missingBlob()).status).toBe(404);
    }
    expect(hub.count({ kind: 'manifest', status: 404 })).toBe(1);
    expect(hub.count({ kind: 'blob', status: 404 })).toBe(1);
    // The tag appears upstream: within the window the 404 stands; after it, the tag is found.
    hub.putImage('library/app', img, 'nope');
    expect((await missingTag()).status).toBe(404);
    clock.now += 31_000;
    expect((await missingTag()).status).toBe(200);
    // A digest remembered as missing by digest is served once cached through the tag.
    hub.resetCounters();
    const other = makeImage({ layers: [makeLayer([{ path: 'o', content: 'other' }])] });
    expect((await m.request(`/v2/app/manifests/${other.manifest.digest}`)).status).toBe(404);
    hub.putImage('library/app', other, 'other');
    expect((await m.request('/v2/app/manifests/other', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
    const now = await m.request(`/v2/app/manifests/${other.manifest.digest}`);
    expect(now.status).toBe(200);
    expect(now.headers.get('x-mirror-cache')).toBe('hit');
  });

  it('every upstream request (registry, token realm, CDN) names the mirror in its User-Agent', async () => {
    const m = await start();
    await m.request('/v2/app/manifests/v1', { headers: { accept: DOCKER_ACCEPT } });
    await (await m.request(`/v2/app/blobs/${big.digest}`)).arrayBuffer();
    const servers = new Set(hub.requests.map((r) => r.server));
    expect(servers).toEqual(new Set(['registry', 'token', 'cdn']));
    for (const r of hub.requests) expect(r.headers['user-agent']).toMatch(/^regmirror\/\d+\.\d+\.\d+$/);
  });

  it('metric series exist at 0 before the first event', async () => {
    const m = await start();
    const text = await (await m.request('/metrics')).text();
    for (const kind of ['manifest', 'blob', 'tags', 'referrers']) {
      for (const result of ['hit', 'miss', 'stale', 'revalidated']) {
        expect(text).toContain(`mirror_cache_requests_total{kind="${kind}",upstream="docker.io",result="${result}"} 0`);
      }
    }
    expect(text).toContain('mirror_upstream_errors_total{upstream="docker.io",class="timeout"} 0');
    expect(text).toContain('mirror_blob_downloads_total{result="digest_mismatch"} 0');
    expect(text).toContain('mirror_served_bytes_total{source="cache"} 0');
  });
});

describe('upstream errors reach the client as upstream meant them', () => {
  let server: http.Server;
  let url: string;
  let answer: { status: number; body: unknown; headers?: Record<string, string> };
  let mirror: TestMirror | undefined;

  beforeAll(async () => {
    // A registry with no auth that answers every manifest request with the scripted answer.
    server = http.createServer((req, res) => {
      if (req.url === '/v2/' || req.url === '/v2') return res.end('{}');
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(answer.body));
    });
    url = `http://127.0.0.1:${await listenOn(server)}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  afterEach(async () => {
    await mirror?.stop();
    mirror = undefined;
  });

  it.each([
    [400, 'MANIFEST_INVALID', 400, 'MANIFEST_INVALID'],
    [404, 'NAME_UNKNOWN', 404, 'NAME_UNKNOWN'],
    [403, 'DENIED', 403, 'DENIED'],
    [410, 'GONE_SOMEHOW', 410, 'UNKNOWN'],
    [429, 'TOOMANYREQUESTS', 429, 'TOOMANYREQUESTS'],
    [500, 'UNKNOWN', 502, 'UNAVAILABLE'],
    [503, 'UNAVAILABLE', 503, 'UNAVAILABLE'],
  ])('upstream %i %s is answered %i %s', async (upStatus, upCode, status, code) => {
    answer = {
      status: upStatus,
      body: { errors: [{ code: upCode, message: 'see https://user:secret@internal.example/redirect', detail: { location: 'https://cdn.internal/x?X-Amz-Signature=abc' } }] },
      headers: { location: 'https://cdn.internal/x?X-Amz-Signature=abc', 'www-authenticate': 'Basic realm="internal"' },
    };
    mirror = await startMirror({ upstreams: { 'docker.io': { url, libraryPrefix: true } } });
    const r = await mirror.request('/v2/app/manifests/v1', { headers: { accept: MT.dockerManifest } });
    expect(r.status).toBe(status);
    const text = await r.text();
    expect(JSON.parse(text).errors[0].code).toBe(code);
    // The upstream's redirect targets and headers never reach the client.
    expect(text).not.toContain('X-Amz-Signature');
    expect(text).not.toContain('secret');
    expect(r.headers.get('location')).toBeNull();
    expect(r.headers.get('www-authenticate')).toBeNull();
    if (status === 429 || status === 503) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});

function parseMultipart(body: Buffer, boundary: string): Array<{ range: string; body: Buffer }> {
  const parts: Array<{ range: string; body: Buffer }> = [];
  const delim = Buffer.from(`--${boundary}`);
  let at = body.indexOf(delim);
  for (;;) {
    const next = body.indexOf(delim, at + delim.length);
    if (next < 0) break;
    const part = body.subarray(at + delim.length + 2, next - 2); // after CRLF, before CRLF
    const sep = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, sep).toString();
    parts.push({ range: /Content-Range: (.*)/.exec(head)![1]!.trim(), body: part.subarray(sep + 4) });
    at = next;
  }
  expect(body.subarray(at).toString()).toBe(`--${boundary}--\r\n`);
  return parts;
}
