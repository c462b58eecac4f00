/**
 * Access control's cost on the hottest path: manifest-by-tag (a cache hit) requests/s with auth off,
 * with auth on and a Bearer token (JWT verified on every request), and with auth on and HTTP Basic
 * (bcrypt once, then the remembered HMAC). One spawned mirror (node dist/main.js) per case over a fake
 * upstream, wrk on loopback.
 *
 *   npx tsc -p tsconfig.build.json && npx tsc -p bench/tsconfig.json && node bench/out/bench/auth.js
 */
import { spawnSync } from 'node:child_process';
import { authFiles, authRaw, basic, PASSWORDS } from '../test/access/helpers.js';
import { FakeUpstream } from '../test/helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../test/helpers/images.js';
import { httpGet, spawnMirror } from '../test/helpers/spawn.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const PATH = '/v2/library/alpine/manifests/latest';
const DOCKER_ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json';

function wrk(url: string, headers: Record<string, string>): number {
  const args = ['-t2', '-c32', `-d${SECONDS}s`, '--latency', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
  const r = spawnSync('wrk', args, { encoding: 'utf8' });
  const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  if (!m || /Non-2xx/.test(r.stdout)) throw new Error(`wrk failed:\n${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

async function main(): Promise<void> {
  const hub = await FakeUpstream.start({ auth: 'none', cdn: false });
  hub.putImage('library/alpine', makeImage({ layers: [makeLayer([{ path: 'b', content: 'bench' }])] }), 'latest');
  const files = await authFiles();
  const results: Array<[string, number]> = [];
  const cases: Array<[string, boolean]> = [
    ['auth off', false],
    ['auth on, anonymous', true],
    ['auth on, Bearer token', true],
    ['auth on, HTTP Basic', true],
  ];
  for (const [name, on] of cases) {
    const m = await spawnMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
      extraConfig: { log: { level: 'warn' }, cache: { tagTtl: 3600 }, ...(on ? authRaw(files) : {}) },
    });
    try {
      const headers: Record<string, string> = { accept: DOCKER_ACCEPT };
      if (name.includes('Bearer')) {
        const t = await httpGet(`${m.url}/token?service=regmirror&scope=repository:library/alpine:pull`, { headers: { authorization: basic('bob', PASSWORDS.bob) } });
        headers.authorization = `Bearer ${(JSON.parse(t.body) as { token: string }).token}`;
      } else if (name.includes('Basic')) headers.authorization = basic('bob', PASSWORDS.bob);
      const first = await httpGet(`${m.url}${PATH}`, { headers });
      if (first.status !== 200) throw new Error(`${name}: ${first.status} ${first.body}`);
      wrk(`${m.url}${PATH}`, headers); // warm-up (JIT, memory caches)
      results.push([name, wrk(`${m.url}${PATH}`, headers)]);
    } finally {
      await m.stop();
    }
  }
  await hub.close();
  const base = results[0]![1];
  process.stdout.write(`manifest by tag (cache hit), wrk -t2 -c32 -d${SECONDS}s, loopback:\n`);
  for (const [name, rps] of results) process.stdout.write(`  ${name.padEnd(24)} ${rps.toFixed(0).padStart(7)} req/s  ${name === 'auth off' ? '' : `(${(((base - rps) / base) * 100).toFixed(1)}% overhead)`}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
