/** Clients the bench measures with: curl (blobs), wrk (small requests), skopeo (whole pulls). */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runOk, toolPath } from '../test/e2e/harness/tools.js';

export const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export interface Fetch {
  status: number;
  bytes: number;
  /** curl's time_total, seconds */
  seconds: number;
}

/** One GET with curl into /dev/null. Throws unless it got `expectBytes` with a 200. */
export async function curlGet(url: string, expectBytes: number | undefined, timeoutMs = 120_000): Promise<Fetch> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-H', `Accept: ${ACCEPT}`, '-w', '%{http_code} %{size_download} %{time_total}', url], { timeoutMs });
  const [code, size, t] = r.stdout.trim().split(' ');
  const f = { status: Number(code), bytes: Number(size), seconds: Number(t) };
  if (r.code !== 0 || f.status !== 200 || (expectBytes !== undefined && f.bytes !== expectBytes)) {
    throw new Error(`curl ${url}: exit ${r.code} status ${f.status} bytes ${f.bytes}${expectBytes !== undefined ? ` of ${expectBytes}` : ''} ${r.stderr.trim()}`);
  }
  return f;
}

/**
 * bare-download.ts on `url` into `file` (a process of its own): the seconds it took. Throws unless it
 * got `expect`'s bytes with its digest.
 */
export async function bareDownload(url: string, file: string, expect: { size: number; digest: string }): Promise<number> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'bare-download.js');
  const r = await runOk(process.execPath, [script, url, file], { timeoutMs: 120_000 });
  const [bytes, digest, seconds] = r.stdout.trim().split(' ');
  if (Number(bytes) !== expect.size || digest !== expect.digest) throw new Error(`bare download of ${url}: ${bytes} bytes, ${digest}; expected ${expect.size}, ${expect.digest}`);
  return Number(seconds);
}

/** The slowest client of a curlConcurrent batch, in seconds. */
export const slowestSeconds = (batch: { fetches: Fetch[] }): number => Math.max(...batch.fetches.map((f) => f.seconds));

/** `n` concurrent curls of one URL: each client's result and the wall time of the whole batch. */
export async function curlConcurrent(url: string, n: number, expectBytes: number, timeoutMs = 300_000): Promise<{ fetches: Fetch[]; wallSeconds: number }> {
  const t0 = performance.now();
  const fetches = await Promise.all(Array.from({ length: n }, () => curlGet(url, expectBytes, timeoutMs)));
  return { fetches, wallSeconds: (performance.now() - t0) / 1000 };
}

export interface WrkResult {
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** connect/read/write/timeout errors plus non-2xx/3xx answers */
  errors: number;
}

const WRK_LUA = `-- written by bench/measure.ts
wrk.headers["Accept"] = "${ACCEPT}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
`;

/**
 * wrk against several servers in turns (A B A B A B): `rounds` runs of `seconds / rounds` each, and per
 * server the median requests/s and p99 with the sum of errors. On a shared 2-core machine one long
 * run per server caught whatever else the machine was doing then (±20 % between runs); in turns,
 * each server sees the same spread of it, so the ratio between them holds better.
 */
export async function wrkAlternating(urls: string[], tmpDir: string, seconds: number, rounds = 3): Promise<WrkResult[]> {
  const runs: WrkResult[][] = urls.map(() => []);
  const each = Math.max(1, Math.round(seconds / rounds));
  for (let r = 0; r < rounds; r++) for (const [i, url] of urls.entries()) runs[i]!.push(await wrk(url, tmpDir, each));
  return runs.map((rs) => ({
    requests: rs.reduce((n, x) => n + x.requests, 0),
    rps: median(rs.map((x) => x.rps)),
    p50Ms: median(rs.map((x) => x.p50Ms)),
    p99Ms: median(rs.map((x) => x.p99Ms)),
    errors: rs.reduce((n, x) => n + x.errors, 0),
  }));
}

/** wrk -t2 -c32 -dNs --latency with the Accept header set. */
export async function wrk(url: string, tmpDir: string, seconds = 10, connections = 32, threads = 2): Promise<WrkResult> {
  const script = join(tmpDir, 'accept.lua');
  writeFileSync(script, WRK_LUA);
  const r = await runOk('wrk', [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency', '-s', script, url], { timeoutMs: (seconds + 30) * 1000 });
  const m = /WRKJSON (\{.*\})/.exec(r.stdout);
  if (!m) throw new Error(`wrk printed no summary:\n${r.stdout}\n${r.stderr}`);
  const j = JSON.parse(m[1]!) as { requests: number; duration_us: number; p50_us: number; p99_us: number; errors: number };
  return { requests: j.requests, rps: j.requests / (j.duration_us / 1e6), p50Ms: j.p50_us / 1000, p99Ms: j.p99_us / 1000, errors: j.errors };
}

/** skopeo copy docker://HOST/repo:tag dir:DEST; returns wall seconds. */
export async function skopeoPull(host: string, repo: string, tag: string, dest: string, all: boolean): Promise<number> {
  const bin = toolPath('skopeo');
  if (!bin) throw new Error('skopeo not installed');
  const args = ['--insecure-policy', 'copy', '--quiet', '--retry-times', '0', '--src-tls-verify=false'];
  if (all) args.push('--all');
  const t0 = performance.now();
  await runOk(bin, [...args, `docker://${host}/${repo}:${tag}`, `dir:${dest}`], { timeoutMs: 300_000 });
  return (performance.now() - t0) / 1000;
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
