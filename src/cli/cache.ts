/**
 * `regmirror cache <command>`: the cache lifecycle from a shell. Every command works through a
 * `CacheAdmin`, either a running mirror's admin API (`--admin URL`, `HttpCacheAdmin`) or the stores of
 * a data directory while the mirror is stopped (`--data-dir DIR` / `--config FILE`, the injected
 * `openCacheAdmin`). Without either, the default admin URL is tried and the configured dataDir used
 * when it does not answer.
 *
 * Everything from the outside is injected (`CacheCliDeps`): output streams and whether they are
 * terminals, the prompt, fetch, config loading, openCacheAdmin, the clock. `runCacheCli` returns the
 * exit status (0 ok, 1 failure, 2 bad usage) and never exits the process itself.
 */
import { ConfigError, type Config } from '../config.js';
import type { CacheAdmin, EvictionResult, GcResult, ImageInfo, PurgeResult, RepositoryInfo } from '../lifecycle/types.js';
import { parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { formatAgo, formatBytes, formatPercent, formatTable, formatTime, shortDigest } from './format.js';
import { HttpCacheAdmin, type FetchFn } from './http-admin.js';
import { formatCacheRef, normalizePinPattern, parseCacheRef, RefError, type CacheRef } from './ref.js';

export interface OutputStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export interface OpenedCacheAdmin {
  admin: CacheAdmin;
  close(): Promise<void>;
}

export interface CacheCliDeps {
  stdout: OutputStream;
  /** Errors, the confirmation question and (on a terminal) the progress line. */
  stderr: OutputStream;
  /** Whether stdin is a terminal: `rm --all` asks there, and refuses without `--yes` elsewhere. */
  stdinIsTTY: boolean;
  /** Shows `question` and resolves with the line typed (only called when stdinIsTTY). */
  prompt(question: string): Promise<string>;
  env: Record<string, string | undefined>;
  fetch: FetchFn;
  /** The effective config: embedded defaults, `file` merged over them, MIRROR_* applied. Throws ConfigError. */
  loadConfig(file: string | undefined): Config;
  /** The cache of a data directory with the mirror stopped (src/mirror.ts openCacheAdmin). */
  openCacheAdmin(config: Config): Promise<OpenedCacheAdmin>;
  now?: () => number;
  /** How long the default admin URL gets to answer before the data dir is used. Default 1000 ms. */
  probeTimeoutMs?: number;
}

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:5001';

// ---- Flags and commands --------------------------------------------------------------------------

const FLAGS: FlagSpec[] = [
  { name: 'admin', value: 'URL', help: "a running mirror's admin API, e.g. http://127.0.0.1:5001" },
  { name: 'data-dir', value: 'DIR', help: 'a data directory; the mirror must be stopped' },
  { name: 'config', short: 'c', value: 'FILE', help: "the mirror's config file (its dataDir); the mirror must be stopped" },
  { name: 'json', help: 'print the raw JSON instead of text' },
  { name: 'help', short: 'h', help: 'show help' },
  { name: 'all', help: 'remove everything from the cache' },
  { name: 'yes', short: 'y', help: 'do not ask for confirmation' },
];
const COMMON_FLAGS = ['admin', 'data-dir', 'config', 'json', 'help'];

interface Context {
  admin: CacheAdmin;
  args: ParsedArgs;
  json: boolean;
  deps: CacheCliDeps;
  now: number;
  out(text: string): void;
  err(text: string): void;
}

interface Command {
  name: string;
  /** After the command name in the usage line. */
  synopsis: string;
  summary: string;
  /** More lines of help, shown by `<command> --help`. */
  details: string;
  positionals: { min: number; max: number };
  flags: string[];
  /** Checks the arguments before any target is opened (so bad usage never touches the cache). */
  validate?(args: ParsedArgs): void;
  run(ctx: Context): Promise<number>;
}

const COMMANDS: Command[] = [
  {
    name: 'ls',
    synopsis: '[REPOSITORY]',
    summary: 'list cached repositories, or the images of one',
    details: [
      'Without REPOSITORY: each repository with its images, tags, size, last pull and whether it is pinned.',
      'With REPOSITORY (docker.io/library/alpine, or alpine): its images with their tags, digest,',
      'platforms, size, last pull and pin. A tag (alpine:3.19) or digest (alpine@sha256:…) narrows the list.',
    ].join('\n'),
    positionals: { min: 0, max: 1 },
    flags: COMMON_FLAGS,
    validate: (args) => {
      if (args.positionals[0] !== undefined) parseRefArg(args.positionals[0], 'ls');
    },
    run: async (ctx) => {
      const arg = ctx.args.positionals[0];
      if (arg === undefined) {
        const repos = await ctx.admin.repositories();
        if (ctx.json) return printJson(ctx, repos);
        ctx.out(repos.length === 0 ? 'no repositories cached\n' : repositoryTable(repos, ctx.now));
        return 0;
      }
      const ref = parseRefArg(arg, 'ls');
      let images = await ctx.admin.images({ upstream: ref.upstream, repo: ref.repo });
      if (ref.tag !== undefined) images = images.filter((i) => i.tags.includes(ref.tag!));
      if (ref.digest !== undefined) images = images.filter((i) => i.digest === ref.digest);
      if (ctx.json) return printJson(ctx, images);
      ctx.out(images.length === 0 ? `no images of ${formatCacheRef(ref)} cached\n` : imageTable(images, ctx.now));
      return 0;
    },
  },
  {
    name: 'du',
    synopsis: '',
    summary: 'cache size against its limits, images, blobs, hit ratio, bytes saved',
    details: [
      'The bytes cached against the byte cap (cache.maxBytes), the free disk against its floor, the',
      'number of images, repositories and blobs, the hit ratio and bytes saved since the mirror started',
      '(not counted with the mirror stopped), the oldest use and the pins.',
    ].join('\n'),
    positionals: { min: 0, max: 0 },
    flags: COMMON_FLAGS,
    run: async (ctx) => {
      const s = await ctx.admin.summary();
      if (ctx.json) return printJson(ctx, s);
      const cache =
        s.limitBytes !== undefined && s.limitBytes > 0
          ? `${formatBytes(s.bytes)} of ${formatBytes(s.limitBytes)} (${formatPercent(s.bytes / s.limitBytes)})`
          : `${formatBytes(s.bytes)} (no byte cap)`;
      const free = s.freeBytes === undefined ? '-' : `${formatBytes(s.freeBytes)}${s.minFreeBytes !== undefined ? ` (floor ${formatBytes(s.minFreeBytes)})` : ' (no floor)'}`;
      const rows: Array<[string, string]> = [
        ['cache', cache],
        ['free disk', free],
        ['images', `${s.images} in ${s.repositories} ${plural(s.repositories, 'repository', 'repositories')}`],
        ['blobs', String(s.blobs)],
        ['hit ratio', formatPercent(s.hitRatio)],
        ['bytes saved', formatBytes(s.bytesSaved)],
        ['oldest use', formatTime(s.oldestUse, ctx.now)],
        ['pins', s.pins.length === 0 ? 'none' : s.pins.join(', ')],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      ctx.out(rows.map(([k, v]) => `${k.padEnd(w)}  ${v}\n`).join(''));
      return 0;
    },
  },
  {
    name: 'rm',
    synopsis: 'REF | --all [--yes]',
    summary: 'remove a repository, a tag, an image, or everything',
    details: [
      'REF is a repository (docker.io/library/alpine), a tag (docker.io/library/alpine:3.19) or an image',
      '(docker.io/library/alpine@sha256:…); Docker Hub names may be short (alpine:3.19). Blobs shared',
      'with images that stay are kept.',
      '--all removes everything: on a terminal it asks first (unless --yes); elsewhere it needs --yes.',
    ].join('\n'),
    positionals: { min: 0, max: 1 },
    flags: [...COMMON_FLAGS, 'all', 'yes'],
    validate: (args) => {
      const all = args.flags.has('all');
      const ref = args.positionals[0];
      if (all && ref !== undefined) throw new UsageError('give REF or --all, not both', 'rm');
      if (!all && ref === undefined) throw new UsageError('missing REF (or --all)', 'rm');
      if (ref !== undefined) parseRefArg(ref, 'rm');
    },
    run: async (ctx) => {
      if (ctx.args.flags.has('all')) {
        if (!ctx.args.flags.has('yes')) {
          if (!ctx.deps.stdinIsTTY) {
            ctx.err('regmirror cache rm: refusing to remove everything without --yes (stdin is not a terminal)\n');
            return 2;
          }
          const s = await ctx.admin.summary();
          const answer = await ctx.deps.prompt(
            `Remove everything from the cache (${s.images} ${plural(s.images, 'image', 'images')} in ${s.repositories} ${plural(s.repositories, 'repository', 'repositories')}, ${formatBytes(s.bytes)})? [y/N] `,
          );
          if (!/^y(es)?$/i.test(answer.trim())) {
            ctx.err('aborted; nothing removed\n');
            return 1;
          }
        }
        const r = await ctx.admin.purge({ all: true });
        if (ctx.json) return printJson(ctx, r);
        ctx.out(`${purgeLine(r)} (everything)\n`);
        return 0;
      }
      const ref = parseRefArg(ctx.args.positionals[0]!, 'rm');
      const r = await ctx.admin.purge({
        upstream: ref.upstream,
        repo: ref.repo,
        ...(ref.tag !== undefined ? { tag: ref.tag } : {}),
        ...(ref.digest !== undefined ? { digest: ref.digest } : {}),
      });
      if (ctx.json) return printJson(ctx, r);
      ctx.out(r.tags + r.images + r.blobs === 0 ? `nothing removed: ${formatCacheRef(ref)} is not cached\n` : `${purgeLine(r)} from ${formatCacheRef(ref)}\n`);
      return 0;
    },
  },
  {
    name: 'pin',
    synopsis: 'PATTERN',
    summary: 'keep matching images from eviction',
    details: [
      'PATTERN is a reference (docker.io/library/postgres:14.5, or postgres:14.5) or a pattern with',
      'wildcards (ghcr.io/acme/**: * within a path part, ** across parts). Prints the pins after.',
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    flags: COMMON_FLAGS,
    validate: (args) => void pinArg(args.positionals[0]!, 'pin'),
    run: async (ctx) => {
      const pattern = pinArg(ctx.args.positionals[0]!, 'pin');
      const pins = await ctx.admin.pin(pattern);
      if (ctx.json) return printJson(ctx, { pins });
      ctx.out(`pinned ${pattern}\n${pinList(pins)}`);
      return 0;
    },
  },
  {
    name: 'unpin',
    synopsis: 'PATTERN',
    summary: 'remove a pin',
    details: 'PATTERN as given to pin. Pins from the config file (cache.pin) stay until the file changes. Prints the pins after.',
    positionals: { min: 1, max: 1 },
    flags: COMMON_FLAGS,
    validate: (args) => void pinArg(args.positionals[0]!, 'unpin'),
    run: async (ctx) => {
      const pattern = pinArg(ctx.args.positionals[0]!, 'unpin');
      const pins = await ctx.admin.unpin(pattern);
      if (ctx.json) {
        // The same exit status as without --json: a script must see that the pin stayed.
        printJson(ctx, { pins });
        if (!pins.includes(pattern)) return 0;
        ctx.err(`regmirror cache unpin: ${pattern} is still pinned (a pin from the config file?)\n`);
        return 1;
      }
      if (pins.includes(pattern)) {
        ctx.err(`regmirror cache unpin: ${pattern} is still pinned (a pin from the config file?)\n`);
        ctx.out(pinList(pins));
        return 1;
      }
      ctx.out(`unpinned ${pattern}\n${pinList(pins)}`);
      return 0;
    },
  },
  {
    name: 'pins',
    synopsis: '',
    summary: 'list the pins',
    details: 'One pattern a line (from the config file and from pin).',
    positionals: { min: 0, max: 0 },
    flags: COMMON_FLAGS,
    run: async (ctx) => {
      const pins = await ctx.admin.pins();
      if (ctx.json) return printJson(ctx, { pins });
      ctx.out(pins.length === 0 ? 'no pins\n' : pins.map((p) => `${p}\n`).join(''));
      return 0;
    },
  },
  {
    name: 'gc',
    synopsis: '',
    summary: 'sweep temp files, stale records and unreferenced blobs',
    details: 'Removes blobs no repository record refers to, records of blobs no longer on disk and (with the mirror stopped) temp files left by a crash.',
    positionals: { min: 0, max: 0 },
    flags: COMMON_FLAGS,
    run: async (ctx) => {
      const r = await withProgress(ctx, 'collecting garbage', () => ctx.admin.gc());
      if (ctx.json) return printJson(ctx, r);
      ctx.out(`${gcLine(r)}\n`);
      return 0;
    },
  },
  {
    name: 'evict',
    synopsis: '',
    summary: 'run one eviction pass now',
    details: 'Evicts least recently used images down to the low mark when the cache is above its high mark (byte cap or free-disk floor); pinned images and blobs in use stay.',
    positionals: { min: 0, max: 0 },
    flags: COMMON_FLAGS,
    run: async (ctx) => {
      const r = await withProgress(ctx, 'evicting', () => ctx.admin.evict());
      if (ctx.json) return printJson(ctx, r ?? { evicted: null });
      ctx.out(r === undefined ? 'nothing to evict: the cache is within its limits\n' : `${evictLine(r)}\n`);
      return 0;
    },
  },
  {
    name: 'revalidate',
    synopsis: 'REF:TAG',
    summary: 'make a tag revalidate with upstream on its next pull',
    details: 'The cached tag is checked with upstream on its next request, whatever its TTL (e.g. after a tag was moved upstream).',
    positionals: { min: 1, max: 1 },
    flags: COMMON_FLAGS,
    validate: (args) => void tagArg(args.positionals[0]!),
    run: async (ctx) => {
      const ref = tagArg(ctx.args.positionals[0]!);
      const ok = await ctx.admin.revalidate(ref.upstream, ref.repo, ref.tag);
      if (ctx.json) {
        printJson(ctx, { revalidated: ok });
        return ok ? 0 : 1;
      }
      if (!ok) {
        ctx.err(`regmirror cache revalidate: ${formatCacheRef(ref)} is not cached\n`);
        return 1;
      }
      ctx.out(`${formatCacheRef(ref)} will be revalidated with upstream on its next pull\n`);
      return 0;
    },
  },
];

// ---- Entry point ---------------------------------------------------------------------------------

/** Runs `regmirror cache ARGV…` and resolves with the exit status. */
export async function runCacheCli(argv: readonly string[], deps: CacheCliDeps): Promise<number> {
  const err = (s: string) => void deps.stderr.write(s);
  const out = (s: string) => void deps.stdout.write(s);
  let args: ParsedArgs;
  let command: Command | undefined;
  try {
    args = parseArgs(argv, FLAGS);
    command = args.command === undefined ? undefined : COMMANDS.find((c) => c.name === args.command);
    if (args.command === undefined || args.command === 'help') {
      const topic = args.command === 'help' ? args.positionals[0] : undefined;
      const c = topic === undefined ? undefined : COMMANDS.find((x) => x.name === topic);
      if (topic !== undefined && !c) throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
      if (c) out(commandHelp(c));
      else if (args.flags.has('help') || args.command === 'help') out(mainUsage());
      else {
        err(`regmirror cache: missing command\n${mainUsage()}`);
        return 2;
      }
      return 0;
    }
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(args.command)}`);
    if (args.flags.has('help')) {
      out(commandHelp(command));
      return 0;
    }
    for (const f of args.flags.keys()) if (!command.flags.includes(f)) throw new UsageError(`option --${f} does not apply to ${command.name}`, command.name);
    const n = args.positionals.length;
    if (n < command.positionals.min) throw new UsageError(`missing argument: ${command.synopsis}`, command.name);
    if (n > command.positionals.max) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[command.positionals.max])}`, command.name);
    command.validate?.(args);
    checkTargetFlags(args);
  } catch (e) {
    if (e instanceof UsageError) return usageError(e, deps);
    throw e;
  }

  let opened: OpenedCacheAdmin | undefined;
  try {
    opened = await openTarget(args, deps);
    const ctx: Context = { admin: opened.admin, args, json: args.flags.has('json'), deps, now: (deps.now ?? Date.now)(), out, err };
    return await command.run(ctx);
  } catch (e) {
    if (e instanceof UsageError) return usageError(e, deps);
    if (e instanceof ConfigError) {
      err(`regmirror cache: invalid configuration: ${e.message}\n`);
      return 2;
    }
    err(`regmirror cache ${command.name}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    if (opened) await opened.close().catch((e: unknown) => err(`regmirror cache: closing the cache failed: ${e instanceof Error ? e.message : String(e)}\n`));
  }
}

function usageError(e: UsageError, deps: CacheCliDeps): number {
  const c = e.command === undefined ? undefined : COMMANDS.find((x) => x.name === e.command);
  deps.stderr.write(`regmirror cache${c ? ` ${c.name}` : ''}: ${e.message}\n${c ? commandUsage(c) : mainUsage()}`);
  return 2;
}

// ---- Targets -------------------------------------------------------------------------------------

function checkTargetFlags(args: ParsedArgs): void {
  const admin = args.flags.get('admin');
  if (admin !== undefined && (args.flags.has('data-dir') || args.flags.has('config'))) {
    throw new UsageError('--admin works on a running mirror; --data-dir and --config on a stopped one: give one', args.command);
  }
  if (typeof admin === 'string') adminUrl(admin, args.command);
}

function adminUrl(s: string, command: string | undefined): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new UsageError(`--admin ${s}: not a URL (e.g. http://127.0.0.1:5001)`, command);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--admin ${s}: must be an http(s) URL`, command);
  return s.replace(/\/+$/, '');
}

/**
 * `--admin URL`: that API. `--data-dir`/`--config`: the stores, opened in-process. Neither: the
 * default admin URL (MIRROR_ADMIN_URL, else the config's admin.listen, else 127.0.0.1:5001) if it
 * answers, else the config's dataDir.
 */
async function openTarget(args: ParsedArgs, deps: CacheCliDeps): Promise<OpenedCacheAdmin> {
  const admin = args.flags.get('admin');
  if (typeof admin === 'string') return httpTarget(adminUrl(admin, args.command), deps);
  const dataDir = args.flags.get('data-dir');
  const configFlag = args.flags.get('config');
  const configFile = typeof configFlag === 'string' ? configFlag : deps.env.MIRROR_CONFIG || undefined;
  if (typeof dataDir === 'string' || typeof configFlag === 'string') {
    const config = deps.loadConfig(configFile);
    return deps.openCacheAdmin(typeof dataDir === 'string' ? { ...config, dataDir } : config);
  }
  // Neither: a running mirror if one answers, else its data directory.
  let config: Config | undefined;
  let configError: unknown;
  try {
    config = deps.loadConfig(configFile);
  } catch (e) {
    configError = e;
  }
  const url = deps.env.MIRROR_ADMIN_URL || (config && configuredAdminUrl(config)) || DEFAULT_ADMIN_URL;
  if (await answers(url, deps)) return httpTarget(url, deps);
  if (!config) throw configError;
  try {
    return await deps.openCacheAdmin(config);
  } catch (e) {
    throw new Error(`no admin API answers at ${url}, and the configured data directory cannot be used: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function httpTarget(url: string, deps: CacheCliDeps): OpenedCacheAdmin {
  return { admin: new HttpCacheAdmin({ url, fetch: deps.fetch }), close: async () => {} };
}

/** Whether an admin API answers at `url` (GET /admin/cache with a JSON 200). */
async function answers(url: string, deps: CacheCliDeps): Promise<boolean> {
  try {
    const res = await deps.fetch(`${url.replace(/\/+$/, '')}/admin/cache`, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(deps.probeTimeoutMs ?? 1000) });
    const ok = res.ok && (res.headers.get('content-type') ?? '').includes('json');
    await res.body?.cancel().catch(() => {});
    return ok;
  } catch {
    return false;
  }
}

/** The admin listener of the config (`admin.listen`) as a URL to reach it from this host; undefined when none. */
export function configuredAdminUrl(config: Config): string | undefined {
  // Partial configs (tests, older files) may have no admin section at all.
  const listen = (config.admin as Config['admin'] | undefined)?.listen;
  if (!listen || listen.port === 0) return undefined;
  let host = listen.host;
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
}

// ---- Arguments -----------------------------------------------------------------------------------

function parseRefArg(s: string, command: string): CacheRef {
  try {
    return parseCacheRef(s);
  } catch (e) {
    if (e instanceof RefError) throw new UsageError(e.message, command);
    throw e;
  }
}

function tagArg(s: string): CacheRef & { tag: string } {
  const ref = parseRefArg(s, 'revalidate');
  if (ref.tag === undefined) throw new UsageError(`${s}: give a tag (REPOSITORY:TAG)`, 'revalidate');
  return ref as CacheRef & { tag: string };
}

function pinArg(s: string, command: string): string {
  try {
    return normalizePinPattern(s);
  } catch (e) {
    if (e instanceof RefError) throw new UsageError(e.message, command);
    throw e;
  }
}

// ---- Output --------------------------------------------------------------------------------------

function printJson(ctx: Context, value: unknown): number {
  ctx.out(`${JSON.stringify(value, null, 2)}\n`);
  return 0;
}

const plural = (n: number, one: string, many: string) => (n === 1 ? one : many);

export function repositoryTable(repos: RepositoryInfo[], now: number): string {
  const sorted = [...repos].sort((a, b) => a.name.localeCompare(b.name));
  return formatTable(
    ['REPOSITORY', 'IMAGES', 'TAGS', 'SIZE', 'LAST PULLED', 'PINNED'],
    sorted.map((r) => [r.name, String(r.images), String(r.tags.length), formatBytes(r.bytes), formatAgo(r.lastUsed, now), r.pinned ? 'yes' : '']),
    new Set([1, 2, 3]),
  );
}

export function imageTable(images: ImageInfo[], now: number): string {
  // Most recently used first; never-used last.
  const sorted = [...images].sort((a, b) => (b.lastUsed ?? -1) - (a.lastUsed ?? -1) || a.digest.localeCompare(b.digest));
  return formatTable(
    ['TAGS', 'DIGEST', 'PLATFORMS', 'SIZE', 'LAST PULLED', 'PINNED'],
    sorted.map((i) => [
      i.tags.length === 0 ? '<none>' : [...i.tags].sort().join(','),
      shortDigest(i.digest),
      i.platforms.length === 0 ? '-' : i.platforms.join(','),
      formatBytes(i.bytes),
      formatAgo(i.lastUsed, now),
      i.pinned ? 'yes' : '',
    ]),
    new Set([3]),
  );
}

export function purgeLine(r: PurgeResult): string {
  return `removed ${r.tags} ${plural(r.tags, 'tag', 'tags')}, ${r.images} ${plural(r.images, 'image', 'images')}, ${r.blobs} ${plural(r.blobs, 'blob', 'blobs')} (${formatBytes(r.bytes)})`;
}

export function gcLine(r: GcResult): string {
  return `removed ${r.blobs} unreferenced ${plural(r.blobs, 'blob', 'blobs')} (${formatBytes(r.bytes)}), ${r.records} stale ${plural(r.records, 'record', 'records')}, ${r.tempFiles} temp ${plural(r.tempFiles, 'file', 'files')}`;
}

export function evictLine(r: EvictionResult): string {
  const reason = r.reason === 'free_disk' ? 'free-disk floor' : r.reason === 'size' ? 'byte cap' : r.reason;
  return `evicted ${r.images} ${plural(r.images, 'image', 'images')}, ${r.blobs} ${plural(r.blobs, 'blob', 'blobs')} (${formatBytes(r.bytes)}) for the ${reason}; cache now ${formatBytes(r.after)}`;
}

function pinList(pins: string[]): string {
  return pins.length === 0 ? 'no pins\n' : `pins:\n${pins.map((p) => `  ${p}\n`).join('')}`;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** On a terminal (stderr), a one-line spinner while `work` runs, erased after; elsewhere nothing. */
async function withProgress<T>(ctx: Context, label: string, work: () => Promise<T>): Promise<T> {
  const stream = ctx.deps.stderr;
  if (!stream.isTTY) return work();
  const started = Date.now();
  let frame = 0;
  const draw = () => {
    const s = Math.floor((Date.now() - started) / 1000);
    stream.write(`\r${SPINNER[frame++ % SPINNER.length]} ${label}…${s > 0 ? ` ${s} s` : ''}\x1b[K`);
  };
  draw();
  const timer = setInterval(draw, 100);
  try {
    return await work();
  } finally {
    clearInterval(timer);
    stream.write('\r\x1b[K');
  }
}

// ---- Help ----------------------------------------------------------------------------------------

const TARGET_HELP = [
  'target (default: the admin API at MIRROR_ADMIN_URL, the config\'s admin.listen or',
  `${DEFAULT_ADMIN_URL} if it answers; else the configured dataDir):`,
  ...FLAGS.filter((f) => ['admin', 'data-dir', 'config'].includes(f.name)).map(flagLine),
].join('\n');

function flagLine(f: FlagSpec): string {
  const left = `${f.short ? `-${f.short}, ` : '    '}--${f.name}${f.value ? ` ${f.value}` : ''}`;
  return `  ${left.padEnd(20)}  ${f.help}`;
}

function commandUsage(c: Command): string {
  return `usage: regmirror cache ${c.name}${c.synopsis ? ` ${c.synopsis}` : ''} [options]\n`;
}

function mainUsage(): string {
  const w = Math.max(...COMMANDS.map((c) => `${c.name} ${c.synopsis}`.length));
  return [
    'usage: regmirror cache <command> [options]',
    '',
    "Inspects and manages the mirror's cache: through a running mirror's admin API, or on its data",
    'directory while it is stopped.',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${`${c.name} ${c.synopsis}`.padEnd(w)}  ${c.summary}`),
    '',
    TARGET_HELP,
    '',
    'options:',
    ...FLAGS.filter((f) => ['json', 'help'].includes(f.name)).map(flagLine),
    '',
    "'regmirror cache <command> --help' describes a command. Exit status: 0 ok, 1 failure, 2 bad usage.",
    '',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const own = c.flags.filter((f) => !COMMON_FLAGS.includes(f));
  return [
    commandUsage(c).trimEnd(),
    '',
    `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`,
    c.details,
    '',
    ...(own.length > 0 ? ['options:', ...FLAGS.filter((f) => own.includes(f.name)).map(flagLine), ''] : []),
    TARGET_HELP,
    '',
    'output:',
    ...FLAGS.filter((f) => ['json', 'help'].includes(f.name)).map(flagLine),
    '',
  ].join('\n');
}
