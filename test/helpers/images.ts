/**
 * Builds real container images in memory: ustar layers, gzip, config JSON with correct diff_ids,
 * manifests and indexes in OCI and Docker media types, and OCI image layouts on disk.
 *
 * Everything is deterministic (fixed mtimes, fixed JSON key order, seeded random data), so the same
 * call always yields the same digests. Real clients (skopeo, containerd, dockerd) unpack and run
 * what `busyboxImage()` returns, so the tar and JSON formats here are the genuine article.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';

/** A content-addressed blob: `digest` is always `sha256:<hex>` of `bytes`, `size` its length. */
export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
  bytes: Buffer;
}

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export function sha256Hex(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function blobOf(bytes: Buffer | string, mediaType: string): Blob {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return { digest: `sha256:${sha256Hex(buf)}`, size: buf.length, mediaType, bytes: buf };
}

/** A descriptor as it appears inside manifests and indexes. */
export function descriptorOf(blob: Blob): { mediaType: string; digest: string; size: number } {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
}

// ---------------------------------------------------------------------------------------------
// tar

export interface TarEntry {
  path: string;
  content?: Buffer | string;
  mode?: number;
  type?: 'file' | 'dir' | 'symlink';
  linkTarget?: string;
}

/** Fixed mtime (2020-01-01T00:00:00Z) so layer digests never depend on when the test ran. */
const MTIME = 1_577_836_800;
const BLOCK = 512;

/** Writes `value` as zero-padded octal filling `width - 1` digits plus a NUL, as ustar expects. */
function writeOctal(header: Buffer, offset: number, width: number, value: number): void {
  const digits = value.toString(8).padStart(width - 1, '0');
  if (digits.length > width - 1) throw new Error(`tar: value ${value} does not fit in ${width} bytes`);
  header.write(digits, offset, width - 1, 'ascii');
  header[offset + width - 1] = 0;
}

function writeString(header: Buffer, offset: number, width: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > width) throw new Error(`tar: "${value}" is longer than ${width} bytes`);
  bytes.copy(header, offset);
}

/** ustar keeps names in two fields: `prefix` (155) + '/' + `name` (100). Split at a '/' that fits both. */
function splitName(path: string): { name: string; prefix: string } {
  if (Buffer.byteLength(path) <= 100) return { name: path, prefix: '' };
  // A trailing '/' (directories) must stay in `name`, so never split on it.
  for (let i = path.length - 2; i > 0; i--) {
    if (path[i] !== '/') continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100) return { name, prefix };
  }
  throw new Error(`tar: path too long for ustar: ${path}`);
}

function tarHeader(entry: Required<Pick<TarEntry, 'path' | 'type'>> & { mode: number; size: number; linkTarget: string }): Buffer {
  const h = Buffer.alloc(BLOCK, 0);
  const { name, prefix } = splitName(entry.path);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, entry.mode);
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, entry.size);
  writeOctal(h, 136, 12, MTIME);
  h.fill(0x20, 148, 156); // checksum field counts as eight spaces while summing
  h.write(entry.type === 'dir' ? '5' : entry.type === 'symlink' ? '2' : '0', 156, 1, 'ascii');
  writeString(h, 157, 100, entry.linkTarget);
  h.write('ustar\u000000', 257, 8, 'ascii'); // magic "ustar\0" + version "00"
  writeString(h, 265, 32, 'root');
  writeString(h, 297, 32, 'root');
  writeOctal(h, 329, 8, 0); // devmajor
  writeOctal(h, 337, 8, 0); // devminor
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  // Checksum: six octal digits, NUL, space (the historical layout every tar accepts).
  h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'ascii');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** Layer paths are relative to the rootfs: no leading '/' or './', directories end in '/'. */
function normalisePath(path: string, type: TarEntry['type']): string {
  let p = path.replace(/^(\.\/|\/)+/, '');
  if (p === '') throw new Error(`tar: empty path from "${path}"`);
  if (type === 'dir' && !p.endsWith('/')) p += '/';
  if (type !== 'dir') p = p.replace(/\/+$/, '');
  return p;
}

