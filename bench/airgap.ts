/**
 * Air-gap bundle throughput: `regmirror export` and `regmirror import` of a ~1 GiB bundle, beside
 * `skopeo copy` moving the same content between `oci-archive:` and `dir:`. Runs on its own (not part
 * of run.ts):
 *
 *   npm run build && npx tsc -p bench/tsconfig.json && node bench/out/bench/airgap.js [--runs=N] [--layers=N] [--layer-mib=N]
 *
 * Set-up (not measured): an OCI layout of one image with 4 layers of 256 MiB (uncompressed tars of
 * AES-CTR pseudo-random bytes, fixtures.ts) is written and imported with `regmirror import DIR
 * --data-dir A`. Then, each run on fresh targets, timed as whole commands (process start included):
 *
 *   export        regmirror export -o bundle.tar --all --data-dir A        (cache → tar)
 *   import        regmirror import bundle.tar --data-dir B               (tar → empty cache, verified)
 *   skopeo read   skopeo copy oci-archive:bundle.tar:REF dir:X           (tar → directory)
 *   skopeo write  skopeo copy dir:X oci-archive:out.tar:REF              (directory → tar)
 *
 * MiB/s = the bundle's blob bytes / wall seconds; the median of the runs is reported (and with the
 * median sync added). `sync` runs
 * before each timed command, and once more right after it (timed separately as "then sync"): regmirror
 * import fsyncs each blob before it becomes visible, skopeo does not, so the flush after skopeo is
 * what it left to the kernel. Everything is on one filesystem; the source is in the page cache.
 * Prints a Markdown table (for bench/RESULTS.md).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { blobOf, descriptorOf, MT } from '../test/helpers/images.js';
import { cleanupDir, hasTool, makeTempDir, runOk } from '../test/e2e/harness/tools.js';
import { MiB, writeRandomTarLayer, type Layer } from './fixtures.js';

const REF = 'docker.io/bench/airgap:v1';

interface Options {
  runs: number;
  layers: number;
  layerMiB: number;
}

function options(argv: readonly string[]): Options {
  const num = (name: string, dflt: number): number => {
    const a = argv.find((x) => x.startsWith(`--${name}=`));
    const n = a ? Number(a.slice(name.length + 3)) : dflt;
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer`);
    return n;
  };
  return { runs: num('runs', 3), layers: num('layers', 4), layerMiB: num('layer-mib', 256) };
}

const log = (s: string): void => void process.stderr.write(`[airgap-bench] ${s}\n`);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const mainJs = join(repoRoot, 'dist', 'main.js');

/** An OCI layout of one image: `layers` random tar layers, a config, a manifest named REF. */
async function writeLayout(dir: string, opts: Options): Promise<number> {
  const layers: Layer[] = [];
  for (let i = 0; i < opts.layers; i++) layers.push(await writeRandomTarLayer(dir, opts.layerMiB * MiB - 1536, `airgap-${i}`));
  const config = blobOf(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
    MT.ociConfig,
  );
  const manifest = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: descriptorOf(config),
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
    MT.ociManifest,
  );
  for (const b of [config, manifest]) writeFileSync(join(dir, 'blobs', 'sha256', b.digest.slice(7)), b.bytes);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ ...descriptorOf(manifest), annotations: { 'org.opencontainers.image.ref.name': REF } }] }),
  );
  return layers.reduce((n, l) => n + l.size, 0) + config.size + manifest.size;
}

const sync = (): number => {
  const t = performance.now();
  spawnSync('sync');
  return (performance.now() - t) / 1000;
};

interface Timing {
  seconds: number;
  syncSeconds: number;
}

