/**
 * Images and indexes: a config with the right diff_ids, an OCI or Docker schema 2 manifest over
 * it, and OCI indexes / Docker manifest lists over images (deterministic JSON, so fixed digests).
 */
import { blobOf, descriptorOf, MT, type Blob } from './blob.js';
import { diffIdOf } from './layers.js';
import { MTIME } from './tar.js';

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
