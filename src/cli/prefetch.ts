/**
 * `regmirror prefetch IMAGE... [--file LIST] [--platform P,...|all]`: fills the cache ahead of the
 * pulls (src/airgap/prefetch.ts), as a job on a running mirror's admin API (`--admin URL`, or the
 * default admin URL when it answers) or in-process over a stopped mirror's data directory with the
 * config's upstreams (`--data-dir`/`--config`). On a terminal a progress line (bytes, rate, ETA) on
 * stderr; otherwise one plain line per finished image. Exit status: 0 all done, 1 any failed, 2 usage.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { PrefetchJob, type PrefetchDeps, type PrefetchImage, type PrefetchSnapshot } from '../airgap/prefetch.js';
import { ConfigError, type Config } from '../config.js';
import { parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { adminTarget, checkFlags, configOf, flagsHelp, TARGET_FLAGS, type AirgapCliDeps } from './airgap-common.js';
import { formatBytes } from './format.js';
import { describeFetchError } from './http-admin.js';
import { parseCacheRef, RefError } from './ref.js';

export interface PrefetchCliDeps extends Omit<AirgapCliDeps, 'openAirgap' | 'stdin'> {
  /** src/mirror.ts openPrefetch: the Registry service over the data directory, with upstream access. */
  openPrefetch(config: Config): Promise<{ deps: PrefetchDeps; close(): Promise<void> }>;
  /** `linux/amd64`: the default --platform. */
  hostPlatform?: string;
  /** How often progress is polled/redrawn. Default 250 ms. */
  pollMs?: number;
  /** Registers what Ctrl-C does (main.ts: on SIGINT): cancel the job; what was fetched stays. */
  onInterrupt?(cancel: () => void): void;
}

const FLAGS: FlagSpec[] = [
  { name: 'file', short: 'f', value: 'LIST', help: 'more images, one a line (# comments)' },
  { name: 'platform', value: 'LIST', help: 'platforms of multi-arch images: linux/amd64,linux/arm64 or all (default: this host)' },
  ...TARGET_FLAGS,
];

const USAGE = `usage: regmirror prefetch IMAGE... [--file LIST] [--platform LIST|all] [--admin URL | --data-dir DIR | --config FILE]

Pulls images into the cache (the tag's index or manifest, the chosen platforms' manifests, configs and
layers) through the mirror, with the same one-download-per-digest rule as client pulls. Run again
after an interruption: only what is missing is fetched. With --data-dir/--config the mirror must be
stopped and its upstreams reachable from here.

${flagsHelp(FLAGS)}`;

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', ia32: '386' };
export const hostPlatform = (): string => `linux/${ARCH[process.arch] ?? process.arch}`;

