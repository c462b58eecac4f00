import { readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { digestOfStream } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { deferred } from '../helpers/wait.js';

/** Over a real socket: HEAD headers, streamed bodies, aborted responses on a digest mismatch. */
describe('the mirror over real HTTP', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  const big = makeRandomLayer(3_000_000, 'server-big');
  const bad = makeRandomLayer(2_000_000, 'server-bad');
  const img = makeImage({ layers: [big, bad] });

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/srv', img, 'latest');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, listen: true });
    await request(`${mirror.url}/v2/srv/manifests/latest`, { headers: { accept: DOCKER_ACCEPT } }).then((r) => r.body.dump());
  });
  afterAll(async () => {
    await mirror.stop();
    await hub.close();
  });

  it('HEAD of a manifest and a blob carries Content-Length and no body', async () => {
    const m = await request(`${mirror.url}/v2/srv/manifests/latest`, { method: 'HEAD', headers: { accept: DOCKER_ACCEPT } });
    expect(m.statusCode).toBe(200);
    expect(Number(m.headers['content-length'])).toBe(img.manifest.size);
    expect(m.headers['docker-content-digest']).toBe(img.manifest.digest);
    expect(m.headers['docker-distribution-api-version']).toBe('registry/2.0');
    const b = await request(`${mirror.url}/v2/srv/blobs/${big.digest}`, { method: 'HEAD' });
    expect(b.statusCode).toBe(200);
    expect(Number(b.headers['content-length'])).toBe(big.size);
  });

  it('every answer carries its request id and the API version once: written by the route, built by Hono, or an error', async () => {
    const answers = {
      manifest: await request(`${mirror.url}/v2/srv/manifests/latest`, { headers: { accept: DOCKER_ACCEPT, 'x-request-id': 'id-manifest' } }),
      notModified: await request(`${mirror.url}/v2/srv/manifests/${img.manifest.digest}`, { headers: { 'if-none-match': `"${img.manifest.digest}"`, 'x-request-id': 'id-304' } }),
      head: await request(`${mirror.url}/v2/srv/manifests/latest`, { method: 'HEAD', headers: { accept: DOCKER_ACCEPT, 'x-request-id': 'id-head' } }),
      config: await request(`${mirror.url}/v2/srv/blobs/${img.config.digest}`, { headers: { 'x-request-id': 'id-config' } }),
      base: await request(`${mirror.url}/v2/`, { headers: { 'x-request-id': 'id-base' } }),
      unknown: await request(`${mirror.url}/v2/srv/manifests/nosuchtag`, { headers: { 'x-request-id': 'id-unknown' } }),
    };
    const statuses = { manifest: 200, notModified: 304, head: 200, config: 200, base: 200, unknown: 404 };
    for (const [name, r] of Object.entries(answers)) {
      await r.body.dump();
      expect(r.statusCode, name).toBe(statuses[name as keyof typeof statuses]);
      expect(r.headers['x-request-id'], name).toBe(name === 'notModified' ? 'id-304' : `id-${name}`);
      expect(r.headers['docker-distribution-api-version'], name).toBe('registry/2.0');
    }
    // Outside /v2: a request id, and no registry API version.
    const health = await request(`${mirror.url}/healthz`);
    await health.body.dump();
    expect(health.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(health.headers['docker-distribution-api-version']).toBeUndefined();
  });

  it('streams a cold blob to concurrent clients and then serves it from disk', async () => {
    const pull = async () => {
      const r = await request(`${mirror.url}/v2/srv/blobs/${big.digest}`);
      expect(r.statusCode).toBe(200);
      expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
      expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(r.headers['content-encoding']).toBeUndefined();
      return digestOfStream(r.body);
    };
    const digests = await Promise.all([pull(), pull(), pull(), pull()]);
    expect(new Set(digests)).toEqual(new Set([big.digest]));
    // Clients finish once the bytes are verified; the fsync and rename into the cache follow.
    await vi.waitFor(async () => expect(await mirror.blobs.stat(big.digest)).toBeDefined());
    expect(await pull()).toBe(big.digest);
    expect(hub.count({ kind: 'cdn', path: new RegExp(big.digest.slice(7)) })).toBe(1);
    // Bytes served are counted when the server-side stream closes, a moment after the client has them all.
    await vi.waitFor(async () => expect(await mirror.metric('mirror_served_bytes_total', { source: 'cache' })).toBeGreaterThanOrEqual(big.size));
  });

  it('a stored blob is written from disk whole and as a range, and its file is released after each', async () => {
    await vi.waitFor(async () => expect(await mirror.blobs.stat(big.digest)).toBeDefined());
    const url = `${mirror.url}/v2/srv/blobs/${big.digest}`;
    const whole = await request(url);
    expect(whole.statusCode).toBe(200);
    expect(whole.headers['x-mirror-cache']).toBe('hit');
    expect(await digestOfStream(whole.body)).toBe(big.digest);
    const last = big.size - 2;
    const part = await request(url, { headers: { range: `bytes=1000-${last}` } });
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1000-${last}/${big.size}`);
    const got = Buffer.from(await part.body.arrayBuffer());
    expect(got.equals(Buffer.from(big.bytes.subarray(1000, last + 1)))).toBe(true);
    await vi.waitFor(() => expect(mirror.blobs.busy(big.digest)).toBe(false));
  });

  it('a Range of 1024 ranges, a header past the 16 KiB Node allows by default (containers-storage asks for that many), gets its 1024 parts in order', async () => {
    await vi.waitFor(async () => expect(await mirror.blobs.stat(big.digest)).toBeDefined());
    const ranges = Array.from({ length: 1024 }, (_, i) => [1_000_000 + i * 1900, 1_000_000 + i * 1900 + 9] as const);
    const header = `bytes=${ranges.map(([a, b]) => `${a}-${b}`).join(',')}`;
    expect(header.length).toBeGreaterThan(16 * 1024);
    const res = await request(`${mirror.url}/v2/srv/blobs/${big.digest}`, { headers: { range: header } });
    expect(res.statusCode).toBe(206);
    expect(String(res.headers['content-type'])).toMatch(/^multipart\/byteranges; boundary=/);
    const body = Buffer.from(await res.body.arrayBuffer()).toString('latin1');
    const said = [...body.matchAll(/Content-Range: bytes (\d+)-(\d+)\/\d+/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(said).toEqual(ranges.map(([a, b]) => [a, b]));
    const [a, b] = ranges[1023]!;
    expect(body.includes(Buffer.from(big.bytes.subarray(a, b + 1)).toString('latin1'))).toBe(true);
  });

  it('aborts every client on a digest mismatch and keeps nothing', async () => {
    hub.faults.corruptBlob = true;
    // The upstream body stops after its first bytes until all three clients have their answers: they
    // share one download, however slowly the requests arrive (one that failed first would start another).
    const gate = deferred();
    hub.faults.holdBlobBody = { after: 64 * 1024, until: gate.promise };
    const answers = await Promise.all([0, 1, 2].map(() => request(`${mirror.url}/v2/srv/blobs/${bad.digest}`)));
    gate.resolve();
    delete hub.faults.holdBlobBody;
    const pull = async (r: (typeof answers)[number]) => {
      expect(r.statusCode).toBe(200);
      let n = 0;
      try {
        for await (const c of r.body) n += c.length;
      } catch {
        return { aborted: true, n };
      }
      return { aborted: false, n };
    };
    const results = await Promise.all(answers.map(pull));
    for (const r of results) {
      expect(r.aborted || r.n < bad.size).toBe(true);
      expect(r.n).toBeLessThan(bad.size);
    }
    expect(await mirror.blobs.stat(bad.digest)).toBeUndefined();
    expect(await readdir(join(mirror.dataDir, 'tmp'))).toEqual([]);
    expect(await mirror.metric('mirror_blob_downloads_total', { result: 'digest_mismatch' })).toBe(1);
    expect(await mirror.metric('mirror_upstream_errors_total', { upstream: 'docker.io', class: 'digest_mismatch' })).toBe(1);
    hub.faults.corruptBlob = false;
    const again = await request(`${mirror.url}/v2/srv/blobs/${bad.digest}`);
    expect(await digestOfStream(again.body)).toBe(bad.digest);
  });

  it('HEAD of a blob while its download runs: the size upstream announced for it, without asking upstream again', async () => {
    const slow = makeRandomLayer(400_000, 'server-head-during');
    hub.putBlob('library/srv', slow);
    let open = () => undefined as void;
    hub.faults.holdBlobBody = { after: 1000, until: new Promise<void>((r) => (open = r)) };
    try {
      const res = await request(`${mirror.url}/v2/srv/blobs/${slow.digest}`);
      expect(res.statusCode).toBe(200);
      hub.resetCounters();
      const head = await request(`${mirror.url}/v2/srv/blobs/${slow.digest}`, { method: 'HEAD' });
      expect(head.statusCode).toBe(200);
      expect(Number(head.headers['content-length'])).toBe(slow.size);
      await head.body.dump();
      expect(hub.requests.filter((q) => q.kind === 'blob')).toEqual([]);
      open();
      expect(await digestOfStream(res.body)).toBe(slow.digest);
    } finally {
      hub.faults.holdBlobBody = undefined;
      open();
    }
  });

  it('a Range on a download of unknown size (chunked upstream) that fails: an error status, not a 200 cut short', async () => {
    const odd = makeRandomLayer(500_000, 'server-odd');
    hub.putBlob('library/srv', odd);
    Object.assign(hub.faults, { chunkedBlobs: true, corruptBlob: true });
    try {
      const r = await request(`${mirror.url}/v2/srv/blobs/${odd.digest}`, { headers: { range: 'bytes=0-99' } });
      expect(r.statusCode).toBe(502);
      expect(((await r.body.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('DIGEST_INVALID');
    } finally {
      Object.assign(hub.faults, { chunkedBlobs: false, corruptBlob: false });
    }
  });
});

/** timeouts.clientIdle: a client that stopped reading is let go, one that reads slowly is not. */
describe('idle clients over real HTTP', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  // More than loopback's socket buffers take in (here a receive buffer may grow to 32 MiB), so a
  // client that reads nothing stalls the answer inside the mirror.
  const layer = makeRandomLayer(64 * 1024 * 1024, 'server-idle');
  const IDLE_MS = 1000;

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putBlob('library/idle', layer);
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, listen: true, raw: { timeouts: { clientIdle: IDLE_MS } } });
    // The cold pull that caches it: under a loaded machine a pause of more than IDLE_MS between its
    // bytes may cut this client (as it should); the download goes on into the cache regardless.
    await request(`${mirror.url}/v2/idle/blobs/${layer.digest}`).then((r) => digestOfStream(r.body)).catch(() => undefined);
    await vi.waitFor(async () => expect(await mirror.blobs.stat(layer.digest)).toBeDefined(), { timeout: 30_000 });
    expect(await digestOfStream((await request(`${mirror.url}/v2/idle/blobs/${layer.digest}`)).body)).toBe(layer.digest);
  });
  afterAll(async () => {
    await mirror.stop();
    await hub.close();
  });

  /** A raw GET of the blob; `pace` sees every chunk and may pause the socket. Counts what it read (headers too). */
  const get = (pace: (received: number, socket: Socket) => void) => {
    const { hostname, port } = new URL(mirror.url);
    const socket = connect({ host: hostname, port: Number(port) }, () => {
      socket.write(`GET /v2/idle/blobs/${layer.digest} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`);
    });
    const got = { bytes: 0 };
    socket.on('data', (c: Buffer) => {
      got.bytes += c.length;
      pace(got.bytes, socket);
    });
    socket.on('error', () => undefined); // a reset after the server gave up: 'close' follows
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(got.bytes)));
    return { socket, got, closed };
  };

  it('closes a connection whose client stopped reading, and releases the blob', async () => {
    const started = deferred();
    const { socket, got, closed } = get((_, s) => {
      // The first bytes, then nothing more: the mirror's writes stop draining.
      s.pause();
      started.resolve();
    });
    await started.promise;
    expect(mirror.blobs.busy(layer.digest)).toBe(true); // the answer is under way, held by the client
    // Released only when the idle timeout destroys the connection: the blob cannot fit in the buffers.
    await vi.waitFor(() => expect(mirror.blobs.busy(layer.digest)).toBe(false), { timeout: 15_000, interval: 50 });
    // Reading again, the client finds the connection closed short of the blob.
    socket.removeAllListeners('data');
    socket.on('data', (c: Buffer) => (got.bytes += c.length));
    socket.resume();
    expect(await closed).toBeLessThan(layer.size);
  });

  it('keeps a client that reads slowly, with pauses shorter than the idle time', async () => {
    const every = 16 * 1024 * 1024;
    let next = every;
    let pauses = 0;
    const { closed } = get((received, socket) => {
      if (received < next) return;
      next += every;
      pauses++;
      socket.pause();
      setTimeout(() => socket.resume(), IDLE_MS / 3);
    });
    // The whole answer, headers and every byte of the blob, with a pause every 16 MiB.
    expect(await closed).toBeGreaterThan(layer.size);
    expect(pauses).toBeGreaterThanOrEqual(3);
  });
});
