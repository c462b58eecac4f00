// Smoke test of the e2e harness itself, WITHOUT the mirror: a docker-registry instance plays the
// "mirror" so we prove that skopeo, ctr (hosts.toml) and dockerd (registry-mirrors) all work on
// this machine and that the access-log counters see their requests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { startContainerd, type Containerd } from './containerd.js';
import { parseAccessLine, startDistribution, type Distribution } from './distribution.js';
import { startDockerd, type Dockerd } from './dockerd.js';
import { Layout, busyboxFiles, type Descriptor } from './mini-oci.js';
import { inspectRaw, pushIndex, pushOciLayout } from './push.js';
import { cleanupDir, findProcesses, hasTool, isRoot, makeTempDir, mountsUnder, run, toolPath, waitFor } from './tools.js';

const missing = (tools: string[]): string | undefined => {
  const absent = tools.filter((t) => !hasTool(t));
  return absent.length ? `missing tool(s): ${absent.join(', ')}` : undefined;
};
const skipReason = (tools: string[], needsRoot = false): string | undefined =>
  missing(tools) ?? (needsRoot && !isRoot() ? 'needs root' : undefined);

const REG_SKIP = skipReason(['docker-registry', 'skopeo', 'busybox']);
const CTD_SKIP = REG_SKIP ?? skipReason(['containerd', 'ctr'], true);
const DKD_SKIP = REG_SKIP ?? skipReason(['dockerd', 'docker', 'containerd', 'runc'], true);
for (const [part, why] of [['registry/skopeo', REG_SKIP], ['containerd', CTD_SKIP], ['dockerd', DKD_SKIP]] as const) {
  if (why) console.warn(`[harness] skipping ${part}: ${why}`);
}

const timed = async <T>(label: string, f: () => Promise<T>): Promise<T> => {
  const t0 = Date.now();
  try {
    return await f();
  } finally {
    console.log(`[harness] ${label}: ${Date.now() - t0} ms`);
  }
};

const MARKER = 'harness-marker-7f3a';
const blobPath = /^\/v2\/library\/busybox\/blobs\/sha256:/;

describe('tools', () => {
  it('run() timeout kills the whole process group, grandchildren included', async () => {
    const secs = `30.${process.pid}`; // unique argv to find our sleeps
    const ours = (): number[] => findProcesses('cmdline', (c) => c === `sleep\0${secs}\0`);
    const pending = run('sh', ['-c', `sleep ${secs} & sleep ${secs}`], { timeoutMs: 500 });
    await waitFor(() => ours().length === 2, 450, () => `both sleeps running (have ${ours().length})`, 10);
    const r = await pending;
    expect(r.timedOut).toBe(true);
    expect(r.durationMs).toBeLessThan(5000);
    await waitFor(() => ours().length === 0, 2000, () => `both sleeps gone (left: ${ours().join(', ')})`, 10);
  });

  it('parses distribution access-log lines', () => {
    const e = parseAccessLine(
      '127.0.0.1 - - [22/Nov/2026:04:46:29 +0000] "HEAD /v2/library/busybox/manifests/latest?ns=docker.io HTTP/1.1" 200 405 "" "docker/20.10 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"',
    );
    expect(e).toMatchObject({ method: 'HEAD', path: '/v2/library/busybox/manifests/latest', status: 200, bytes: 405 });
    expect(e?.uri).toBe('/v2/library/busybox/manifests/latest?ns=docker.io');
    expect(e?.userAgent).toContain('Docker-Client/28.2.2');
  });
});

