/**
 * Disk full (ENOSPC): a 2 MiB tmpfs as the data dir and a blob bigger than the space. The client
 * still gets the right bytes (passed through from upstream), nothing partial is kept, and the mirror
 * keeps serving. Needs root for `mount -t tmpfs`; skipped with the reason printed otherwise.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer } from '../helpers/images.js';
import { httpGet, spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { blobFile, DOCKER_ACCEPT, rawGet, tmpEntries } from './util.js';

const big = makeRandomLayer(3 * 1024 * 1024, 'disk-big');
/** Past the free space and half a pass-through's window beyond it: the part a pass-through holds back for its first reader. */
const huge = makeRandomLayer(8 * 1024 * 1024, 'disk-huge');
const small = makeLayer([{ path: 'small.txt', content: 'still fits' }]);
const bigImg = makeImage({ layers: [big] });
const smallImg = makeImage({ layers: [small], cmd: ['small'] });

let hub: FakeUpstream;
let mirror: SpawnedMirror | undefined;
let base = '';
let dataDir = '';
let mounted = false;
let reason = '';

beforeAll(async () => {
  hub = await FakeUpstream.start();
  hub.putImage('library/big', bigImg, 'v1');
  hub.putImage('library/small', smallImg, 'v1');
  hub.putImage('library/huge', makeImage({ layers: [huge], cmd: ['huge'] }), 'v1');
  base = await mkdtemp(join(tmpdir(), 'regmirror-disk-'));
  dataDir = join(base, 'data');
  await mkdir(dataDir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dataDir], { stdio: 'pipe', timeout: 10_000 });
    mounted = true;
  } catch (e) {
    reason = `mount -t tmpfs failed (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim()}); needs root or CAP_SYS_ADMIN`;
  }
});

afterAll(async () => {
  await mirror?.stop();
  if (mounted) {
    try {
      execFileSync('umount', [dataDir], { stdio: 'pipe', timeout: 10_000 });
    } catch {
      execFileSync('umount', ['-l', dataDir], { stdio: 'pipe', timeout: 10_000 });
    }
  }
  if (base) await rm(base, { recursive: true, force: true });
  await hub.close();
});

describe('disk full (ENOSPC)', () => {
  it('passes a blob bigger than the free space through, keeps nothing partial, keeps serving', async (ctx) => {
    if (!mounted) {
      console.log(`[disk] skipped: ${reason}`);
      ctx.skip();
      return;
    }
    mirror = await spawnMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, dataDir });
    const man = await rawGet(`${mirror.url}/v2/big/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } });
    expect(man.status).toBe(200);

    const url = `${mirror.url}/v2/library/big/blobs/${big.digest}`;
    const r = await rawGet(url, { timeoutMs: 20_000 });
    const got = `${r.status}/${r.body.length} of ${big.size} bytes/${r.error ?? 'complete'}`;
    const summary = `${got}; store_full=${await mirror.metric('mirror_store_full_total')}; logs: ${mirror.lines
      .filter((l) => (l.level ?? 0) >= 40)
      .map((l) => l.msg)
      .join(' | ')
      .slice(0, 400)}`;
    console.log(`[disk] big blob: ${summary}`);
    expect(existsSync(blobFile(dataDir, big.digest))).toBe(false);
    await waitFor(() => tmpEntries(dataDir).length === 0, 3000, () => `an empty tmp/ (has ${tmpEntries(dataDir).join(', ')})`);
    const fullMetric = await mirror.metric('mirror_store_full_total');
    const fullLogged = mirror.lines.some((l) => /full|ENOSPC|no space/i.test(`${l.msg ?? ''} ${JSON.stringify(l)}`));
    expect(fullMetric > 0 || fullLogged, summary).toBe(true);

    // The mirror keeps serving: a small manifest and a small blob still work (and are kept).
    expect((await httpGet(`${mirror.url}/healthz`)).status).toBe(200);
    const sm = await rawGet(`${mirror.url}/v2/small/manifests/v1`, { headers: { accept: DOCKER_ACCEPT } });
    expect(sm.status).toBe(200);
    expect(digestOf(sm.body)).toBe(smallImg.manifest.digest);
    const sb = await rawGet(`${mirror.url}/v2/library/small/blobs/${small.digest}`);
    expect(sb.status).toBe(200);
    expect(digestOf(sb.body)).toBe(small.digest);
    expect(mirror.exited).toBe(false);

    // The client got the right bytes from upstream (pass-through), also when asked again, concurrently.
    expect(r.status, summary).toBe(200);
    expect(r.complete, summary).toBe(true);
    expect(digestOf(r.body)).toBe(big.digest);
    const again = await Promise.all([rawGet(url, { timeoutMs: 20_000 }), rawGet(url, { timeoutMs: 20_000 })]);
    for (const a of again) {
      expect(a.status).toBe(200);
      expect(a.complete).toBe(true);
      expect(digestOf(a.body)).toBe(big.digest);
    }
    expect(existsSync(blobFile(dataDir, big.digest))).toBe(false);
    await waitFor(() => tmpEntries(dataDir).length === 0, 3000, () => `an empty tmp/ (has ${tmpEntries(dataDir).join(', ')})`);

    // A pass-through whose only client gives up before reading (a range past the end: 416) is
    // abandoned, not left waiting for a first reader with upstream's connection and its bytes held.
    const inflight = () => mirror!.metric('mirror_inflight_downloads');
    expect(await inflight()).toBe(0);
    const hugeUrl = `${mirror.url}/v2/library/huge/blobs/${huge.digest}`;
    const past = await rawGet(hugeUrl, { headers: { range: 'bytes=999999999-' }, timeoutMs: 10_000 });
    expect(past.status).toBe(416);
    await waitFor(async () => (await inflight()) === 0, 5000, 'the abandoned pass-through gone');
    // A Range on an upstream that sends no length: the size comes only with the end, which a
    // pass-through keeps nothing of to wait on: the whole blob (a server may ignore a Range).
    hub.faults.chunkedBlobs = true;
    try {
      const ranged = await rawGet(hugeUrl, { headers: { range: 'bytes=0-99' }, timeoutMs: 20_000 });
      expect(ranged.status).toBe(200);
      expect(ranged.complete).toBe(true);
      expect(digestOf(ranged.body)).toBe(huge.digest);
    } finally {
      hub.faults.chunkedBlobs = false;
    }
    await waitFor(async () => (await inflight()) === 0, 5000, 'no download left');
  });
});
