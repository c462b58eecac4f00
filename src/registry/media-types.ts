/** Manifest media types, content negotiation (Accept), and what a manifest references. */
import { isDigest } from './reference.js';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerV1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerV1: 'application/vnd.docker.distribution.manifest.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

/** What the mirror asks upstream for when the client accepts anything: every manifest kind it can serve. */
export const ALL_MANIFEST_TYPES: string[] = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest];
/** Those and the legacy schema 1 types: what a request by digest accepts, so upstream sends the content as it is (registry/schema1.ts). */
export const EVERY_MANIFEST_TYPE: string[] = [...ALL_MANIFEST_TYPES, MediaTypes.dockerV1Signed, MediaTypes.dockerV1];

/** The media types of manifests that list other manifests (one per platform). */
export const INDEX_TYPES: readonly string[] = [MediaTypes.ociIndex, MediaTypes.dockerList];

export const isIndexType = (mediaType: string): boolean => INDEX_TYPES.includes(mediaType);

/** A plausible media type (RFC 6838 shape); anything else from a document is not trusted as one. */
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/i;

/**
 * The client's acceptable media types; `undefined` means anything (no Accept, or a wildcard).
 * Parameters (`;q=`) are ignored: a type listed with q=0 is rare enough not to matter here.
 */
export function parseAccept(header: string | undefined): ReadonlySet<string> | undefined {
  if (!header) return undefined;
  const types = new Set<string>();
  for (const part of header.split(',')) {
    const t = part.split(';')[0]!.trim().toLowerCase();
    if (t === '*/*' || t === 'application/*') return undefined;
    if (t) types.add(t);
  }
  return types.size > 0 ? types : undefined;
}

/**
 * parseAccept with a memory: a fleet of clients sends a handful of distinct Accept headers, and
 * parsing one was 5 % of a cached manifest's CPU. Bounded (forgets everything when full), so a client
 * sending a new header on every request costs a parse each, never memory. The sets are shared: read-only.
 * A plain Map, not util/lru.ts: an LRU lookup costs about what the parse does, and "anything" (a
 * wildcard) is remembered as undefined, which lru-cache does not store.
 */
export class AcceptParser {
  private readonly seen = new Map<string, ReadonlySet<string> | undefined>();
  constructor(private readonly max = 64) {}

  parse(header: string | undefined): ReadonlySet<string> | undefined {
    if (!header) return undefined;
    if (header.length > 1024) return parseAccept(header); // not worth keeping
    if (this.seen.has(header)) return this.seen.get(header);
    const parsed = parseAccept(header);
    if (this.seen.size >= this.max) this.seen.clear();
    this.seen.set(header, parsed);
    return parsed;
  }
}

export const accepts = (accept: ReadonlySet<string> | undefined, mediaType: string): boolean => accept === undefined || accept.has(mediaType);

/** The Accept list to send upstream for a client's accept set. */
export function upstreamAccept(accept: ReadonlySet<string> | undefined): string[] {
  return accept === undefined ? ALL_MANIFEST_TYPES : [...accept];
}

interface Descriptor {
  digest?: unknown;
  mediaType?: unknown;
  urls?: unknown;
}
interface ManifestJson {
  schemaVersion?: unknown;
  mediaType?: unknown;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  fsLayers?: Array<{ blobSum?: unknown }>;
}

export interface ParsedManifest {
  mediaType: string;
  /** Every digest the manifest names: config, layers, child manifests (an image's parts, for eviction). */
  references: string[];
  /**
   * The digests the upstream registry vouches are in this manifest's repository: its config and
   * layers, which a registry accepts a pushed manifest with only when the repository holds them.
   * Not an index's children (a registry may take a sparse index naming manifests it does not hold),
   * nor a foreign or non-distributable layer (distribution never checks those exist): naming another
   * repository's private digest in such a descriptor must not make it servable here.
   */
  vouched: string[];
  /** The manifests an index or list names, with the media type its descriptor gives. */
  children: Array<{ digest: string; mediaType: string }>;
}

/**
 * Parses manifest bytes: the media type (the declared one, else inferred from the shape, else the
 * upstream's Content-Type) and the digests it references. Returns undefined when it is not JSON.
 */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest | undefined {
  let m: ManifestJson;
  try {
    m = JSON.parse(Buffer.from(bytes).toString('utf8')) as ManifestJson;
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const refs: string[] = [];
  const vouched: string[] = [];
  const add = (d: unknown, vouch: boolean) => {
    if (typeof d !== 'string' || !isDigest(d)) return;
    refs.push(d);
    if (vouch) vouched.push(d);
  };
  add(m.config?.digest, true);
  for (const l of Array.isArray(m.layers) ? m.layers : []) add(l?.digest, !isForeign(l));
  const children: ParsedManifest['children'] = [];
  for (const c of Array.isArray(m.manifests) ? m.manifests : []) {
    add(c?.digest, false);
    if (typeof c?.digest === 'string' && isDigest(c.digest) && typeof c.mediaType === 'string' && MEDIA_TYPE.test(c.mediaType)) {
      children.push({ digest: c.digest, mediaType: c.mediaType });
    }
  }
  for (const l of Array.isArray(m.fsLayers) ? m.fsLayers : []) add(l?.blobSum, true);
  let mediaType = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  if (!mediaType) {
    if (Array.isArray(m.manifests)) mediaType = MediaTypes.ociIndex;
    else if (m.config) mediaType = MediaTypes.ociManifest;
    else if (m.schemaVersion === 1) mediaType = contentType === MediaTypes.dockerV1 ? MediaTypes.dockerV1 : MediaTypes.dockerV1Signed;
    else mediaType = contentType || 'application/octet-stream';
  }
  return { mediaType, references: refs, vouched, children };
}

/** A layer fetched from its own URLs, or marked not to be distributed: a registry need not hold it. */
function isForeign(l: Descriptor | undefined): boolean {
  if (!l) return false;
  if (Array.isArray(l.urls) && l.urls.length > 0) return true;
  return typeof l.mediaType === 'string' && /foreign|nondistributable/.test(l.mediaType);
}
