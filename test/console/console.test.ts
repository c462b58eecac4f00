/**
 * The operator console in-process (app.request on the admin app): the page after real pulls through
 * the mirror, the JSON and server-sent events it reads, downloads in flight with their bytes, prefetch
 * jobs, the admin authentication in front of it, hostile names escaped, changes refused from other
 * origins, and the bounded history behind the charts.
 */
import { hostname } from 'node:os';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHART_W, charts } from '../../src/console/chart.js';
import { FiguresHistory, type Figures } from '../../src/console/history.js';
import { CONSOLE_CSP, mountConsole } from '../../src/console/routes.js';
import type { ConsoleDeps } from '../../src/console/types.js';
import type { CacheAdmin, ImageInfo } from '../../src/lifecycle/types.js';
import { authFiles, authRaw, basic, PASSWORDS } from '../access/helpers.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { waitFor } from '../helpers/wait.js';

const small = makeImage({ layers: [makeRandomLayer(50_000, 'console small')] });
const slow = makeImage({ layers: [makeRandomLayer(600_000, 'console slow')] });

/** Reads the first server-sent event of a stream, then hangs up. */
async function firstEvent(res: Response): Promise<{ event: string; data: string }> {
  const reader = res.body!.getReader();
  let text = '';
  try {
    while (!text.includes('\n\n')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
  } finally {
    await reader.cancel();
  }
  const block = text.slice(0, text.indexOf('\n\n'));
  const field = (k: string) => block.split('\n').filter((l) => l.startsWith(`${k}: `)).map((l) => l.slice(k.length + 2)).join('\n');
  return { event: field('event'), data: field('data') };
}

describe('the console on the admin API, after real pulls', () => {
  let hub: FakeUpstream;
  let m: TestMirror;
  const admin = (path: string, init?: RequestInit) => Promise.resolve(m.adminApp.request(path, init));

  const pull = async (name: string, img: typeof small) => {
    const r = await m.request(`/v2/${name}/manifests/latest`, { headers: { accept: DOCKER_ACCEPT } });
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    for (const b of [img.config, ...img.layers]) {
      const res = await m.request(`/v2/${name}/blobs/${b.digest}`);
      expect(digestOf(Buffer.from(await res.arrayBuffer()))).toBe(b.digest);
    }
  };

  beforeAll(async () => {
    hub = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 100 } });
    hub.putImage('library/small', small, 'latest');
    hub.putImage('library/slow', slow, 'latest');
    m = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, raw: { cache: { maxBytes: 50_000_000 } } });
    await pull('small', small);
    await pull('small', small); // hits
    expect(await m.registry.drain(5000)).toBe(true);
  });
  afterAll(async () => {
    await m.stop();
    await hub.close();
  });

  it('serves the page with the cached image, the figures and a strict Content-Security-Policy', async () => {
    const r = await admin('/ui');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = r.headers.get('content-security-policy')!;
    expect(csp).toBe(CONSOLE_CSP);
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    const body = await r.text();
    expect(body).toContain('docker.io/library/small');
    expect(body).toContain(small.manifest.digest.slice(7, 19));
    // No inline script, no inline style: everything the CSP forbids is absent.
    expect(body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(body).not.toMatch(/\sstyle=|<style/);
    expect(body).toContain('<script type="module" src="/ui/console.js"></script>');
    expect(body).toMatch(/data-f="cacheBytes">[\d.]+ KiB</);
    expect(body).toContain('of <span data-f="limitBytes">47.7 MiB</span>');
    expect(body).toMatch(/<path class="line" d="M/);
    // The admin listener's root leads to the console.
    const root = await admin('/');
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/ui');
  });

  it('lists one repository\'s images by ?repository=, and re-renders the lists as a fragment', async () => {
    const page = await (await admin('/ui?repository=docker.io/library/small')).text();
    expect(page).toContain('Images of docker.io/library/small');
    const frag = await admin('/ui/fragments/cache');
    expect(frag.status).toBe(200);
    const html = await frag.text();
    expect(html).toContain(`data-ref="docker.io/library/small@${small.manifest.digest}"`);
    expect(html).not.toContain('<html');
    expect((await admin('/ui?repository=NOT%20A%20NAME')).status).toBe(400);
  });

  it('serves the compiled client and the stylesheet from its own origin', async () => {
    const js = await admin('/ui/console.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    const text = await js.text();
    expect(text).toContain('/admin/live/events');
    expect(text).toContain('EventSource');
    const css = await admin('/ui/console.css');
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    expect(await css.text()).toContain('@media (max-width: 700px)');
  });

  it('GET /admin/live: figures from the pulls, the upstream with its pull limit left, the charts', async () => {
    const live = (await (await admin('/admin/live')).json()) as any;
    expect(live.figures.misses).toBeGreaterThan(0);
    expect(live.figures.hits).toBeGreaterThan(0);
    expect(live.figures.hitRatio).toBeCloseTo(live.figures.hits / (live.figures.hits + live.figures.misses));
    expect(live.figures.cacheBytes).toBe((await m.admin.summary()).bytes);
    expect(live.figures.limitBytes).toBe(50_000_000);
    expect(live.figures.bytesSaved).toBeGreaterThan(small.layers[0]!.size);
    expect(live.figures.bytesSaved).toBe(await m.metric('mirror_served_bytes_total', { source: 'cache' }));
    // The fake hub charged one pull per manifest GET it answered; the mirror reports what the hub said is left.
    const gets = hub.count({ kind: 'manifest', method: 'GET', status: 200 });
    expect(gets).toBeGreaterThan(0);
    expect(live.upstreams).toEqual([
      { name: 'docker.io', url: hub.url, health: 'up', availability: 'online', rateLimitRemaining: 100 - gets, rateLimitLimit: 100 },
    ]);
    expect(live.charts.bytesSaved.d).toMatch(/^M/);
    expect(live.downloads).toEqual([]);
    expect(((await (await admin('/admin/upstreams')).json()) as any)[0].rateLimitRemaining).toBe(100 - gets);
  });

  it('GET /admin/live/events: server-sent events carrying the same snapshot', async () => {
    const r = await admin('/admin/live/events');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const ev = await firstEvent(r);
    expect(ev.event).toBe('live');
    const live = JSON.parse(ev.data);
    expect(live.figures.cacheBytes).toBe((await m.admin.summary()).bytes);
    expect(live.upstreams[0].name).toBe('docker.io');
  });

  it('GET /admin/downloads shows a throttled download with its bytes growing, and drops it once stored', async () => {
    hub.faults.trickle = { bytesPerTick: 32 * 1024, tickMs: 25 };
    try {
      const layer = slow.layers[0]!;
      const m1 = await m.request('/v2/slow/manifests/latest', { headers: { accept: DOCKER_ACCEPT } });
      await m1.arrayBuffer();
      const res = await m.request(`/v2/slow/blobs/${layer.digest}`);
      const reading = res.arrayBuffer();
      const seen = await waitFor(async () => {
        const dls = (await (await admin('/admin/downloads')).json()) as Array<{ digest: string; received: number; size: number; origin: string }>;
        const d = dls.find((x) => x.digest === layer.digest);
        return d && d.received > 0 && d.received < layer.size ? d : undefined;
      }, 10_000, 'the download under way');
      expect(seen.size).toBe(layer.size);
      expect(seen.origin).toBe('docker.io/library/slow');
      const later = await waitFor(async () => {
        const d = ((await (await admin('/admin/downloads')).json()) as Array<{ digest: string; received: number }>).find((x) => x.digest === layer.digest);
        return d && d.received > seen.received ? d : undefined;
      }, 10_000, 'more bytes received');
      expect(later.received).toBeGreaterThan(seen.received);
      expect(digestOf(Buffer.from(await reading))).toBe(layer.digest);
      await waitFor(async () => ((await (await admin('/admin/downloads')).json()) as unknown[]).length === 0, 10_000, 'the download to leave the list');
    } finally {
      delete hub.faults.trickle;
    }
  });

  it('GET /admin/prefetch lists the jobs with their progress, newest first', async () => {
    const start = await admin('/admin/prefetch', { method: 'POST', body: JSON.stringify({ images: ['small:latest'] }) });
    expect(start.status).toBe(202);
    const { id } = (await start.json()) as { id: string };
    const job = await waitFor(async () => {
      const jobs = (await (await admin('/admin/prefetch')).json()) as Array<{ id: string; state: string }>;
      return jobs.find((j) => j.id === id && j.state === 'done');
    }, 10_000, 'the prefetch job done');
    expect(job).toMatchObject({ id, state: 'done', images: [{ image: 'small:latest', state: 'done' }] });
    const live = (await (await admin('/admin/live')).json()) as any;
    expect(live.prefetch[0].id).toBe(id);
  });

  it('GET /admin/history: the samples behind the charts', async () => {
    const h = (await (await admin('/admin/history')).json()) as { intervalMs: number; samples: Array<Record<string, number>> };
    expect(h.intervalMs).toBe(10_000);
    expect(h.samples.length).toBeGreaterThanOrEqual(1);
    expect(Object.keys(h.samples[0]!).sort()).toEqual(['bytesSaved', 'cacheBytes', 'hits', 'misses', 't']);
  });

  it('refuses changes from another origin (a browser holding the admin credentials), and takes them from its own', async () => {
    const purge = (headers: Record<string, string>) =>
      admin('/admin/purge', { method: 'POST', headers: { host: 'mirror.internal:5001', ...headers }, body: JSON.stringify({ repository: 'docker.io/library/small' }) });
    const before = (await m.admin.images()).length;
    const evil = await purge({ origin: 'http://evil.example', 'content-type': 'text/plain' });
    expect(evil.status).toBe(403);
    expect((await purge({ 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await purge({ origin: 'null' })).status).toBe(403);
    expect((await m.admin.images()).length).toBe(before);
    const pin = await admin('/admin/pins', { method: 'POST', headers: { host: 'mirror.internal:5001', origin: 'http://mirror.internal:5001', 'sec-fetch-site': 'same-origin' }, body: JSON.stringify({ pattern: 'docker.io/library/small' }) });
    expect(pin.status).toBe(200);
    expect(await m.admin.pins()).toContain('docker.io/library/small');
    await m.admin.unpin('docker.io/library/small');
  });

  it('without auth, answers only requests naming it by an address, localhost or a listed name: a page rebinding its own name to the listener gets nothing', async () => {
    // What a browser sends after evil.example was made to resolve to 127.0.0.1: its name as Host and Origin.
    const before = (await m.admin.images()).length;
    const rebound = await admin('http://evil.example:5001/admin/purge', { method: 'POST', headers: { origin: 'http://evil.example:5001', 'sec-fetch-site': 'same-origin' }, body: JSON.stringify({ all: true }) });
    expect(rebound.status).toBe(421);
    expect((await admin('http://evil.example:5001/admin/images')).status).toBe(421);
    expect((await admin('http://evil.example:5001/ui')).status).toBe(421);
    expect((await m.admin.images()).length).toBe(before);
    for (const host of ['127.0.0.1:5001', '[::1]:5001', 'localhost:5001', 'mirror.localhost', hostname()]) expect((await admin(`http://${host}/admin/cache`)).status, host).toBe(200);
    // A name the operator lists (admin.hosts) is taken too.
    const listed = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true, raw: { admin: { hosts: ['Mirror.Internal'], listen: 'mgmt.internal:5001' } } });
    try {
      expect((await listed.adminApp.request('http://mirror.internal:5001/admin/cache')).status).toBe(200);
      // The name admin.listen binds to (regmirror cache builds its URL from it).
      expect((await listed.adminApp.request('http://mgmt.internal:5001/admin/cache')).status).toBe(200);
      expect((await listed.adminApp.request('http://other.internal:5001/admin/cache')).status).toBe(421);
    } finally {
      await listed.stop();
    }
  });
});

describe('the console behind the admin authentication', () => {
  let m: TestMirror;
  beforeAll(async () => {
    const files = await authFiles();
    m = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, raw: authRaw(files) });
  });
  afterAll(() => m.stop());

  it('answers 401 with a Basic challenge without admin credentials, 403 for a non-admin, the page for an admin', async () => {
    for (const path of ['/ui', '/ui/console.js', '/ui/fragments/cache', '/admin/live', '/admin/live/events', '/admin/downloads', '/admin/history']) {
      const r = await m.adminApp.request(path);
      expect(r.status, path).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Basic realm="regmirror-admin"');
      expect(await r.text()).not.toContain('regmirror console');
    }
    expect((await m.adminApp.request('/ui', { headers: { authorization: basic('bob', PASSWORDS.bob) } })).status).toBe(403);
    const ok = await m.adminApp.request('/ui', { headers: { authorization: basic('alice', PASSWORDS.alice) } });
    expect(ok.status).toBe(200);
    const page = await ok.text();
    expect(page).toContain('regmirror <span class="muted">console</span>');
    // The page carries no credentials of any kind.
    expect(page).not.toContain(PASSWORDS.alice);
    expect(page).not.toMatch(/authorization|password/i);
  });
});