/** Runs a command (after a sync), then times the sync after it too. */
async function timed(cmd: string, args: string[]): Promise<Timing> {
  sync();
  const t = performance.now();
  await runOk(cmd, args, { timeoutMs: 600_000 });
  const seconds = (performance.now() - t) / 1000;
  return { seconds, syncSeconds: sync() };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  const missing = ['skopeo', 'sync'].filter((t) => !hasTool(t));
  if (missing.length) throw new Error(`needs ${missing.join(', ')} (apt-get install skopeo)`);
  try {
    statSync(mainJs);
  } catch {
    throw new Error(`${mainJs} is missing: run npm run build first`);
  }
  const work = makeTempDir('airgap-bench');
  const cleanup = () => rmSync(work, { recursive: true, force: true });
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const t0 = performance.now();
    const layout = join(work, 'layout');
    mkdirSync(layout);
    const bytes = await writeLayout(layout, opts);
    log(`layout of ${(bytes / MiB).toFixed(0)} MiB written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const a = join(work, 'a');
    const regmirror = (args: string[]) => ['--no-warnings', mainJs, ...args];
    const setup = await timed('node', regmirror(['import', layout, '--data-dir', a]));
    log(`set-up import of the layout directory: ${setup.seconds.toFixed(1)} s`);
    await cleanupDir(layout);

    const rows: Record<string, Timing[]> = { export: [], import: [], 'skopeo read': [], 'skopeo write': [] };
    const bundle = join(work, 'bundle.tar');
    for (let run = 1; run <= opts.runs; run++) {
      rmSync(bundle, { force: true });
      rmSync(`${bundle}.digests`, { force: true });
      rows.export!.push(await timed('node', regmirror(['export', '-o', bundle, '--all', '--data-dir', a])));
      const b = join(work, `b-${run}`);
      rows.import!.push(await timed('node', regmirror(['import', bundle, '--data-dir', b])));
      await cleanupDir(b);
      const x = join(work, `x-${run}`);
      rows['skopeo read']!.push(await timed('skopeo', ['--insecure-policy', 'copy', '-q', `oci-archive:${bundle}:${REF}`, `dir:${x}`]));
      const out = join(work, `out-${run}.tar`);
      rows['skopeo write']!.push(await timed('skopeo', ['--insecure-policy', 'copy', '-q', `dir:${x}`, `oci-archive:${out}:${REF}`]));
      await cleanupDir(x);
      rmSync(out, { force: true });
      log(`run ${run}: ${Object.entries(rows).map(([k, v]) => `${k} ${v.at(-1)!.seconds.toFixed(2)} s`).join(', ')}`);
    }
    const bundleBytes = statSync(bundle).size;
    const rate = (s: number) => bytes / MiB / s;
    const what: Record<string, string> = {
      export: '`regmirror export -o bundle.tar --all --data-dir A` (cache → tar)',
      import: '`regmirror import bundle.tar --data-dir B` (tar → empty cache, verified, fsync per blob)',
      'skopeo read': '`skopeo copy oci-archive:bundle.tar:REF dir:X` (tar → directory)',
      'skopeo write': '`skopeo copy dir:X oci-archive:out.tar:REF` (directory → tar)',
    };
    const lines = [
      `Bundle: one image, ${opts.layers} layers of ${opts.layerMiB} MiB (${(bytes / MiB).toFixed(0)} MiB of blobs, a ${(bundleBytes / MiB).toFixed(0)} MiB tar); ${opts.runs} runs, median.`,
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, Linux ${release()}, Node ${process.version}; load ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end.`,
      '',
      '| copy | MiB/s | seconds (runs) | then sync, s | MiB/s with the sync |',
      '| --- | ---: | --- | ---: | ---: |',
      ...Object.entries(rows).map(([k, v]) => {
        const s = median(v.map((t) => t.seconds));
        const flush = median(v.map((t) => t.syncSeconds));
        return `| ${what[k]} | ${rate(s).toFixed(0)} | ${v.map((t) => t.seconds.toFixed(2)).join(', ')} | ${flush.toFixed(2)} | ${rate(s + flush).toFixed(0)} |`;
      }),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    log(`left in ${work}: ${readdirSync(work).join(', ')} (removed now)`);
  } finally {
    cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`[airgap-bench] ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
