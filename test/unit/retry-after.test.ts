import { describe, expect, it } from 'vitest';
import { retryAfterSeconds } from '../../src/upstream/client.js';

describe("an upstream's Retry-After", () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  it('is read as seconds or as an HTTP date counted from now (RFC 9110 allows both)', () => {
    expect(retryAfterSeconds('120', now)).toBe(120);
    expect(retryAfterSeconds(' 7 ', now)).toBe(7);
    expect(retryAfterSeconds('Mon, 30 Nov 2026 12:01:30 GMT', now)).toBe(90);
    // A date already past: retry now.
    expect(retryAfterSeconds('Mon, 30 Nov 2026 11:00:00 GMT', now)).toBe(0);
  });

  it('is nothing when it is neither', () => {
    for (const v of [undefined, '', 'soon', '-5', '1.5']) expect(retryAfterSeconds(v, now), String(v)).toBeUndefined();
  });
});