export async function runPrefetchCli(argv: readonly string[], deps: PrefetchCliDeps): Promise<number> {
  const err = (s: string) => void deps.stderr.write(s);
  let args: ParsedArgs;
  let images: string[];
  let platforms: string[] | undefined;
  try {
    args = parseArgs(['prefetch', ...argv], FLAGS);
    if (args.flags.has('help')) {
      deps.stdout.write(USAGE);
      return 0;
    }
    checkFlags(args, 'prefetch');
    images = [...args.positionals];
    const file = args.flags.get('file');
    if (typeof file === 'string') {
      const text = await readFile(file, 'utf8').catch((e: unknown) => {
        throw new UsageError(`--file ${file}: ${(e as Error).message}`);
      });
      images.push(...text.split(/\r?\n/).map((l) => l.replace(/#.*/, '').trim()).filter((l) => l !== ''));
    }
    if (images.length === 0) throw new UsageError('missing IMAGE (or --file LIST)');
    for (const i of images) parseCacheRef(i);
    const p = args.flags.get('platform');
    const spec = typeof p === 'string' ? p : (deps.hostPlatform ?? hostPlatform());
    if (spec !== 'all') {
      platforms = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
      for (const x of platforms) if (!/^[a-z0-9]+\/[a-z0-9_-]+(\/[a-z0-9]+)?$/.test(x)) throw new UsageError(`--platform ${x}: expected OS/ARCH[/VARIANT] or all`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof RefError) {
      err(`regmirror prefetch: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const now = deps.now ?? Date.now;
  try {
    const url = await adminTarget(args, deps);
    let final: PrefetchSnapshot;
    if (url !== undefined) {
      const started = await adminCall(deps, 'POST', `${url}/admin/prefetch`, { images, platforms: platforms ?? 'all' });
      deps.onInterrupt?.(() => void adminCall(deps, 'DELETE', `${url}/admin/prefetch/${encodeURIComponent(started.id)}`).catch(() => undefined));
      final = await follow(() => adminCall(deps, 'GET', `${url}/admin/prefetch/${encodeURIComponent(started.id)}`), deps, now, args.flags.has('json'));
    } else {
      const opened = await deps.openPrefetch(configOf(args, deps));
      try {
        const job = new PrefetchJob('local', { images, ...(platforms ? { platforms } : {}) }, opened.deps, now);
        deps.onInterrupt?.(() => job.cancel());
        final = await follow(() => Promise.resolve(job.snapshot()), deps, now, args.flags.has('json'), job.done);
      } finally {
        await opened.close();
      }
    }
    if (args.flags.has('json')) deps.stdout.write(`${JSON.stringify(final, null, 2)}\n`);
    const failed = final.images.filter((i) => i.state !== 'done');
    const secs = Math.max(0.001, ((final.finishedAt ?? now()) - final.startedAt) / 1000);
    if (!args.flags.has('json')) {
      deps.stdout.write(`prefetched ${final.images.length - failed.length} of ${final.images.length} images, ${formatBytes(final.bytes)} fetched in ${secs.toFixed(1)} s\n`);
    }
    if (failed.length > 0) {
      err(`regmirror prefetch: ${failed.length} failed:\n${failed.map((i) => `  ${i.image}: ${i.error ?? i.state}\n`).join('')}`);
      return 1;
    }
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`regmirror prefetch: invalid configuration: ${e.message}\n`);
      return 2;
    }
    err(`regmirror prefetch: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/**
 * Polls until the job ends: a line per finished image (stdout, or stderr with --json, where stdout
 * carries the JSON alone), the progress line on a terminal (stderr).
 */
async function follow(poll: () => Promise<PrefetchSnapshot>, deps: PrefetchCliDeps, now: () => number, json: boolean, done?: Promise<void>): Promise<PrefetchSnapshot> {
  const tty = deps.stderr.isTTY === true;
  const reported = new Set<number>();
  const start = now();
  let drawn = false;
  for (;;) {
    const s = await poll();
    s.images.forEach((img, i) => {
      if (reported.has(i) || img.state === 'queued' || img.state === 'running') return;
      reported.add(i);
      if (drawn) deps.stderr.write('\r\x1b[K');
      drawn = false;
      (json ? deps.stderr : deps.stdout).write(`${imageLine(img)}\n`);
    });
    if (s.state !== 'running') {
      if (drawn) deps.stderr.write('\r\x1b[K');
      return s;
    }
    if (tty) {
      const secs = Math.max(0.001, (now() - start) / 1000);
      const rate = s.bytes / secs;
      const left = s.totalBytes - s.bytes;
      const eta = rate > 0 && left > 0 ? `, ${Math.ceil(left / rate)} s left` : '';
      const current = s.images.find((i) => i.state === 'running');
      deps.stderr.write(`\r\x1b[K[${reported.size}/${s.images.length}] ${formatBytes(s.bytes)} of ${formatBytes(s.totalBytes)} so far, ${formatBytes(rate)}/s${eta}${current ? `  ${current.image}` : ''}`);
      drawn = true;
    }
    const wait = delay(deps.pollMs ?? 250);
    await (done ? Promise.race([wait, done]) : wait);
  }
}

function imageLine(i: PrefetchImage): string {
  if (i.state === 'done') return `done    ${i.image}  ${i.blobs} blobs, ${i.fetched} fetched (${formatBytes(i.bytes)})`;
  return `${i.state.padEnd(7)} ${i.image}${i.error ? `: ${i.error}` : ''}`;
}

async function adminCall(deps: PrefetchCliDeps, method: string, url: string, body?: unknown): Promise<PrefetchSnapshot> {
  let res: Response;
  try {
    res = await deps.fetch(url, { method, headers: { accept: 'application/json', ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  } catch (e) {
    throw new Error(`admin API at ${url}: ${describeFetchError(e)}`);
  }
  const json = (await res.json().catch(() => undefined)) as PrefetchSnapshot | { errors?: Array<{ message?: string }> } | undefined;
  if (!res.ok) throw new Error(`admin API: ${(json as { errors?: Array<{ message?: string }> } | undefined)?.errors?.[0]?.message ?? `HTTP ${res.status}`}`);
  return json as PrefetchSnapshot;
}
