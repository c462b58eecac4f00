/**
 * Spawns the REAL server process, `node dist/main.js --config <tmp config.yaml>`, on 127.0.0.1 with a
 * free port and a temp data dir, and waits until /healthz answers. dist/ is built once per run by
 * test/helpers/global-setup.ts.
 *
 * What it gives a test:
 * - `url`, `port`, `pid` (current process; they change on `restart()` only if the port was lost)
 * - `lines`: stdout parsed as JSON log records (across restarts), `output()` the raw stdout + stderr
 * - `kill(signal)` (resolves when the process is gone), `stop()` (SIGTERM, SIGKILL after 5 s, removes
 *   the temp dir it made), `restart()` (a fresh process on the same config and data dir)
 * - `/proc` figures: `fdCount()`, `peakRssKiB()` (VmHWM), and `/metrics` readers.
 *
 * Every process spawned here is SIGKILLed when the test worker exits, so a failing test leaks none.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The entry point spawned; REGMIRROR_MAIN_JS points the suites at another build (e.g. a patched copy). */
export const MAIN_JS = process.env.REGMIRROR_MAIN_JS ?? join(ROOT, 'dist', 'main.js');

export interface SpawnUpstream {
  url: string;
  libraryPrefix?: boolean;
  username?: string;
  password?: string;
  tagTtl?: number;
  aliases?: string[];
}

export interface SpawnOptions {
  /** upstream key -> settings, e.g. { 'docker.io': { url: fake.url, libraryPrefix: true } } */
  upstreams: Record<string, SpawnUpstream>;
  defaultRegistry?: string;
  /** Use this data dir (kept on stop). Default: `<tmp>/data`, removed on stop. */
  dataDir?: string;
  /** Raw config merged at the top level (timeouts, limits, cache, log...). */
  extraConfig?: Record<string, unknown>;
  /** Extra environment for the process (MIRROR_* from the test runner's environment are dropped). */
  env?: Record<string, string>;
  /** How long to wait for /healthz. Default 20 s. */
  startTimeoutMs?: number;
}

/** One stdout line: a pino record, or `{ raw }` when it was not JSON. */
export interface LogLine {
  level?: number;
  msg?: string;
  raw?: string;
  [key: string]: unknown;
}

export interface SpawnedMirror {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly configPath: string;
  /** Parsed stdout records of every process this handle started. */
  readonly lines: LogLine[];
  /** Raw stdout and stderr of every process this handle started. */
  output(): string;
  /** Whether the current process has exited. */
  readonly exited: boolean;
  /** Sends `signal` (default SIGKILL) and resolves once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (SIGKILL after 5 s); removes the temp dir this helper created. Idempotent. */
  stop(): Promise<void>;
  /** Stops the current process if running (SIGTERM) and starts a new one on the same config and data dir. */
  restart(): Promise<void>;
  /** Entries in /proc/<pid>/fd. */
  fdCount(): number;
  /** VmHWM (peak resident set) of the current process, in KiB. */
  peakRssKiB(): number;
  /** VmRSS of the current process, in KiB. */
  rssKiB(): number;
  /** The /metrics text. */
  metrics(): Promise<string>;
  /** Sum of the samples of `name` whose labels include `labels` (0 when there are none). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

/** One GET with a hard deadline; resolves with status and body text, rejects on errors/timeouts. */
export function httpGet(url: string, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: opts.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 5000, () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on('error', reject);
  });
}

