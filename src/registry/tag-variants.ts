/**
 * Which cached answer of a tag a client may be given.
 *
 * Upstream answers a tag by the request's Accept: a client that does not accept the type of the
 * tag's index (or list) gets one platform's manifest instead (distribution and Docker Hub pick
 * linux/amd64). Such a *narrowed* answer is recorded with the index types its request accepted, and
 * is served only to clients that accept no index type beyond those: a client that accepts the index
 * would have got the index from upstream, and must get it from the mirror too (an arm64 machine
 * must never be handed the amd64 image).
 *
 * An answer that is an index, or that came for a request accepting every index type, is the tag's
 * own content: any client accepting its media type may have it.
 */
import type { TagRecord, TagVariant } from '../storage/meta-store.js';
import { accepts, INDEX_TYPES, isIndexType } from './media-types.js';

/** The variant to record for an answer given to a request with this Accept. */
export function variantFor(v: Omit<TagVariant, 'narrowedFor'>, accept: ReadonlySet<string> | undefined): TagVariant {
  if (accept === undefined || isIndexType(v.mediaType) || INDEX_TYPES.every((t) => accept.has(t))) return v;
  return { ...v, narrowedFor: INDEX_TYPES.filter((t) => accept.has(t)) };
}

/** Whether upstream would give a client with this Accept the same answer as the variant's request. */
export function servable(v: TagVariant, accept: ReadonlySet<string> | undefined): boolean {
  if (!accepts(accept, v.mediaType)) return false;
  if (v.narrowedFor === undefined) return true;
  if (accept === undefined) return false;
  return INDEX_TYPES.every((t) => !accept.has(t) || v.narrowedFor!.includes(t));
}

/** The most recently confirmed variant the client may be given. */
export function pickVariant(record: TagRecord | undefined, accept: ReadonlySet<string> | undefined): TagVariant | undefined {
  let best: TagVariant | undefined;
  for (const v of record?.variants ?? []) if (servable(v, accept) && (!best || v.fetchedAt > best.fetchedAt)) best = v;
  return best;
}

/**
 * Reads a record written before variants said whether they were narrowed: any non-index answer
 * in it may have been narrowed for a client that accepted no index type, so it is treated as such
 * (at worst one more upstream request for clients that accept indexes).
 */
export function upgradeRecord(record: TagRecord): TagRecord {
  if (record.version === 2) return record;
  return { version: 2, variants: record.variants.map((v) => (isIndexType(v.mediaType) || v.narrowedFor ? v : { ...v, narrowedFor: [] })) };
}

export const acceptKey = (types: string[] | undefined): string => (types === undefined ? '*' : [...types].sort().join(','));