/** A POSIX ustar archive of `files`, in the order given, ending with two zero blocks. */
export function makeTar(files: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const type = f.type ?? 'file';
    const path = normalisePath(f.path, type);
    const data = type === 'file' ? (typeof f.content === 'string' ? Buffer.from(f.content, 'utf8') : (f.content ?? Buffer.alloc(0))) : Buffer.alloc(0);
    if (type === 'symlink' && !f.linkTarget) throw new Error(`tar: symlink ${path} needs linkTarget`);
    const mode = f.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644);
    parts.push(tarHeader({ path, type, mode, size: data.length, linkTarget: f.linkTarget ?? '' }));
    if (data.length > 0) {
      parts.push(data);
      const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
      if (pad) parts.push(Buffer.alloc(pad, 0));
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2, 0));
  return Buffer.concat(parts);
}

/** A gzip'd tar layer. Pass `MT.ociLayer` to get the uncompressed tar as the blob instead. */
export function makeLayer(files: TarEntry[], mediaType: string = MT.ociLayerGzip): Blob {
  const tar = makeTar(files);
  return blobOf(isGzipMediaType(mediaType) ? gzipSync(tar) : tar, mediaType);
}

function isGzipMediaType(mediaType: string): boolean {
  return mediaType.endsWith('+gzip') || mediaType.endsWith('.gzip');
}

/**
 * Deterministic, incompressible bytes: AES-256-CTR keystream keyed by sha256(seed). Far faster than
 * hashing in counter mode, and gzip cannot shrink it, so the layer size tracks `approxBytes`.
 */
export function pseudoRandomBytes(length: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16, 0));
  return Buffer.concat([cipher.update(Buffer.alloc(length, 0)), cipher.final()]);
}

/**
 * A gzip'd tar holding one file of seeded random bytes, about `approxBytes` long as a blob
 * (tar header and trailer plus gzip framing are ~2 KiB, subtracted from the file).
 */
export function makeRandomLayer(approxBytes: number, seed: string, mediaType: string = MT.ociLayerGzip): Blob {
  const payload = pseudoRandomBytes(Math.max(0, approxBytes - 2048), seed);
  const tar = makeTar([{ path: `random-${sha256Hex(seed).slice(0, 12)}.bin`, content: payload }]);
  // Level 1: random data is stored uncompressed at any level; level 1 just gets there faster.
  return blobOf(isGzipMediaType(mediaType) ? gzipSync(tar, { level: 1 }) : tar, mediaType);
}

/** The diff_id of a layer: sha256 of its uncompressed tar. */
export function diffIdOf(layer: Blob): string {
  const tar = isGzipMediaType(layer.mediaType) ? gunzipSync(layer.bytes) : layer.bytes;
  return `sha256:${sha256Hex(tar)}`;
}

// ---------------------------------------------------------------------------------------------
// images and indexes

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Image {
  manifest: Blob;
  config: Blob;
  layers: Blob[];
  platform: Platform;
}

export interface MakeImageOptions {
  layers: Blob[];
  format?: 'oci' | 'docker';
  os?: string;
  architecture?: string;
  variant?: string;
  cmd?: string[];
  env?: string[];
  /** Manifest annotations (OCI only; Docker schema 2 has no such field, but clients ignore it). */
  annotations?: Record<string, string>;
  /** OCI 1.1 `artifactType` on the manifest; shows up in referrers responses. */
  artifactType?: string;
  /** OCI 1.1 `subject`: makes this manifest a referrer of that manifest. */
  subject?: Blob;
}

/** Maps Node's process.arch to the GOARCH names image platforms use. */
export function hostArchitecture(): { architecture: string; variant?: string } | undefined {
  switch (process.arch) {
    case 'x64':
      return { architecture: 'amd64' };
    case 'arm64':
      return { architecture: 'arm64', variant: 'v8' };
    default:
      return undefined;
  }
}

