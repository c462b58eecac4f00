/**
 * `regmirror export -o BUNDLE.tar|- IMAGE...|--all [--platform P,...] [--base FILE] [--since DATE]`: writes cached
 * images as an OCI image layout tar (src/airgap/export.ts), streamed from a data directory (read
 * only, so beside a running mirror too). Beside a file bundle it writes BUNDLE.tar.digests: every
 * digest the other side holds once it imported this bundle, the `--base` of the next (delta) export.
 * Exit status: 0 written, 1 failed (no bundle left behind), 2 bad usage.
 */
import { createWriteStream } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import type { ExportRef } from '../airgap/export.js';
import { parseBaseFile } from '../airgap/export.js';
import { ConfigError } from '../config.js';
import { parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { checkFlags, configOf, flagsHelp, TARGET_FLAGS, type AirgapCliDeps } from './airgap-common.js';
import { formatBytes } from './format.js';
import { parseCacheRef, RefError } from './ref.js';

const FLAGS: FlagSpec[] = [
  { name: 'output', short: 'o', value: 'FILE', help: 'the bundle to write (- for stdout)' },
  { name: 'all', help: 'every tagged image in the cache' },
  { name: 'platform', value: 'LIST', help: 'platforms of multi-arch images to include: linux/amd64,linux/arm64 or all (default: all cached)' },
  { name: 'base', value: 'FILE', help: 'leave out the blobs listed there (the .digests file of an earlier export): a delta bundle' },
  { name: 'since', value: 'DATE', help: 'leave out the blobs stored in the cache before DATE (2026-11-01, 2026-11-01T08:00:00Z, ISO 8601): a delta bundle' },
  { name: 'digests', value: 'FILE', help: 'where to write the digest list (default BUNDLE.digests; none for -o -)' },
  ...TARGET_FLAGS.filter((f) => f.name !== 'admin'),
];

const USAGE = `usage: regmirror export -o BUNDLE.tar|- IMAGE... | --all [--platform LIST] [--base FILE] [--since DATE] [--data-dir DIR | --config FILE]

Writes an OCI image layout tar (skopeo/crane/podman read it as oci-archive:BUNDLE.tar:REF), each blob
once, index.json naming each image by its full reference (docker.io/library/postgres:14.5). IMAGE is
a cached tag or digest (postgres:14.5, ghcr.io/acme/app@sha256:…). With --base the bundle leaves out
what an earlier bundle carried and is importable only where that one was imported. With --since DATE
it leaves out every blob that came into the cache (pulled, prefetched or imported) before DATE, for a
site that imported the bundles made up to then (take DATE from the previous export's start).

${flagsHelp(FLAGS)}`;

export async function runExportCli(argv: readonly string[], deps: AirgapCliDeps): Promise<number> {
  const err = (s: string) => void deps.stderr.write(s);
  let args: ParsedArgs;
  let refs: ExportRef[] | 'all';
  let platforms: string[] | undefined;
  let since: number | undefined;
  try {
    args = parseArgs(['export', ...argv], FLAGS);
    if (args.flags.has('help')) {
      deps.stdout.write(USAGE);
      return 0;
    }
    if (typeof args.flags.get('output') !== 'string') throw new UsageError('missing -o BUNDLE.tar (or -o - for stdout)');
    const all = args.flags.has('all');
    if (all && args.positionals.length > 0) throw new UsageError('give IMAGE... or --all, not both');
    if (!all && args.positionals.length === 0) throw new UsageError('missing IMAGE (or --all)');
    refs = all ? 'all' : args.positionals.map(imageArg);
    const p = args.flags.get('platform');
    if (typeof p === 'string' && p !== 'all') {
      platforms = p.split(',').map((s) => s.trim()).filter((s) => s !== '');
      for (const x of platforms) if (!/^[a-z0-9]+\/[a-z0-9_-]+(\/[a-z0-9]+)?$/.test(x)) throw new UsageError(`--platform ${x}: expected OS/ARCH[/VARIANT]`);
    }
    const s = args.flags.get('since');
    if (s !== undefined) {
      since = typeof s === 'string' ? parseSince(s) : NaN;
      if (Number.isNaN(since)) throw new UsageError(`--since ${typeof s === 'string' ? s : ''}: expected a date such as 2026-11-01 or 2026-11-01T08:00:00Z`);
    }
    checkFlags(args, 'export');
  } catch (e) {
    if (e instanceof UsageError || e instanceof RefError) {
      err(`regmirror export: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const output = args.flags.get('output') as string;
  const toStdout = output === '-';
  const digestsFlag = args.flags.get('digests');
  const digestsFile = typeof digestsFlag === 'string' ? digestsFlag : toStdout ? undefined : `${output}.digests`;
  const tmp = `${output}.part-${process.pid}`;
  try {
    const baseFlag = args.flags.get('base');
    const base = typeof baseFlag === 'string' ? parseBaseFile(await readFile(baseFlag, 'utf8')) : undefined;
    const opened = await deps.openAirgap(configOf(args, deps), { forImport: false });
    try {
      const { airgap } = opened;
      const list = refs === 'all' ? await airgap.all() : refs;
      if (list.length === 0) throw new Error('the cache holds no tagged images');
      const plan = await airgap.planExport(list, { ...(platforms ? { platforms } : {}), ...(base ? { base } : {}), ...(since !== undefined ? { since } : {}) });
      const progress = progressLine(deps, plan.bytes);
      const out: Writable = toStdout ? deps.stdout : createWriteStream(tmp);
      try {
        await airgap.writeBundle(plan, out, progress.add);
        if (!toStdout) {
          await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
          await rename(tmp, output);
        }
      } catch (e) {
        if (!toStdout) {
          out.destroy();
          await rm(tmp, { force: true });
        }
        throw e;
      } finally {
        progress.done();
      }
      if (digestsFile !== undefined) await writeFile(digestsFile, `${plan.digests.join('\n')}\n`);
      const summary = {
        output,
        images: plan.images.map((i) => i.reference),
        blobs: plan.blobs.length,
        bytes: plan.bytes,
        skipped: plan.skipped,
        ...(digestsFile !== undefined ? { digests: digestsFile } : {}),
      };
      const report = toStdout ? (s: string) => void deps.stderr.write(s) : (s: string) => void deps.stdout.write(s);
      if (args.flags.has('json')) report(`${JSON.stringify(summary, null, 2)}\n`);
      else {
        for (const i of summary.images) report(`exported ${i}\n`);
        report(`${summary.images.length} ${summary.images.length === 1 ? 'image' : 'images'}, ${summary.blobs} blobs, ${formatBytes(summary.bytes)}${base || since !== undefined ? ` (${summary.skipped} blobs left out: ${[base ? 'in --base' : '', since !== undefined ? `stored before --since` : ''].filter(Boolean).join(' or ')})` : ''} to ${toStdout ? 'stdout' : output}${digestsFile ? `; digests in ${digestsFile}` : ''}\n`);
      }
      return 0;
    } finally {
      await opened.close();
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`regmirror export: invalid configuration: ${e.message}\n`);
      return 2;
    }
    err(`regmirror export: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** An ISO 8601 date or date-time (a bare date is midnight UTC) → ms since the epoch; NaN when not one. */
export function parseSince(s: string): number {
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(s.trim())) return NaN;
  return Date.parse(s.trim());
}

function imageArg(s: string): ExportRef {
  const r = parseCacheRef(s);
  return { upstream: r.upstream, repo: r.repo, ...(r.digest !== undefined ? { digest: r.digest } : { tag: r.tag ?? 'latest' }) };
}

/** On a terminal: bytes written, rate and ETA on one line of stderr, redrawn at most 5 times a second. */
function progressLine(deps: AirgapCliDeps, total: number): { add: (n: number) => void; done: () => void } {
  if (!deps.stderr.isTTY) return { add: () => undefined, done: () => undefined };
  const now = deps.now ?? Date.now;
  const start = now();
  let written = 0;
  let last = 0;
  const draw = () => {
    const secs = Math.max(0.001, (now() - start) / 1000);
    const rate = written / secs;
    const eta = rate > 0 ? Math.ceil((total - written) / rate) : undefined;
    deps.stderr.write(`\r\x1b[Kexporting ${formatBytes(written)} of ${formatBytes(total)}, ${formatBytes(rate)}/s${eta !== undefined ? `, ${eta} s left` : ''}`);
  };
  return {
    add: (n) => {
      written += n;
      const t = now();
      if (t - last >= 200) {
        last = t;
        draw();
      }
    },
    done: () => {
      if (written > 0) {
        draw();
        deps.stderr.write('\n');
      }
    },
  };
}
