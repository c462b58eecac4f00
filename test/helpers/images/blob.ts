/**
 * Content-addressed blobs and the media types images are made of: the vocabulary the other image
 * helpers (tar layers, images and indexes, layouts, busybox) share.
 */
import { digestOf } from '../digest.js';

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

export function blobOf(bytes: Buffer | string, mediaType: string): Blob {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return { digest: digestOf(buf), size: buf.length, mediaType, bytes: buf };
}

/** A descriptor as it appears inside manifests and indexes. */
export function descriptorOf(blob: Blob): { mediaType: string; digest: string; size: number } {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
}
