/**
 * BufferPool: read buffers reused between answers, sized in powers of two, with a cap on what waits.
 */
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/util/buffer-pool.js';

const KiB = 1024;

describe('BufferPool', () => {
  it('gives at least the size asked, rounded up to a power of two from 4 KiB', () => {
    const pool = new BufferPool(1024 * KiB);
    expect(pool.take(1).length).toBe(4 * KiB);
    expect(pool.take(4 * KiB).length).toBe(4 * KiB);
    expect(pool.take(4 * KiB + 1).length).toBe(8 * KiB);
    expect(pool.take(100 * KiB).length).toBe(128 * KiB);
    expect(pool.take(1024 * KiB).length).toBe(1024 * KiB);
  });

  it('a buffer given back is the next one taken of its size; another size does not get it', () => {
    const pool = new BufferPool(1024 * KiB);
    const a = pool.take(64 * KiB);
    pool.give(a);
    expect(pool.idleSize).toBe(64 * KiB);
    expect(pool.take(16 * KiB)).not.toBe(a);
    expect(pool.take(40 * KiB)).toBe(a);
    expect(pool.idleSize).toBe(0);
    expect(pool.take(64 * KiB)).not.toBe(a);
  });

  it('take(n, least): a smaller idle buffer, never below least, rather than a new one', () => {
    const pool = new BufferPool(1024 * KiB);
    const [s16, s64] = [pool.take(16 * KiB), pool.take(64 * KiB)];
    pool.give(s16);
    pool.give(s64);
    expect(pool.take(256 * KiB, 64 * KiB)).toBe(s64);
    // Only a 16 KiB one waits, and 64 KiB is the least: a new 256 KiB buffer.
    const fresh = pool.take(256 * KiB, 64 * KiB);
    expect(fresh.length).toBe(256 * KiB);
    expect(pool.take(256 * KiB, 1)).toBe(s16);
    // Of the same size first, when one waits.
    pool.give(fresh);
    pool.give(s64);
    expect(pool.take(256 * KiB, 64 * KiB)).toBe(fresh);
  });

  it('above 1 MiB it makes buffers to measure and keeps none', () => {
    const pool = new BufferPool(8 * 1024 * KiB);
    const big = pool.take(1024 * KiB + 1);
    expect(big.length).toBe(1024 * KiB + 1);
    pool.give(big);
    expect(pool.idleSize).toBe(0);
  });

  it('refuses what it did not make: views, slices of a larger buffer, odd sizes', () => {
    const pool = new BufferPool(1024 * KiB);
    const whole = pool.take(64 * KiB);
    pool.give(whole.subarray(0, 32 * KiB));
    pool.give(Buffer.allocUnsafeSlow(128 * KiB).subarray(64 * KiB));
    pool.give(Buffer.allocUnsafeSlow(5000));
    expect(pool.idleSize).toBe(0);
  });

  it('keeps at most its cap waiting: a buffer of the only size waiting is let go', () => {
    const pool = new BufferPool(128 * KiB);
    const [a, b, c] = [pool.take(64 * KiB), pool.take(64 * KiB), pool.take(64 * KiB)];
    for (const x of [a, b, c]) pool.give(x);
    expect(pool.idleSize).toBe(128 * KiB);
    expect(new Set([pool.take(64 * KiB), pool.take(64 * KiB), pool.take(64 * KiB)]).has(c)).toBe(false);
    // A buffer larger than the cap is never kept.
    pool.give(pool.take(256 * KiB));
    expect(pool.idleSize).toBe(0);
  });

  it('at its cap, what is given back takes the place of other sizes, the largest first', () => {
    const pool = new BufferPool(256 * KiB);
    const [big, m1, m2] = [pool.take(128 * KiB), pool.take(64 * KiB), pool.take(64 * KiB)];
    for (const x of [big, m1, m2]) pool.give(x);
    expect(pool.idleSize).toBe(256 * KiB);
    const small = pool.take(4 * KiB);
    pool.give(small);
    expect(pool.idleSize).toBe(128 * KiB + 4 * KiB);
    expect(pool.take(128 * KiB)).not.toBe(big);
    expect(pool.take(4 * KiB)).toBe(small);
    const again = [pool.take(64 * KiB), pool.take(64 * KiB)];
    expect(again.includes(m1) && again.includes(m2)).toBe(true);
  });
});