describe.skipIf(REG_SKIP !== undefined)('e2e harness (no mirror)', () => {
  let work = '';
  let reg: Distribution | undefined;
  let ctd: Containerd | undefined;
  let dkd: Dockerd | undefined;
  let amd64: Descriptor;
  let index: Descriptor;
  let arm64: Descriptor;
  const pushPuts = { single: 0, multi: 0 };

  beforeAll(async () => {
    work = makeTempDir('harness');
    // One layout: a runnable amd64 busybox image, plus an index of (amd64 busybox, arm64 dummy).
    const layout = new Layout(join(work, 'layout'));
    amd64 = layout.addImage(busyboxFiles(toolPath('busybox')), { arch: 'amd64' });
    arm64 = layout.addImage([{ type: 'file', name: 'hello.txt', data: Buffer.from('arm64\n') }], { arch: 'arm64' });
    index = layout.addIndex([amd64, arm64]);
    layout.tag(amd64, 'single');
    layout.tag(index, 'multi');
    const r = (reg = await timed('start docker-registry', () => startDistribution()));
    await timed('skopeo push single', () => pushOciLayout(join(work, 'layout'), 'single', r.url, 'library/busybox', 'latest'));
    await timed('skopeo push index --all', () => pushIndex(join(work, 'layout'), 'multi', r.url, 'library/multi', 'v1'));
    await r.settle();
    pushPuts.single = r.countRequests({ method: 'PUT', pathRegex: /^\/v2\/library\/busybox\/manifests\/latest$/ });
    pushPuts.multi = r.countRequests({ method: 'PUT', pathRegex: /^\/v2\/library\/multi\/manifests\// });
  }, 60_000);

  afterAll(async () => {
    // Each stop is independent so one failure cannot leak the other daemons.
    await Promise.allSettled([dkd?.stop(), ctd?.stop(), reg?.stop()]);
    if (work) await cleanupDir(work);
  }, 120_000);

  it('busybox is statically linked (the image has no libc)', async () => {
    const r = await run('ldd', [toolPath('busybox') ?? '/bin/busybox']);
    expect(`${r.stdout}${r.stderr}`).toMatch(/not a dynamic executable|statically linked/);
  });

  it('pushed a single image and a multi-arch index with skopeo, digests preserved', async () => {
    const r = reg!;
    expect(pushPuts.single).toBe(1);
    expect(pushPuts.multi).toBe(3); // index + 2 child manifests
    const raw = JSON.parse(await inspectRaw(r.url, 'library/multi', 'v1')) as { manifests: { digest: string }[] };
    expect(raw.manifests).toHaveLength(2);
    const res = await fetch(`${r.url}/v2/library/busybox/manifests/latest`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    expect(res.headers.get('docker-content-digest')).toBe(amd64.digest);
    const idx = await fetch(`${r.url}/v2/library/multi/manifests/v1`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    expect(idx.headers.get('docker-content-digest')).toBe(index.digest);
  }, 60_000);

  it('proxy-mode docker-registry pulls through from the first one', async () => {
    const peer = await timed('start docker-registry proxy', () => startDistribution({ proxyOf: reg!.url }));
    try {
      reg!.clearRequests();
      const m = await fetch(`${peer.url}/v2/library/busybox/manifests/latest`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      expect(m.status, peer.logs()).toBe(200);
      const manifest = (await m.json()) as { layers: { digest: string; size: number }[] };
      const layer = manifest.layers[0]!;
      const res = await fetch(`${peer.url}/v2/library/busybox/blobs/${layer.digest}`);
      expect(res.status, peer.logs()).toBe(200);
      expect((await res.arrayBuffer()).byteLength).toBe(layer.size);
      // The upstream saw the proxy's fetches (it also pings GET /v2/ before each one).
      await reg!.waitForRequests({ method: 'GET', pathRegex: /^\/v2\/library\/busybox\/blobs\// }, 1);
      await peer.waitForRequests({ method: 'GET', pathRegex: /\/blobs\// }, 1);
    } finally {
      await peer.stop();
    }
  }, 60_000);

  it.skipIf(CTD_SKIP !== undefined)('ctr pulls docker.io/library/busybox via hosts.toml "mirror"', async () => {
    ctd = await timed('start containerd', () => startContainerd());
    console.log(`[harness] containerd snapshotter: ${ctd.snapshotter}`);
    const r = reg!;
    r.clearRequests();
    await timed('ctr pull (cold)', () => ctd!.ctrPull('docker.io/library/busybox:latest', { mirrorUrl: r.url }));
    await r.settle();
    const seen = r.requests();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((e) => e.uri.endsWith('?ns=docker.io'))).toBe(true);
    expect(r.countRequests({ method: 'GET', pathRegex: blobPath })).toBe(2); // config + layer
    const ls = await ctd.ctr(['images', 'ls', '-q']);
    expect(ls.stdout).toContain('docker.io/library/busybox:latest');

    // After removeImage the next pull must fetch the blobs again.
    await ctd.removeImage('docker.io/library/busybox:latest');
    r.clearRequests();
    await timed('ctr pull (after rm --sync)', () => ctd!.ctrPull('docker.io/library/busybox:latest', { mirrorUrl: r.url }));
    await r.settle();
    expect(r.countRequests({ method: 'GET', pathRegex: blobPath })).toBe(2);

    // Multi-arch: ctr picks linux/amd64 from the index.
    r.clearRequests();
    await timed('ctr pull index', () => ctd!.ctrPull('docker.io/library/multi:v1', { mirrorUrl: r.url }));
    await r.settle();
    expect(r.countRequests({ method: 'GET', pathRegex: new RegExp(`/manifests/${index.digest}$`) })).toBe(1);
    expect(r.countRequests({ pathRegex: new RegExp(arm64.digest) })).toBe(0);

    // The container actually runs from the pulled snapshot.
    const runOut = await timed('ctr run', () => ctd!.ctrRun('docker.io/library/busybox:latest', ['/bin/sh', '-c', `echo ${MARKER}`]));
    expect(runOut.stdout + runOut.stderr).toContain(MARKER);
  }, 180_000);

  it.skipIf(DKD_SKIP !== undefined)('dockerd pulls through registry-mirrors and runs the image', async () => {
    const r = reg!;
    dkd = await timed('start dockerd', () => startDockerd({ mirrors: [r.url] }));
    r.clearRequests();
    const pull = await timed('docker pull', () => dkd!.docker(['pull', 'busybox:latest']));
    expect(pull.code, pull.stderr).toBe(0);
    await r.settle();
    expect(r.countRequests({ method: 'GET', pathRegex: blobPath })).toBe(2);
    expect(r.countRequests({ pathRegex: /^\/v2\/library\/busybox\/manifests\// })).toBeGreaterThan(0);
    const runOut = await timed('docker run', () => dkd!.docker(['run', '--rm', '--network', 'none', 'busybox:latest', 'sh', '-c', `echo ${MARKER}`]));
    expect(runOut.code, runOut.stderr).toBe(0);
    expect(runOut.stdout).toContain(MARKER);

    // Multi-arch through the mirror: docker resolves the index and pulls the amd64 child.
    const multi = await timed('docker pull index', () => dkd!.docker(['pull', 'multi:v1']));
    expect(multi.code, multi.stderr).toBe(0);

    // Live mirror change (SIGHUP reload): pulls now go to a fresh, empty registry and fail there.
    const other = await startDistribution();
    try {
      await dkd.setMirrors([other.url]);
      const miss = await dkd.docker(['pull', 'busybox:nope'], { timeoutMs: 60_000 });
      expect(miss.code).not.toBe(0);
      await other.waitForRequests({ pathRegex: /^\/v2\/library\/busybox\/manifests\/nope$/ }, 1);
    } finally {
      await other.stop();
    }
  }, 240_000);

  it.skipIf(CTD_SKIP !== undefined || DKD_SKIP !== undefined)(
    'stop() leaves no process, mount, dir or cgroup behind, even with containers running',
    async () => {
      const r = reg!;
      const c = await startContainerd();
      const k = await startDockerd({ mirrors: [r.url] });
      try {
        await c.ctrPull('docker.io/library/busybox:latest', { mirrorUrl: r.url });
        const cr = await c.ctr(['run', '-d', '--snapshotter', c.snapshotter, '--fifo-dir', join(c.dir, 'fifo'), '--runc-root', join(c.dir, 'runc'),
          'docker.io/library/busybox:latest', 'sleeper', '/bin/sh', '-c', 'sleep 600']);
        expect(cr.code, cr.stderr).toBe(0);
        const kr = await k.docker(['run', '-d', '--network', 'none', 'busybox:latest', 'sh', '-c', 'sleep 600']);
        expect(kr.code, kr.stderr).toBe(0);
        expect(findProcesses('cgroup', (cg) => cg.includes(`:/${c.namespace}/`)).length).toBeGreaterThan(0);
        expect(findProcesses('cgroup', (cg) => cg.includes(`:/${basename(k.dir)}/`)).length).toBeGreaterThan(0);
      } finally {
        await timed('stop containerd (1 task running)', () => c.stop());
        await timed('stop dockerd (1 container running)', () => k.stop());
      }
      for (const [dir, cgroup] of [[c.dir, c.namespace], [k.dir, basename(k.dir)]] as const) {
        expect(findProcesses('cmdline', (cmd) => cmd.includes(dir))).toEqual([]);
        expect(findProcesses('cgroup', (cg) => cg.includes(`:/${cgroup}/`))).toEqual([]);
        expect(mountsUnder(dir)).toEqual([]);
        expect(existsSync(dir)).toBe(false);
        expect(existsSync(`/sys/fs/cgroup/pids/${cgroup}`)).toBe(false);
      }
    },
    120_000,
  );
});
