/**
 * The bench's image set, built on disk as an OCI layout and pushed to the upstream registry:
 *   bench/multi:v1      an OCI index of two platforms (linux/amd64, linux/arm64), 1 MiB layer each
 *   bench/shared-{a,b,c}:v1  a 64 MiB base layer shared by all three, plus a 256 KiB layer of their own
 *   bench/big:v1        one 256 MiB layer
 * The large layers are uncompressed tars (application/vnd.oci.image.layer.v1.tar) of pseudo-random
 * bytes (AES-128-CTR keystream, seeded), streamed to disk while hashed: no large buffers, no gzip work.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { blobOf, descriptorOf, diffIdOf, makeImage, makeIndex, makeRandomLayer, MT, writeOciLayout, type Blob, type Image } from '../test/helpers/images.js';
import { pushIndex, pushOciLayout } from '../test/e2e/harness/push.js';

export const MiB = 1024 * 1024;

export interface Layer {
  mediaType: string;
  digest: string;
  size: number;
  diffId: string;
}

export interface BenchImage {
  repo: string;
  tag: string;
  /** the manifest (or index) as pushed */
  manifest: Blob;
  /** every blob digest a pull fetches (config + layers; for an index, of every platform) */
  blobDigests: string[];
  /** skopeo copy --all */
  all: boolean;
}

export interface Fixtures {
  layoutDir: string;
  images: BenchImage[];
  big: Layer;
  base: Layer;
  /** A small blob (shared-a's config) for the small-blob workload. */
  small: { digest: string; size: number; repo: string };
  /** shared-a's manifest, for the manifest workloads. */
  manifest: { repo: string; tag: string; digest: string };
  /** Path of a blob's file in the layout (nginx serves these). */
  blobPath(digest: string): string;
}

const MTIME = 1_577_836_800;

function octal(h: Buffer, off: number, width: number, v: number): void {
  h.write(v.toString(8).padStart(width - 1, '0'), off, width - 1, 'ascii');
  h[off + width - 1] = 0;
}

/** A ustar header for one regular file of `size` bytes. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, MTIME);
  h.fill(0x20, 148, 156);
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\u000000', 257, 8, 'ascii');
  h.write('root', 265, 32, 'utf8');
  h.write('root', 297, 32, 'utf8');
  octal(h, 329, 8, 0);
  octal(h, 337, 8, 0);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'ascii');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** Streams an uncompressed tar holding one file of `payload` pseudo-random bytes into the layout. */
export async function writeRandomTarLayer(layoutDir: string, payload: number, seed: string): Promise<Layer> {
  const blobDir = join(layoutDir, 'blobs', 'sha256');
  mkdirSync(blobDir, { recursive: true });
  const tmp = join(blobDir, `.tmp-${seed}`);
  const fh = await open(tmp, 'w');
  const hash = createHash('sha256');
  let size = 0;
  const put = async (b: Buffer): Promise<void> => {
    hash.update(b);
    let off = 0;
    while (off < b.length) off += (await fh.write(b, off, b.length - off)).bytesWritten;
    size += b.length;
  };
  try {
    const key = createHash('sha256').update(seed).digest().subarray(0, 16);
    const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16, 0));
    await put(tarHeader(`random-${seed}.bin`, payload));
    const CHUNK = 8 * MiB;
    const zeros = Buffer.alloc(CHUNK, 0);
    for (let left = payload; left > 0; left -= CHUNK) {
      await put(cipher.update(left >= CHUNK ? zeros : zeros.subarray(0, left)));
    }
    const pad = (512 - (payload % 512)) % 512;
    await put(Buffer.alloc(pad + 1024, 0));
  } finally {
    await fh.close();
  }
  const hex = hash.digest('hex');
  await rename(tmp, join(blobDir, hex));
  const digest = `sha256:${hex}`;
  // An uncompressed layer's diff_id is its own digest.
  return { mediaType: MT.ociLayer, digest, size, diffId: digest };
}

