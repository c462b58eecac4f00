/**
 * A runnable image: the host's static /bin/busybox in a layer, for real clients (skopeo,
 * containerd, dockerd) to pull, unpack and run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { MT, type Blob } from './blob.js';
import { makeImage, type Image } from './image.js';
import { makeLayer } from './layers.js';
import { normalisePath } from './tar.js';

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
