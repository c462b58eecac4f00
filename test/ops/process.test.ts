/**
 * The real server process as an operator sees it: structured request logs (no credentials), a
 * human-readable format on request, start-up refusing a bad config by key, and a graceful SIGTERM
 * that lets a download in flight finish into the cache.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT } from '../helpers/mirror.js';
import { MAIN_JS, ROOT, spawnMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';

describe('the mirror process', () => {
  let hub: FakeUpstream;
  const slow = makeRandomLayer(1_000_000, 'ops-slow');
  const img = makeImage({ layers: [makeLayer([{ path: 'ops', content: 'ops' }]), slow] });

  beforeAll(async () => {
    hub = await FakeUpstream.start({ credentials: { username: 'ops-user', password: 'ops-Secret-123' } });
    hub.putImage('library/ops', img, 'v1');
  });
  afterAll(() => hub.close());

  it('logs one JSON record per request with id, route, repo, digest, status, bytes, duration and cache result; never credentials', async () => {
    const m = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'ops-user', password: 'ops-Secret-123' } } });
    try {
      const r = await request(`${m.url}/v2/ops/manifests/v1`, { headers: { accept: DOCKER_ACCEPT, 'x-request-id': 'test-req-1' } });
      expect(r.statusCode).toBe(200);
      expect(r.headers['x-request-id']).toBe('test-req-1');
      await r.body.dump();
      const layer = img.layers[0]!;
      const b = await request(`${m.url}/v2/ops/blobs/${layer.digest}`);
      await b.body.arrayBuffer();
      // A request's line is written when its response ends, a moment after the client has the body.
      const manifestLog = await waitFor(() => m.lines.find((l) => l.reqId === 'test-req-1'), 5000, 'the manifest request in the log');
      expect(manifestLog).toMatchObject({ msg: 'request', route: 'manifest', repo: 'docker.io/library/ops', status: 200, cache: 'miss', digest: img.manifest.digest });
      expect(typeof manifestLog.ms).toBe('number');
      const blobLog = await waitFor(() => m.lines.find((l) => l.route === 'blob' && l.digest === layer.digest), 5000, 'the blob request in the log');
      expect(blobLog).toMatchObject({ status: 200, bytes: layer.size, cache: 'miss' });
      // Answers written straight from memory (a cached manifest: GET, conditional GET, HEAD) are
      // logged with what the client got.
      const hit = await request(`${m.url}/v2/ops/manifests/${img.manifest.digest}`, { headers: { 'x-request-id': 'test-req-2' } });
      expect(hit.statusCode).toBe(200);
      expect(Buffer.from(await hit.body.arrayBuffer())).toEqual(img.manifest.bytes);
      const etag = `"${img.manifest.digest}"`;
      const same = await request(`${m.url}/v2/ops/manifests/${img.manifest.digest}`, { headers: { 'if-none-match': etag, 'x-request-id': 'test-req-3' } });
      expect(same.statusCode).toBe(304);
      expect(same.headers.etag).toBe(etag);
      expect((await same.body.arrayBuffer()).byteLength).toBe(0);
      const head = await request(`${m.url}/v2/ops/manifests/${img.manifest.digest}`, { method: 'HEAD', headers: { 'x-request-id': 'test-req-4' } });
      expect(head.statusCode).toBe(200);
      expect(head.headers['content-length']).toBe(String(img.manifest.bytes.length));
      await head.body.dump();
      const logOf = (id: string) => waitFor(() => m.lines.find((l) => l.reqId === id), 5000, `request ${id} in the log`);
      expect(await logOf('test-req-2')).toMatchObject({ route: 'manifest', status: 200, cache: 'hit', bytes: img.manifest.bytes.length });
      expect(await logOf('test-req-3')).toMatchObject({ route: 'manifest', status: 304, cache: 'hit' });
      expect(await logOf('test-req-4')).toMatchObject({ route: 'manifest', status: 200, cache: 'hit', bytes: 0 });
      expect(await m.metric('mirror_http_requests_total', { route: 'manifest', status: '304' })).toBe(1);
      const headSame = await request(`${m.url}/v2/ops/manifests/${img.manifest.digest}`, { method: 'HEAD', headers: { 'if-none-match': etag } });
      expect(headSame.statusCode).toBe(304);
      await headSame.body.dump();
      // Every answer was written once (a second writeHead would be logged by the HTTP adapter).
      expect(m.output()).not.toContain('ERR_HTTP_HEADERS_SENT');
      expect(m.output()).not.toContain('ops-Secret-123');
      expect(m.output()).not.toContain(Buffer.from('ops-user:ops-Secret-123').toString('base64'));
      expect(await m.metrics()).not.toContain('ops-Secret-123');
    } finally {
      await m.stop();
    }
  });

  it('writes human-readable lines when asked (log.format: pretty)', async () => {
    const m = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, env: { MIRROR_LOG_FORMAT: 'pretty' } });
    try {
      const r = await request(`${m.url}/v2/`);
      await r.body.dump();
      await waitFor(() => /INFO\s+request .*route=base .*status=200/.test(m.output()), 5000, () => `a pretty request line in:\n${m.output()}`);
      expect(m.output()).toMatch(/INFO\s+regmirror listening/);
    } finally {
      await m.stop();
    }
  });

  it('writes cold blobs with its download thread, or without one when downloads.thread is false', async () => {
    const threads = (pid: number) => readdirSync(`/proc/${pid}/task`).length;
    const on = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'ops-user', password: 'ops-Secret-123' } } });
    const off = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'ops-user', password: 'ops-Secret-123' } }, env: { MIRROR_DOWNLOADS_THREAD: 'false' } });
    try {
      // The server starts its worker with it: one thread more than the same server without.
      await waitFor(() => threads(on.pid) === threads(off.pid) + 1, 5000, () => `one thread more with the download thread (${threads(on.pid)} vs ${threads(off.pid)})`);
      for (const m of [on, off]) {
        const b = await request(`${m.url}/v2/ops/blobs/${slow.digest}`);
        expect(b.statusCode).toBe(200);
        expect(createHash('sha256').update(Buffer.from(await b.body.arrayBuffer())).digest('hex')).toBe(slow.digest.slice(7));
        await waitFor(() => existsSync(join(m.dataDir, 'blobs', 'sha256', slow.digest.slice(7, 9), slow.digest.slice(7))), 5000, 'the blob stored');
      }
    } finally {
      await on.stop();
      await off.stop();
    }
  });

  it('refuses an invalid configuration, naming the key', async () => {
    const child = spawn(process.execPath, [MAIN_JS], { cwd: ROOT, env: { ...process.env, MIRROR_TAG_TTL: 'soon', MIRROR_DATA_DIR: '/tmp/never-created-by-test' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(2);
    expect(err).toContain('cache.tagTtl');
    expect(existsSync('/tmp/never-created-by-test')).toBe(false);
  });

  it('one process writes a data directory: a second server and the offline tools are refused, naming it; a killed server leaves no lock that matters', async () => {
    const m = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    const run = (args: string[]) =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const child = spawn(process.execPath, [MAIN_JS, ...args], { cwd: ROOT, env: { ...process.env, MIRROR_DATA_DIR: m.dataDir, MIRROR_LISTEN: '127.0.0.1:0', MIRROR_ADMIN_LISTEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
        let err = '';
        child.stderr.on('data', (c: Buffer) => (err += c.toString()));
        child.once('exit', (code) => resolve({ code, err }));
      });
    try {
      const serving = `a mirror (pid ${m.pid}) is serving ${m.dataDir}`;
      const second = await run([]);
      expect(second.code).toBe(2);
      expect(second.err).toBe(`regmirror: cannot start: ${serving}: use its admin API (--admin URL) instead of the data directory\n`);
      for (const args of [['import', '-', '--data-dir', m.dataDir], ['cache', 'gc', '--data-dir', m.dataDir], ['prefetch', 'library/ops:v1', '--data-dir', m.dataDir]]) {
        const r = await run(args);
        expect(r.code, args.join(' ')).not.toBe(0);
        expect(r.err, args.join(' ')).toContain(serving);
      }
      // The server still has its lock and serves.
      const alive = await request(`${m.url}/v2/`);
      expect(alive.statusCode).toBe(200);
      await alive.body.dump();
      await m.kill('SIGKILL');
      expect(readdirSync(join(m.dataDir, 'state'))).toContain('lock');
      await m.restart(); // the dead holder's lock is taken over
      const back = await request(`${m.url}/v2/`);
      expect(back.statusCode).toBe(200);
      await back.body.dump();
      await m.kill('SIGTERM');
      expect(readdirSync(join(m.dataDir, 'state'))).not.toContain('lock');
      const gc = await run(['cache', 'gc', '--data-dir', m.dataDir]);
      expect(gc).toMatchObject({ code: 0, err: '' });
    } finally {
      await m.stop();
    }
  });

  it('on SIGTERM stops accepting and lets an in-flight download finish into the cache', async () => {
    hub.faults.trickle = { bytesPerTick: 100_000, tickMs: 100 }; // ~1 s for the slow layer
    const m = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, username: 'ops-user', password: 'ops-Secret-123' } } });
    try {
      const res = await request(`${m.url}/v2/ops/blobs/${slow.digest}`);
      expect(res.statusCode).toBe(200);
      const body = res.body.arrayBuffer();
      // SIGTERM once the download is under way (its temp file exists).
      await waitFor(() => readdirSync(join(m.dataDir, 'tmp')).length > 0, 5000, 'the download in tmp/');
      const exited = m.kill('SIGTERM');
      const bytes = Buffer.from(await body);
      expect(bytes.length).toBe(slow.size);
      const { code } = await exited;
      expect(code).toBe(0);
      const hex = slow.digest.slice(7);
      expect(existsSync(join(m.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).toBe(true);
      expect(readdirSync(join(m.dataDir, 'tmp'))).toEqual([]);
      expect(m.output()).toContain('"drained":true');
    } finally {
      await hub.resetFaults();
      await m.stop();
    }
  }, 30_000);
});
