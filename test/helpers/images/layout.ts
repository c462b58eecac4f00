/**
 * Images on disk in the layouts skopeo reads: the OCI image layout and skopeo's `dir:` transport.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { descriptorOf, MT, type Blob } from './blob.js';
import { allBlobs } from './image.js';

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