/** Parses Prometheus text and sums the samples of `name` matching `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got[l[1]!] = l[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum += Number(m[4]);
  }
  return sum;
}

function procStatusKiB(pid: number, field: string): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

export async function spawnMirror(opts: SpawnOptions): Promise<SpawnedMirror> {
  if (!existsSync(MAIN_JS)) {
    throw new Error(`${MAIN_JS} is missing: build it with \`npx tsc -p tsconfig.build.json\` (test/helpers/global-setup.ts does this once per run)`);
  }
  installExitHook();
  const base = await mkdtemp(join(tmpdir(), 'regmirror-spawn-'));
  const dataDir = opts.dataDir ?? join(base, 'data');
  await mkdir(dataDir, { recursive: true });
  const configPath = join(base, 'config.yaml');
  const lines: LogLine[] = [];
  let text = '';
  let port = await freePort();
  let child: ChildProcess | undefined;
  let exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> = Promise.resolve({ code: null, signal: null });
  let exited = true;
  let stopped = false;

  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('MIRROR_') && k !== 'NODE_OPTIONS') env[k] = v;
  // Parallel suites each spawn mirrors: none takes the default admin port (a test that wants the admin API sets its own).
  env.MIRROR_ADMIN_LISTEN = '127.0.0.1:0';
  Object.assign(env, opts.env ?? {});

  const writeConfig = async () => {
    const config = {
      listen: `127.0.0.1:${port}`,
      dataDir,
      defaultRegistry: opts.defaultRegistry ?? Object.keys(opts.upstreams)[0] ?? 'docker.io',
      log: { level: 'info', format: 'json' },
      upstreams: opts.upstreams,
      ...(opts.extraConfig ?? {}),
    };
    // JSON is YAML.
    await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
  };

  const startOnce = async (): Promise<'ok' | 'port-in-use'> => {
    await writeConfig();
    const c = spawn(process.execPath, [MAIN_JS, '--config', configPath], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    live.add(c);
    exited = false;
    exit = new Promise((resolve) => {
      c.once('exit', (code, signal) => {
        exited = true;
        live.delete(c);
        resolve({ code, signal });
      });
    });
    let partial = '';
    c.stdout.setEncoding('utf8');
    c.stdout.on('data', (s: string) => {
      text += s;
      partial += s;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (!line.trim()) continue;
        try {
          lines.push(JSON.parse(line) as LogLine);
        } catch {
          lines.push({ raw: line });
        }
      }
    });
    c.stderr.setEncoding('utf8');
    c.stderr.on('data', (s: string) => {
      text += s;
    });
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    for (let i = 0; Date.now() < deadline && i < 2000; i++) {
      if (exited) {
        const why = await exit;
        if (/EADDRINUSE/.test(text)) return 'port-in-use';
        throw new Error(`mirror exited during start-up (code ${why.code}, signal ${why.signal}):\n${text.slice(-4000)}`);
      }
      try {
        const r = await httpGet(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1000 });
        if (r.status === 200) return 'ok';
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    c.kill('SIGKILL');
    await exit;
    throw new Error(`mirror did not answer /healthz within ${opts.startTimeoutMs ?? 20_000} ms:\n${text.slice(-4000)}`);
  };

  const start = async () => {
    for (let attempt = 0; attempt < 4; attempt++) {
      if ((await startOnce()) === 'ok') return;
      port = await freePort();
    }
    throw new Error('mirror could not find a free port in 4 attempts');
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (!child || exited) return exit;
    child.kill(signal);
    return exit;
  };

  const terminate = async () => {
    if (!child || exited) return;
    child.kill('SIGTERM');
    const done = await Promise.race([exit.then(() => true), sleep(5000).then(() => false)]);
    if (!done) {
      child.kill('SIGKILL');
      await exit;
    }
  };

  await start();

  const handle: SpawnedMirror = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return child!.pid!;
    },
    dataDir,
    configPath,
    lines,
    output: () => text,
    get exited() {
      return exited;
    },
    kill,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await terminate();
      await rm(base, { recursive: true, force: true }).catch(() => undefined);
    },
    restart: async () => {
      await terminate();
      await start();
    },
    fdCount: () => readdirSync(`/proc/${child!.pid}/fd`).length,
    peakRssKiB: () => procStatusKiB(child!.pid!, 'VmHWM'),
    rssKiB: () => procStatusKiB(child!.pid!, 'VmRSS'),
    metrics: async () => (await httpGet(`http://127.0.0.1:${port}/metrics`)).body,
    metric: async (name, labels = {}) => metricValue((await httpGet(`http://127.0.0.1:${port}/metrics`)).body, name, labels),
  };
  return handle;
}
