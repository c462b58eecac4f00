/**
 * Name, tag and digest grammar (from the OCI distribution spec) and upstream routing.
 * Everything a client sends in a path is checked here before it reaches storage or an upstream URL,
 * so a name that passes can be used as a path below the cache root without escaping it.
 */
import { RegistryError } from './errors.js';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
const KNOWN_DIGESTS: Record<string, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};
/** A registry host as a first path part or a `ns` value: has a dot or a port, or is localhost. */
const HOST = /^(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]+|\[[0-9a-f:]+\](?::[0-9]+)?)$/i;

export const MAX_NAME_LENGTH = 255;
export const MAX_COMPONENTS = 16;

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

/** Validates a digest; unknown algorithms are UNSUPPORTED, malformed ones DIGEST_INVALID. */
export function parseDigest(s: string): { algorithm: string; hex: string } {
  const m = DIGEST.exec(s);
  if (!m) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: s.slice(0, 200) } });
  const algorithm = m[1]!;
  const hex = m[2]!;
  const rule = KNOWN_DIGESTS[algorithm];
  if (!rule) throw new RegistryError('DIGEST_UNSUPPORTED', `digest algorithm ${algorithm} is not supported`, { detail: { digest: s.slice(0, 200) } });
  if (!rule.test(hex)) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: s.slice(0, 200) } });
  return { algorithm, hex };
}

export function validateTag(s: string): void {
  if (!TAG.test(s)) throw new RegistryError('TAG_INVALID', 'invalid tag', { detail: { tag: s.slice(0, 200) } });
}

export function validateRepoName(name: string): void {
  const bad = (why: string) => new RegistryError('NAME_INVALID', `invalid repository name: ${why}`, { detail: { name: name.slice(0, 300) } });
  if (name.length === 0) throw bad('empty');
  if (name.length > MAX_NAME_LENGTH) throw bad(`longer than ${MAX_NAME_LENGTH} characters`);
  const parts = name.split('/');
  if (parts.length > MAX_COMPONENTS) throw bad(`more than ${MAX_COMPONENTS} components`);
  for (const p of parts) if (!COMPONENT.test(p)) throw bad('components must match [a-z0-9]+([._-][a-z0-9]+)*');
}

export function looksLikeHost(part: string): boolean {
  return HOST.test(part);
}

/** A repository on a particular upstream: the unit of caching and of access control. */
export interface RepoRef {
  /** The configured upstream's key, e.g. `docker.io`. */
  upstream: string;
  /** The repository name as the upstream knows it, e.g. `library/alpine`. */
  repo: string;
}

export interface RoutingTable {
  defaultUpstream: string;
  /** Maps a registry host (or alias) to the configured upstream key, or undefined when unknown. */
  resolve(host: string): string | undefined;
  /** Whether one-part names get `library/` (Docker Hub). */
  addsLibraryPrefix(upstream: string): boolean;
}

/**
 * Chooses the upstream for a client-visible name:
 * - `?ns=<host>` (containerd's hosts.toml mirrors) names the registry; the name is the upstream's;
 * - otherwise a first path part that looks like a host (`ghcr.io/owner/repo`, podman's mirror-with-path
 *   style) names it;
 * - otherwise the default upstream.
 * An unknown registry is NAME_UNKNOWN: a 404 lets containerd fall back to the next host.
 */
export function routeName(rawName: string, ns: string | undefined, table: RoutingTable): RepoRef {
  validateRawName(rawName);
  let host: string | undefined;
  let name = rawName;
  const slash = rawName.indexOf('/');
  if (ns !== undefined && ns !== '') {
    host = ns.toLowerCase();
    if (!looksLikeHost(host)) throw new RegistryError('NAME_INVALID', 'invalid ns parameter', { detail: { ns: ns.slice(0, 300) } });
    // containerd with `override_path` on a `/v2/<host>` mirror sends both: `/v2/ghcr.io/o/r/...?ns=ghcr.io`.
    if (slash > 0 && rawName.slice(0, slash).toLowerCase() === host) name = rawName.slice(slash + 1);
  } else if (slash > 0 && looksLikeHost(rawName.slice(0, slash))) {
    host = rawName.slice(0, slash).toLowerCase();
    name = rawName.slice(slash + 1);
  }
  const upstream = host === undefined ? table.defaultUpstream : table.resolve(host);
  if (upstream === undefined) {
    throw new RegistryError('NAME_UNKNOWN', `registry ${host} is not configured on this mirror`, { detail: { registry: host } });
  }
  validateRepoName(name);
  if (table.addsLibraryPrefix(upstream) && !name.includes('/')) name = `library/${name}`;
  validateRepoName(name);
  return { upstream, repo: name };
}

/** Rejects what can never be a name, before any host splitting: escapes, dot segments, empty parts. */
function validateRawName(raw: string): void {
  if (raw.length > MAX_NAME_LENGTH + 256) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name: too long', { detail: { name: raw.slice(0, 300) } });
  }
  if (!/^[A-Za-z0-9._:\-/[\]]+$/.test(raw) || raw.includes('//') || raw.startsWith('/') || raw.endsWith('/')) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name: raw.slice(0, 300) } });
  }
  for (const part of raw.split('/')) {
    if (part === '.' || part === '..') throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name: raw.slice(0, 300) } });
  }
}

/** The client-visible name of a cached repository (for the catalog): default upstream names bare, others host-prefixed. */
export function displayName(ref: RepoRef, defaultUpstream: string): string {
  return ref.upstream === defaultUpstream ? ref.repo : `${ref.upstream}/${ref.repo}`;
}
