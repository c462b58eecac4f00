// Minimal OCI image-layout writer used only by the harness smoke test (harness.test.ts), so the
// harness can be proven without depending on test/helpers/images.ts. Real e2e tests should
// use the project's image builder.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { digestOf } from '../../helpers/digest.js';

export type TarEntry =
  | { type: 'dir'; name: string; mode?: number }
  | { type: 'file'; name: string; data: Buffer; mode?: number }
  | { type: 'symlink'; name: string; target: string };

function header(name: string, mode: number, size: number, type: string, linkname = ''): Buffer {
  const h = Buffer.alloc(512, 0);
  const put = (s: string, off: number, len: number): void => void h.write(s, off, len, 'utf8');
  const oct = (n: number, len: number): string => `${n.toString(8).padStart(len - 1, '0')}\0`;
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`);
  put(name, 0, 100);
  put(oct(mode, 8), 100, 8);
  put(oct(0, 8), 108, 8); // uid
  put(oct(0, 8), 116, 8); // gid
  put(oct(size, 12), 124, 12);
  put(oct(0, 12), 136, 12); // mtime 0: deterministic digests
  put('        ', 148, 8); // checksum placeholder (spaces) while summing
  put(type, 156, 1);
  put(linkname, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

/** Uncompressed ustar archive. */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.type === 'dir') parts.push(header(e.name.endsWith('/') ? e.name : `${e.name}/`, e.mode ?? 0o755, 0, '5'));
    else if (e.type === 'symlink') parts.push(header(e.name, 0o777, 0, '2', e.target));
    else {
      parts.push(header(e.name, e.mode ?? 0o644, e.data.length, '0'), e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024)); // two zero blocks end the archive
  return Buffer.concat(parts);
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

export class Layout {
  private readonly refs: Descriptor[] = [];
  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  }

  addBlob(data: Buffer, mediaType: string): Descriptor {
    const digest = digestOf(data);
    writeFileSync(join(this.dir, 'blobs', 'sha256', digest.slice(7)), data);
    return { mediaType, digest, size: data.length };
  }

  /** One-layer image; returns the manifest descriptor (with platform, ready for an index). */
  addImage(files: TarEntry[], opts: { arch?: string; cmd?: string[] } = {}): Descriptor {
    const layerTar = tar(files);
    const layer = this.addBlob(gzipSync(layerTar), 'application/vnd.oci.image.layer.v1.tar+gzip');
    const arch = opts.arch ?? 'amd64';
    const config = this.addBlob(
      Buffer.from(
        JSON.stringify({
          architecture: arch,
          os: 'linux',
          config: { Cmd: opts.cmd ?? ['/bin/sh'], Env: ['PATH=/bin'] },
          rootfs: { type: 'layers', diff_ids: [digestOf(layerTar)] },
        }),
      ),
      'application/vnd.oci.image.config.v1+json',
    );
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config,
      layers: [layer],
    };
    return {
      ...this.addBlob(Buffer.from(JSON.stringify(manifest)), manifest.mediaType),
      platform: { architecture: arch, os: 'linux' },
    };
  }

  addIndex(manifests: Descriptor[]): Descriptor {
    const mediaType = 'application/vnd.oci.image.index.v1+json';
    return this.addBlob(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests })), mediaType);
  }

  /** Name `desc` in index.json (org.opencontainers.image.ref.name) and rewrite the layout files. */
  tag(desc: Descriptor, refName: string): void {
    const { platform: _p, ...plain } = desc;
    this.refs.push({ ...plain, annotations: { 'org.opencontainers.image.ref.name': refName } });
    writeFileSync(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: this.refs }));
  }
}

/** Files of a runnable image: /bin/busybox (static) and /bin/sh -> busybox. */
export function busyboxFiles(busyboxPath = '/bin/busybox'): TarEntry[] {
  return [
    { type: 'dir', name: 'bin' },
    { type: 'file', name: 'bin/busybox', data: readFileSync(busyboxPath), mode: 0o755 },
    { type: 'symlink', name: 'bin/sh', target: 'busybox' },
  ];
}
