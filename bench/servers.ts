/**
 * The processes the bench runs on loopback: this mirror (node dist/main.js), nginx serving a blob
 * file with sendfile, and (through the e2e harness) docker-registry as upstream and as proxy peer.
 * Every one runs in its own process group with an out-of-process watchdog (harness spawnDaemon), so
 * nothing outlives the bench even if it is killed.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findProcesses, freePort, httpStatus, makeTempDir, cleanupDir, run, spawnDaemon, toolPath, waitForDaemon, isRoot, type Daemon } from '../test/e2e/harness/tools.js';
import { startDistribution, type Distribution } from '../test/e2e/harness/distribution.js';
import { startNginxFront } from '../test/helpers/nginx.js';

export interface Server {
  name: string;
  url: string;
  host: string;
  /** pid of the serving process (for VmHWM), when there is a single one */
  pid: number | undefined;
  stop(): Promise<void>;
}

/** Installs missing Debian packages (as root) and says so; throws when that is impossible. */
export async function ensureTools(log: (s: string) => void): Promise<void> {
  const wanted: Array<[tool: string, pkg: string]> = [
    ['docker-registry', 'docker-registry'],
    ['nginx', 'nginx'],
    ['wrk', 'wrk'],
    ['skopeo', 'skopeo'],
    ['curl', 'curl'],
  ];
  const missing = wanted.filter(([t]) => !toolPath(t)).map(([, p]) => p);
  if (missing.length === 0) return;
  if (!isRoot()) throw new Error(`bench needs ${missing.join(', ')}: install them (apt-get install -y ${missing.join(' ')}) or run as root`);
  log(`installing missing tools as root: apt-get install -y ${missing.join(' ')}`);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update'], { timeoutMs: 300_000, env });
  const r = await run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { timeoutMs: 600_000, env });
  if (r.code !== 0) throw new Error(`apt-get install failed:\n${r.stderr.slice(-3000)}`);
  const still = wanted.filter(([t]) => !toolPath(t)).map(([t]) => t);
  if (still.length) throw new Error(`still missing after apt-get: ${still.join(', ')}`);
}

export interface MirrorServer extends Server {
  dataDir: string;
  /** the instance's dir (config + data) */
  dir: string;
  /** The process's combined stdout and stderr (its JSON log lines). */
  logs(): string;
}

export interface StartMirrorOptions {
  root: string;
  upstreamUrl: string;
  label: string;
  profileDir?: string;
  dir?: string;
  /** Top-level config keys set over the bench's (e.g. `cache`, `admin`). */
  config?: Record<string, unknown>;
  /** Default warn. */
  logLevel?: string;
  /** Give up waiting for `/v2/` after this long (default 20 s). */
  readyTimeoutMs?: number;
}

/**
 * Starts `node dist/main.js --config <tmp>.yaml` with a fresh data dir, or in `dir` (kept on stop:
 * the caller owns it) to restart on a data dir another instance filled.
 */
export async function startMirror(opts: StartMirrorOptions): Promise<MirrorServer> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? makeTempDir('rmb-mirror');
  const dataDir = join(dir, 'data');
  const main = join(opts.root, 'dist', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} missing: build first (npx tsc -p tsconfig.build.json)`);
  // Never inherit the operator's MIRROR_* overrides.
  const env: NodeJS.ProcessEnv = {};
  for (const k of Object.keys(process.env)) if (k.startsWith('MIRROR_')) env[k] = undefined;
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const configPath = join(dir, 'config.yaml');
    writeFileSync(
      configPath,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        dataDir,
        log: { level: opts.logLevel ?? 'warn' },
        upstreams: { 'docker.io': { url: opts.upstreamUrl, libraryPrefix: true } },
        // Every instance would otherwise try the default admin port (127.0.0.1:5001).
        admin: { listen: '' },
        ...opts.config,
      }),
    );
    const nodeArgs = opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`, `--cpu-prof-name=mirror-${opts.label}.cpuprofile`] : [];
    const d = spawnDaemon(process.execPath, [...nodeArgs, main, '--config', configPath], { env, watch: ownDir ? { dir, graceMs: 3000 } : { graceMs: 3000 } });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForDaemon(d, async () => (await httpStatus(`${url}/v2/`)) === 200, opts.readyTimeoutMs ?? 20_000, `regmirror at ${url}`);
    } catch (e) {
      await d.stop(2000);
      d.dismissWatchdog();
      if (attempt < 2 && /EADDRINUSE/.test(d.logs())) continue;
      if (ownDir) await cleanupDir(dir);
      throw e;
    }
    return {
      name: 'regmirror',
      url,
      host: `127.0.0.1:${port}`,
      pid: d.pid,
      dataDir,
      dir,
      logs: () => d.logs(),
      stop: stopper(d, ownDir ? dir : undefined, opts.profileDir ? 40_000 : 10_000),
    };
  }
}

