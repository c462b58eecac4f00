import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { digestOf } from './digest.js';
import {
  MT,
  allBlobs,
  blobOf,
  busyboxImage,
  diffIdOf,
  isStaticElf,
  makeImage,
  makeIndex,
  makeLayer,
  makeRandomLayer,
  makeTar,
  writeDirLayout,
  writeOciLayout,
  type Blob,
} from './images.js';

const hasTar = existsSync('/usr/bin/tar') || existsSync('/bin/tar');
const hasSkopeo = existsSync('/usr/bin/skopeo');
const tmpDirs: string[] = [];
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'images-test-'));
  tmpDirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

function run(cmd: string, args: string[], input?: Buffer): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(cmd, args, { input, encoding: 'buffer', maxBuffer: 64 << 20 });
  return { stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '', status: r.status };
}

if (!hasTar) console.warn('images.test: skipping tar round-trips: no tar binary');
if (!hasSkopeo) console.warn('images.test: skipping skopeo checks: /usr/bin/skopeo absent');

/** Parses ustar headers ourselves, so checksum and field layout are checked even without a tar binary. */
function parseTar(tar: Buffer): Array<{ path: string; type: string; mode: number; size: number; link: string; mtime: number }> {
  const out = [];
  let off = 0;
  const str = (b: Buffer) => b.toString('utf8').replace(/\0.*$/s, '');
  const oct = (b: Buffer) => parseInt(str(b).trim() || '0', 8);
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const stored = oct(h.subarray(148, 156));
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    expect(sum).toBe(stored);
    expect(h.subarray(257, 265).toString('latin1')).toBe('ustar\u000000');
    const prefix = str(h.subarray(345, 500));
    const name = str(h.subarray(0, 100));
    const size = oct(h.subarray(124, 136));
    out.push({
      path: prefix ? `${prefix}/${name}` : name,
      type: String.fromCharCode(h[156]!),
      mode: oct(h.subarray(100, 108)),
      size,
      link: str(h.subarray(157, 257)),
      mtime: oct(h.subarray(136, 148)),
    });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  // Two zero blocks end the archive.
  expect(tar.subarray(off, off + 1024).every((x) => x === 0)).toBe(true);
  expect(off + 1024).toBe(tar.length);
  return out;
}

