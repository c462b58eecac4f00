/**
 * HTTP Range for blobs (RFC 9110 §14): one or several ranges of bytes, each `a-b`, `a-` or `-n`.
 * Podman and containers-storage ask for several ranges at once (partial pulls of zstd:chunked
 * layers) and match the parts of the answer to the ranges they asked for by position: so, as Go's
 * net/http (and so distribution) answers, one part per satisfiable range, in the order asked, none
 * merged. Malformed is a 416; ranges that cannot be satisfied are dropped, and only when none is
 * left is the answer a 416. Ranges that add up to more than the blob (overlaps asking for the same
 * bytes again and again) and a header with more than MAX_RANGES ranges are ignored: the whole body
 * is sent, as RFC 9110 allows.
 */
import { RegistryError } from './errors.js';
import type { ByteRange } from '../storage/store.js';

export type { ByteRange };

export type RangeSpec = { start: number; end: number | undefined } | { suffix: number };

/** More ranges than this in one header: the header is ignored and the whole blob sent (containers-storage asks for up to 1024). */
export const MAX_RANGES = 1024;

const ONE = /^\s*(\d*)\s*-\s*(\d*)\s*$/;

/** The ranges of a Range header in the order sent; undefined when there is none (or too many to honour). */
export function parseRange(header: string | undefined): RangeSpec[] | undefined {
  if (header === undefined) return undefined;
  const unit = /^\s*bytes\s*=(.*)$/is.exec(header);
  const malformed = () => new RegistryError('RANGE_INVALID', 'malformed Range header', { detail: { range: header.slice(0, 200) } });
  if (!unit) throw malformed();
  const parts = unit[1]!.split(',');
  if (parts.length > MAX_RANGES) return undefined;
  const specs: RangeSpec[] = [];
  for (const part of parts) {
    if (part.trim() === '' && parts.length > 1) continue; // RFC 9110 list syntax allows empty elements
    const m = ONE.exec(part);
    if (!m || (m[1] === '' && m[2] === '') || m[1]!.length > 15 || m[2]!.length > 15) throw malformed();
    if (m[1] === '') {
      specs.push({ suffix: Number(m[2]) });
      continue;
    }
    const start = Number(m[1]);
    const end = m[2] === '' ? undefined : Number(m[2]);
    if (end !== undefined && end < start) throw new RegistryError('RANGE_INVALID', 'range end is before its start', { detail: { range: header.slice(0, 200) } });
    specs.push({ start, end });
  }
  if (specs.length === 0) throw malformed();
  return specs;
}

/** Resolves one range against the blob size: inclusive bounds, or undefined when unsatisfiable. */
function resolveOne(spec: RangeSpec, size: number): ByteRange | undefined {
  if ('suffix' in spec) {
    if (spec.suffix === 0 || size === 0) return undefined;
    return { start: Math.max(0, size - spec.suffix), end: size - 1 };
  }
  if (spec.start >= size) return undefined;
  return { start: spec.start, end: Math.min(spec.end ?? size - 1, size - 1) };
}

/**
 * The satisfiable ranges against the blob size, in the order asked; a 416 (carrying the size, for
 * Content-Range) when none is satisfiable; undefined (send the whole blob) when they add up to more
 * than the blob.
 */
export function resolveRanges(specs: RangeSpec[], size: number): ByteRange[] | undefined {
  const ranges = specs.map((s) => resolveOne(s, size)).filter((r): r is ByteRange => r !== undefined);
  if (ranges.length === 0) throw new RegistryError('RANGE_INVALID', 'range not satisfiable', { size });
  let total = 0;
  for (const r of ranges) total += r.end - r.start + 1;
  return total > size ? undefined : ranges;
}
