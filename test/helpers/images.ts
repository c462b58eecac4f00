/**
 * Builds real container images in memory: ustar layers, gzip, config JSON with correct diff_ids,
 * manifests and indexes in OCI and Docker media types, and OCI image layouts on disk.
 *
 * Everything is deterministic (fixed mtimes, fixed JSON key order, seeded random data), so the same
 * call always yields the same digests. Real clients (skopeo, containerd, dockerd) unpack and run
 * what `busyboxImage()` returns, so the tar and JSON formats here are the genuine article.
 *
 * One concept per file under images/: blobs and media types (blob.ts), ustar (tar.ts), layers
 * (layers.ts), images and indexes (image.ts), on-disk layouts (layout.ts), the busybox image
 * (busybox.ts). This module is the one import for tests.
 */
export { sha256Hex } from './digest.js';
export { blobOf, descriptorOf, MT, type Blob } from './images/blob.js';
export { makeTar, type TarEntry } from './images/tar.js';
export { makeSignedSchema1, SCHEMA1_SIGNED } from './images/schema1.js';
export { diffIdOf, makeLayer, makeRandomLayer, pseudoRandomBytes } from './images/layers.js';
export { allBlobs, makeImage, makeIndex, type Image, type MakeImageOptions, type Platform } from './images/image.js';
export { writeDirLayout, writeOciLayout } from './images/layout.js';
export { BUSYBOX_DEFAULT_CMD, busyboxImage, hostArchitecture, isStaticElf } from './images/busybox.js';
