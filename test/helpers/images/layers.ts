/**
 * Image layers: gzip'd (or plain) tars of given files, layers of seeded incompressible bytes of a
 * chosen size, and the diff_id a config must name for each layer.
 */
import { createCipheriv } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { digestOf, sha256Hex } from '../digest.js';
import { blobOf, MT, type Blob } from './blob.js';
import { makeTar, type TarEntry } from './tar.js';

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
  const key = Buffer.from(sha256Hex(seed), 'hex');
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
  return digestOf(tar);
}
