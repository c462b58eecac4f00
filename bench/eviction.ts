/**
 * Workload 8: the bounded cache at scale. A data directory holding 100k small blobs (10k images of a
 * manifest, a config and 8 layers, in 2k repositories of 5 tags), written straight in the layout of
 * src/storage/paths.ts (blobs) and through FsMetaStore (tag records, links, manifest records, the
 * use figures). Measured on it:
 *
 * - start-up: spawn until `/v2/` answers, until the cache size is known (the scan of every blob:
 *   `mirror_cache_blobs` reaches the count), until the start-up GC has gone through every record
 *   (its log line); RSS then and the peak; beside the same on an empty data directory;
 * - one eviction pass (`POST /admin/evict`, cap at 3/4 of the cache) with nothing else to do:
 *   bytes/s, images/s, blobs/s;
 * - after a restart with the cap at 3/5, manifest-by-tag latency at a steady 1000 req/s (an open
 *   loop in this process, undici, 16 keep-alive connections): p50/p99 over the requests due while a
 *   second pass ran, beside the same over 5 s without one; that pass's throughput beside the first's.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { FsMetaStore } from '../src/storage/fs-meta-store.js';
import { StorePaths } from '../src/storage/paths.js';
import { cleanupDir, freePort, makeTempDir, waitFor } from '../test/e2e/harness/tools.js';
import { ACCEPT } from './measure.js';
import { peakRss, startMirror, type MirrorServer } from './servers.js';

const MiB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const UPSTREAM = 'docker.io';

export interface EvictionData {
  dataDir: string;
  images: number;
  blobs: number;
  bytes: number;
  /** A tag of the most recently used image (kept by eviction): what the latency clients ask for. */
  hot: { repo: string; tag: string };
  seconds: number;
}

interface Blob {
  digest: string;
  bytes: Buffer;
  mediaType: string;
}

const blobOf = (bytes: Buffer, mediaType: string): Blob => ({ digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, bytes, mediaType });
const descriptor = (b: Blob) => ({ mediaType: b.mediaType, digest: b.digest, size: b.bytes.length });

/** Runs `fn` over `items` with at most `n` at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * Writes `images` images (each 1 manifest + 1 config + `layers` layers of 0.5–3.5 KiB random
 * bytes) as a mirror would have cached them: blobs, links, manifest records, one tag each, and use
 * figures making image i older than image i+1.
 */
export async function buildEvictionData(dataDir: string, images = 10_000, layers = 8): Promise<EvictionData> {
  const t0 = performance.now();
  const paths = new StorePaths(dataDir);
  const meta = new FsMetaStore(dataDir);
  for (let i = 0; i < 256; i++) mkdirSync(join(paths.blobsDir, 'sha256', i.toString(16).padStart(2, '0')), { recursive: true });
  mkdirSync(paths.tmpDir, { recursive: true });
  const now = Date.now();
  const usage: Record<string, number> = {};
  let blobs = 0;
  let bytes = 0;
  const repoOf = (i: number) => `bench/ev${String(Math.floor(i / 5)).padStart(4, '0')}`;
  const tagOf = (i: number) => `t${i % 5}`;
  await pool(
    Array.from({ length: images }, (_, i) => i),
    64,
    async (i) => {
      const ls = Array.from({ length: layers }, (_, j) => blobOf(randomBytes(512 + ((i * 7 + j * 13) % 7) * 512), OCI_LAYER));
      const config = blobOf(
        Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: ls.map((l) => `sha256:${createHash('sha256').update(l.digest).digest('hex')}`) } })),
        OCI_CONFIG,
      );
      const manifest = blobOf(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: ls.map(descriptor) })), OCI_MANIFEST);
      const all = [manifest, config, ...ls];
      const ref = { upstream: UPSTREAM, repo: repoOf(i) };
      await Promise.all([
        ...all.map((b) => writeFile(paths.blob(b.digest), b.bytes)),
        meta.addLinks(ref, all.map((b) => b.digest)),
        meta.addManifests(ref, [{ digest: manifest.digest, mediaType: OCI_MANIFEST }]),
        meta.putTag(ref, tagOf(i), { version: 2, variants: [{ digest: manifest.digest, mediaType: OCI_MANIFEST, size: manifest.bytes.length, fetchedAt: now }] }),
      ]);
      usage[`m ${UPSTREAM}/${ref.repo}@${manifest.digest}`] = now - (images - i) * 1000;
      blobs += all.length;
      bytes += all.reduce((n, b) => n + b.bytes.length, 0);
    },
  );
  await meta.putState('usage', { savedAt: now, entries: usage });
  await mkdir(paths.stateDir, { recursive: true });
  return { dataDir, images, blobs, bytes, hot: { repo: repoOf(images - 1), tag: tagOf(images - 1) }, seconds: (performance.now() - t0) / 1000 };
}

