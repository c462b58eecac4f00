/**
 * `regmirror cache` against real caches: a data directory filled by real pulls through a test mirror
 * from the fake Docker Hub, worked on through the mirror's admin API while it runs (in-process CLI,
 * real fetch over a loopback socket) and with openCacheAdmin after it stopped; and the built
 * `node dist/main.js cache …` once, for the dispatch in main.ts.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { rm } from 'node:fs/promises';
import { getRequestListener } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { openCacheAdmin } from '../../src/mirror.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, makeRandomLayer, type Image } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { listenOn } from '../helpers/ports.js';
import { MAIN_JS } from '../helpers/spawn.js';
import { runCli } from './harness.js';

const base = makeRandomLayer(200_000, 'cli-base');
const appA = makeImage({ layers: [base, makeLayer([{ path: 'a.txt', content: 'a' }])], format: 'docker' });
const appB = makeImage({ layers: [base, makeLayer([{ path: 'b.txt', content: 'b' }])], format: 'docker' });
const amd = makeImage({ layers: [makeRandomLayer(50_000, 'cli-amd')], architecture: 'amd64' });
const arm = makeImage({ layers: [makeRandomLayer(50_000, 'cli-arm')], architecture: 'arm64', variant: 'v8' });
const alpine = makeIndex([amd, arm]);
const tool = makeImage({ layers: [makeRandomLayer(30_000, 'cli-tool')] });

let hub: FakeUpstream;
let mirror: TestMirror;

async function ok(path: string, init?: RequestInit): Promise<void> {
  const r = await mirror.request(path, init);
  await r.arrayBuffer();
  expect(r.status, path).toBe(200);
}

async function pullImage(repo: string, ref: string, img: Image): Promise<void> {
  await ok(`/v2/${repo}/manifests/${ref}`, { headers: { accept: DOCKER_ACCEPT } });
  for (const b of [img.config, ...img.layers]) await ok(`/v2/${repo}/blobs/${b.digest}`);
}

/** Pulls every image into a fresh mirror's cache (as `docker pull` would, both platforms of the index). */
async function fill(): Promise<TestMirror> {
  mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } });
  await pullImage('library/app', 'a', appA);
  await pullImage('library/app', 'b', appB);
  await ok('/v2/library/alpine/manifests/3.19', { headers: { accept: DOCKER_ACCEPT } });
  for (const img of [amd, arm]) await pullImage('library/alpine', img.manifest.digest, img);
  await pullImage('acme/tool', 'v1', tool);
  // A client has a blob's last byte once it is verified, before the store commits it and counts its bytes.
  expect(await mirror.registry.drain(5000)).toBe(true);
  return mirror;
}

beforeAll(async () => {
  hub = await FakeUpstream.start();
  hub.putImage('library/app', appA, 'a');
  hub.putImage('library/app', appB, 'b');
  hub.putIndex('library/alpine', alpine, [amd, arm], '3.19');
  hub.putImage('acme/tool', tool, 'v1');
});
afterAll(async () => {
  await hub?.close();
});