describe('hostile names in the console', () => {
  const evil = {
    repo: 'x/<script>alert(1)</script>',
    tag: '"><img src=x onerror=alert(2)>',
    platform: "linux/amd64' onmouseover='alert(3)",
    digest: 'sha256:<b>0123456789abcdef',
    url: 'http://up.example/"><svg onload=alert(4)>',
  };
  const image: ImageInfo = {
    ref: `evil.example/${evil.repo}@${evil.digest}`,
    upstream: 'evil.example',
    repo: evil.repo,
    digest: evil.digest,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    tags: [evil.tag],
    platforms: [evil.platform],
    bytes: 1234,
    blobs: 2,
    lastUsed: 1_000,
    pinned: true,
  };
  const adminStub = {
    summary: async () => ({ bytes: 1234, blobs: 2, images: 1, repositories: 1, limitBytes: undefined, freeBytes: 10, minFreeBytes: 1, hitRatio: undefined, bytesSaved: 0, oldestUse: 1_000, pins: [`evil.example/${evil.repo}`] }),
    repositories: async () => [{ name: `evil.example/${evil.repo}`, upstream: 'evil.example', repo: evil.repo, bytes: 1234, images: 1, tags: [evil.tag], lastUsed: 1_000, pinned: true }],
    images: async () => [image],
  } as unknown as CacheAdmin;
  const deps: ConsoleDeps = {
    admin: adminStub,
    figures: async () => ({ cacheBytes: 1234, blobs: 2, limitBytes: undefined, hits: 0, misses: 0, bytesSaved: 0 }),
    downloads: () => [{ digest: evil.digest, origin: `evil.example/${evil.repo}`, received: 5, size: 10 }],
    prefetch: () => [{ id: '<i>job</i>', state: 'failed', platforms: 'all', startedAt: 1, images: [{ image: evil.tag, state: 'failed', totalBytes: 0, bytes: 0, blobs: 0, fetched: 0, error: '<u>boom</u>' }], totalBytes: 0, bytes: 0 }],
    upstreams: async () => [{ name: '<em>up</em>', url: evil.url, health: 'up', availability: 'online', retryAfter: undefined, rateLimitRemaining: undefined, rateLimitLimit: undefined }],
    history: new FiguresHistory({ read: async () => ({ hits: 0, misses: 0, bytesSaved: 0, cacheBytes: 0 }), now: () => 2_000, capacity: 10, intervalMs: 10_000 }),
    now: () => 2_000,
    version: '<v>',
    clientScript: async () => undefined,
    liveIntervalMs: 1000,
  };
  const app = new Hono();
  mountConsole(app, deps, (name) => ({ upstream: name.slice(0, name.indexOf('/')), repo: name.slice(name.indexOf('/') + 1) }));

  it('escapes repository names, tags, digests, platforms, URLs and messages in the page and the fragment', async () => {
    for (const path of ['/ui', '/ui/fragments/cache']) {
      const body = await (await app.request(path)).text();
      expect(body).not.toContain('<script>alert');
      expect(body).not.toContain('<img src=x');
      expect(body).not.toContain("' onmouseover='");
      expect(body).not.toContain('<svg onload');
      expect(body).not.toContain('<b>0123');
      expect(body).not.toMatch(/<(em|u|i|v)>/);
      expect(body).toContain('x/&lt;script&gt;alert(1)&lt;/script&gt;');
      expect(body).toContain('&quot;&gt;&lt;img src=x onerror=alert(2)&gt;');
      expect(body).toContain('linux/amd64&#39; onmouseover=&#39;alert(3)');
      // The names reach the client's buttons intact (as escaped attribute values).
      expect(body).toContain(`data-repository="evil.example/x/&lt;script&gt;alert(1)&lt;/script&gt;"`);
      expect(body).toContain(`href="/ui?repository=${encodeURIComponent(`evil.example/${evil.repo}`)}#images"`);
    }
    const page = await (await app.request('/ui')).text();
    expect(page).toContain('&lt;u&gt;boom&lt;/u&gt;');
    expect(page).toContain('http://up.example/&quot;&gt;&lt;svg onload=alert(4)&gt;');
  });

  it('says when the client was not built instead of serving nothing', async () => {
    const r = await app.request('/ui/console.js');
    expect(r.status).toBe(404);
    expect(await r.text()).toContain('npm run build');
  });
});