describe('blobOf', () => {
  it('digests and sizes the exact bytes', () => {
    const b = blobOf('hello', 'text/plain');
    expect(b.digest).toBe('sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
    expect(b.size).toBe(5);
    expect(b.bytes.equals(Buffer.from('hello'))).toBe(true);
  });
});

describe('makeTar', () => {
  const longDir = `${'d'.repeat(60)}/${'e'.repeat(60)}`;
  const files = [
    { path: 'etc', type: 'dir' as const },
    { path: '/etc/hello.txt', content: 'hi\n' },
    { path: 'bin/run', content: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
    { path: 'bin/link', type: 'symlink' as const, linkTarget: 'run' },
    { path: `${longDir}/file-with-a-long-name.txt`, content: 'x'.repeat(600) },
    { path: 'empty' },
  ];

  it('writes ustar headers with valid checksums, fixed mtimes and padded data', () => {
    const tar = makeTar(files);
    expect(tar.length % 512).toBe(0);
    const entries = parseTar(tar);
    expect(entries.map((e) => e.path)).toEqual(['etc/', 'etc/hello.txt', 'bin/run', 'bin/link', `${longDir}/file-with-a-long-name.txt`, 'empty']);
    expect(entries.map((e) => e.type)).toEqual(['5', '0', '0', '2', '0', '0']);
    expect(entries.map((e) => e.mode)).toEqual([0o755, 0o644, 0o755, 0o777, 0o644, 0o644]);
    expect(entries[3]!.link).toBe('run');
    expect(entries[4]!.size).toBe(600);
    expect(new Set(entries.map((e) => e.mtime)).size).toBe(1);
    expect(makeTar(files).equals(tar)).toBe(true); // deterministic
  });

  it.skipIf(!hasTar)('is read back by GNU tar, contents included', async () => {
    const tar = makeTar(files);
    const list = run('tar', ['-tvf', '-'], tar);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stderr).toBe('');
    expect(list.stdout).toMatch(/^drwxr-xr-x root\/root\s+0 2020-01-01 \d\d:\d\d etc\/$/m);
    expect(list.stdout).toMatch(/^lrwxrwxrwx .* bin\/link -> run$/m);
    const dir = await tmp();
    const x = run('tar', ['-xf', '-', '-C', dir], tar);
    expect(x.status, x.stderr).toBe(0);
    expect(await readFile(join(dir, 'etc/hello.txt'), 'utf8')).toBe('hi\n');
    expect(await readFile(join(dir, longDir, 'file-with-a-long-name.txt'), 'utf8')).toBe('x'.repeat(600));
    expect((await stat(join(dir, 'bin/run'))).mode & 0o777).toBe(0o755);
    expect(await readlink(join(dir, 'bin/link'))).toBe('run');
  });

  it('rejects what ustar cannot hold', () => {
    expect(() => makeTar([{ path: 'x'.repeat(101) }])).toThrow(/too long/);
    expect(() => makeTar([{ path: 'l', type: 'symlink' }])).toThrow(/linkTarget/);
  });
});

describe('layers', () => {
  it('makeLayer gzips the tar; diffIdOf hashes the uncompressed tar', () => {
    const files = [{ path: 'a.txt', content: 'a' }];
    const layer = makeLayer(files);
    expect(layer.mediaType).toBe(MT.ociLayerGzip);
    expect(layer.digest).toBe(digestOf(layer.bytes));
    expect(layer.size).toBe(layer.bytes.length);
    expect(gunzipSync(layer.bytes).equals(makeTar(files))).toBe(true);
    expect(diffIdOf(layer)).toBe(digestOf(makeTar(files)));
    const plain = makeLayer(files, MT.ociLayer);
    expect(plain.bytes.equals(makeTar(files))).toBe(true);
    expect(diffIdOf(plain)).toBe(plain.digest);
  });

  it.skipIf(!hasTar)('tar -tzvf lists a gzip layer', () => {
    const r = run('tar', ['-tzvf', '-'], makeLayer([{ path: 'd', type: 'dir' }, { path: 'd/f', content: 'f' }]).bytes);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => l.split(/\s+/).pop())).toEqual(['d/', 'd/f']);
  });

  it('makeRandomLayer is about the asked size, incompressible and seeded', () => {
    const a = makeRandomLayer(1 << 20, 'a');
    expect(Math.abs(a.size - (1 << 20))).toBeLessThan(1 << 20 >> 6); // within ~1.5 %
    expect(gzipSync(a.bytes).length).toBeGreaterThan(a.size * 0.99);
    expect(makeRandomLayer(1 << 20, 'a').digest).toBe(a.digest);
    expect(makeRandomLayer(1 << 20, 'b').digest).not.toBe(a.digest);
    expect(makeRandomLayer(100, 'tiny').size).toBeLessThan(4096);
    expect(makeRandomLayer(64 << 10, 'd', MT.dockerLayerGzip).mediaType).toBe(MT.dockerLayerGzip);
  });
});

