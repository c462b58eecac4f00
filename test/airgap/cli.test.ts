/**
 * `regmirror export` and `regmirror import` as a shell sees them: exit codes, output, files written,
 * over real data directories (openAirgap) and a running mirror's admin API.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AirgapCliDeps } from '../../src/cli/airgap-common.js';
import { runExportCli } from '../../src/cli/export.js';
import { runImportCli } from '../../src/cli/import.js';
import type { Config } from '../../src/config.js';
import { openAirgap } from '../../src/mirror.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { filesOf, layoutEntries, tarOf, waitStored } from './bundle.js';

const shared = makeLayer([{ path: 'shared', content: 'cli shared' }]);
const app1 = makeImage({ layers: [shared, makeLayer([{ path: 'one', content: 'cli one' }])] });
const app2 = makeImage({ layers: [shared, makeLayer([{ path: 'two', content: 'cli two' }])] });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  raw: Buffer;
}

async function cli(which: 'import' | 'export', argv: string[], config: Config, opts: { stdin?: Buffer; fetch?: AirgapCliDeps['fetch'] } = {}): Promise<Run> {
  const out: Buffer[] = [];
  const err: string[] = [];
  const stdout = Object.assign(
    new Writable({
      write(c: Buffer | string, _e, cb) {
        out.push(Buffer.from(c));
        cb();
      },
    }),
    { isTTY: false },
  );
  const deps: AirgapCliDeps = {
    stdout,
    stderr: { write: (s: string) => err.push(s), isTTY: false },
    stdin: Readable.from([opts.stdin ?? Buffer.alloc(0)]),
    env: {},
    fetch: opts.fetch ?? (async () => Promise.reject(new TypeError('fetch failed'))),
    loadConfig: () => config,
    openAirgap: (c, o) => openAirgap(c, o),
  };
  const code = await (which === 'import' ? runImportCli : runExportCli)(argv, deps);
  const raw = Buffer.concat(out);
  return { code, stdout: raw.toString(), stderr: err.join(''), raw };
}

describe('regmirror export / import', () => {
  let hub: FakeUpstream;
  let a: TestMirror;
  let dir: string;
  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app1', app1, '1.0');
    hub.putImage('library/app2', app2, '2.0');
    a = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
    for (const [repo, tag, img] of [['library/app1', '1.0', app1], ['library/app2', '2.0', app2]] as const) {
      expect((await a.request(`/v2/${repo}/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
      for (const b of [img.config, ...img.layers]) expect((await a.request(`/v2/${repo}/blobs/${b.digest}`)).status).toBe(200);
    }
    await waitStored(a, [app1, app2].flatMap((i) => [i.manifest, i.config, ...i.layers]).map((x) => x.digest));
    dir = await mkdtemp(join(tmpdir(), 'airgap-cli-'));
  });
  afterAll(async () => {
    await a.stop();
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('bad usage exits 2 with the usage', async () => {
    for (const [which, argv, msg] of [
      ['export', ['app1:1.0'], /missing -o/],
      ['export', ['-o', 'x.tar'], /missing IMAGE/],
      ['export', ['-o', 'x.tar', '--all', 'app1'], /not both/],
      ['export', ['-o', 'x.tar', 'app1', '--platform', 'amd64'], /OS\/ARCH/],
      ['import', [], /missing BUNDLE/],
      ['import', ['a.tar', '--admin', 'http://x', '--data-dir', '/d'], /give one/],
    ] as const) {
      const r = await cli(which, [...argv], a.config);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(/usage: regmirror/);
    }
  });

  it('export -o FILE writes the bundle and its digests; a delta with --base; import into a stopped data dir', async () => {
    const full = join(dir, 'one.tar');
    const r = await cli('export', ['-o', full, 'app1:1.0', '--data-dir', a.dataDir], a.config);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('exported docker.io/library/app1:1.0\n');
    expect(r.stdout).toMatch(/1 image, 4 blobs, .* to .*one\.tar; digests in .*one\.tar\.digests/);
    const digests = (await readFile(`${full}.digests`, 'utf8')).trim().split('\n');
    expect(digests).toContain(shared.digest);

    const delta = join(dir, 'two.tar');
    const d = await cli('export', ['-o', delta, 'docker.io/library/app2:2.0', '--base', `${full}.digests`], a.config);
    expect(d.code).toBe(0);
    expect(d.stdout).toContain('(1 blobs left out: in --base)');
    expect([...(await filesOf(await readFile(delta))).keys()]).not.toContain(`blobs/sha256/${shared.digest.slice(7)}`);

    // Into a fresh (stopped) data directory: the full one, then the delta.
    const target = { ...a.config, dataDir: join(dir, 'b'), offline: true };
    const i1 = await cli('import', [full, '--data-dir', target.dataDir], target);
    expect(i1.stderr).toBe('');
    expect(i1.stdout).toMatch(/^imported docker\.io\/library\/app1:1\.0 sha256:[0-9a-f]{12}\n1 image, 4 blobs \(4 new\)/);
    const i2 = await cli('import', [delta, '--data-dir', target.dataDir], target);
    expect(i2.code).toBe(0);
    const b = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true, dataDir: target.dataDir });
    try {
      for (const [repo, tag, img] of [['library/app1', '1.0', app1], ['library/app2', '2.0', app2]] as const) {
        const res = await b.request(`/v2/${repo}/manifests/${tag}`, { headers: { accept: DOCKER_ACCEPT } });
        expect(res.headers.get('docker-content-digest')).toBe(img.manifest.digest);
        for (const x of [img.config, ...img.layers]) expect((await b.request(`/v2/${repo}/blobs/${x.digest}`)).status).toBe(200);
      }
    } finally {
      await b.stop();
    }
  });

  it('export -o - streams to stdout; import - reads stdin; a bad bundle exits 1 naming the entry', async () => {
    const e = await cli('export', ['-o', '-', '--all'], a.config);
    expect(e.code).toBe(0);
    expect(e.stderr).toContain('2 images');
    const files = await filesOf(e.raw);
    expect(files.has('index.json')).toBe(true);

    const target = { ...a.config, dataDir: join(dir, 'c') };
    const i = await cli('import', ['-', '--data-dir', target.dataDir, '--json'], target, { stdin: e.raw });
    expect(i.code).toBe(0);
    expect(JSON.parse(i.stdout).images).toHaveLength(2);

    const bad = join(dir, 'bad.tar');
    await writeFile(bad, await tarOf(layoutEntries({ 'docker.io/library/app1:9': app1.manifest }, [app1], { corrupt: app1.config.digest })));
    const r = await cli('import', [bad, '--data-dir', join(dir, 'd')], { ...a.config, dataDir: join(dir, 'd') });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^regmirror import: refused, nothing imported: entry blobs\/sha256\/[0-9a-f]{64}: content does not match its digest/);
  });

  it('import refuses a data directory another process serves', async () => {
    const served = join(dir, 'served');
    await mkdir(join(served, 'state'), { recursive: true });
    // The lock a live mirror holds (the test runner's parent stands in for it).
    await writeFile(join(served, 'state', 'lock'), `${process.ppid} serve 0123abcd\n`);
    const bundle = join(dir, 'any.tar');
    await writeFile(bundle, await tarOf(layoutEntries({ 'docker.io/library/app1:1.0': app1.manifest }, [app1])));
    const r = await cli('import', [bundle, '--data-dir', served], { ...a.config, dataDir: served });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/a mirror \(pid \d+\) is serving .*: use its admin API \(--admin URL\)/);
  });

  it('import --admin URL uploads to a running mirror', async () => {
    const b = await startMirror({ upstreams: { 'docker.io': { url: 'http://127.0.0.1:9', libraryPrefix: true } }, offline: true });
    const listener = getRequestListener(b.adminApp.fetch);
    const server: Server = createServer((req, res) => void listener(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const bundle = join(dir, 'up.tar');
      await writeFile(bundle, await tarOf(layoutEntries({ '1.0': app1.manifest }, [app1])));
      const r = await cli('import', [bundle, '--admin', url, '-r', 'docker.io/library/app1'], b.config, { fetch: (u, init) => fetch(u, init) });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('imported docker.io/library/app1:1.0');
      expect((await b.request('/v2/library/app1/manifests/1.0', { headers: { accept: DOCKER_ACCEPT } })).status).toBe(200);
      const refused = await cli('import', [bundle, '--admin', url], b.config, { fetch: (u, init) => fetch(u, init) });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/refused, nothing imported: .*plain tag/);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await b.stop();
    }
  });
});