export function makeImage(opts: MakeImageOptions): Image {
  const format = opts.format ?? 'oci';
  const platform: Platform = { os: opts.os ?? 'linux', architecture: opts.architecture ?? 'amd64' };
  if (opts.variant) platform.variant = opts.variant;
  const diffIds = opts.layers.map(diffIdOf);
  const config = {
    created: new Date(MTIME * 1000).toISOString(),
    architecture: platform.architecture,
    ...(platform.variant ? { variant: platform.variant } : {}),
    os: platform.os,
    config: {
      Env: opts.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      ...(opts.cmd ? { Cmd: opts.cmd } : {}),
      WorkingDir: '/',
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    // One history entry per layer: if history is present, its non-empty entries must match the layers.
    history: opts.layers.map((_, i) => ({ created: new Date(MTIME * 1000).toISOString(), created_by: `test layer ${i}` })),
  };
  const configBlob = blobOf(JSON.stringify(config), format === 'oci' ? MT.ociConfig : MT.dockerConfig);
  const manifest = {
    schemaVersion: 2,
    mediaType: format === 'oci' ? MT.ociManifest : MT.dockerManifest,
    ...(opts.artifactType ? { artifactType: opts.artifactType } : {}),
    config: descriptorOf(configBlob),
    layers: opts.layers.map(descriptorOf),
    ...(opts.subject ? { subject: descriptorOf(opts.subject) } : {}),
    ...(opts.annotations ? { annotations: opts.annotations } : {}),
  };
  return {
    manifest: blobOf(JSON.stringify(manifest), manifest.mediaType),
    config: configBlob,
    layers: opts.layers,
    platform,
  };
}

/** An OCI index or Docker manifest list with one platform descriptor per image. */
export function makeIndex(images: Image[], format: 'oci' | 'docker' = 'oci'): Blob {
  const mediaType = format === 'oci' ? MT.ociIndex : MT.dockerList;
  const index = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map((img) => ({ ...descriptorOf(img.manifest), platform: { ...img.platform } })),
  };
  return blobOf(JSON.stringify(index), mediaType);
}

function isImage(x: Image | Blob): x is Image {
  return 'manifest' in x && 'config' in x;
}

/** Every blob of the given images and blobs (manifest, config, layers), each digest once, in first-seen order. */
export function allBlobs(...things: Array<Image | Blob>): Blob[] {
  const seen = new Map<string, Blob>();
  for (const t of things) {
    const list = isImage(t) ? [t.manifest, t.config, ...t.layers] : [t];
    for (const b of list) if (!seen.has(b.digest)) seen.set(b.digest, b);
  }
  return [...seen.values()];
}

/**
 * Writes an OCI image layout (image-spec layout.md): `oci-layout`, `index.json` naming each ref with
 * `org.opencontainers.image.ref.name`, and `blobs/sha256/<hex>`. The ref blobs themselves are always
 * written, so `blobs` only needs the rest. Usable as `skopeo copy oci:DIR:REF ...`.
 *
 * Caveat: skopeo 1.9 (containers/image 5.23) only resolves refs whose descriptor is an OCI manifest
 * or index ("no descriptor found for reference" otherwise). For Docker-format images use writeDirLayout.
 */
