/**
 * Debian's `prometheus` for a test: one process on a free loopback port with its own temp storage,
 * scraping the given targets every `scrapeInterval` and evaluating the given rule files, and a small
 * client for its HTTP API (instant queries at a chosen time, rules, alerts, targets).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupDir, spawnDaemon, toolPath, waitForDaemon } from '../e2e/harness/tools.js';
import { freePort } from '../helpers/ports.js';

export interface PrometheusOptions {
  /** job name -> host:port targets. */
  jobs: Record<string, string[]>;
  ruleFiles?: string[];
  /** e.g. '1s' (the scrape and the rule evaluation interval). */
  interval?: string;
}

/** One sample of an instant vector: labels and value (a number; NaN and ±Inf as Prometheus sends them). */
export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  url: string;
  /** Evaluates `expr` at `time` (seconds since the epoch; default now). Throws on a query error. */
  query(expr: string, time?: number): Promise<Sample[]>;
  /** GET /api/v1/<path>, the `data` of a successful answer. */
  api<T>(path: string): Promise<T>;
  logs(): string;
  stop(): Promise<void>;
}

/** Prometheus's sample value text: a decimal, NaN, +Inf or -Inf. */
const num = (s: string): number => (s === '+Inf' ? Infinity : s === '-Inf' ? -Infinity : Number(s));

export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  const bin = toolPath('prometheus');
  if (!bin) throw new Error('prometheus not installed (apt-get install prometheus)');
  const dir = mkdtempSync(join(tmpdir(), 'prom-'));
  const interval = opts.interval ?? '1s';
  const config = {
    global: { scrape_interval: interval, evaluation_interval: interval, scrape_timeout: interval },
    rule_files: opts.ruleFiles ?? [],
    scrape_configs: Object.entries(opts.jobs).map(([job, targets]) => ({ job_name: job, static_configs: [{ targets }] })),
  };
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const d = spawnDaemon(bin, [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { watch: { dir, graceMs: 3000 } });

  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}/api/v1/${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string; errorType?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.errorType}: ${body.error}`);
    return body.data;
  };
  const stop = async () => {
    await d.stop(5000);
    await cleanupDir(dir);
    d.dismissWatchdog();
  };
  try {
    await waitForDaemon(d, async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status === 200, 30_000, 'prometheus /-/ready');
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    api,
    async query(expr, time) {
      const q = new URLSearchParams({ query: expr, ...(time !== undefined ? { time: time.toFixed(3) } : {}) });
      const data = await api<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> | [number, string] }>(`query?${q}`);
      if (data.resultType === 'scalar') {
        const v = data.result as [number, string];
        return [{ metric: {}, value: num(v[1]) }];
      }
      return (data.result as Array<{ metric: Record<string, string>; value: [number, string] }>).map((r) => ({ metric: r.metric, value: num(r.value[1]) }));
    },
    logs: () => d.logs(),
    stop,
  };
}
