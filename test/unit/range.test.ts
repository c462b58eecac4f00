import { describe, expect, it } from 'vitest';
import { errorResponse } from '../../src/http/errors.js';
import { RegistryError } from '../../src/registry/errors.js';
import { MAX_RANGES, parseRange, resolveRanges, type RangeSpec } from '../../src/registry/range.js';

function errorOf(fn: () => unknown): RegistryError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RegistryError);
    return e as RegistryError;
  }
  throw new Error('expected a RegistryError, got a result');
}

/** parseRange then resolveRanges, as a request does; the one range. */
const resolve = (header: string, size: number) => {
  const r = resolveRanges(parseRange(header)!, size);
  expect(r).toHaveLength(1);
  return r![0];
};

describe('parseRange', () => {
  it('no header means no range', () => {
    expect(parseRange(undefined)).toBeUndefined();
  });

  it('parses the three single-range forms', () => {
    expect(parseRange('bytes=0-9')).toEqual([{ start: 0, end: 9 }]);
    expect(parseRange('bytes=5-')).toEqual([{ start: 5, end: undefined }]);
    expect(parseRange('bytes=-3')).toEqual([{ suffix: 3 }]);
    expect(parseRange('bytes=7-7')).toEqual([{ start: 7, end: 7 }]);
  });

  it('tolerates case and whitespace', () => {
    expect(parseRange('Bytes=1-2')).toEqual([{ start: 1, end: 2 }]);
    expect(parseRange(' bytes = 1 - 2 ')).toEqual([{ start: 1, end: 2 }]);
  });

  it('a reversed range is RANGE_INVALID (416)', () => {
    const e = errorOf(() => parseRange('bytes=9-5'));
    expect(e.code).toBe('RANGE_INVALID');
    expect(errorResponse(e).status).toBe(416);
  });

  it('parses several ranges in the order sent (podman partial pulls send these)', () => {
    expect(parseRange('bytes=0-1,5-9')).toEqual([{ start: 0, end: 1 }, { start: 5, end: 9 }]);
    expect(parseRange('bytes=0-1, -5')).toEqual([{ start: 0, end: 1 }, { suffix: 5 }]);
    expect(parseRange('bytes=0-1,,5-')).toEqual([{ start: 0, end: 1 }, { start: 5, end: undefined }]);
    expect(errorOf(() => parseRange('bytes=0-1,x')).code).toBe('RANGE_INVALID');
  });

  it(`more than ${MAX_RANGES} ranges are ignored (the whole body is sent)`, () => {
    const many = Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',');
    expect(parseRange(`bytes=${many}`)).toBeUndefined();
    expect(parseRange(`bytes=${many.split(',').slice(0, MAX_RANGES).join(',')}`)).toHaveLength(MAX_RANGES);
  });

  it.each(['bytes=a-b', 'items=0-1', 'bytes=-', 'bytes=', 'bytes 0-1', '0-1', 'bytes=1', 'bytes=--1', 'bytes=1.5-2', 'bytes=0x1-2', ''])(
    'malformed %j is RANGE_INVALID',
    (h) => {
      const e = errorOf(() => parseRange(h));
      expect(e.code).toBe('RANGE_INVALID');
      expect(e.message).toMatch(/malformed/);
    },
  );

  it('refuses numbers too large to be exact', () => {
    expect(errorOf(() => parseRange(`bytes=${'9'.repeat(16)}-`)).code).toBe('RANGE_INVALID');
    expect(errorOf(() => parseRange(`bytes=-${'9'.repeat(16)}`)).code).toBe('RANGE_INVALID');
    expect(parseRange(`bytes=${'9'.repeat(15)}-`)).toEqual([{ start: 999_999_999_999_999, end: undefined }]);
  });
});

describe('resolveRanges', () => {
  it('resolves to inclusive bounds within the blob', () => {
    expect(resolve('bytes=0-9', 100)).toEqual({ start: 0, end: 9 });
    expect(resolve('bytes=5-', 100)).toEqual({ start: 5, end: 99 });
    expect(resolve('bytes=-3', 100)).toEqual({ start: 97, end: 99 });
    expect(resolve('bytes=99-99', 100)).toEqual({ start: 99, end: 99 });
  });

  it('clamps an end beyond the blob to its last byte', () => {
    expect(resolve('bytes=10-1000', 100)).toEqual({ start: 10, end: 99 });
    expect(resolve('bytes=0-100', 100)).toEqual({ start: 0, end: 99 });
  });

  it('a suffix longer than the blob is the whole blob', () => {
    expect(resolve('bytes=-500', 100)).toEqual({ start: 0, end: 99 });
  });

  it('a start at or beyond the end is a 416 carrying the size', () => {
    for (const h of ['bytes=100-', 'bytes=100-200', 'bytes=5000-']) {
      const e = errorOf(() => resolve(h, 100));
      expect(e.code).toBe('RANGE_INVALID');
      expect(errorResponse(e).headers['content-range']).toBe('bytes */100');
      expect(e.size).toBe(100);
    }
  });

  it('a zero-length suffix is a 416', () => {
    const e = errorOf(() => resolve('bytes=-0', 100));
    expect(errorResponse(e).status).toBe(416);
    expect(e.size).toBe(100);
  });

  it('no range is satisfiable on an empty blob', () => {
    for (const spec of [{ start: 0, end: undefined }, { start: 0, end: 0 }, { suffix: 1 }] as RangeSpec[]) {
      const e = errorOf(() => resolveRanges([spec], 0));
      expect(errorResponse(e).status).toBe(416);
      expect(e.size).toBe(0);
    }
  });

  it('keeps one range per range asked, in the order asked (clients match parts by position), and drops the unsatisfiable', () => {
    expect(resolveRanges(parseRange('bytes=20-29,0-9')!, 100)).toEqual([{ start: 20, end: 29 }, { start: 0, end: 9 }]);
    // Adjacent and overlapping ranges stay apart, as distribution (Go's net/http) answers them.
    expect(resolveRanges(parseRange('bytes=0-4,5-9')!, 100)).toEqual([{ start: 0, end: 4 }, { start: 5, end: 9 }]);
    expect(resolveRanges(parseRange('bytes=0-9,5-14,15-19')!, 100)).toEqual([{ start: 0, end: 9 }, { start: 5, end: 14 }, { start: 15, end: 19 }]);
    expect(resolveRanges(parseRange('bytes=0-9,-5')!, 100)).toEqual([{ start: 0, end: 9 }, { start: 95, end: 99 }]);
    expect(resolveRanges(parseRange('bytes=0-9,500-600')!, 100)).toEqual([{ start: 0, end: 9 }]);
    expect(errorOf(() => resolveRanges(parseRange('bytes=100-,200-300')!, 100)).size).toBe(100);
  });

  it('ranges adding up to more than the blob are ignored: the whole blob (many overlaps must not multiply an answer)', () => {
    expect(resolveRanges(parseRange('bytes=0-59,40-99')!, 100)).toBeUndefined();
    expect(resolveRanges(parseRange(`bytes=${Array.from({ length: 50 }, () => '0-').join(',')}`)!, 100)).toBeUndefined();
    expect(resolveRanges(parseRange('bytes=0-49,50-99')!, 100)).toHaveLength(2);
  });

  it('takes the 1024 ranges containers-storage may ask for', () => {
    const many = Array.from({ length: 1024 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',');
    expect(resolveRanges(parseRange(`bytes=${many}`)!, 20_000)).toHaveLength(1024);
  });
});
