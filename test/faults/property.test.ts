/**
 * Property-based: random paths, names, queries and headers thrown at the router. Every answer is a
 * success or a well-formed OCI error envelope with a 4xx/5xx status (never a bare 500), and no file
 * appears outside the data directory.
 *
 * In-process (app.request) against an unreachable upstream (127.0.0.1:1, fast) and against a fake
 * upstream that holds an image (so successes and upstream errors are part of the mix); then the same
 * generator over raw sockets to the real server process (dist/main.js), where Node's and
 * @hono/node-server's own request handling (no URL normalisation by a client) is part of what answers.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { OCI_CODES, rawBody, rawSocket, tree } from './util.js';

const layer = makeLayer([{ path: 'p.txt', content: 'property' }]);
const img = makeImage({ layers: [layer] });
const HEX = layer.digest.slice(7);

const segment = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('library', 'alpine', 'a', 'b-c', 'x_y', 'x__y', 'a.b', 'ghcr.io', 'docker.io', 'localhost:5000', '[::1]:5000') },
  { weight: 3, arbitrary: fc.constantFrom('..', '.', '%2e%2e', '%2E%2E', '%2f', '%2F', '%5c', '\\', '%00', '%0d%0a', '%', '%zz', '', ' ', '~', '@', ':', ';', 'A', 'Alpine', '_tags', '_links', '-a', 'a-', 'tmp', 'blobs') },
  { weight: 3, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom('a'.repeat(256), Array.from({ length: 17 }, () => 'a').join('/')) },
);

const reference = fc.oneof(
  fc.constantFrom('latest', 'v1', `sha256:${HEX}`, img.manifest.digest, `sha256:${HEX.toUpperCase()}`, `md5:${HEX.slice(0, 32)}`, `sha512:${HEX}`, 'sha256:', 'list', 'uploads', 'uploads/x', '-x', '.x', 't'.repeat(129), '..', '%2e%2e'),
  fc.string({ unit: 'grapheme-ascii', maxLength: 20 }),
);

const kind = fc.constantFrom('manifests', 'blobs', 'tags', 'referrers', 'unknown', '');

const queryValue = fc.oneof(
  fc.constantFrom('0', '1', '-1', '10', '10000', '10001', '99999999999999999999', '1e3', '0x10', '', 'docker.io', 'ghcr.io', 'evil.example', '%0d%0a', '..%2f'),
  fc.string({ unit: 'grapheme-ascii', maxLength: 10 }).map(encodeURIComponent),
);
const query = fc.option(
  fc.array(fc.tuple(fc.constantFrom('n', 'last', 'ns', 'artifactType', 'x'), queryValue), { minLength: 1, maxLength: 3 }).map((kv) => `?${kv.map(([k, v]) => `${k}=${v}`).join('&')}`),
  { nil: '' },
);

/** Header values an HTTP client can send (printable ASCII; CR/LF cases live in hostile.test.ts). */
const headerValue = fc.oneof(
  fc.constantFrom('bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=5-1', 'bytes=0-1,2-3', 'bytes=abc', 'bytes=99999999999999999999-', '*/*', 'application/vnd.oci.image.manifest.v1+json', `"${img.manifest.digest}"`),
  fc.string({ unit: 'grapheme-ascii', maxLength: 40 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
);
const headers = fc.record(
  { range: headerValue, accept: headerValue, 'if-none-match': headerValue, authorization: headerValue, 'x-request-id': headerValue },
  { requiredKeys: [] },
);
const method = fc.oneof({ weight: 6, arbitrary: fc.constant('GET') }, { weight: 3, arbitrary: fc.constant('HEAD') }, { weight: 1, arbitrary: fc.constantFrom('PUT', 'DELETE', 'POST', 'PATCH', 'OPTIONS') });

const randomRequest = fc.record({
  segments: fc.array(segment, { minLength: 0, maxLength: 5 }),
  kind,
  reference,
  query,
  headers,
  method,
  prefix: fc.oneof({ weight: 9, arbitrary: fc.constant('/v2/') }, { weight: 1, arbitrary: fc.constantFrom('/', '/v2', '/v1/', '/metrics/', '/v2/_catalog', '//v2/') }),
});
/** Mostly well-formed requests (so upstream is reached and some succeed) with random headers and queries. */
const plausibleRequest = fc.record({
  segments: fc.constantFrom<string[]>(['alpine'], ['library', 'alpine'], ['docker.io', 'library', 'alpine'], ['library', 'missing'], ['ghcr.io', 'a', 'b']),
  kind: fc.constantFrom('manifests', 'blobs', 'tags', 'referrers'),
  reference: fc.constantFrom('latest', 'v1', 'list', img.manifest.digest, layer.digest, img.config.digest, `sha256:${'0'.repeat(64)}`),
  query,
  headers,
  method: fc.constantFrom('GET', 'GET', 'HEAD'),
  prefix: fc.constant('/v2/'),
});
const request = fc.oneof({ weight: 3, arbitrary: randomRequest }, { weight: 1, arbitrary: plausibleRequest });
type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;

const pathOf = (r: Req) => `${r.prefix}${[...r.segments, r.kind, r.reference].filter((s, i, a) => s !== '' || i === a.length - 1).join('/')}${r.query}`;

/** Everything the inputs could name on disk, to look for afterwards. */
const generated = new Set<string>();

/** Status counts per run, printed at the end (to see the mix is not all rejects). */
const tally = new Map<string, Map<number, number>>();
let current = '';
function count(status: number): void {
  const t = tally.get(current) ?? new Map<number, number>();
  t.set(status, (t.get(status) ?? 0) + 1);
  tally.set(current, t);
}

/** Checks one answer: a success, or an OCI error envelope with a 4xx/5xx status. */
function checkAnswer(status: number, contentType: string | null, body: string, isHead: boolean, what: string): void {
  count(status);
  expect(status, what).toBeGreaterThanOrEqual(200);
  expect(status, what).toBeLessThan(600);
  if (status < 400) return;
  expect(contentType ?? '', `${what}: an error must be JSON (status ${status})`).toMatch(/^application\/json/);
  if (isHead) return;
  let env: { errors?: Array<{ code?: unknown; message?: unknown }> };
  try {
    env = JSON.parse(body);
  } catch {
    throw new Error(`${what}: status ${status} without an OCI envelope: ${JSON.stringify(body.slice(0, 200))}`);
  }
  expect(Array.isArray(env.errors) && env.errors.length > 0, `${what}: ${body.slice(0, 200)}`).toBe(true);
  for (const e of env.errors!) {
    expect(OCI_CODES.has(String(e.code)), `${what}: code ${String(e.code)}`).toBe(true);
    expect(typeof e.message, what).toBe('string');
  }
}

let parent = '';
let hub: FakeUpstream;
const mirrors: TestMirror[] = [];
const spawned: SpawnedMirror[] = [];
let cwdBefore: string[] = [];
let tmpBefore: string[] = [];

beforeAll(async () => {
  parent = await mkdtemp(join(tmpdir(), 'regmirror-prop-'));
  hub = await FakeUpstream.start();
  hub.putImage('library/alpine', img, 'latest');
  cwdBefore = readdirSync(process.cwd());
  tmpBefore = readdirSync('/tmp');
});

afterAll(async () => {
  for (const [run, t] of tally) console.log(`[property] ${run}: ${[...t].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}x${n}`).join(' ')}`);
  try {
    // Only the data directories exist under the parent, and only the cache layout inside them.
    for (const m of [...mirrors, ...spawned]) {
      for (const p of tree(m.dataDir)) expect(['blobs', 'repos', 'tmp', 'state'], p).toContain(p.split('/')[0]);
      for (const p of tree(join(m.dataDir, 'repos'))) expect(['docker.io', 'ghcr.io'], p).toContain(p.split('/')[0]);
    }
    expect(readdirSync(parent).sort()).toEqual([...mirrors, ...spawned].map((m) => m.dataDir.slice(parent.length + 1)).sort());
    const suspicious = (e: string) => generated.has(e) && e.length > 2;
    expect(readdirSync(process.cwd()).filter((e) => !cwdBefore.includes(e) && suspicious(e))).toEqual([]);
    expect(readdirSync('/tmp').filter((e) => !tmpBefore.includes(e) && suspicious(e))).toEqual([]);
  } finally {
    for (const m of mirrors) await m.stop({ keepData: true });
    for (const m of spawned) await m.stop();
    await hub.close();
    await rm(parent, { recursive: true, force: true });
  }
});

async function newMirror(url: string): Promise<TestMirror> {
  const dataDir = join(parent, `data-${mirrors.length}`);
  await mkdir(dataDir);
  const m = await startMirror({ upstreams: { 'docker.io': { url, libraryPrefix: true }, 'ghcr.io': { url } }, dataDir, raw: { timeouts: { connect: 1000, headers: 3000, bodyIdle: 3000 } } });
  mirrors.push(m);
  return m;
}

async function inProcess(m: TestMirror, r: Req): Promise<void> {
  const path = pathOf(r);
  for (const s of r.segments) generated.add(s);
  generated.add(r.reference);
  let req: Request;
  try {
    req = new Request(`http://localhost${path.startsWith('/') ? '' : '/'}${path}`, { method: r.method, headers: r.headers });
  } catch {
    fc.pre(false); // not a request a client could send
    return;
  }
  const res = await Promise.race([
    m.app.request(req),
    new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${r.method} ${path}: no answer in 10 s`)), 10_000)),
  ]);
  const body = r.method === 'HEAD' ? '' : await res.text();
  checkAnswer(res.status, res.headers.get('content-type'), body, r.method === 'HEAD', `${r.method} ${path} ${JSON.stringify(r.headers)}`);
}

describe('property: every answer is a success or an OCI error envelope', () => {
  it('in-process, upstream unreachable (127.0.0.1:1)', async () => {
    current = 'in-process, unreachable';
    const m = await newMirror('http://127.0.0.1:1');
    await fc.assert(
      fc.asyncProperty(request, (r) => inProcess(m, r)),
      { numRuns: 600, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31), plugins: [fc.interruptAfterTimeLimit(25_000)] } as fc.Parameters<[Req]>,
    );
  }, 60_000);

  it('in-process, against a fake upstream holding library/alpine', async () => {
    current = 'in-process, fake upstream';
    const m = await newMirror(hub.url);
    await fc.assert(
      fc.asyncProperty(request, (r) => inProcess(m, r)),
      { numRuns: 300, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31), plugins: [fc.interruptAfterTimeLimit(25_000)] } as fc.Parameters<[Req]>,
    );
    // The mix did reach upstream and did succeed sometimes (the generator is not all rejects).
    expect(hub.requests.length).toBeGreaterThan(0);
  }, 60_000);

  it('over raw sockets to the spawned server (no client-side URL normalisation)', async () => {
    current = 'raw sockets, spawned server';
    // The real server process (dist/main.js): its own request handling is what answers here.
    const dataDir = join(parent, 'data-spawned');
    await mkdir(dataDir);
    const m = await spawnMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true }, 'ghcr.io': { url: hub.url } },
      dataDir,
      extraConfig: { log: { level: 'warn' }, timeouts: { connect: 1000, headers: 3000, bodyIdle: 3000 } },
    });
    spawned.push(m);
    const port = m.port;
    // Failures are collected, not thrown, so one known class does not hide the others; grouped at the end.
    const failures = new Map<string, string>();
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const path = pathOf(r);
        for (const s of r.segments) generated.add(s);
        generated.add(r.reference);
        // Raw request-target: spaces and non-ASCII cannot go on the wire unencoded; everything else as-is.
        const target = path.replace(/[\s\u{80}-\u{10ffff}]/gu, (c) => encodeURIComponent(c));
        const lines = [`${r.method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`)];
        if (['PUT', 'POST', 'PATCH'].includes(r.method)) lines.push('Content-Length: 0');
        const res = await rawSocket(port, `${lines.join('\r\n')}\r\n\r\n`, 10_000);
        const head = res.text.slice(0, Math.max(0, res.text.indexOf('\r\n\r\n')));
        const ct = /\r\ncontent-type:\s*([^\r]*)/i.exec(head)?.[1] ?? null;
        try {
          expect(res.status, 'an answer').toBeGreaterThan(0);
          checkAnswer(res.status, ct, rawBody(res.text), r.method === 'HEAD', `raw ${r.method} ${target}`);
        } catch (e) {
          const cls = `${res.status} ${ct ?? 'no content-type'}: ${String((e as Error).message).split('\n')[0]!.replace(/raw \S+ \S+/, '').slice(0, 120)}`;
          const prev = failures.get(cls);
          if (prev === undefined || target.length < prev.length) failures.set(cls, `${r.method} ${target}`);
        }
      }),
      { numRuns: 300, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31), plugins: [fc.interruptAfterTimeLimit(25_000)] } as fc.Parameters<[Req]>,
    );
    expect(existsSync(m.dataDir)).toBe(true);
    const report = [...failures].map(([cls, example]) => `${cls}  e.g. ${JSON.stringify(example).slice(0, 160)}`);
    if (report.length) console.log(`[property] raw-socket failures by class:\n  ${report.join('\n  ')}`);
    expect(report).toEqual([]);
  }, 60_000);
});
