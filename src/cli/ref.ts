/**
 * The references `regmirror cache` accepts, in Docker's own spelling, turned into the
 * `<upstream>/<repo>` pairs the cache is kept under:
 *
 *   docker.io/library/alpine            a repository
 *   docker.io/library/alpine:3.19       a tag of it
 *   docker.io/library/alpine@sha256:…   an image of it, by its root manifest's digest
 *   alpine:3.19, acme/app               Docker Hub names: docker.io, and `library/` for one part
 *
 * A first part with a dot or a port, or `localhost`, is a registry host; anything else is Docker Hub
 * (as `docker pull` reads it). Docker Hub's other host names mean docker.io.
 */
import { looksLikeHost, parseDigest, validateRepoName, validateTag } from '../registry/reference.js';

export interface CacheRef {
  /** The upstream key, e.g. `docker.io`. */
  upstream: string;
  /** The repository as the upstream knows it, e.g. `library/alpine`. */
  repo: string;
  tag?: string;
  digest?: string;
}

/** A reference the CLI cannot use; its message is shown to the user as is. */
export class RefError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RefError';
  }
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

/** Parses REF (see the module comment). Throws RefError naming what is wrong. */
export function parseCacheRef(input: string): CacheRef {
  const ref = input.trim();
  if (ref === '') throw new RefError('empty reference');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch {
      throw new RefError(`${input}: invalid digest ${digest} (expected sha256:<64 hex>)`);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    try {
      validateTag(tag);
    } catch {
      throw new RefError(`${input}: invalid tag ${JSON.stringify(tag)}`);
    }
  }
  if (tag !== undefined && digest !== undefined) throw new RefError(`${input}: give a tag or a digest, not both`);

  const parts = rest.split('/');
  let upstream = DOCKER_HUB;
  if (parts.length > 1 && looksLikeHost(parts[0]!)) {
    upstream = parts.shift()!.toLowerCase();
    if (DOCKER_HUB_ALIASES.has(upstream)) upstream = DOCKER_HUB;
  }
  if (upstream === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repo = parts.join('/');
  try {
    validateRepoName(repo);
  } catch {
    throw new RefError(`${input}: invalid repository name ${JSON.stringify(repo)} (lowercase letters, digits and . _ - between them, parts separated by /)`);
  }
  return { upstream, repo, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `<upstream>/<repo>[:tag|@digest]`, the canonical spelling shown back to the user. */
export function formatCacheRef(ref: CacheRef): string {
  const name = `${ref.upstream}/${ref.repo}`;
  if (ref.digest !== undefined) return `${name}@${ref.digest}`;
  if (ref.tag !== undefined) return `${name}:${ref.tag}`;
  return name;
}

/**
 * A pin pattern as given, except that a plain reference without wildcards is written canonically
 * (`postgres:14.5` → `docker.io/library/postgres:14.5`), so `pin` and `unpin` of the same words
 * agree with what the mirror stores. Patterns with `*` are passed through untouched.
 */
export function normalizePinPattern(pattern: string): string {
  const p = pattern.trim();
  if (p === '') throw new RefError('empty pattern');
  if (p.includes('*')) return p;
  return formatCacheRef(parseCacheRef(p));
}
