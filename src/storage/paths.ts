/**
 * The on-disk layout of the filesystem stores. Every path below the root is built here, from names
 * and digests that registry/reference.ts already validated.
 *
 * <root>/
 *   blobs/sha256/<2 hex>/<64 hex>           verified blob bytes (manifests are blobs too)
 *   tmp/<random>                            in-progress downloads and metadata writes; swept at start
 *   state/usage.json                        when images and blobs were last used (saved every few seconds)
 *   state/pins.json                         images pinned through the admin API
 *   repos/<upstream>/<repo...>/
 *     _tags/<tag>                           tag record JSON {variants:[{digest, mediaType, size, fetchedAt}]}
 *     _links/<alg>/<hex>                    empty file: this repository is known to contain the digest
 *     _manifests/<alg>/<hex>                the digest is a manifest of this repository; holds its media type
 *     _docs/<name>.json                     last upstream answer of tags/list or a referrers query
 *
 * The `_` prefix keeps these apart from repository path components, which must start with [a-z0-9]
 * (so repository `a/_tags` cannot exist and cannot collide with repository `a`'s tags).
 */
import { join } from 'node:path';

export interface RepoKey {
  upstream: string;
  repo: string;
}

export class StorePaths {
  constructor(readonly root: string) {}

  get blobsDir(): string {
    return join(this.root, 'blobs');
  }
  get tmpDir(): string {
    return join(this.root, 'tmp');
  }
  get reposDir(): string {
    return join(this.root, 'repos');
  }
  get stateDir(): string {
    return join(this.root, 'state');
  }
  state(name: 'usage' | 'pins'): string {
    return join(this.root, 'state', `${name}.json`);
  }

  blob(digest: string): string {
    const [alg, hex] = splitDigest(digest);
    return join(this.root, 'blobs', alg, hex.slice(0, 2), hex);
  }

  repoDir(ref: RepoKey): string {
    return join(this.root, 'repos', ref.upstream, ...ref.repo.split('/'));
  }

  tag(ref: RepoKey, tag: string): string {
    return join(this.repoDir(ref), '_tags', tag);
  }

  link(ref: RepoKey, digest: string): string {
    const [alg, hex] = splitDigest(digest);
    return join(this.repoDir(ref), '_links', alg, hex);
  }

  manifest(ref: RepoKey, digest: string): string {
    const [alg, hex] = splitDigest(digest);
    return join(this.repoDir(ref), '_manifests', alg, hex);
  }

  doc(ref: RepoKey, name: string): string {
    return join(this.repoDir(ref), '_docs', `${name}.json`);
  }

  tmp(prefix: string): string {
    return join(this.tmpDir, `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`);
  }
}

export function splitDigest(digest: string): [string, string] {
  const i = digest.indexOf(':');
  const alg = digest.slice(0, i);
  const hex = digest.slice(i + 1);
  // Defence in depth: callers validate digests, but a path must never be built from anything else.
  if (i <= 0 || !/^[a-z0-9]+$/.test(alg) || !/^[a-f0-9]{32,128}$/.test(hex)) throw new Error(`not a digest: ${digest.slice(0, 80)}`);
  return [alg, hex];
}
