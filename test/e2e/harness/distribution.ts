// CNCF distribution 2.8 (Debian `docker-registry`) as a real upstream, or as a pull-through
// cache peer (proxy mode) for comparisons. We count what it served by parsing its access log:
// distribution wraps its handler in gorilla's CombinedLoggingHandler, which writes one Apache
// "combined" line per request to STDOUT (app logs go to stderr), e.g.
//   127.0.0.1 - - [22/Nov/2026:04:46:03 +0000] "HEAD /v2/library/busybox/manifests/latest?ns=docker.io HTTP/1.1" 200 405 "" "containerd/1.6.20~ds1"
// The line is written after the response completes, so a client can finish before its line
// arrives: use waitForRequests()/settle() rather than counting immediately.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupDir, freePort, httpStatus, makeTempDir, spawnDaemon, toolPath, waitFor, waitForDaemon } from './tools.js';

export interface AccessLogEntry {
  method: string;
  /** Request URI as sent, including the query (e.g. `?ns=docker.io`). */
  uri: string;
  /** uri without the query string. */
  path: string;
  status: number;
  bytes: number;
  userAgent: string;
  time: string;
}

export interface RequestFilter {
  method?: string;
  /** Tested against the path only (no query). */
  pathRegex?: RegExp;
  status?: number;
  userAgentRegex?: RegExp;
}

export interface Distribution {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT (for docker:// refs and hosts.toml) */
  host: string;
  port: number;
  dir: string;
  configPath: string;
  /** Parsed access-log entries seen so far (since start or the last clearRequests()). */
  requests(): AccessLogEntry[];
  countRequests(filter?: RequestFilter): number;
  /** Wait until at least `atLeast` matching entries were logged. */
  waitForRequests(filter: RequestFilter, atLeast: number, timeoutMs?: number): Promise<void>;
  /** Wait until no new access-log line arrived for quietMs (bounded by timeoutMs). */
  settle(quietMs?: number, timeoutMs?: number): Promise<void>;
  clearRequests(): void;
  /** Raw stdout+stderr of the registry. */
  logs(): string;
  stop(): Promise<void>;
}

export interface StartDistributionOptions {
  /** Run as a pull-through cache of this upstream URL (distribution `proxy.remoteurl`). */
  proxyOf?: string;
  /** distribution log level for app logs on stderr; the access log is independent of it. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  timeoutMs?: number;
}

const ACCESS_RE = /^\S+ \S+ \S+ \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"/;

export function parseAccessLine(line: string): AccessLogEntry | undefined {
  const m = ACCESS_RE.exec(line);
  if (!m) return undefined;
  const uri = m[3] ?? '';
  const q = uri.indexOf('?');
  return {
    time: m[1] ?? '',
    method: m[2] ?? '',
    uri,
    path: q < 0 ? uri : uri.slice(0, q),
    status: Number(m[4]),
    bytes: m[5] === '-' ? 0 : Number(m[5]),
    userAgent: m[6] ?? '',
  };
}

export function matches(e: AccessLogEntry, f: RequestFilter): boolean {
  return (
    (f.method === undefined || e.method === f.method.toUpperCase()) &&
    (f.pathRegex === undefined || f.pathRegex.test(e.path)) &&
    (f.status === undefined || e.status === f.status) &&
    (f.userAgentRegex === undefined || f.userAgentRegex.test(e.userAgent))
  );
}

function configYaml(root: string, port: number, opts: StartDistributionOptions): string {
  // JSON is valid YAML; avoids hand-indenting. Health checks and upload purging are off so the
  // log holds only client traffic; a fixed secret silences the "No HTTP secret" warning.
  const cfg: Record<string, unknown> = {
    version: 0.1,
    log: { level: opts.logLevel ?? 'warn', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: root },
      delete: { enabled: true },
      redirect: { disable: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: 'regmirror-e2e-harness' },
    health: { storagedriver: { enabled: false } },
  };
  if (opts.proxyOf) cfg.proxy = { remoteurl: opts.proxyOf };
  return JSON.stringify(cfg, null, 2);
}

export async function startDistribution(opts: StartDistributionOptions = {}): Promise<Distribution> {
  const bin = toolPath('docker-registry');
  if (!bin) throw new Error('docker-registry not installed (apt-get install docker-registry)');
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const dir = makeTempDir('dreg');
  const configPath = join(dir, 'config.yml');
  let entries: AccessLogEntry[] = [];
  let lastLineAt = Date.now();

  // Retry on a port race (another process grabbing the port between freePort() and bind).
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    writeFileSync(configPath, configYaml(join(dir, 'storage'), port, opts));
    // REGISTRY_* env vars override config.yml; never inherit any.
    const env: NodeJS.ProcessEnv = {};
    for (const k of Object.keys(process.env)) if (k.startsWith('REGISTRY_')) env[k] = undefined;
    const d = spawnDaemon(bin, ['serve', configPath], {
      env,
      watch: { dir, graceMs: 3000 },
      onStdoutLine: (line) => {
        const e = parseAccessLine(line);
        if (!e) return;
        entries.push(e);
        lastLineAt = Date.now();
      },
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForDaemon(d, async () => (await httpStatus(`${url}/v2/`)) === 200, timeoutMs, `docker-registry at ${url}`);
    } catch (e) {
      await d.stop(2000);
      d.dismissWatchdog();
      if (attempt < 2 && /address already in use/.test(d.logs())) continue;
      await cleanupDir(dir);
      throw e;
    }
    // Drop our own readiness probes from the counters, once the one that succeeded has been logged.
    await waitFor(() => entries.some((e) => e.path === '/v2/' && e.status === 200), 5000, `the readiness probe in ${url}'s access log`, 10);
    entries = [];

    const api: Distribution = {
      url,
      host: `127.0.0.1:${port}`,
      port,
      dir,
      configPath,
      requests: () => [...entries],
      countRequests: (f = {}) => entries.filter((e) => matches(e, f)).length,
      async waitForRequests(f, atLeast, t = 10_000) {
        await waitFor(() => api.countRequests(f) >= atLeast, t, `${atLeast} request(s) matching ${describe(f)} on ${url}`, 25);
      },
      async settle(quietMs = 200, t = 10_000) {
        await waitFor(() => Date.now() - lastLineAt >= quietMs, t, `quiet access log on ${url}`, 25);
      },
      clearRequests: () => {
        entries = [];
      },
      logs: () => d.logs(),
      async stop() {
        await d.stop(5000);
        await cleanupDir(dir);
        d.dismissWatchdog();
      },
    };
    return api;
  }
}

function describe(f: RequestFilter): string {
  return JSON.stringify({ ...f, pathRegex: f.pathRegex?.source, userAgentRegex: f.userAgentRegex?.source });
}
