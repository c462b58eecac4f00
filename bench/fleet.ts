/**
 * Fleet coordination: upstream fetches per blob and time to first byte, for N replicas (1, 2, 3)
 * sharing one cache through Redis (fleet mode) against N independent mirrors (each its own cache).
 * Runs on its own (not part of run.ts):
 *
 *   npm run build && npx tsc -p bench/tsconfig.json && node bench/out/bench/fleet.js [--mib=N] [--mibps=N]
 *
 * Set-up: the fake upstream of the tests (test/helpers/fake-upstream), its blob bodies paced at
 * `--mibps` (default 64 MiB/s, a fast WAN link) so downloads overlap; one image of a `--mib` layer
 * (default 128) and two small ones; a real redis-server; replicas are real `node dist/main.js`
 * processes over one shared data directory (fleet) or one each (independent).
 *
 * Per configuration, 2 clients per replica pull the image at once, the first on replica 0 a moment
 * ahead (so replica 0 owns the big download in fleet mode). Reported: upstream GETs per blob (1 is
 * the goal), time to first byte of the big layer on replica 0 and on the others (in fleet mode: a
 * non-owner streaming from the owner's peer endpoint), and wall time of the whole pull.
 * Prints a Markdown table (bench/FLEET.md keeps the last one).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
// spawn.ts finds dist/main.js relative to its own file, which is under bench/out/ here.
process.env.REGMIRROR_MAIN_JS ??= join(ROOT, 'dist', 'main.js');

const arg = (name: string, dflt: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const MIB = 1024 * 1024;

async function main(): Promise<void> {
  const { FakeUpstream } = await import('../test/helpers/fake-upstream.js');
  const { blobOf, makeImage, makeRandomLayer, MT, pseudoRandomBytes } = await import('../test/helpers/images.js');
  const { startRedis } = await import('../test/helpers/redis-server.js');
  const { spawnMirror } = await import('../test/helpers/spawn.js');
  const { fetchBlob, startFleet } = await import('../test/fleet/harness.js');

  const mib = arg('mib', 128);
  const mibps = arg('mibps', 64);
  const fake = await FakeUpstream.start({ auth: 'none', cdn: false });
  const redis = await startRedis();
  const bigLayer = blobOf(pseudoRandomBytes(mib * MIB, 'bench-fleet-big'), MT.ociLayer);
  const small = [makeRandomLayer(512 * 1024, 'bench-fleet-s1'), makeRandomLayer(256 * 1024, 'bench-fleet-s2')];
  const upstreams = { 'docker.io': { url: fake.url, libraryPrefix: true } };
  const rows: string[] = [];
  try {
    for (const n of [1, 2, 3]) {
      for (const mode of ['fleet', 'independent'] as const) {
        // A fresh image per configuration: every run starts cold.
        const repo = `bench-${mode}-${n}`;
        const img = makeImage({ layers: [bigLayer, ...small], cmd: [repo] });
        fake.putImage(`library/${repo}`, img, 'v1');
        const dirs: string[] = [];
        const urls: string[] = [];
        const stops: Array<() => Promise<void>> = [];
        if (mode === 'fleet') {
          const dataDir = await mkdtemp(join(tmpdir(), 'bench-fleet-'));
          dirs.push(dataDir);
          const reps = await startFleet({ n, upstreams, redisUrl: redis.url, dataDir, leaseTtlMs: 5000, keyPrefix: `bench:${repo}:` });
          for (const r of reps) {
            urls.push(r.mirror.url);
            stops.push(() => r.mirror.stop());
          }
        } else {
          for (let i = 0; i < n; i++) {
            const m = await spawnMirror({ upstreams });
            urls.push(m.url);
            stops.push(() => m.stop());
          }
        }
        try {
          // Manifests first (not measured): membership, and the same starting line for every client.
          for (const u of urls) {
            const r = await fetch(`${u}/v2/${repo}/manifests/v1`, { headers: { accept: MT.ociManifest } });
            if (r.status !== 200) throw new Error(`manifest from ${u}: ${r.status}`);
          }
          fake.resetCounters();
          fake.faults.trickle = { bytesPerTick: Math.max(64 * 1024, Math.floor((mibps * MIB) / 100)), tickMs: 10 };
          const blobs = [img.config, ...img.layers];
          const started = performance.now();
          const pullOn = (u: string) => Promise.all(blobs.map((b) => fetchBlob(`${u}/v2/${repo}/blobs/${b.digest}`, b.digest).then((f) => ({ ...f, startedAt: performance.now() }))));
          const pullAt = (u: string) => {
            const t0 = performance.now();
            return pullOn(u).then((fs) => ({ ttfb: fs.find((f) => f.digest === bigLayer.digest)!.firstByteAt - t0, end: Math.max(...fs.map((f) => f.endAt)) }));
          };
          const first = pullAt(urls[0]!);
          await new Promise((r) => setTimeout(r, 300));
          const rest = [pullAt(urls[0]!), ...urls.slice(1).flatMap((u) => [pullAt(u), pullAt(u)])];
          const results = await Promise.all([first, ...rest]);
          const wall = Math.max(...results.map((r) => r.end)) - started;
          const gets = blobs.map((b) => fake.requests.filter((q) => q.kind === 'blob' && q.method === 'GET' && q.path.endsWith(b.digest)).length);
          const others = results.slice(2).map((r) => r.ttfb);
          rows.push(
            `| ${n} | ${mode === 'fleet' ? 'fleet (Redis)' : 'independent'} | ${(gets.reduce((a, b) => a + b, 0) / blobs.length).toFixed(2)} | ${Math.max(...gets)} | ${results[0].ttfb.toFixed(0)} | ${others.length ? (others.reduce((a, b) => a + b, 0) / others.length).toFixed(0) : '–'} | ${(wall / 1000).toFixed(2)} |`,
          );
          process.stderr.write(`${rows[rows.length - 1]}\n`);
        } finally {
          fake.faults.trickle = undefined;
          await Promise.all(stops.map((s) => s()));
          for (const d of dirs) await rm(d, { recursive: true, force: true });
        }
      }
    }
  } finally {
    await redis.close();
    await fake.close();
  }
  const load = loadavg().map((l) => l.toFixed(1)).join(' ');
  process.stdout.write(
    [
      `Fleet coordination (bench/fleet.ts): one image (${mib} MiB layer + 2 small + config), upstream paced at ${mibps} MiB/s; 2 clients per replica at once (the first on replica 0 300 ms ahead). ${cpus().length} cores, load average ${load} at the end.`,
      '',
      '| replicas | mode | upstream GETs per blob (mean) | max GETs of one blob | TTFB big layer, replica 0 (ms) | TTFB big layer, other replicas (ms, mean) | wall (s) |',
      '|---|---|---|---|---|---|---|',
      ...rows,
      '',
    ].join('\n'),
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
