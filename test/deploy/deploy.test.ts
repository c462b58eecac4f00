/**
 * The packaging under deploy/: every file parses, the pieces agree with each other (ports, paths,
 * names, mounts), and every metric the dashboard and the alerts query is one the mirror exports.
 * External checkers run when installed (promtool, systemd-analyze) and are skipped with a printed
 * reason otherwise.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { Metrics } from '../../src/metrics.js';
import { parseUnit } from './unit-file.js';

// Parsed YAML/JSON documents are untyped trees; the assertions below are their schema.
 
type J = any;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const at = (...p: string[]) => join(DEPLOY, ...p);
const read = (p: string) => readFileSync(p, 'utf8');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** Every document of a YAML file, failing on any parse error or warning. */
function yamlDocs(file: string): J[] {
  const docs = parseAllDocuments(read(file));
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    const problems = [...d.errors, ...d.warnings].map((e) => e.message);
    expect(problems, `${relative(ROOT, file)} parses cleanly`).toEqual([]);
  }
  return list.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined);
}
const yaml1 = (file: string): J => {
  const docs = yamlDocs(file);
  expect(docs, `${relative(ROOT, file)} holds one document`).toHaveLength(1);
  return docs[0];
};

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
function run(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
const PROMTOOL = which('promtool');
const SYSTEMD_ANALYZE = which('systemd-analyze');
if (!PROMTOOL) console.warn('[deploy] promtool not found (apt-get install -y prometheus): skipping promtool checks');
if (!SYSTEMD_ANALYZE) console.warn('[deploy] systemd-analyze not found: skipping `systemd-analyze verify`');

/** Loads a mirror config file exactly as main.ts does: embedded defaults, the file, then the env. */
function loadMirrorConfig(text: string, env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'regmirror-deploy-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, text);
    return loadConfig({ defaults: read(join(ROOT, 'config/default.yaml')), file, env });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('every file under deploy/ parses', () => {
  const files = walk(DEPLOY);
  it('finds the packaging files', () => {
    const rel = files.map((f) => relative(DEPLOY, f));
    for (const f of [
      'Dockerfile',
      'docker-compose.yml',
      'prometheus/prometheus.yml',
      'prometheus/alerts.yml',
      'grafana/provisioning/datasources/prometheus.yml',
      'grafana/provisioning/dashboards/dashboards.yml',
      'grafana/dashboards/regmirror.json',
      'kubernetes/configmap.yaml',
      'kubernetes/pvc.yaml',
      'kubernetes/deployment.yaml',
      'kubernetes/service.yaml',
      'kubernetes/containerd-hosts/README.md',
      'systemd/regmirror.service',
    ])
      expect(rel).toContain(f);
  });
  for (const f of files.filter((f) => /\.ya?ml$/.test(f))) it(`YAML ${relative(DEPLOY, f)}`, () => expect(yamlDocs(f).length).toBeGreaterThan(0));
  for (const f of files.filter((f) => f.endsWith('.json'))) it(`JSON ${relative(DEPLOY, f)}`, () => expect(() => JSON.parse(read(f))).not.toThrow());
});

// ---------------------------------------------------------------------------------------------------
// Dockerfile

interface Instr {
  op: string;
  args: string;
}
/** Dockerfile instructions (continuations joined, comments and parser directives dropped). */
function dockerfile(text: string): Instr[] {
  const out: Instr[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (cur === '' && (line === '' || line.startsWith('#'))) continue;
    if (cur !== '' && line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      cur += `${line.slice(0, -1)} `;
      continue;
    }
    cur += line;
    const m = /^(\S+)\s+([\s\S]*)$/.exec(cur.trim());
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
    cur = '';
  }
  return out;
}
/** Splits instructions into build stages. */
function stages(instrs: Instr[]): Array<{ from: string; name?: string; instrs: Instr[] }> {
  const out: Array<{ from: string; name?: string; instrs: Instr[] }> = [];
  for (const i of instrs) {
    if (i.op === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
      expect(m, `FROM ${i.args}`).not.toBeNull();
      out.push({ from: m![1]!, ...(m![2] ? { name: m![2] } : {}), instrs: [] });
    } else if (out.length > 0) out[out.length - 1]!.instrs.push(i);
  }
  return out;
}
/** COPY arguments: flags, sources, destination (shell form). */
function copyArgs(args: string) {
  const words = args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const rest = words.filter((w) => !w.startsWith('--'));
  return { flags, sources: rest.slice(0, -1), dest: rest[rest.length - 1]! };
}

describe('deploy/Dockerfile (build context: the repository root)', () => {
  const instrs = dockerfile(read(at('Dockerfile')));
  const st = stages(instrs);
  const builder = st[0]!;
  const runtime = st[st.length - 1]!;
  const ops = (s: typeof runtime, op: string) => s.instrs.filter((i) => i.op === op).map((i) => i.args);

  it('is multi-stage: every FROM names its stage, both on node:20-bookworm-slim', () => {
    expect(st.length).toBeGreaterThanOrEqual(2);
    for (const s of st) expect(s.name, `FROM ${s.from} AS <name>`).toBeTruthy();
    expect(builder.from).toBe('node:20-bookworm-slim');
    expect(runtime.from).toBe('node:20-bookworm-slim');
  });

  it('builder installs with npm ci, builds, then prunes dev dependencies', () => {
    const runs = ops(builder, 'RUN').join(' && ');
    const ci = runs.indexOf('npm ci');
    const build = runs.indexOf('npm run build');
    const prune = runs.indexOf('npm prune --omit=dev');
    expect(ci).toBeGreaterThanOrEqual(0);
    expect(build).toBeGreaterThan(ci);
    expect(prune).toBeGreaterThan(build);
  });

  it('builder copies what `npm run build` needs, and each source exists in the context', () => {
    const pkg = JSON.parse(read(join(ROOT, 'package.json')));
    expect(pkg.scripts.build).toMatch(/tsconfig\.build\.json/);
    const copied = ops(builder, 'COPY').flatMap((a) => copyArgs(a).sources);
    const buildTsconfig = JSON.parse(read(join(ROOT, 'tsconfig.build.json')));
    const needed = ['package.json', 'package-lock.json', 'tsconfig.build.json', buildTsconfig.extends.replace(/^\.\//, ''), ...buildTsconfig.include, 'config'];
    for (const n of needed) expect(copied, `COPY ${n}`).toContain(n);
    for (const s of copied) expect(existsSync(join(ROOT, s)), `${s} exists at the repository root`).toBe(true);
  });

  it('runtime holds only dist/, node_modules/, config/ and package.json, from the builder', () => {
    const copies = ops(runtime, 'COPY').map(copyArgs);
    for (const c of copies) expect(c.flags, `COPY ${c.sources.join(' ')}`).toContain(`--from=${builder.name}`);
    expect(copies.flatMap((c) => c.sources).sort()).toEqual(['/app/config', '/app/dist', '/app/node_modules', '/app/package.json']);
  });

  it('runs as a non-root uid 10001 with the data volume, env, port, healthcheck and entrypoint', () => {
    const user = ops(runtime, 'USER');
    expect(user.length).toBeGreaterThan(0);
    const last = user[user.length - 1]!.split(':')[0]!;
    expect(['root', '0']).not.toContain(last);
    expect(last).toBe('10001');
    expect(ops(runtime, 'VOLUME')).toContain('/var/lib/regmirror');
    const env = ops(runtime, 'ENV').join(' ');
    expect(env).toMatch(/MIRROR_DATA_DIR=\/var\/lib\/regmirror\b/);
    expect(env).toMatch(/MIRROR_LISTEN=0\.0\.0\.0:5000\b/);
    expect(ops(runtime, 'EXPOSE')).toContain('5000');
    // The data directory is created and handed to the user before the VOLUME line.
    const runs = ops(runtime, 'RUN').join(' ');
    expect(runs).toMatch(/--uid 10001/);
    expect(runs).toMatch(/chown 10001:10001 \/var\/lib\/regmirror/);
    const hc = ops(runtime, 'HEALTHCHECK');
    expect(hc).toHaveLength(1);
    const cmd = JSON.parse(hc[0]!.slice(hc[0]!.indexOf('CMD') + 3).trim()) as string[];
    expect(cmd[0]).toBe('node');
    // Asks /healthz on the port MIRROR_LISTEN names (test/deploy/image.test.ts runs it on another one).
    expect(cmd.join(' ')).toMatch(/process\.env\.MIRROR_LISTEN/);
    expect(cmd.join(' ')).toContain("+'/healthz')");
    expect(hc[0]).not.toMatch(/curl|wget/);
    const ep = ops(runtime, 'ENTRYPOINT');
    expect(ep.map((e) => JSON.parse(e))).toEqual([['node', 'dist/main.js']]);
    expect(ops(runtime, 'WORKDIR').pop()).toBe('/app');
  });

  it('the BuildKit ignore file beside it excludes none of the COPY sources', () => {
    const ignore = read(at('Dockerfile.dockerignore'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const copied = ops(builder, 'COPY').flatMap((a) => copyArgs(a).sources);
    for (const s of copied) for (const pat of ignore) expect(s === pat || s.startsWith(`${pat}/`) || pat === `**/${s}`, `${pat} ignores ${s}`).toBe(false);
    for (const must of ['**/node_modules', 'dist', '.git']) expect(ignore).toContain(must);
  });
});

// ---------------------------------------------------------------------------------------------------
// docker compose, Prometheus and Grafana provisioning

/** Host-path binds of a compose service: [source relative to deploy/, target, read-only]. */
function binds(svc: J): Array<{ source: string; target: string }> {
  return (svc.volumes ?? [])
    .map((v: J) => (typeof v === 'string' ? { source: v.split(':')[0]!, target: v.split(':')[1]! } : { source: v.source, target: v.target }))
    .filter((v: { source: string }) => v.source.startsWith('.') || v.source.startsWith('/'));
}

describe('deploy/docker-compose.yml', () => {
  const compose = yaml1(at('docker-compose.yml'));
  const prom = yaml1(at('prometheus/prometheus.yml'));

  it('has exactly the three services mirror, prometheus and grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'mirror', 'prometheus']);
  });

  it('mirror builds deploy/Dockerfile with the repository root as context, on port 5000 with a data volume', () => {
    const m = compose.services.mirror;
    expect(resolve(DEPLOY, m.build.context)).toBe(resolve(ROOT));
    expect(resolve(DEPLOY, m.build.context, m.build.dockerfile)).toBe(at('Dockerfile'));
    expect(m.ports).toContain('5000:5000');
    const vols: string[] = m.volumes;
    const data = vols.find((v) => v.endsWith(':/var/lib/regmirror'));
    expect(data, 'a volume at /var/lib/regmirror').toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(data!.split(':')[0]);
    // An empty credential variable is a config error at start-up: none may be set blank.
    for (const [k, v] of Object.entries(m.environment ?? {})) expect(String(v ?? ''), k).not.toBe('');
  });

  it('every bind mount names a file or directory that exists under deploy/', () => {
    for (const [name, svc] of Object.entries<J>(compose.services))
      for (const b of binds(svc)) expect(existsSync(resolve(DEPLOY, b.source)), `${name}: ${b.source}`).toBe(true);
  });

  it('prometheus gets prometheus.yml and every rule file it names, at the paths the config expects', () => {
    const p = compose.services.prometheus;
    const b = binds(p);
    const cfgFlag = (p.command as string[]).find((c) => c.startsWith('--config.file='));
    const cfgPath = cfgFlag ? cfgFlag.slice('--config.file='.length) : '/etc/prometheus/prometheus.yml';
    const cfgBind = b.find((x) => x.target === cfgPath);
    expect(cfgBind && resolve(DEPLOY, cfgBind.source)).toBe(at('prometheus/prometheus.yml'));
    for (const rf of prom.rule_files as string[]) {
      const inContainer = posix.resolve(posix.dirname(cfgPath), rf);
      const rb = b.find((x) => x.target === inContainer);
      expect(rb, `a mount for rule file ${inContainer}`).toBeDefined();
      expect(resolve(DEPLOY, rb!.source)).toBe(resolve(at('prometheus'), rf));
    }
  });

  it('prometheus scrapes the mirror service on its port at /metrics', () => {
    const job = (prom.scrape_configs as J[]).find((s) => s.job_name === 'regmirror');
    expect(job).toBeDefined();
    expect(job.metrics_path ?? '/metrics').toBe('/metrics');
    const targets = (job.static_configs as J[]).flatMap((s) => s.targets);
    expect(targets).toContain('mirror:5000');
  });

  it('grafana mounts the provisioning files and the dashboards where the provider looks', () => {
    const g = compose.services.grafana;
    const b = binds(g);
    const bySource = (s: string) => b.find((x) => resolve(DEPLOY, x.source) === at(s));
    expect(bySource('grafana/provisioning/datasources')?.target).toBe('/etc/grafana/provisioning/datasources');
    expect(bySource('grafana/provisioning/dashboards')?.target).toBe('/etc/grafana/provisioning/dashboards');
    const providers = yaml1(at('grafana/provisioning/dashboards/dashboards.yml')).providers as J[];
    expect(providers).toHaveLength(1);
    expect(bySource('grafana/dashboards')?.target).toBe(providers[0].options.path);
    const home = g.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
    if (home) expect(home).toBe(posix.join(providers[0].options.path, 'regmirror.json'));
  });

  it('the Grafana datasource points at the prometheus service with the uid the dashboard defaults to', () => {
    const ds = yaml1(at('grafana/provisioning/datasources/prometheus.yml')).datasources as J[];
    const p = ds.find((d) => d.type === 'prometheus');
    expect(new URL(p.url).host).toBe('prometheus:9090');
    const dash = JSON.parse(read(at('grafana/dashboards/regmirror.json')));
    const v = (dash.templating.list as J[]).find((x) => x.type === 'datasource');
    expect(v.current.value).toBe(p.uid);
  });
});

// ---------------------------------------------------------------------------------------------------
// Grafana dashboard

const dashboard = JSON.parse(read(at('grafana/dashboards/regmirror.json')));
const dashPanels = (dashboard.panels as J[]).flatMap((p) => [p, ...(p.panels ?? [])]);
const dashTargets = dashPanels.filter((p) => p.type !== 'row').flatMap((p) => (p.targets ?? []).map((t: J) => ({ panel: p.title as string, expr: t.expr as string })));
const dashVarQueries: string[] = (dashboard.templating.list as J[]).filter((v) => v.type === 'query').map((v) => (typeof v.query === 'string' ? v.query : v.query.query));

describe('deploy/grafana/dashboards/regmirror.json', () => {
  it('is a provisionable dashboard: uid, title, schemaVersion, templated datasource', () => {
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    expect(dashboard.title).toBeTruthy();
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.id).toBeNull();
    const dsVar = (dashboard.templating.list as J[]).find((v) => v.type === 'datasource');
    expect(dsVar).toMatchObject({ name: 'datasource', query: 'prometheus' });
  });

  it('every panel and query uses the datasource variable; ids unique; layout fits 24 columns without overlap', () => {
    const ids = dashPanels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashPanels) {
      const g = p.gridPos;
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++)
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) {
        expect(t.expr, p.title).toBeTruthy();
        if (t.datasource) expect(t.datasource.uid).toBe('${datasource}');
      }
    }
  });

  it('has the panels the operators asked for', () => {
    const all = dashTargets.map((t) => t.expr.replace(/\s+/g, ' '));
    const some = (re: RegExp, what: string) => expect(all.some((e) => re.test(e)), what).toBe(true);
    some(/sum by \(route, status\) \(rate\(mirror_http_requests_total/, 'request rate by route/status');
    some(/mirror_cache_requests_total\{[^}]*kind=~"manifest\|blob"[^}]*result!="miss"/, 'cache hit ratio for manifests and blobs');
    some(/mirror_served_bytes_total/, 'bytes served by source');
    some(/mirror_upstream_bytes_total/, 'bytes fetched upstream');
    some(/histogram_quantile\(0\.5, .*mirror_upstream_request_duration_seconds_bucket/, 'upstream latency p50');
    some(/histogram_quantile\(0\.99, .*mirror_upstream_request_duration_seconds_bucket/, 'upstream latency p99');
    some(/by \(upstream, class\) \(rate\(mirror_upstream_errors_total/, 'upstream errors by class');
    some(/mirror_inflight_downloads/, 'in-flight downloads');
    some(/mirror_coalesced_requests_total/, 'coalesced requests');
    some(/mirror_cache_size_bytes/, 'cache size in bytes');
    some(/mirror_cache_blobs/, 'cached blob count');
    some(/mirror_upstream_ratelimit_remaining/, 'Docker Hub rate limit remaining');
    some(/process_resident_memory_bytes/, 'process memory');
  });

  it('has the cache-lifecycle panels: bytes vs limit, evictions by reason (blobs and bytes), oldest entry, refetched', () => {
    const all = dashTargets.map((t) => t.expr.replace(/\s+/g, ' '));
    const some = (re: RegExp, what: string) => expect(all.some((e) => re.test(e)), what).toBe(true);
    some(/mirror_cache_limit_bytes/, 'cache limit');
    some(/sum by \(reason\) \(rate\(mirror_cache_evictions_total/, 'evicted blobs by reason');
    some(/sum by \(reason\) \(rate\(mirror_cache_evicted_bytes_total/, 'evicted bytes by reason');
    some(/mirror_cache_oldest_entry_age_seconds/, 'oldest entry age');
    some(/increase\(mirror_cache_refetched_after_eviction_total/, 'refetched after eviction');
  });
});

// ---------------------------------------------------------------------------------------------------
// Alert rules

const alertGroups = yaml1(at('prometheus/alerts.yml')).groups as J[];
const alertRules = alertGroups.flatMap((g) => g.rules as J[]);

describe('deploy/prometheus/alerts.yml', () => {
  it('every alert has an expression, a severity, a summary and a description; names are unique', () => {
    const names = alertRules.map((r) => r.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const r of alertRules) {
      expect(r.alert, JSON.stringify(r)).toBeTruthy();
      expect(r.expr, r.alert).toBeTruthy();
      expect(['critical', 'warning', 'info'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description, r.alert).toBeTruthy();
    }
  });

  it('covers upstream down, hit-ratio collapse, disk, rate limit and the mirror\'s own 5xx', () => {
    const expr = (name: string) => {
      const r = alertRules.find((x) => x.alert === name);
      expect(r, name).toBeDefined();
      return String(r.expr).replace(/\s+/g, ' ');
    };
    expect(expr('MirrorUpstreamDown')).toMatch(/mirror_upstream_errors_total\{class=~"5xx\|network\|timeout"\}\[5m\].* unless .*mirror_upstream_requests_total/);
    expect(expr('MirrorCacheHitRatioCollapsed')).toMatch(/mirror_cache_requests_total/);
    expect(expr('MirrorDataDiskNearlyFull')).toMatch(/node_filesystem_avail_bytes\{mountpoint="\/var\/lib\/regmirror"/);
    expect(expr('MirrorUpstreamRateLimitNearlyExhausted')).toMatch(/mirror_upstream_ratelimit_remaining\) < 10/);
    expect(expr('MirrorHigh5xxRate')).toMatch(/mirror_http_requests_total\{status=~"5\.\."\}/);
  });

  it('covers the cache lifecycle: near its limit, eviction thrashing', () => {
    const expr = (name: string) => String(alertRules.find((x) => x.alert === name)?.expr ?? '').replace(/\s+/g, ' ');
    expect(expr('MirrorCacheNearLimit')).toMatch(/mirror_cache_size_bytes.*\/.*mirror_cache_limit_bytes > 0\) \) > 0\.95/);
    expect(expr('MirrorCacheEvictionThrashing')).toMatch(/increase\(mirror_cache_refetched_after_eviction_total\[1h\]\)\) > \d+/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Metric names: every series queried must be one the mirror (or node_exporter / Prometheus) exports.

/** Metric names in a PromQL expression (quoted strings removed first, so label values do not count). */
function metricNames(expr: string): string[] {
  const bare = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...bare.matchAll(/\b(?:mirror|process|nodejs|node)_[A-Za-z0-9_:]*/g)].map((m) => m[0]);
}
/** The metric a series name belongs to: histogram/summary series map to their base name. */
const baseName = (series: string) => series.replace(/_(bucket|sum|count)$/, '');

const queried = (() => {
  const out = new Map<string, Set<string>>();
  const add = (where: string, expr: string) => {
    for (const n of metricNames(expr)) out.set(n, (out.get(n) ?? new Set()).add(where));
  };
  for (const t of dashTargets) add(`dashboard: ${t.panel}`, t.expr);
  for (const q of dashVarQueries) add('dashboard variable', q);
  for (const r of alertRules) add(`alert ${r.alert}`, String(r.expr));
  return out;
})();

/** node_exporter series the disk alerts rely on (the node_exporter is an assumption, documented). */
const NODE_EXPORTER = new Set(['node_filesystem_avail_bytes', 'node_filesystem_size_bytes']);

async function exported(): Promise<Set<string>> {
  const registry = new Registry();
  new Metrics(registry, { processMetrics: true });
  return new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
}

describe('metric names in the dashboard and the alerts', () => {
  it('the expressions query the metrics that matter', () => {
    expect([...queried.keys()].filter((n) => n.startsWith('mirror_')).length).toBeGreaterThanOrEqual(12);
  });

  it('every mirror_* metric queried is registered by src/metrics.ts', async () => {
    const have = await exported();
    const missing = [...queried]
      .filter(([n]) => n.startsWith('mirror_') && !have.has(n) && !have.has(baseName(n)))
      .map(([n, where]) => `${n} (used by ${[...where].join('; ')})`);
    expect(missing, `metrics queried by deploy/ but not exported by src/metrics.ts:\n  ${missing.join('\n  ')}\n`).toEqual([]);
  });

  it('every process_* / nodejs_* metric queried is one of prom-client\'s default metrics', async () => {
    const have = await exported();
    const missing = [...queried.keys()].filter((n) => /^(process|nodejs)_/.test(n) && !have.has(n) && !have.has(baseName(n)));
    expect(missing).toEqual([]);
  });

  it('node_* metrics are the node_exporter filesystem series', () => {
    const node = [...queried.keys()].filter((n) => n.startsWith('node_'));
    for (const n of node) expect(NODE_EXPORTER.has(n), n).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------
// promtool: rules, config, alert unit tests, and the dashboard's PromQL

describe.skipIf(!PROMTOOL)('promtool', () => {
  const ok = (args: string[]) => {
    const r = run(PROMTOOL!, args);
    expect(r.status, `promtool ${args.join(' ')}\n${r.out}`).toBe(0);
    return r.out;
  };
  it('check rules deploy/prometheus/alerts.yml', () => {
    expect(ok(['check', 'rules', 'deploy/prometheus/alerts.yml'])).toMatch(/SUCCESS/);
  });
  it('check config deploy/prometheus/prometheus.yml (rule file path relative to the config)', () => {
    expect(ok(['check', 'config', 'deploy/prometheus/prometheus.yml'])).toMatch(/SUCCESS: 1 rule files found/);
  });
  it('test rules deploy/prometheus/alerts.test.yml (the alerts fire, and only when they should)', () => {
    ok(['test', 'rules', 'deploy/prometheus/alerts.test.yml']);
  });
  it('every dashboard expression is valid PromQL (Grafana variables substituted)', () => {
    const subst = (e: string) =>
      e.replace(/\$\{?(\w+)\}?/g, (_, v: string) => ({ __rate_interval: '5m', __interval: '1m', __range: '1h' })[v] ?? '.*');
    const rules = dashTargets.map((t, i) => ({ record: `dashboard:expr_${i}`, expr: subst(t.expr) }));
    const dir = mkdtempSync(join(tmpdir(), 'regmirror-promql-'));
    try {
      const file = join(dir, 'dashboard-rules.yml');
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      ok(['check', 'rules', file]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Kubernetes

describe('deploy/kubernetes', () => {
  const dir = at('kubernetes');
  const objs = readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => yamlDocs(join(dir, f)).map((o) => ({ file: f, o })));
  const one = (kind: string) => {
    const found = objs.filter((x) => x.o.kind === kind);
    expect(found, kind).toHaveLength(1);
    return found[0]!.o;
  };
  const cm = one('ConfigMap');
  const pvc = one('PersistentVolumeClaim');
  const dep = one('Deployment');
  const svc = one('Service');
  const pod = dep.spec.template.spec;
  const ctr = pod.containers[0];

  it('has a ConfigMap, a PVC, a Deployment and a Service, none with a namespace', () => {
    expect(objs.map((x) => x.o.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'PersistentVolumeClaim', 'Service']);
    for (const { file, o } of objs) {
      expect(o.apiVersion, file).toBeTruthy();
      expect(o.metadata?.name, file).toBeTruthy();
      expect(o.metadata?.namespace, `${file} is namespace-less`).toBeUndefined();
    }
  });

  it('Deployment: 1 replica of regmirror:latest with --config, probes on /healthz and /readyz', () => {
    expect(dep.spec.replicas).toBe(1);
    expect(dep.spec.strategy?.type, 'RWO volume: Recreate').toBe('Recreate');
    expect(pod.containers).toHaveLength(1);
    expect(ctr.image).toBe('regmirror:latest');
    expect(ctr.args).toEqual(['--config', '/etc/regmirror/config.yaml']);
    const port = (ctr.ports as J[]).find((p) => p.containerPort === 5000);
    expect(port).toBeDefined();
    const probePort = (p: J) => (p.httpGet.port === port.name || p.httpGet.port === 5000 ? 'ok' : p.httpGet.port);
    expect(ctr.livenessProbe.httpGet.path).toBe('/healthz');
    expect(probePort(ctr.livenessProbe)).toBe('ok');
    expect(ctr.readinessProbe.httpGet.path).toBe('/readyz');
    expect(probePort(ctr.readinessProbe)).toBe('ok');
    expect(ctr.resources.requests.cpu).toBeTruthy();
    expect(ctr.resources.requests.memory).toBeTruthy();
    expect(ctr.resources.limits.memory).toBeTruthy();
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
  });

  it('Deployment: non-root, read-only root filesystem, the PVC at /var/lib/regmirror, scrape annotations', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBe(10001);
    expect(pod.securityContext.fsGroup).toBe(10001);
    expect(ctr.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    const mounts = Object.fromEntries((ctr.volumeMounts as J[]).map((m) => [m.mountPath, m.name]));
    const vols = Object.fromEntries((pod.volumes as J[]).map((v) => [v.name, v]));
    expect(vols[mounts['/var/lib/regmirror']].persistentVolumeClaim.claimName).toBe(pvc.metadata.name);
    expect(vols[mounts['/etc/regmirror']].configMap.name).toBe(cm.metadata.name);
    expect(Object.keys(cm.data)).toContain('config.yaml');
    expect(mounts['/tmp'], 'a writable /tmp').toBeDefined();
    expect(dep.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '5000', 'prometheus.io/path': '/metrics' });
    expect(pvc.spec.accessModes).toEqual(['ReadWriteOnce']);
  });

  it('Service selects the pod and forwards to its port; the Deployment selector matches its template', () => {
    const labels = dep.spec.template.metadata.labels;
    expect(labels).toMatchObject(dep.spec.selector.matchLabels);
    expect(labels).toMatchObject(svc.spec.selector);
    const sp = svc.spec.ports[0];
    expect(sp.port).toBe(5000);
    const target = (ctr.ports as J[]).find((p) => p.name === sp.targetPort || p.containerPort === sp.targetPort);
    expect(target?.containerPort).toBe(5000);
  });

  it('the ConfigMap config.yaml is a valid mirror config, agreeing with the Deployment', () => {
    const env = Object.fromEntries((ctr.env as J[]).filter((e) => 'value' in e).map((e) => [e.name, String(e.value)]));
    const config = loadMirrorConfig(cm.data['config.yaml'], env);
    expect(config.dataDir).toBe('/var/lib/regmirror');
    expect(config.listen.port).toBe(5000);
    expect(config.upstreams['docker.io']).toBeDefined();
    // The optional credentials Secret sets the pair named for the docker.io upstream.
    const secretVars = (ctr.env as J[]).filter((e) => e.valueFrom?.secretKeyRef).map((e) => e.name);
    for (const v of secretVars) expect(v).toMatch(/^MIRROR_UPSTREAM_DOCKER_IO_(USERNAME|PASSWORD)$/);
  });

  it('containerd-hosts/README.md shows hosts.toml for the mirror', () => {
    const md = read(at('kubernetes/containerd-hosts/README.md'));
    expect(md).toMatch(/hosts\.toml/);
    expect(md).toMatch(/server = "https:\/\/registry-1\.docker\.io"/);
    expect(md).toMatch(/capabilities = \["pull", "resolve"\]/);
    expect(md).toMatch(/config_path = "\/etc\/containerd\/certs\.d"/);
  });
});

// ---------------------------------------------------------------------------------------------------
// systemd

describe('deploy/systemd/regmirror.service', () => {
  const file = at('systemd/regmirror.service');
  const svc = parseUnit(read(file)).Service!;
  const last = (k: string) => svc[k]?.[svc[k].length - 1];

  it('starts the built mirror with its config and data directory', () => {
    expect(last('ExecStart')).toBe('/usr/bin/node /opt/regmirror/dist/main.js --config /etc/regmirror/config.yaml');
    expect(svc.Environment).toContain('MIRROR_DATA_DIR=/var/lib/regmirror');
    expect(last('StateDirectory')).toBe('regmirror');
    expect(last('KillSignal')).toBe('SIGTERM');
    expect(last('TimeoutStopSec')).toBe('30');
  });

  it('is sandboxed', () => {
    expect(last('DynamicUser') === 'yes' || (last('User') ?? 'root') !== 'root').toBe(true);
    for (const [k, v] of Object.entries({
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      NoNewPrivileges: 'yes',
      CapabilityBoundingSet: '',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
    }))
      expect(last(k), k).toBe(v);
    expect(svc.SystemCallFilter).toContain('@system-service');
    expect(last('MemoryMax')).toBeTruthy();
    // V8's JIT needs W+X pages: this would crash node at start.
    expect(last('MemoryDenyWriteExecute') ?? 'no').toBe('no');
  });

  it('deploy/systemd/config.yaml is a valid mirror config', () => {
    const env = Object.fromEntries(svc.Environment!.map((e) => e.split('=', 2) as [string, string]));
    const config = loadMirrorConfig(read(at('systemd/config.yaml')), env);
    expect(config.dataDir).toBe('/var/lib/regmirror');
  });

  it.skipIf(!SYSTEMD_ANALYZE)('systemd-analyze verify accepts it', () => {
    const r = run(SYSTEMD_ANALYZE!, ['verify', file]);
    const node = last('ExecStart')!.split(' ')[0]!;
    if (r.status !== 0 && !existsSync(node) && /is not executable/.test(r.out)) {
      console.warn(`[deploy] systemd-analyze verify: ${node} is not installed here, so only that was reported:\n${r.out}`);
      return;
    }
    expect(r.status, r.out).toBe(0);
    if (r.out.trim()) console.warn(`[deploy] systemd-analyze verify said:\n${r.out}`);
  });
});

// Guard against deploy/ paths drifting from the files the docs point at.
describe('docs/deployment.md', () => {
  it('exists and names the files it documents', () => {
    const doc = join(ROOT, 'docs/deployment.md');
    expect(existsSync(doc)).toBe(true);
    const md = read(doc);
    for (const p of ['deploy/Dockerfile', 'deploy/docker-compose.yml', 'deploy/kubernetes/', 'deploy/systemd/regmirror.service', 'deploy/prometheus/alerts.yml'])
      expect(md, p).toContain(p);
  });
});