/** Current resident set (VmRSS) in bytes. */
function rss(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function metric(url: string, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

export interface StartupFigures {
  /** spawn → `/v2/` answers 200 */
  listening: number;
  /** spawn → `mirror_cache_blobs` equals the blobs on disk */
  sized: number;
  /** spawn → the start-up GC's log line */
  gcDone: number;
  rssMiB: number | undefined;
  peakMiB: number | undefined;
}

/** CPU seconds (user + system) the process has used. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

/** Waits until the process has used no CPU for `quietMs` (its start-up work is done). */
async function waitIdle(pid: number, quietMs = 1000, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = cpuSeconds(pid);
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} still busy after ${timeoutMs} ms`);
    await sleep(100);
    const now = cpuSeconds(pid);
    if (now > last + 0.011) {
      last = now;
      since = Date.now();
    }
  }
}

/**
 * Starts a mirror on `dir` (its `data/`) and times its start-up; the caller stops it. At log level
 * info the start-up GC's log line marks the end; otherwise (`quiet`) the process going idle does.
 */
async function timedStart(opts: { root: string; dir: string; blobs: number; config: Record<string, unknown>; label: string; quiet?: boolean }): Promise<{ mirror: MirrorServer; figures: StartupFigures }> {
  const t0 = performance.now();
  const mirror = await startMirror({ root: opts.root, upstreamUrl: 'http://127.0.0.1:9', label: opts.label, dir: opts.dir, config: opts.config, logLevel: opts.quiet ? 'warn' : 'info', readyTimeoutMs: 120_000 });
  const listening = (performance.now() - t0) / 1000;
  await waitFor(async () => (await metric(mirror.url, 'mirror_cache_blobs')) === opts.blobs, 300_000, `${opts.label}: the cache scan to count ${opts.blobs} blobs`, 20);
  const sized = (performance.now() - t0) / 1000;
  if (opts.quiet) await waitIdle(mirror.pid!);
  else await waitFor(() => mirror.logs().includes('"msg":"garbage collected"'), 300_000, `${opts.label}: the start-up GC`, 20);
  const gcDone = (performance.now() - t0) / 1000;
  const r = mirror.pid !== undefined ? rss(mirror.pid) : undefined;
  const p = mirror.pid !== undefined ? peakRss(mirror.pid) : undefined;
  return { mirror, figures: { listening, sized, gcDone, rssMiB: r === undefined ? undefined : r / MiB, peakMiB: p === undefined ? undefined : p / MiB } };
}

export interface LoadFigures {
  requests: number;
  errors: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * An open loop: GETs of `path` at `rate` a second over keep-alive connections until `until` settles.
 * Each request's time counts from when it was due (or sent, if sent before), so a stalled server
 * shows in the latencies instead of slowing the clients down (no coordinated omission).
 */
async function openLoop(url: string, path: string, rate: number, until: Promise<unknown>): Promise<Array<{ start: number; ms: number; ok: boolean }>> {
  const client = new Pool(url, { connections: 16, pipelining: 1 });
  const samples: Array<{ start: number; ms: number; ok: boolean }> = [];
  const pending = new Set<Promise<void>>();
  let stop = false;
  const halt = () => {
    stop = true;
  };
  until.then(halt, halt);
  const t0 = performance.now();
  for (let i = 0; !stop; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait);
    // A request sent up to 1 ms early (no sleep that short) counts from when it was sent: timing it
    // from `due` gave negative latencies on a fast machine (a p50 of -0.19 ms in one run).
    const from = Math.min(due, performance.now());
    const p = (async () => {
      let ok = false;
      try {
        const r = await client.request({ path, method: 'GET', headers: { accept: ACCEPT } });
        await r.body.dump();
        ok = r.statusCode === 200;
      } catch {
        ok = false;
      }
      samples.push({ start: due, ms: performance.now() - from, ok });
    })();
    pending.add(p);
    void p.finally(() => pending.delete(p));
  }
  await Promise.all(pending);
  await client.close();
  return samples;
}

function figures(samples: Array<{ start: number; ms: number; ok: boolean }>, from: number, to: number): LoadFigures {
  const inWindow = samples.filter((s) => s.start >= from && s.start <= to);
  const sorted = inWindow.map((s) => s.ms).sort((a, b) => a - b);
  return { requests: inWindow.length, errors: inWindow.filter((s) => !s.ok).length, rps: inWindow.length / ((to - from) / 1000), p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99) };
}

export interface PassFigures {
  seconds: number;
  images: number;
  blobs: number;
  bytes: number;
  /** Bytes in the cache after the pass, and the cap. */
  after: number;
  limit: number;
}

export interface EvictionFigures {
  data: EvictionData;
  empty: StartupFigures;
  full: StartupFigures;
  /** A pass with nothing else to do; then one beside the manifest clients. */
  alone: PassFigures;
  loaded: PassFigures;
  without: LoadFigures;
  during: LoadFigures;
  /** Manifest requests a second while measuring latency. */
  rate: number;
}

/** The whole workload; every process and directory is removed before it returns. */
export async function runEvictionWorkload(root: string, log: (s: string) => void, opts: { images?: number; baselineSeconds?: number } = {}): Promise<EvictionFigures> {
  const work = makeTempDir('rmb-evict');
  const rate = 1000;
  const running: MirrorServer[] = [];
  try {
    log(`workload 8: writing ${opts.images ?? 10_000} images (${(opts.images ?? 10_000) * 10} blobs) into ${work}/full/data`);
    const data = await buildEvictionData(join(work, 'full', 'data'), opts.images);
    log(`  ${data.blobs} blobs, ${(data.bytes / MiB).toFixed(1)} MiB in ${data.seconds.toFixed(1)} s`);
    const capped = (maxBytes: number, adminPort?: number) => ({
      cache: { tagTtl: 30 * 86400, maxBytes, evictionInterval: 86400 },
      ...(adminPort !== undefined ? { admin: { listen: `127.0.0.1:${adminPort}` } } : {}),
    });
    const adminPorts = [await freePort(), await freePort()] as const;
    let blobsLeft = data.blobs;
    /** One pass through the admin API, timed. */
    const evict = async (port: number) => {
      const t = performance.now();
      const r = await fetch(`http://127.0.0.1:${port}/admin/evict`, { method: 'POST' });
      const seconds = (performance.now() - t) / 1000;
      const body = (await r.json()) as { images?: number; blobs?: number; bytes?: number; after?: number };
      if (r.status !== 200 || typeof body.bytes !== 'number') throw new Error(`POST /admin/evict: ${r.status} ${JSON.stringify(body)}`);
      blobsLeft -= body.blobs ?? 0;
      return { seconds, images: body.images ?? 0, blobs: body.blobs ?? 0, bytes: body.bytes, after: body.after ?? NaN, remainingBlobs: blobsLeft };
    };

    log('workload 8: start-up on an empty data directory');
    mkdirSync(join(work, 'empty'), { recursive: true });
    const e = await timedStart({ root, dir: join(work, 'empty'), blobs: 0, config: capped(data.bytes * 2), label: 'evict-empty' });
    running.push(e.mirror);
    await e.mirror.stop();
    log(`  listening ${e.figures.listening.toFixed(2)} s, GC done ${e.figures.gcDone.toFixed(2)} s, RSS ${e.figures.rssMiB?.toFixed(0)} MiB`);

    // A cap below the cache's size changes nothing until a pass is asked for: the check interval is a
    // day, and no blob arrives to prompt one.
    const firstCap = Math.floor(data.bytes * 0.75);
    log(`workload 8: start-up on ${data.blobs} blobs (cap ${(firstCap / MiB).toFixed(0)} MiB, not enforced until asked)`);
    const f = await timedStart({ root, dir: join(work, 'full'), blobs: data.blobs, config: capped(firstCap, adminPorts[0]), label: 'evict-full' });
    running.push(f.mirror);
    log(`  listening ${f.figures.listening.toFixed(2)} s, size known ${f.figures.sized.toFixed(2)} s, GC done ${f.figures.gcDone.toFixed(2)} s, RSS ${f.figures.rssMiB?.toFixed(0)} MiB (peak ${f.figures.peakMiB?.toFixed(0)})`);
    log(`workload 8: one eviction pass down to 0.9 of ${(firstCap / MiB).toFixed(0)} MiB, no other load`);
    const alone = await evict(adminPorts[0]);
    log(`  ${alone.images} images, ${alone.blobs} blobs, ${(alone.bytes / MiB).toFixed(1)} MiB in ${alone.seconds.toFixed(2)} s; after ${(alone.after / MiB).toFixed(1)} MiB`);
    if (alone.after > firstCap) throw new Error(`after the pass the cache holds ${alone.after} bytes, above the cap ${firstCap}`);
    await f.mirror.stop();

    // Restarted with a lower cap: the same kind of pass again, now beside manifest requests.
    const secondCap = Math.floor(data.bytes * 0.6);
    log(`workload 8: restart with a ${(secondCap / MiB).toFixed(0)} MiB cap (log level warn)`);
    const m = (await timedStart({ root, dir: join(work, 'full'), blobs: alone.remainingBlobs, config: capped(secondCap, adminPorts[1]), label: 'evict-capped', quiet: true })).mirror;
    running.push(m);
    const path = `/v2/${data.hot.repo}/manifests/${data.hot.tag}`;
    const warm = await fetch(`${m.url}${path}`, { headers: { accept: ACCEPT } });
    if (warm.status !== 200) throw new Error(`GET ${path}: ${warm.status} ${await warm.text()}`);
    await openLoop(m.url, path, rate, sleep(2000)); // warm-up: JIT, connections

    const baselineMs = (opts.baselineSeconds ?? 5) * 1000;
    log(`workload 8: manifest by tag, ${rate} req/s, ${baselineMs / 1000} s without eviction`);
    const t0 = performance.now();
    const without = figures(await openLoop(m.url, path, rate, sleep(baselineMs)), t0, t0 + baselineMs);
    log(`  ${without.rps.toFixed(0)} req/s, p50 ${without.p50Ms.toFixed(2)} ms, p99 ${without.p99Ms.toFixed(2)} ms, errors ${without.errors}`);

    log(`workload 8: the same during a pass that brings the cache under ${(secondCap / MiB).toFixed(0)} MiB`);
    let passStart = 0;
    const pass = (async () => {
      await sleep(500);
      passStart = performance.now();
      return evict(adminPorts[1]);
    })();
    const busy = await openLoop(m.url, path, rate, pass.then(() => sleep(200)).catch(() => undefined));
    const loaded = await pass;
    const during = figures(busy, passStart, passStart + loaded.seconds * 1000);
    log(`  pass: ${loaded.images} images, ${loaded.blobs} blobs, ${(loaded.bytes / MiB).toFixed(1)} MiB in ${loaded.seconds.toFixed(2)} s; after ${(loaded.after / MiB).toFixed(1)} MiB`);
    log(`  during it: ${during.rps.toFixed(0)} req/s, p50 ${during.p50Ms.toFixed(2)} ms, p99 ${during.p99Ms.toFixed(2)} ms, errors ${during.errors}`);
    if (loaded.after > secondCap) throw new Error(`after the pass the cache holds ${loaded.after} bytes, above the cap ${secondCap}`);
    await m.stop();
    return { data, empty: e.figures, full: f.figures, alone: { ...alone, limit: firstCap }, loaded: { ...loaded, limit: secondCap }, without, during, rate };
  } finally {
    for (const r of running) await r.stop().catch(() => undefined);
    await cleanupDir(work);
  }
}
