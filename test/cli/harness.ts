/**
 * Runs `regmirror cache …` in-process with everything injected: captured stdout/stderr, a terminal
 * or not, scripted prompt answers, a fetch and an openCacheAdmin of the test's choosing.
 */
import { runCacheCli, type CacheCliDeps, type OpenedCacheAdmin } from '../../src/cli/cache.js';
import type { Config } from '../../src/config.js';
import type { CacheAdmin, CacheSummary, EvictionResult, GcResult, ImageInfo, PurgeResult, PurgeTarget, RepositoryInfo } from '../../src/lifecycle/types.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** Questions asked through the prompt. */
  prompts: string[];
  /** Configs openCacheAdmin was called with. */
  opened: Config[];
  /** URLs fetched (method and URL). */
  fetched: string[];
}

export interface CliRunOptions {
  /** What openCacheAdmin returns (default: a fresh FakeCacheAdmin). */
  admin?: CacheAdmin;
  fetch?: CacheCliDeps['fetch'];
  stdoutTTY?: boolean;
  stderrTTY?: boolean;
  stdinTTY?: boolean;
  answers?: string[];
  env?: Record<string, string | undefined>;
  config?: Partial<Config>;
  now?: number;
  /** Replaces any of the deps above (e.g. the real loadConfig and openCacheAdmin). */
  deps?: Partial<CacheCliDeps>;
}

/** A fetch that finds nothing listening (as undici reports ECONNREFUSED). */
export const refusedFetch: CacheCliDeps['fetch'] = async () => {
  throw Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5001'), { code: 'ECONNREFUSED' }) });
};

export async function runCli(argv: string[], opts: CliRunOptions = {}): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const prompts: string[] = [];
  const opened: Config[] = [];
  const fetched: string[] = [];
  const answers = [...(opts.answers ?? [])];
  const admin = opts.admin ?? new FakeCacheAdmin();
  const fetchFn = opts.fetch ?? refusedFetch;
  const code = await runCacheCli(argv, {
    stdout: { write: (s: string) => out.push(s), isTTY: opts.stdoutTTY ?? false },
    stderr: { write: (s: string) => err.push(s), isTTY: opts.stderrTTY ?? false },
    stdinIsTTY: opts.stdinTTY ?? false,
    prompt: async (q) => {
      prompts.push(q);
      return answers.shift() ?? '';
    },
    env: opts.env ?? {},
    fetch: async (input, init) => {
      fetched.push(`${init?.method ?? 'GET'} ${input}`);
      return fetchFn(input, init);
    },
    loadConfig: (file) => ({ dataDir: file ? `/from/${file}` : '/default/data', ...(opts.config ?? {}) }) as Config,
    openCacheAdmin: async (config): Promise<OpenedCacheAdmin> => {
      opened.push(config);
      return { admin, close: async () => {} };
    },
    now: () => opts.now ?? NOW,
    probeTimeoutMs: 200,
    ...opts.deps,
  });
  return { code, stdout: out.join(''), stderr: err.join(''), prompts, opened, fetched };
}

export const NOW = Date.UTC(2026, 10, 29, 12, 0, 0);
export const DIGEST_A = `sha256:${'a1'.repeat(32)}`;
export const DIGEST_B = `sha256:${'b2'.repeat(32)}`;

/** An in-memory CacheAdmin with a fixed content and a log of the calls. */
export class FakeCacheAdmin implements CacheAdmin {
  calls: Array<[string, ...unknown[]]> = [];
  pinned: string[] = ['ghcr.io/acme/**'];
  summaryValue: CacheSummary = {
    bytes: 1.5 * 1024 ** 3,
    blobs: 340,
    images: 12,
    repositories: 2,
    limitBytes: 10 * 1024 ** 3,
    freeBytes: 50 * 1024 ** 3,
    minFreeBytes: 5 * 1024 ** 3,
    hitRatio: 0.875,
    bytesSaved: 3.4 * 1024 ** 3,
    oldestUse: NOW - 3 * 86400_000,
    pins: this.pinned,
  };
  repos: RepositoryInfo[] = [
    { name: 'ghcr.io/acme/app', upstream: 'ghcr.io', repo: 'acme/app', bytes: 200 * 1024 ** 2, images: 1, tags: ['v1'], lastUsed: undefined, pinned: true },
    { name: 'docker.io/library/alpine', upstream: 'docker.io', repo: 'library/alpine', bytes: 7.5 * 1024 ** 2, images: 2, tags: ['3.19', 'latest'], lastUsed: NOW - 180_000, pinned: false },
  ];
  imageList: ImageInfo[] = [
    {
      ref: `docker.io/library/alpine@${DIGEST_A}`, upstream: 'docker.io', repo: 'library/alpine', digest: DIGEST_A,
      mediaType: 'application/vnd.oci.image.index.v1+json', tags: ['latest', '3.19'], platforms: ['linux/amd64', 'linux/arm64/v8'],
      bytes: 7 * 1024 ** 2, blobs: 6, lastUsed: NOW - 180_000, pinned: false,
    },
    {
      ref: `docker.io/library/alpine@${DIGEST_B}`, upstream: 'docker.io', repo: 'library/alpine', digest: DIGEST_B,
      mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: [], platforms: [],
      bytes: 512 * 1024, blobs: 3, lastUsed: undefined, pinned: true,
    },
  ];
  evictResult: EvictionResult | undefined = { reason: 'size', images: 3, blobs: 20, bytes: 300 * 1024 ** 2, after: 1.1 * 1024 ** 3 };
  purgeResult: PurgeResult = { tags: 1, images: 1, blobs: 4, bytes: 3 * 1024 ** 2 };
  revalidates = true;
  fail: Error | undefined;

  private record(name: string, ...args: unknown[]): void {
    this.calls.push([name, ...args]);
    if (this.fail) throw this.fail;
  }

  async summary() {
    this.record('summary');
    return this.summaryValue;
  }
  async repositories() {
    this.record('repositories');
    return this.repos;
  }
  async images(filter?: { upstream: string; repo: string }) {
    this.record('images', filter);
    return this.imageList.filter((i) => !filter || (i.upstream === filter.upstream && i.repo === filter.repo));
  }
  async purge(target: PurgeTarget) {
    this.record('purge', target);
    return this.purgeResult;
  }
  async revalidate(upstream: string, repo: string, tag: string) {
    this.record('revalidate', upstream, repo, tag);
    return this.revalidates;
  }
  async pins() {
    this.record('pins');
    return [...this.pinned];
  }
  async pin(p: string) {
    this.record('pin', p);
    if (!this.pinned.includes(p)) this.pinned.push(p);
    return [...this.pinned];
  }
  async unpin(p: string) {
    this.record('unpin', p);
    this.pinned = this.pinned.filter((x) => x !== p);
    return [...this.pinned];
  }
  async evict() {
    this.record('evict');
    return this.evictResult;
  }
  async gc(): Promise<GcResult> {
    this.record('gc');
    return { blobs: 2, bytes: 1536, records: 5, tempFiles: 1 };
  }
}