function stopper(d: Daemon, dir: string | undefined, graceMs: number): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () =>
    (p ??= (async () => {
      await d.stop(graceMs);
      if (dir) await cleanupDir(dir);
      d.dismissWatchdog();
    })());
}

export interface ProxyServer extends Server {
  dist: Distribution;
}

/** distribution 2.8 in proxy mode: the reference pull-through cache. */
export async function startProxy(upstreamUrl: string): Promise<ProxyServer> {
  const dist = await startDistribution({ proxyOf: upstreamUrl, logLevel: 'error' });
  return { name: 'distribution proxy', url: dist.url, host: dist.host, pid: distributionPid(dist), dist, stop: () => dist.stop() };
}

/** The docker-registry process serving `dist` (found by its config path in argv). */
export function distributionPid(dist: Distribution): number | undefined {
  return findProcesses('cmdline', (c) => c.includes(dist.configPath))[0];
}

/** nginx serving `root` (e.g. an OCI layout: /blobs/sha256/<hex>) with sendfile, no access log. */
export async function startNginx(root: string): Promise<Server> {
  const bin = toolPath('nginx');
  if (!bin) throw new Error('nginx not installed');
  const dir = makeTempDir('rmb-nginx');
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, 'tmp', t), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      `# written by bench/servers.ts
daemon off;
master_process on;
worker_processes auto;
${isRoot() ? 'user root;' : ''}
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 30s;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { }
  }
}
`,
    );
    const d = spawnDaemon(bin, ['-e', 'stderr', '-p', `${dir}/`, '-c', conf], { watch: { dir, graceMs: 3000 } });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForDaemon(d, async () => (await httpStatus(`${url}/`)) > 0, 10_000, `nginx at ${url}`);
    } catch (e) {
      await d.stop(2000);
      d.dismissWatchdog();
      if (attempt < 2 && /in use/.test(d.logs())) continue;
      await cleanupDir(dir);
      throw e;
    }
    return { name: 'nginx sendfile', url, host: `127.0.0.1:${port}`, pid: undefined, stop: stopper(d, dir, 5000) };
  }
}

/**
 * The Node ceiling (bench/ceiling.ts): a minimal node:http server piping `file` with
 * fs.createReadStream into every GET. Its own process, like the mirror, so both pay the same for
 * a process of their own and neither shares the bench's event loop.
 */
export async function startNodeCeiling(file: string): Promise<Server> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'ceiling.js');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const d = spawnDaemon(process.execPath, [script, file, String(port)], { watch: { graceMs: 3000 } });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForDaemon(d, async () => (await httpStatus(`${url}/`)) === 200, 10_000, `node ceiling at ${url}`);
    } catch (e) {
      await d.stop(2000);
      d.dismissWatchdog();
      if (attempt < 2 && /EADDRINUSE/.test(d.logs())) continue;
      throw e;
    }
    return { name: 'Node ceiling', url, host: `127.0.0.1:${port}`, pid: d.pid, stop: stopper(d, undefined, 3000) };
  }
}

/**
 * nginx in front of a mirror started with `serve.accelRedirect` (deploy/nginx/regmirror.conf as
 * shipped, through test/helpers/nginx.ts): cache hits are checked by the mirror and sent by nginx.
 */
export async function startNginxFrontOf(mirror: MirrorServer, root: string): Promise<Server> {
  const f = await startNginxFront({ mirrorHost: mirror.host, blobsDir: join(mirror.dataDir, 'blobs'), conf: join(root, 'deploy', 'nginx', 'regmirror.conf') });
  return { name: 'nginx + regmirror (X-Accel-Redirect)', url: f.url, host: f.host, pid: undefined, stop: () => f.stop() };
}

/** Peak resident set (VmHWM) in bytes. */
export function peakRss(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system, all threads) a process has used so far; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds the whole machine has been busy, all cores: user, nice, system, irq and softirq.
 * Not idle or iowait; not steal (another guest had the core); not guest and guest_nice, which
 * user and nice already include.
 */
export function machineBusySeconds(): number {
  const [user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system! + irq! + softirq!) / CLOCK_TICKS;
}

/** USER_HZ: the unit of /proc times, 100 on every Linux that Node runs on. */
const CLOCK_TICKS = 100;

/** Resets VmHWM to the current RSS (Linux ≥ 4.0; needs to own the process or be root). */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}
