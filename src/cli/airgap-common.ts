/**
 * What `regmirror import` and `regmirror export` share: their injected dependencies, the target
 * (a running mirror's admin API, or a data directory opened in-process), usage errors and help.
 */
import type { Readable, Writable } from 'node:stream';
import type { Airgap } from '../airgap/service.js';
import type { Config } from '../config.js';
import { UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { configuredAdminUrl, DEFAULT_ADMIN_URL, type OutputStream } from './cache.js';
import type { FetchFn } from './http-admin.js';

export interface OpenedAirgap {
  airgap: Airgap;
  close(): Promise<void>;
}

export interface AirgapCliDeps {
  /** Also where `export -o -` writes the bundle. */
  stdout: OutputStream & Writable;
  stderr: OutputStream;
  /** `import -` reads the bundle from here. */
  stdin: Readable;
  env: Record<string, string | undefined>;
  fetch: FetchFn;
  loadConfig(file: string | undefined): Config;
  /** src/mirror.ts openAirgap. */
  openAirgap(config: Config, opts: { forImport: boolean }): Promise<OpenedAirgap>;
  now?: () => number;
  probeTimeoutMs?: number;
}

export const TARGET_FLAGS: FlagSpec[] = [
  { name: 'admin', value: 'URL', help: "a running mirror's admin API, e.g. http://127.0.0.1:5001" },
  { name: 'data-dir', value: 'DIR', help: 'a data directory' },
  { name: 'config', short: 'c', value: 'FILE', help: "the mirror's config file (its dataDir and upstreams)" },
  { name: 'json', help: 'print the result as JSON' },
  { name: 'help', short: 'h', help: 'show help' },
];

export function flagsHelp(specs: FlagSpec[]): string {
  const rows = specs.map((s) => [`${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.value ? ` ${s.value}` : ''}`, s.help]);
  const w = Math.max(...rows.map(([a]) => a!.length));
  return rows.map(([a, b]) => `  ${a!.padEnd(w)}  ${b}\n`).join('');
}

export function checkFlags(args: ParsedArgs, command: string): void {
  if (typeof args.flags.get('admin') === 'string' && (args.flags.has('data-dir') || args.flags.has('config'))) {
    throw new UsageError('--admin works on a running mirror; --data-dir and --config on a data directory: give one', command);
  }
  const admin = args.flags.get('admin');
  if (typeof admin === 'string') {
    let u: URL;
    try {
      u = new URL(admin);
    } catch {
      throw new UsageError(`--admin ${admin}: not a URL (e.g. http://127.0.0.1:5001)`, command);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--admin ${admin}: must be an http(s) URL`, command);
  }
}

/** The config the flags name (`--config`, MIRROR_CONFIG, else the embedded defaults), with `--data-dir` over it. */
export function configOf(args: ParsedArgs, deps: Pick<AirgapCliDeps, 'env' | 'loadConfig'>): Config {
  const configFlag = args.flags.get('config');
  const file = typeof configFlag === 'string' ? configFlag : deps.env.MIRROR_CONFIG || undefined;
  const config = deps.loadConfig(file);
  const dataDir = args.flags.get('data-dir');
  return typeof dataDir === 'string' ? { ...config, dataDir } : config;
}

/** The admin URL to use: `--admin`, else (without --data-dir/--config) the default one if it answers; undefined: the data directory. */
export async function adminTarget(args: ParsedArgs, deps: Pick<AirgapCliDeps, 'env' | 'loadConfig' | 'fetch' | 'probeTimeoutMs'>): Promise<string | undefined> {
  const admin = args.flags.get('admin');
  if (typeof admin === 'string') return admin.replace(/\/+$/, '');
  if (args.flags.has('data-dir') || args.flags.has('config')) return undefined;
  let config: Config | undefined;
  try {
    config = deps.loadConfig(deps.env.MIRROR_CONFIG || undefined);
  } catch {
    config = undefined;
  }
  const url = deps.env.MIRROR_ADMIN_URL || (config && configuredAdminUrl(config)) || DEFAULT_ADMIN_URL;
  try {
    const res = await deps.fetch(`${url}/admin/cache`, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(deps.probeTimeoutMs ?? 1000) });
    await res.body?.cancel().catch(() => {});
    return res.ok ? url : undefined;
  } catch {
    return undefined;
  }
}
