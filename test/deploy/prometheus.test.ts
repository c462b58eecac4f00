/**
 * The Grafana dashboard and the alert rules against a real Prometheus holding a real mirror's series.
 *
 * Debian's `prometheus` scrapes a spawned mirror (`node dist/main.js`) every second and evaluates
 * deploy/prometheus/alerts.yml every second. The mirror pulls from the fake Docker Hub (docker.io,
 * with a pull limit) and has a second upstream, quay.io, that refuses connections.
 *
 * The pulls run in two rounds of the same shape (a miss, hits by digest, a stale serve while docker.io
 * answers 503, an error from quay.io): the first makes every series exist, the second is measured.
 * Every dashboard query is evaluated at a scrape after the second round, with $__range and
 * $__rate_interval set to the span from the last scrape before the round (plus 1 ms): increase()
 * then sees exactly the round's events (no extrapolation: samples sit at both ends), and
 * rate() x span equals them. So the figures are compared exactly with what the test did.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer, MT, type Image } from '../helpers/images.js';
import { ROOT, spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { hasTool } from '../e2e/harness/tools.js';
import { startPrometheus, type Prometheus, type Sample } from './prometheus-server.js';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const SKIP = hasTool('prometheus') ? undefined : 'prometheus not installed (apt-get install prometheus)';
if (SKIP) console.warn(`[deploy] skipping the Prometheus test: ${SKIP}`);

// Parsed dashboard JSON and API answers are untyped trees.
type J = any;

const DASHBOARD = join(ROOT, 'deploy/grafana/dashboards/regmirror.json');
const ALERTS = join(ROOT, 'deploy/prometheus/alerts.yml');
const MAX_BYTES = 1024 ** 3;
const ACCEPT = `${MT.ociManifest}, ${MT.ociIndex}, ${MT.dockerManifest}, ${MT.dockerList}`;

interface Target {
  panel: string;
  legend: string;
  expr: string;
}
function dashboardTargets(): Target[] {
  const out: Target[] = [];
  const walk = (panels: J[]) => {
    for (const p of panels) {
      if (p.panels) walk(p.panels);
      for (const t of p.targets ?? []) out.push({ panel: p.title, legend: t.legendFormat ?? '', expr: t.expr });
    }
  };
  walk(JSON.parse(readFileSync(DASHBOARD, 'utf8')).panels);
  return out;
}

const sumBytes = (img: Image) => [img.config, ...img.layers].reduce((n, b) => n + b.size, 0);

describe.skipIf(SKIP !== undefined)('the dashboard and the alerts on a real Prometheus scraping a real mirror', () => {
  let hub: FakeUpstream;
  let mirror: SpawnedMirror;
  let prom: Prometheus;
  let instance = '';
  const a = makeImage({ layers: [makeRandomLayer(40_000, 'prom-a1'), makeLayer([{ path: 'a.txt', content: 'image a\n' }])] });
  const b = makeImage({ layers: [makeRandomLayer(25_000, 'prom-b1')] });
  let T = 0; // evaluation time: a scrape after the measured round
  let span = ''; // from the scrape before the measured round to T, e.g. "9001ms"
  let round2Requests: typeof hub.requests = [];
  let started = 0;

  const get = async (path: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${mirror.url}${path}`, { headers });
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body };
  };
  const manifest = async (repo: string, ref: string, query = '') => get(`/v2/${repo}/manifests/${ref}${query}`, { accept: ACCEPT });
  const blobs = async (repo: string, img: Image) => {
    for (const blob of [img.config, ...img.layers]) {
      const r = await get(`/v2/${repo}/blobs/${blob.digest}`);
      expect(r.status).toBe(200);
      expect(r.body.equals(blob.bytes)).toBe(true);
    }
  };
  /** The timestamp (s) of the newest scrape of the mirror Prometheus has stored. */
  const lastScrape = async () => (await prom.query('timestamp(up{job="regmirror"})'))[0]?.value ?? 0;
  /** Waits for a scrape that started after now, and returns its timestamp. */
  const nextScrape = async () => {
    const after = Date.now() / 1000;
    return waitFor(async () => {
      const t = await lastScrape();
      return t > after ? t : 0;
    }, 10_000, 'a Prometheus scrape of the mirror');
  };

  /** Blobs (manifests included) the cache holds once `img` is in (A is pulled first, then B). */
  const cachedBlobs = (img: Image) => (img === a ? 2 + a.layers.length : 4 + a.layers.length + b.layers.length);

  /** One round: a miss, hits by digest, a stale serve (docker.io answering 503), a quay.io error. */
  const round = async (img: Image, repo: string, cachedBefore: Image | undefined) => {
    const miss = await manifest(`library/${repo}`, '1');
    expect(miss.status).toBe(200);
    const pulledAt = Date.now();
    await blobs(`library/${repo}`, img);
    // A client's response ends before the blob is committed (write-behind): until then a second GET
    // joins the download (a miss). Wait for the commits, so the pulls below are the cache hits they mean to be.
    await waitFor(async () => (await mirror.metric('mirror_inflight_downloads')) === 0 && (await mirror.metric('mirror_cache_blobs')) >= cachedBlobs(img), 10_000, 'the downloads committed');
    expect((await manifest(`library/${repo}`, img.manifest.digest)).status).toBe(200);
    await blobs(`library/${repo}`, img);
    if (cachedBefore) await blobs(`library/${cachedBefore === a ? 'a' : 'b'}`, cachedBefore);
    // Past the tag's TTL (1 s) with docker.io down: the cached manifest, marked stale.
    await waitFor(() => Date.now() - pulledAt > 1200, 5000, 'the tag TTL to pass');
    hub.faults.down = true;
    const stale = await manifest(`library/${repo}`, '1');
    hub.faults.down = false;
    expect(stale.status).toBe(200);
    expect(stale.headers.get('x-mirror-cache')).toBe('stale');
    expect(stale.body.equals(img.manifest.bytes)).toBe(true);
    // quay.io refuses connections: nothing cached, so the client gets a 5xx.
    const failed = await manifest('x/y', '1', '?ns=quay.io');
    expect(failed.status).toBeGreaterThanOrEqual(500);
  };

  beforeAll(async () => {
    started = Date.now() / 1000;
    hub = await FakeUpstream.start({ auth: 'none', cdn: false, rateLimit: { limit: 100, remaining: 11 } });
    hub.putImage('library/a', a, '1');
    hub.putImage('library/b', b, '1');
    mirror = await spawnMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true, tagTtl: 1 }, 'quay.io': { url: 'http://127.0.0.1:1' } },
      // Assumed-offline probing off: no background requests between the rounds.
      extraConfig: { cache: { maxBytes: MAX_BYTES }, upstreamHealth: { offlineMinMs: 0 } },
    });
    instance = new URL(mirror.url).host;
    prom = await startPrometheus({ jobs: { regmirror: [instance] }, ruleFiles: [ALERTS], interval: '1s' });
    // Two scrapes of the idle mirror first: every pre-created series starts at 0 in Prometheus.
    await waitFor(async () => (await prom.query('count_over_time(up{job="regmirror"}[1h]) >= 2 and up == 1')).length === 1, 20_000, 'two scrapes of the mirror');

    await round(a, 'a', undefined);
    const before = await nextScrape();
    const mark = hub.requests.length;
    await round(b, 'b', a);
    round2Requests = hub.requests.slice(mark);
    T = await nextScrape();
    span = `${Math.round((T - before) * 1000) + 1}ms`;
  }, 120_000);

  afterAll(async () => {
    await prom?.stop();
    await mirror?.stop();
    await hub?.close();
  });

  /** Grafana's variables, as a user who picked this job, instance and upstream sees them. */
  const substitute = (expr: string) =>
    expr.replace(/\$\{?(\w+)\}?/g, (whole, v: string) => {
      const value = ({ job: 'regmirror', instance, upstream: 'docker.io', __rate_interval: span, __range: span, __interval: '1s' } as Record<string, string>)[v];
      if (value === undefined) throw new Error(`unknown Grafana variable ${whole} in ${expr}`);
      return value;
    });
  const spanSeconds = () => Number(span.slice(0, -2)) / 1000;

  it('the dashboard variables list the job, the instance and both upstreams', async () => {
    const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
    const values: Record<string, string[]> = {};
    for (const v of dash.templating.list as J[]) {
      if (v.type !== 'query') continue;
      const m = /^label_values\((.*),\s*(\w+)\)$/.exec(String(v.query?.query ?? v.query));
      expect(m, v.name).not.toBeNull();
      const data = await prom.api<string[]>(`label/${m![2]}/values?${new URLSearchParams({ 'match[]': substitute(m![1]!.trim()) })}`);
      values[v.name] = data;
    }
    expect(values).toEqual({ job: ['regmirror'], instance: [instance], upstream: ['docker.io', 'quay.io'] });
  });

  it('every dashboard query returns series, and the figures are what the test did', async () => {
    const sz = (i: Image) => i.manifest.size;
    // The measured round, as the test did it (docker.io).
    const manifests = { miss: 1, hit: 1, stale: 1, revalidated: 0 };
    // B's blobs missed, then hit; A's (cached in the first round) hit.
    const blobCount = { miss: 1 + b.layers.length, hit: 1 + b.layers.length + 1 + a.layers.length };
    const fromCache = 2 * sz(b) + sumBytes(b) + sumBytes(a);
    const fromUpstream = sz(b) + sumBytes(b);
    const cacheSize = sz(a) + sumBytes(a) + sz(b) + sumBytes(b);
    const cacheBlobs = 2 + 2 + a.layers.length + b.layers.length;
    // What the fake Docker Hub saw in that round, by status.
    const hubByStatus = new Map<string, number>();
    for (const r of round2Requests) hubByStatus.set(String(r.status), (hubByStatus.get(String(r.status)) ?? 0) + 1);
    expect(Object.fromEntries(hubByStatus)).toEqual({ '200': 1 + 1 + b.layers.length, '503': 1 });

    const s = spanSeconds();
    const one = (rows: Sample[]) => {
      expect(rows).toHaveLength(1);
      return rows[0]!.value;
    };
    const by = (rows: Sample[], ...labels: string[]) => Object.fromEntries(rows.map((r) => [labels.map((l) => r.metric[l]).join(' '), r.value]));
    // The span's extra millisecond (so Prometheus 3's left-open ranges still hold the first sample)
    // stretches increase() by 1 ms / span: well under 0.2 %. Everything else is exact.
    const close = (got: number, want: number, what: string) => expect(Math.abs(got - want), `${what}: ${got}, want ${want}`).toBeLessThanOrEqual(want === 0 ? 1e-9 : 2e-3 * Math.abs(want));
    const checks: Record<string, (rows: Sample[]) => void> = {
      'Manifest hit ratio|__auto': (r) => close(one(r), 2 / 3, 'manifest hit ratio'),
      'Blob hit ratio|__auto': (r) => close(one(r), blobCount.hit / (blobCount.hit + blobCount.miss), 'blob hit ratio'),
      'Bytes served from cache|__auto': (r) => close(one(r), fromCache, 'bytes from cache'),
      'Docker Hub pulls left|__auto': (r) => expect(one(r)).toBe(hub.rateLimit!.remaining),
      'Request rate by route and status|{{route}} {{status}}': (r) => {
        const got = by(r, 'route', 'status');
        close(got['manifest 200']! * s, 3, 'manifest 200s');
        close(got['blob 200']! * s, 2 * (1 + b.layers.length) + 1 + a.layers.length, 'blob 200s');
        const failed = Object.entries(got).filter(([k]) => /^manifest 5\d\d$/.test(k));
        expect(failed).toHaveLength(1);
        close(failed[0]![1] * s, 1, 'manifest 5xx');
        // Prometheus's own scrapes (about one a second; a busy machine may skip a tick).
        expect(got['metrics 200']).toBeGreaterThan(0);
      },
      'Cache hit ratio (manifest and blob)|{{kind}}': (r) => {
        const got = by(r, 'kind');
        close(got.manifest!, 2 / 3, 'manifest');
        close(got.blob!, blobCount.hit / (blobCount.hit + blobCount.miss), 'blob');
      },
      'Bytes saved: served from cache vs fetched upstream|served from {{source}}': (r) => {
        const got = by(r, 'source');
        close(got.cache! * s, fromCache, 'served from cache');
        close(got.upstream! * s, fromUpstream, 'served from upstream');
      },
      'Bytes saved: served from cache vs fetched upstream|fetched upstream': (r) => close(one(r) * s, fromUpstream, 'fetched upstream'),
      'Cache results by kind|{{kind}} {{result}}': (r) => {
        const got = by(r, 'kind', 'result');
        for (const [k, n] of Object.entries(manifests)) close(got[`manifest ${k}`]! * s, n, `manifest ${k}`);
        close(got['blob miss']! * s, blobCount.miss, 'blob miss');
        close(got['blob hit']! * s, blobCount.hit, 'blob hit');
      },
      'Cache size|bytes': (r) => expect(one(r)).toBe(cacheSize),
      'Cache size|blobs': (r) => expect(one(r)).toBe(cacheBlobs),
      'Cache bytes vs limit|cache bytes': (r) => expect(one(r)).toBe(cacheSize),
      'Cache bytes vs limit|limit (cache.maxBytes)': (r) => expect(one(r)).toBe(MAX_BYTES),
      'Cache bytes vs limit|used of limit': (r) => close(one(r), cacheSize / MAX_BYTES, 'used of limit'),
      'Evictions by reason|bytes/s {{reason}}': (r) => expect(by(r, 'reason')).toEqual({ size: 0, free_disk: 0, purge: 0 }),
      'Evictions by reason|blobs/s {{reason}}': (r) => expect(by(r, 'reason')).toEqual({ size: 0, free_disk: 0, purge: 0 }),
      'Oldest cache entry age|oldest entry': (r) => {
        expect(one(r)).toBeGreaterThan(0);
        expect(one(r)).toBeLessThan(T - started);
      },
      'Refetched after eviction|refetched, last hour': (r) => expect(one(r)).toBe(0),
      'Refetched after eviction|evicted blobs, last hour': (r) => expect(one(r)).toBe(0),
      'Upstream errors by class|{{upstream}} {{class}}': (r) => {
        const got = by(r, 'upstream', 'class');
        for (const [k, v] of Object.entries(got)) close(v * s, k === 'docker.io 5xx' ? 1 : 0, k);
      },
      'Upstream requests by status|{{upstream}} {{status}}': (r) => {
        const got = by(r, 'status');
        expect(Object.keys(got).sort()).toEqual([...hubByStatus.keys()].sort());
        for (const [status, n] of hubByStatus) close(got[status]! * s, n, `upstream status ${status}`);
      },
      'Docker Hub rate limit remaining|remaining {{upstream}}': (r) => expect(by(r, 'upstream')).toEqual({ 'docker.io': hub.rateLimit!.remaining }),
      'Docker Hub rate limit remaining|limit {{upstream}}': (r) => expect(by(r, 'upstream')).toEqual({ 'docker.io': 100 }),
      'In-flight downloads and coalesced requests|in flight': (r) => expect(one(r)).toBe(0),
      'In-flight downloads and coalesced requests|coalesced /s': (r) => expect(one(r)).toBe(0),
      'In-flight downloads and coalesced requests|resumed /s': (r) => expect(one(r)).toBe(0),
      'Blob downloads and store full|{{result}}': (r) => {
        const got = by(r, 'result');
        close(got.ok! * s, blobCount.miss, 'downloads ok');
        expect([got.failed, got.digest_mismatch]).toEqual([0, 0]);
      },
      'Blob downloads and store full|store full': (r) => expect(one(r)).toBe(0),
    };
    const positive = (r: Sample[]) => {
      expect(r.length).toBeGreaterThan(0);
      for (const x of r) expect(x.value).toBeGreaterThan(0);
    };
    const finite = (r: Sample[]) => {
      expect(r.length).toBeGreaterThan(0);
      for (const x of r) expect(Number.isFinite(x.value), JSON.stringify(x)).toBe(true);
    };
    for (const k of ['Response time p50 / p99 by route|p50 {{route}}', 'Response time p50 / p99 by route|p99 {{route}}']) {
      checks[k] = (r) => {
        finite(r.filter((x) => ['manifest', 'blob'].includes(x.metric.route!)));
        expect(r.map((x) => x.metric.route)).toEqual(expect.arrayContaining(['manifest', 'blob', 'metrics']));
      };
    }
    for (const k of ['Upstream latency p50 / p99|p50 {{upstream}}', 'Upstream latency p50 / p99|p99 {{upstream}}'])
      checks[k] = (r) => {
        expect(r.map((x) => x.metric.upstream)).toEqual(['docker.io']);
        finite(r);
      };
    for (const k of ['Process memory|rss {{instance}}', 'Process memory|heap used {{instance}}', 'Process CPU and event loop lag|cpu {{instance}}', 'Process CPU and event loop lag|event loop p99 {{instance}}'])
      checks[k] = (r) => {
        positive(r);
        expect(r.map((x) => x.metric.instance)).toEqual([instance]);
      };

    const targets = dashboardTargets();
    const seen = new Set<string>();
    for (const t of targets) {
      const key = `${t.panel}|${t.legend}`;
      const rows = await prom.query(substitute(t.expr), T);
      expect(rows.length, `${key}: ${t.expr} returned no series`).toBeGreaterThan(0);
      const check = checks[key];
      expect(check, `no figure check for dashboard target ${key}`).toBeDefined();
      try {
        check!(rows);
      } catch (e) {
        throw new Error(`${key}\n${substitute(t.expr)}\n= ${JSON.stringify(rows)}\n${(e as Error).message}`);
      }
      seen.add(key);
    }
    // Every check belongs to a target the dashboard has (none is left over from a removed panel).
    expect(Object.keys(checks).filter((k) => !seen.has(k))).toEqual([]);
  });

  it('every alert rule evaluates without error, and the provoked ones are pending or firing', async () => {
    const rules = parse(readFileSync(ALERTS, 'utf8')).groups.flatMap((g: J) => g.rules) as J[];
    // Each expression as a query at T: valid, no evaluation error.
    for (const r of rules) await prom.query(r.expr, T);
    // And as Prometheus evaluates them every second: all loaded, each evaluated, none in error.
    const loaded = await waitFor(async () => {
      const groups = (await prom.api<{ groups: J[] }>('rules?type=alert')).groups;
      const all = groups.flatMap((g) => g.rules as J[]);
      return all.length === rules.length && all.every((x) => x.lastEvaluation && !x.lastEvaluation.startsWith('0001')) ? all : undefined;
    }, 10_000, 'every alert rule evaluated once');
    for (const r of loaded) expect({ alert: r.name, health: r.health, error: r.lastError ?? '' }).toEqual({ alert: r.name, health: 'ok', error: '' });

    const active = async () => (await prom.api<{ alerts: J[] }>('alerts')).alerts.map((x) => `${x.labels.alertname} ${x.labels.upstream ?? ''} ${x.state}`);
    // quay.io never answered: upstream down (for: 1m, so pending first). docker.io answered: not down.
    // docker.io's pull limit is at 9 (< 10) while it is in use.
    const got = await waitFor(async () => {
      const a = await active();
      return a.some((x) => /^MirrorUpstreamDown quay\.io (pending|firing)$/.test(x)) && a.some((x) => /^MirrorUpstreamRateLimitNearlyExhausted docker\.io (pending|firing)$/.test(x)) ? a : undefined;
    }, 10_000, 'MirrorUpstreamDown (quay.io) and MirrorUpstreamRateLimitNearlyExhausted (docker.io) active');
    expect(got.filter((x) => x.startsWith('MirrorUpstreamDown docker.io'))).toEqual([]);
    expect(hub.rateLimit!.remaining).toBe(9);
  });
});