describe('makeImage / makeIndex', () => {
  const l1 = makeLayer([{ path: 'one', content: '1' }]);
  const l2 = makeRandomLayer(50_000, 'two');

  it('writes an OCI manifest and config whose descriptors and diff_ids match the bytes', () => {
    const img = makeImage({ layers: [l1, l2], cmd: ['/bin/true'], architecture: 'arm64', variant: 'v8', annotations: { a: 'b' } });
    const m = JSON.parse(img.manifest.bytes.toString());
    expect(img.manifest.mediaType).toBe(MT.ociManifest);
    expect(m.schemaVersion).toBe(2);
    expect(m.mediaType).toBe(MT.ociManifest);
    expect(m.config).toEqual({ mediaType: MT.ociConfig, digest: digestOf(img.config.bytes), size: img.config.bytes.length });
    expect(m.layers).toEqual([l1, l2].map((l) => ({ mediaType: l.mediaType, digest: digestOf(l.bytes), size: l.bytes.length })));
    expect(m.annotations).toEqual({ a: 'b' });
    const c = JSON.parse(img.config.bytes.toString());
    expect(c.rootfs).toEqual({ type: 'layers', diff_ids: [digestOf(gunzipSync(l1.bytes)), digestOf(gunzipSync(l2.bytes))] });
    expect(c).toMatchObject({ os: 'linux', architecture: 'arm64', variant: 'v8', config: { Cmd: ['/bin/true'] } });
    expect(c.history).toHaveLength(2);
    expect(img.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  it('writes Docker schema 2 media types', () => {
    const img = makeImage({ layers: [l1], format: 'docker' });
    const m = JSON.parse(img.manifest.bytes.toString());
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.config.mediaType).toBe(MT.dockerConfig);
    expect(img.config.mediaType).toBe(MT.dockerConfig);
  });

  it('sets artifactType and subject for referrers', () => {
    const subject = makeImage({ layers: [l1] });
    const sig = makeImage({ layers: [l1], artifactType: 'application/vnd.example.sig', subject: subject.manifest });
    const m = JSON.parse(sig.manifest.bytes.toString());
    expect(m.artifactType).toBe('application/vnd.example.sig');
    expect(m.subject).toEqual({ mediaType: MT.ociManifest, digest: subject.manifest.digest, size: subject.manifest.size });
  });

  it('makeIndex lists each image with its platform', () => {
    const amd = makeImage({ layers: [l1], architecture: 'amd64' });
    const arm = makeImage({ layers: [l1], architecture: 'arm64', variant: 'v8' });
    for (const [format, mt] of [['oci', MT.ociIndex], ['docker', MT.dockerList]] as const) {
      const idx = makeIndex([amd, arm], format);
      const j = JSON.parse(idx.bytes.toString());
      expect(idx.mediaType).toBe(mt);
      expect(j).toMatchObject({ schemaVersion: 2, mediaType: mt });
      expect(j.manifests).toEqual([
        { mediaType: MT.ociManifest, digest: amd.manifest.digest, size: amd.manifest.size, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MT.ociManifest, digest: arm.manifest.digest, size: arm.manifest.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ]);
    }
  });

  it('allBlobs dedupes by digest', () => {
    const a = makeImage({ layers: [l1, l2] });
    const b = makeImage({ layers: [l1], cmd: ['x'] });
    const all = allBlobs(a, b, l1, makeIndex([a, b]));
    expect(all.map((x) => x.digest)).toEqual([a.manifest, a.config, l1, l2, b.manifest, b.config, makeIndex([a, b])].map((x) => x.digest));
  });
});

describe.skipIf(!hasSkopeo)('writeOciLayout (checked by skopeo)', () => {
  const l1 = makeLayer([{ path: 'hello.txt', content: 'hello' }]);
  const l2 = makeRandomLayer(20_000, 'skopeo');

  async function inspect(dir: string, ref: string, raw = false): Promise<Record<string, unknown>> {
    const r = run('skopeo', ['inspect', ...(raw ? ['--raw'] : []), `oci:${dir}:${ref}`]);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  /** `skopeo copy` re-hashes every blob it reads, so a wrong digest or size anywhere fails it. */
  async function copyVerifies(dir: string, ref: string, extra: string[] = []): Promise<void> {
    const dest = await tmp();
    const r = run('skopeo', ['copy', ...extra, `oci:${dir}:${ref}`, `dir:${dest}`]);
    expect(r.status, r.stderr).toBe(0);
  }

  it('accepts OCI images and an index', async () => {
    const dir = await tmp();
    const amd = makeImage({ layers: [l1, l2], architecture: 'amd64', cmd: ['/hello'] });
    const arm = makeImage({ layers: [l1], architecture: 'arm64', variant: 'v8' });
    const index = makeIndex([amd, arm]);
    await writeOciLayout(dir, { v1: amd.manifest, multi: index }, allBlobs(amd, arm));

    const info = await inspect(dir, 'v1');
    expect(info.Digest).toBe(amd.manifest.digest);
    expect(info.Layers).toEqual([l1.digest, l2.digest]);
    expect(info).toMatchObject({ Os: 'linux', Architecture: 'amd64' });
    expect((await inspect(dir, 'multi', true)).manifests).toHaveLength(2);
    await copyVerifies(dir, 'v1');
    await copyVerifies(dir, 'multi', ['--all']);
  });

});

describe.skipIf(!hasSkopeo)('writeDirLayout (checked by skopeo)', () => {
  // skopeo 1.9 ignores Docker media types in an OCI layout's index.json, so Docker images go via dir:.
  async function copyVerifies(src: string, extra: string[] = []): Promise<string> {
    const dest = await tmp();
    const r = run('skopeo', ['copy', ...extra, `dir:${src}`, `dir:${dest}`]);
    expect(r.status, r.stderr).toBe(0);
    return dest;
  }

  it('accepts a Docker schema 2 image and keeps its media type', async () => {
    const dir = await tmp();
    const img = makeImage({ layers: [makeLayer([{ path: 'x', content: 'x' }], MT.dockerLayerGzip)], format: 'docker', architecture: 'amd64' });
    await writeDirLayout(dir, img.manifest, allBlobs(img));
    const r = run('skopeo', ['inspect', `dir:${dir}`]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ Layers: [img.layers[0]!.digest], Architecture: 'amd64' });
    const dest = await copyVerifies(dir);
    expect(JSON.parse(await readFile(join(dest, 'manifest.json'), 'utf8')).mediaType).toBe(MT.dockerManifest);
  });

  it('accepts a Docker manifest list copied with --all', async () => {
    const dir = await tmp();
    const layer = makeLayer([{ path: 'y', content: 'y' }], MT.dockerLayerGzip);
    const imgs = ['amd64', 'arm64'].map((architecture) => makeImage({ layers: [layer], format: 'docker', architecture }));
    const list = makeIndex(imgs, 'docker');
    await writeDirLayout(dir, list, allBlobs(...imgs));
    await copyVerifies(dir, ['--all']);
  });
});

describe('busyboxImage', () => {
  const img = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo ran-$((6*7)); cat /data/msg.txt'], extraFile: { path: '/data/msg.txt', content: 'from layer 2\n' } });
  if (!img) console.warn('images.test: skipping busybox image checks: no static /bin/busybox');

  it.skipIf(!img)('is a host-arch linux image whose first layer holds a static busybox and its links', () => {
    const image = img!;
    expect(image.platform.os).toBe('linux');
    expect(image.platform.architecture).toBe(process.arch === 'x64' ? 'amd64' : 'arm64');
    expect(image.layers).toHaveLength(2);
    const entries = parseTar(gunzipSync(image.layers[0]!.bytes));
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get('bin/busybox')).toMatchObject({ type: '0', mode: 0o755 });
    for (const l of ['sh', 'echo', 'cat']) expect(byPath.get(`bin/${l}`)).toMatchObject({ type: '2', link: 'busybox' });
    for (const d of ['etc/', 'tmp/', 'proc/', 'sys/', 'dev/']) expect(byPath.get(d)?.type).toBe('5');
    expect(parseTar(gunzipSync(image.layers[1]!.bytes)).map((e) => e.path)).toEqual(['data/', 'data/msg.txt']);
    expect(isStaticElf(gunzipSync(image.layers[0]!.bytes).subarray(512 * 2))).toBe(true); // data after bin/ and bin/busybox headers
    const c = JSON.parse(image.config.bytes.toString());
    expect(c.rootfs.diff_ids).toEqual(image.layers.map((l: Blob) => digestOf(gunzipSync(l.bytes))));
    expect(busyboxImage({ format: 'docker' })!.manifest.mediaType).toBe(MT.dockerManifest);
  });

  // Unpacking the layers in order and running the cmd in a chroot is what a container runtime does
  // minus namespaces; it proves the binary, the symlinks and the cmd line up.
  const canChroot = !!img && hasTar && process.getuid?.() === 0 && existsSync('/usr/sbin/chroot');
  it.skipIf(!canChroot)('runs its cmd in a chroot of its unpacked layers', async () => {
    const root = await tmp();
    for (const l of img!.layers) expect(run('tar', ['-xzf', '-', '-C', root], l.bytes).status).toBe(0);
    const cmd = JSON.parse(img!.config.bytes.toString()).config.Cmd as string[];
    const r = run('/usr/sbin/chroot', [root, ...cmd]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('ran-42\nfrom layer 2\n');
  });

  it('isStaticElf tells static from dynamic executables', async () => {
    expect(isStaticElf(Buffer.from('#!/bin/sh\n'))).toBe(false);
    if (existsSync('/bin/ls')) expect(isStaticElf(await readFile('/bin/ls'))).toBe(false);
  });
});
