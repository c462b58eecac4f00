/**
 * HTTP Range for blobs: one range of bytes, `a-b`, `a-` or `-n`. Several ranges or anything
 * malformed is refused (a registry client never needs them), unsatisfiable is a 416.
 */
import { RegistryError } from './errors.js';
import type { ByteRange } from '../storage/store.js';

export type RangeSpec = { start: number; end: number | undefined } | { suffix: number };

export function parseRange(header: string | undefined): RangeSpec | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '') || (m[1]!.length > 15) || (m[2]!.length > 15)) {
    const multi = /^\s*bytes\s*=.*,/i.test(header);
    throw new RegistryError('RANGE_INVALID', multi ? 'multiple ranges are not supported' : 'malformed Range header', { status: 416, detail: { range: header.slice(0, 200) } });
  }
  if (m[1] === '') return { suffix: Number(m[2]) };
  const start = Number(m[1]);
  const end = m[2] === '' ? undefined : Number(m[2]);
  if (end !== undefined && end < start) throw new RegistryError('RANGE_INVALID', 'range end is before its start', { status: 416, detail: { range: header.slice(0, 200) } });
  return { start, end };
}

/** Resolves a range against the blob size: inclusive bounds, or a 416 (with the size for Content-Range). */
export function resolveRange(spec: RangeSpec, size: number): ByteRange {
  if ('suffix' in spec) {
    if (spec.suffix === 0 || size === 0) throw unsatisfiable(size);
    return { start: Math.max(0, size - spec.suffix), end: size - 1 };
  }
  if (spec.start >= size) throw unsatisfiable(size);
  return { start: spec.start, end: Math.min(spec.end ?? size - 1, size - 1) };
}

function unsatisfiable(size: number): RegistryError {
  return new RegistryError('RANGE_INVALID', 'range not satisfiable', { status: 416, size });
}