describe('regmirror cache through a running mirror\'s admin API', () => {
  let adminServer: Server;
  let A: string[];

  beforeAll(async () => {
    await fill();
    const listener = getRequestListener(mirror.adminApp.fetch);
    adminServer = createServer((req, res) => void listener(req, res));
    A = ['--admin', `http://127.0.0.1:${await listenOn(adminServer)}`];
  });
  afterAll(async () => {
    adminServer?.closeAllConnections();
    await new Promise<void>((r) => (adminServer ? adminServer.close(() => r()) : r()));
    await mirror?.stop();
  });
  const cli = (argv: string[]) => runCli([...argv, ...A], { fetch: (input, init) => fetch(input, init), now: Date.now() });

  it('du and ls show what was pulled', async () => {
    const du = await cli(['du', '--json']);
    expect(du.code, du.stderr).toBe(0);
    const s = JSON.parse(du.stdout);
    expect(s).toMatchObject({ repositories: 3, images: 4 });
    expect(s.bytes).toBeGreaterThan(300_000);

    const text = await cli(['du']);
    expect(text.stdout).toMatch(/^cache {8}\d+\.\d (KiB|MiB)/m);
    expect(text.stdout).toContain('images       4 in 3 repositories\n');

    const ls = await cli(['ls']);
    expect(ls.code, ls.stderr).toBe(0);
    const lines = ls.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^REPOSITORY +IMAGES +TAGS +SIZE +LAST PULLED +PINNED$/);
    expect(lines.slice(1).map((l) => l.split(/ +/)[0])).toEqual(['docker.io/acme/tool', 'docker.io/library/alpine', 'docker.io/library/app']);
    expect(ls.stdout).toMatch(/docker\.io\/library\/app +2 +2 +\d+\.\d KiB +(just now|\d+ s ago)/);

    const images = await cli(['ls', 'alpine']);
    expect(images.code, images.stderr).toBe(0);
    expect(images.stdout).toContain(`3.19  ${alpine.digest.slice(0, 19)}  linux/amd64,linux/arm64/v8`);
  });

  it('pin, pins, unpin', async () => {
    const pin = await cli(['pin', 'acme/tool:v1']);
    expect(pin.code, pin.stderr).toBe(0);
    expect(pin.stdout).toContain('pinned docker.io/acme/tool:v1\n');
    const ls = JSON.parse((await cli(['ls', '--json'])).stdout);
    expect(ls.find((r: any) => r.name === 'docker.io/acme/tool').pinned).toBe(true);
    expect((await cli(['pins'])).stdout).toBe('docker.io/acme/tool:v1\n');
    const unpin = await cli(['unpin', 'docker.io/acme/tool:v1']);
    expect(unpin).toMatchObject({ code: 0, stdout: 'unpinned docker.io/acme/tool:v1\nno pins\n' });
  });

  it('revalidate, gc and evict', async () => {
    expect(await cli(['revalidate', 'alpine:3.19'])).toMatchObject({ code: 0, stdout: 'docker.io/library/alpine:3.19 will be revalidated with upstream on its next pull\n' });
    expect(await cli(['revalidate', 'alpine:never-pulled'])).toMatchObject({ code: 1, stderr: 'regmirror cache revalidate: docker.io/library/alpine:never-pulled is not cached\n' });
    const gc = await cli(['gc']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.stdout).toMatch(/^removed \d+ unreferenced blobs? \(.*\), \d+ stale records?, \d+ temp files?\n$/);
    const evict = await cli(['evict']);
    expect(evict).toMatchObject({ code: 0, stdout: 'nothing to evict: the cache is within its limits\n' });
  });

  it('rm of a tag keeps the layer another image shares; an unknown repository is exit 1 with the API\'s message', async () => {
    const r = await cli(['rm', 'app:a']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^removed 1 tag, 1 image, \d+ blobs \(.*\) from docker\.io\/library\/app:a\n$/);
    const images = JSON.parse((await cli(['ls', 'app', '--json'])).stdout);
    expect(images.map((i: any) => i.tags)).toEqual([['b']]);
    hub.resetCounters();
    await ok(`/v2/library/app/blobs/${base.digest}`);
    expect(hub.count()).toBe(0);

    const missing = await cli(['rm', 'nothere/never']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^regmirror cache rm: .+\n$/);
  });
});

describe('regmirror cache on a stopped mirror\'s data directory', () => {
  let dataDir: string;
  let config: Config;

  beforeAll(async () => {
    await fill();
    ({ dataDir, config } = mirror);
    await mirror.stop({ keepData: true });
  });
  afterAll(async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });
  const cli = (argv: string[], opts: Parameters<typeof runCli>[1] = {}) =>
    runCli([...argv, '--data-dir', dataDir], { now: Date.now(), ...opts, deps: { loadConfig: () => config, openCacheAdmin: (c) => openCacheAdmin(c) } });

  it('du, ls, rm --all --yes, and the cache is empty', async () => {
    const du = JSON.parse((await cli(['du', '--json'])).stdout);
    expect(du).toMatchObject({ repositories: 3, images: 4 });
    const ls = await cli(['ls', 'app']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout.split('\n').slice(1, 3).map((l) => l.split(/ +/)[0]).sort()).toEqual(['a', 'b']);

    const refused = await cli(['rm', '--all']);
    expect(refused.code).toBe(2);
    const all = await cli(['rm', '--all', '--yes']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/^removed \d+ tags, 4 images, \d+ blobs \(.*\) \(everything\)\n$/);
    const after = JSON.parse((await cli(['du', '--json'])).stdout);
    expect(after).toMatchObject({ bytes: 0, blobs: 0, images: 0, repositories: 0 });
    expect((await cli(['ls'])).stdout).toBe('no repositories cached\n');
  });
});

describe.skipIf(!existsSync(MAIN_JS))('node dist/main.js cache', () => {
  const node = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [MAIN_JS, ...args], { timeout: 20_000, env: { PATH: process.env.PATH ?? '' } }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });

  it('dispatches cache commands and keeps --help', async () => {
    const [help, bad, missing] = await Promise.all([
      node(['--help']),
      node(['cache', 'bogus']),
      node(['cache', 'du', '--data-dir', '/nonexistent/regmirror-cli-test']),
    ]);
    expect(help).toMatchObject({ code: 0 });
    expect(help.stdout).toContain('regmirror cache <command>');
    expect(bad.code).toBe(2);
    expect(bad.stderr.split('\n')[0]).toBe('regmirror cache: unknown command "bogus"');
    expect(bad.stderr).toContain('usage: regmirror cache <command> [options]');
    expect(missing).toMatchObject({ code: 1, stderr: 'regmirror cache du: data directory /nonexistent/regmirror-cli-test does not exist\n' });
  });
});