function layerOfBlob(b: Blob): Layer {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size, diffId: diffIdOf(b) };
}

/** makeImage for layers that are (partly) only on disk, so carry their diff_id instead of their bytes. */
function imageOf(layers: Layer[]): { manifest: Blob; config: Blob } {
  const when = new Date(MTIME * 1000).toISOString();
  const config = blobOf(
    JSON.stringify({
      created: when,
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created: when, created_by: `bench layer ${i}` })),
    }),
    MT.ociConfig,
  );
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: descriptorOf(config),
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  return { manifest: blobOf(JSON.stringify(manifest), MT.ociManifest), config };
}

/** Generates the image set in `layoutDir` (an OCI layout). */
export async function buildFixtures(layoutDir: string, sizes = { big: 256 * MiB, base: 64 * MiB }): Promise<Fixtures> {
  // The payload is a little under the target so the whole tar is about the size asked for.
  const big = await writeRandomTarLayer(layoutDir, sizes.big - 1536, 'bench-big');
  const base = await writeRandomTarLayer(layoutDir, sizes.base - 1536, 'bench-base');
  const smallBlobs: Blob[] = [];
  const images: BenchImage[] = [];
  const refs: Record<string, Blob> = {};

  // multi-arch index
  const platformImages: Image[] = (['amd64', 'arm64'] as const).map((arch) => {
    const layer = makeRandomLayer(MiB, `bench-multi-${arch}`);
    return makeImage({ layers: [layer], architecture: arch, ...(arch === 'arm64' ? { variant: 'v8' } : {}) });
  });
  const index = makeIndex(platformImages);
  for (const img of platformImages) smallBlobs.push(img.manifest, img.config, ...img.layers);
  refs.multi = index;
  images.push({
    repo: 'bench/multi',
    tag: 'v1',
    manifest: index,
    blobDigests: platformImages.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.digest)]),
    all: true,
  });

  // three images sharing the 64 MiB base layer
  let small: Fixtures['small'] | undefined;
  let manifestRef: Fixtures['manifest'] | undefined;
  for (const name of ['a', 'b', 'c']) {
    const top = makeRandomLayer(256 * 1024, `bench-shared-${name}`);
    const img = imageOf([base, layerOfBlob(top)]);
    smallBlobs.push(img.config, top);
    refs[`shared-${name}`] = img.manifest;
    const repo = `bench/shared-${name}`;
    images.push({ repo, tag: 'v1', manifest: img.manifest, blobDigests: [img.config.digest, base.digest, top.digest], all: false });
    if (name === 'a') {
      small = { digest: img.config.digest, size: img.config.size, repo };
      manifestRef = { repo, tag: 'v1', digest: img.manifest.digest };
    }
  }

  // one 256 MiB layer
  const bigImg = imageOf([big]);
  smallBlobs.push(bigImg.config);
  refs.big = bigImg.manifest;
  images.push({ repo: 'bench/big', tag: 'v1', manifest: bigImg.manifest, blobDigests: [bigImg.config.digest, big.digest], all: false });

  await writeOciLayout(layoutDir, refs, smallBlobs);
  return {
    layoutDir,
    images,
    big,
    base,
    small: small!,
    manifest: manifestRef!,
    blobPath: (digest) => join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length)),
  };
}

/** Pushes every image of the set to `registryUrl` with skopeo, one after another. */
export async function pushFixtures(fx: Fixtures, registryUrl: string): Promise<void> {
  const refOf = (img: BenchImage) => img.repo.slice('bench/'.length);
  for (const img of fx.images) {
    if (img.all) await pushIndex(fx.layoutDir, refOf(img), registryUrl, img.repo, img.tag, { timeoutMs: 180_000 });
    else await pushOciLayout(fx.layoutDir, refOf(img), registryUrl, img.repo, img.tag, { timeoutMs: 180_000 });
  }
}