describe('the history behind the charts', () => {
  it('keeps the last `capacity` samples on the injected clock, oldest first, and skips failed reads', async () => {
    const clock = { now: 0 };
    let f: Figures = { hits: 0, misses: 0, bytesSaved: 0, cacheBytes: 0 };
    let fail = false;
    const h = new FiguresHistory({ read: async () => { if (fail) throw new Error('no'); return { ...f }; }, now: () => clock.now, capacity: 3, intervalMs: 10_000 });
    for (let i = 1; i <= 5; i++) {
      clock.now = i * 10_000;
      f = { hits: i, misses: 0, bytesSaved: i * 100, cacheBytes: i };
      await h.sample();
    }
    expect(h.samples().map((s) => s.t)).toEqual([30_000, 40_000, 50_000]);
    expect(h.samples()[2]).toEqual({ t: 50_000, hits: 5, misses: 0, bytesSaved: 500, cacheBytes: 5 });
    fail = true;
    clock.now = 60_000;
    await h.sample();
    expect(h.samples().map((s) => s.t)).toEqual([30_000, 40_000, 50_000]);
    expect(() => new FiguresHistory({ read: async () => f, now: () => 0, capacity: 1, intervalMs: 1 })).toThrow(/capacity/);
  });

  it('draws the hit ratio per interval (gaps where nothing was asked), bytes saved cumulative, cache use against the cap', () => {
    const s = (t: number, hits: number, misses: number, bytesSaved: number, cacheBytes: number) => ({ t, hits, misses, bytesSaved, cacheBytes });
    const c = charts([s(0, 0, 0, 0, 0), s(10, 1, 1, 100, 50), s(20, 1, 1, 100, 50), s(30, 5, 1, 300, 100)], 200);
    // Interval 1: 1 of 2 hits (y at half height), interval 2: nothing asked (a gap), interval 3: 4 of 4.
    expect(c.hitRatio.d).toBe(`M100 30M${CHART_W} 1`);
    expect(c.hitRatio.last).toBe(1);
    expect(c.bytesSaved.max).toBe(300);
    expect(c.bytesSaved.d).toBe(`M0 59L100 39.7L200 39.7L${CHART_W} 1`);
    expect(c.cacheBytes.max).toBe(200);
    expect(charts([], undefined).hitRatio.d).toBe('');
    expect(charts([s(5, 0, 0, 7, 7)], undefined).bytesSaved.d).toBe(`M0 1H${CHART_W}`);
    // Thousands of samples: at most 120 points drawn.
    const many = Array.from({ length: 8640 }, (_, i) => s(i * 10_000, i, i, i, i));
    expect(charts(many, undefined).bytesSaved.d.split(/[ML]/).length - 1).toBeLessThanOrEqual(120);
  });
});
