/**
 * The OCI image layout (image-spec layout.md) as bundles carry it: `oci-layout`, `index.json` whose
 * descriptors name images with `org.opencontainers.image.ref.name`, and `blobs/<alg>/<hex>`. What
 * import and export agree on: entry names, bounds, and how a ref name maps to a repository and tag.
 */
import { parseDigest, validateTag } from '../registry/reference.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';
export const OCI_LAYOUT = JSON.stringify({ imageLayoutVersion: '1.0.0' });
export const OCI_INDEX_TYPE = 'application/vnd.oci.image.index.v1+json';

/** index.json larger than this is refused before it is parsed (a layout of thousands of images is ~1 MiB). */
export const MAX_INDEX_BYTES = 4 * 1024 * 1024;
/** Descriptors in index.json. */
export const MAX_INDEX_ENTRIES = 10_000;
export const MAX_OCI_LAYOUT_BYTES = 64 * 1024;

/** A bundle that cannot be imported: its message names the first bad entry. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

export type EntryName = { kind: 'oci-layout' } | { kind: 'index' } | { kind: 'blob'; digest: string } | { kind: 'dir' } | { kind: 'other' };

/**
 * What a tar or directory entry is. Absolute names, `..`, backslashes and NULs are refused (a
 * BundleError), whatever the entry: nothing in a bundle may name a place outside it.
 */
export function classifyEntry(raw: string, isDir: boolean): EntryName {
  if (raw.includes('\0') || raw.includes('\\')) throw new BundleError(`entry ${JSON.stringify(raw.slice(0, 200))}: invalid characters in the name`);
  if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw new BundleError(`entry ${JSON.stringify(raw.slice(0, 200))}: absolute path`);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new BundleError(`entry ${JSON.stringify(raw.slice(0, 200))}: path traversal (..)`);
  const name = parts.join('/');
  if (isDir || name === '') return { kind: 'dir' };
  if (name === 'oci-layout') return { kind: 'oci-layout' };
  if (name === 'index.json') return { kind: 'index' };
  if (parts.length === 3 && parts[0] === 'blobs') {
    const digest = `${parts[1]}:${parts[2]}`;
    if (!supportedDigest(digest)) throw new BundleError(`entry ${name}: not a blob name (blobs/sha256/<64 hex> or blobs/sha512/<128 hex>)`);
    return { kind: 'blob', digest };
  }
  return { kind: 'other' };
}

/** A digest the mirror serves (sha256 or sha512, lowercase hex of the right length), as a client may ask for it. */
const supportedDigest = (s: string): boolean => passes(() => parseDigest(s));

export const blobPath = (digest: string): string => `blobs/${digest.replace(':', '/')}`;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** Checks a descriptor's shape (where: for the message). */
export function descriptor(v: unknown, where: string): Descriptor {
  if (typeof v !== 'object' || v === null) throw new BundleError(`${where}: not a descriptor`);
  const d = v as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !supportedDigest(d.digest)) throw new BundleError(`${where}: invalid or unsupported digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw new BundleError(`${where}: invalid size`);
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw new BundleError(`${where}: missing mediaType`);
  const annotations = typeof d.annotations === 'object' && d.annotations !== null ? (d.annotations as Record<string, string>) : undefined;
  const platform = typeof d.platform === 'object' && d.platform !== null ? (d.platform as Descriptor['platform']) : undefined;
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, ...(annotations ? { annotations } : {}), ...(platform ? { platform } : {}) };
}

/** Parses index.json (bounded by the caller) into its descriptors. */
export function parseIndex(bytes: Buffer): Descriptor[] {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BundleError('index.json: not JSON');
  }
  const manifests = (v as { manifests?: unknown } | null)?.manifests;
  if (!Array.isArray(manifests)) throw new BundleError('index.json: no "manifests" array');
  if (manifests.length > MAX_INDEX_ENTRIES) throw new BundleError(`index.json: ${manifests.length} entries (at most ${MAX_INDEX_ENTRIES})`);
  return manifests.map((m, i) => descriptor(m, `index.json manifests[${i}]`));
}

/** A ref name split into a repository name (possibly empty: a plain tag) and a tag. */
export function splitRefName(refName: string): { name: string; tag: string } {
  if (isPlainTag(refName)) return { name: '', tag: refName };
  const slash = refName.lastIndexOf('/');
  const colon = refName.indexOf(':', slash + 1);
  if (colon < 0) throw new BundleError(`ref name ${JSON.stringify(refName.slice(0, 200))}: no tag (expected REPOSITORY:TAG or TAG)`);
  const tag = refName.slice(colon + 1);
  if (!isPlainTag(tag)) throw new BundleError(`ref name ${JSON.stringify(refName.slice(0, 200))}: invalid tag`);
  return { name: refName.slice(0, colon), tag };
}

const isPlainTag = (s: string): boolean => passes(() => validateTag(s));

/** Whether a validator accepts (returns rather than throws). */
function passes(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch {
    return false;
  }
}

/** `linux/arm64/v8` of a descriptor's platform. */
export const platformOf = (p: Descriptor['platform']): string | undefined =>
  p?.os && p.architecture ? [p.os, p.architecture, ...(p.variant ? [p.variant] : [])].join('/') : undefined;

/** Whether a platform (`linux/arm64/v8`) is wanted by a filter (`linux/arm64` matches any variant). */
export function platformWanted(platform: string | undefined, wanted: readonly string[] | undefined): boolean {
  if (wanted === undefined || platform === undefined) return true;
  return wanted.some((w) => platform === w || platform.startsWith(`${w}/`));
}