export async function writeOciLayout(dir: string, refs: Record<string, Blob>, blobs: Blob[]): Promise<void> {
  const blobDir = join(dir, 'blobs', 'sha256');
  await mkdir(blobDir, { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  for (const b of allBlobs(...Object.values(refs), ...blobs)) {
    await writeFile(join(blobDir, b.digest.slice('sha256:'.length)), b.bytes);
  }
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: Object.entries(refs).map(([ref, b]) => ({
      ...descriptorOf(b),
      annotations: { 'org.opencontainers.image.ref.name': ref },
    })),
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
}

/**
 * Writes skopeo's `dir:` transport layout (containers/image directory transport 1.1): `version`,
 * `manifest.json` = `manifest`, blobs as `<hex>`, and for an index each listed manifest found in
 * `blobs` also as `<hex>.manifest.json`. Unlike the OCI layout it keeps Docker media types as they are.
 */
export async function writeDirLayout(dir: string, manifest: Blob, blobs: Blob[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  await writeFile(join(dir, 'manifest.json'), manifest.bytes);
  const hex = (b: Blob) => b.digest.slice('sha256:'.length);
  const isManifest = (b: Blob) => ([MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList] as string[]).includes(b.mediaType);
  for (const b of allBlobs(...blobs)) {
    if (b.digest === manifest.digest) continue;
    await writeFile(join(dir, isManifest(b) ? `${hex(b)}.manifest.json` : hex(b)), b.bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// a runnable image

/**
 * True when `bytes` is an ELF executable without a PT_INTERP program header, i.e. it needs no
 * dynamic loader and so runs inside an otherwise empty rootfs. (What `file` calls "statically linked".)
 */
export function isStaticElf(bytes: Buffer): boolean {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = bytes[4] === 2;
  const le = bytes[5] === 1;
  const u16 = (o: number) => (le ? bytes.readUInt16LE(o) : bytes.readUInt16BE(o));
  const u32 = (o: number) => (le ? bytes.readUInt32LE(o) : bytes.readUInt32BE(o));
  const off = (o: number) => (is64 ? Number(le ? bytes.readBigUInt64LE(o) : bytes.readBigUInt64BE(o)) : u32(o));
  const phoff = off(is64 ? 0x20 : 0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > bytes.length) return false;
    if (u32(at) === PT_INTERP) return false;
  }
  return true;
}

const BUSYBOX_PATH = '/bin/busybox';
/** The busybox layer is ~1 MB of gzip work; build it once per media type per test process. */
const busyboxLayers = new Map<string, Blob>();

function busyboxLayer(mediaType: string): Blob | undefined {
  const cached = busyboxLayers.get(mediaType);
  if (cached) return cached;
  if (!existsSync(BUSYBOX_PATH)) return undefined;
  const bin = readFileSync(BUSYBOX_PATH);
  if (!isStaticElf(bin)) return undefined;
  const layer = makeLayer(
    [
      { path: 'bin/', type: 'dir' },
      { path: 'bin/busybox', content: bin, mode: 0o755 },
      // busybox picks the applet from argv[0]'s basename, so plain symlinks are enough.
      { path: 'bin/sh', type: 'symlink', linkTarget: 'busybox' },
      { path: 'bin/echo', type: 'symlink', linkTarget: 'busybox' },
      { path: 'bin/cat', type: 'symlink', linkTarget: 'busybox' },
      { path: 'dev/', type: 'dir' },
      { path: 'etc/', type: 'dir' },
      { path: 'proc/', type: 'dir' },
      { path: 'sys/', type: 'dir' },
      // Sticky and world-writable, like every real /tmp.
      { path: 'tmp/', type: 'dir', mode: 0o1777 },
    ],
    mediaType,
  );
  busyboxLayers.set(mediaType, layer);
  return layer;
}

export const BUSYBOX_DEFAULT_CMD = ['/bin/echo', 'hello from regmirror busybox'];

/**
 * A runnable linux image for the host architecture, built from the host's static /bin/busybox
 * (Debian's busybox-static). Layer 1: busybox + sh/echo/cat symlinks + dev, etc, proc, sys, tmp.
 * With `extraFile`, layer 2 holds that file (and its parent directories).
 * Returns undefined when /bin/busybox is missing or dynamically linked, or the arch is unsupported.
 */
export function busyboxImage(opts: { format?: 'oci' | 'docker'; cmd?: string[]; extraFile?: { path: string; content: string } } = {}): Image | undefined {
  const format = opts.format ?? 'oci';
  const arch = hostArchitecture();
  if (!arch) return undefined;
  const layerType = format === 'oci' ? MT.ociLayerGzip : MT.dockerLayerGzip;
  const base = busyboxLayer(layerType);
  if (!base) return undefined;
  const layers = [base];
  if (opts.extraFile) {
    const path = normalisePath(opts.extraFile.path, 'file');
    const parts = path.split('/').slice(0, -1);
    const dirs = parts.map((_, i) => ({ path: parts.slice(0, i + 1).join('/') + '/', type: 'dir' as const }));
    layers.push(makeLayer([...dirs, { path, content: opts.extraFile.content }], layerType));
  }
  return makeImage({
    layers,
    format,
    os: 'linux',
    architecture: arch.architecture,
    ...(arch.variant ? { variant: arch.variant } : {}),
    cmd: opts.cmd ?? BUSYBOX_DEFAULT_CMD,
    env: ['PATH=/bin'],
  });
}
