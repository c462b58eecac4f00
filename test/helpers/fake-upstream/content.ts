/**
 * What the fake holds: repositories of blobs, manifests (with the `subject`, `artifactType` and
 * annotations the referrers API reports) and tags, plus the CDN's view of every blob.
 */
import type { Blob, Image } from '../images.js';

export interface StoredManifest {
  blob: Blob;
  subject?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface Repo {
  blobs: Map<string, Blob>;
  manifests: Map<string, StoredManifest>;
  tags: Map<string, string>;
}

export class Content {
  private readonly repos = new Map<string, Repo>();
  /** Everything the CDN can serve, across repos (repo scoping is the registry's job, before the redirect). */
  private readonly cdnBlobs = new Map<string, Blob>();

  /** The repository, or undefined when nothing was ever put there. */
  get(name: string): Repo | undefined {
    return this.repos.get(name);
  }

  /** A blob the CDN serves, by digest, whichever repository it was put in. */
  cdnBlob(digest: string): Blob | undefined {
    return this.cdnBlobs.get(digest);
  }

  putBlob(repo: string, blob: Blob): void {
    this.repo(repo).blobs.set(blob.digest, blob);
    this.cdnBlobs.set(blob.digest, blob);
  }

  /** Stores a manifest or index (reachable by digest, and by `tag` if given). Throws if it is not JSON. */
  putManifest(repo: string, manifest: Blob, tag?: string): void {
    const doc = JSON.parse(manifest.bytes.toString('utf8')) as {
      subject?: { digest?: string };
      artifactType?: string;
      config?: { mediaType?: string };
      annotations?: Record<string, string>;
    };
    const stored: StoredManifest = { blob: manifest };
    if (doc.subject?.digest) stored.subject = doc.subject.digest;
    const artifactType = doc.artifactType ?? doc.config?.mediaType;
    if (artifactType) stored.artifactType = artifactType;
    if (doc.annotations) stored.annotations = doc.annotations;
    const r = this.repo(repo);
    r.manifests.set(manifest.digest, stored);
    if (tag !== undefined) r.tags.set(tag, manifest.digest);
  }

  putImage(repo: string, image: Image, tag?: string): void {
    this.putBlob(repo, image.config);
    for (const l of image.layers) this.putBlob(repo, l);
    this.putManifest(repo, image.manifest, tag);
  }

  putIndex(repo: string, index: Blob, images: Image[], tag?: string): void {
    for (const img of images) this.putImage(repo, img);
    this.putManifest(repo, index, tag);
  }

  deleteTag(repo: string, tag: string): void {
    this.repos.get(repo)?.tags.delete(tag);
  }

  private repo(name: string): Repo {
    let r = this.repos.get(name);
    if (!r) {
      r = { blobs: new Map(), manifests: new Map(), tags: new Map() };
      this.repos.set(name, r);
    }
    return r;
  }
}
