import { describe, expect, it } from 'vitest';
import { formatAgo, formatBytes, formatPercent, formatTable, formatTime, shortDigest } from '../../src/cli/format.js';

describe('cache CLI formatting', () => {
  it.each([
    [undefined, '-'],
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [1024 * 1024 - 1, '1.0 MiB'],
    [12.34 * 1024 * 1024, '12.3 MiB'],
    [3.25 * 1024 ** 3, '3.3 GiB'],
    [2 * 1024 ** 4, '2.0 TiB'],
  ])('bytes %s -> %s', (n, want) => {
    expect(formatBytes(n)).toBe(want);
  });

  it('relative times', () => {
    const now = Date.UTC(2026, 10, 29, 12, 0, 0);
    expect(formatAgo(undefined, now)).toBe('never');
    expect(formatAgo(now - 1000, now)).toBe('just now');
    expect(formatAgo(now - 45_000, now)).toBe('45 s ago');
    expect(formatAgo(now - 3 * 60_000, now)).toBe('3 min ago');
    expect(formatAgo(now - 5 * 3600_000, now)).toBe('5 h ago');
    expect(formatAgo(now - 3 * 86400_000, now)).toBe('3 days ago');
    expect(formatAgo(now + 60_000, now)).toBe('in the future');
    expect(formatTime(now - 3 * 60_000, now)).toBe('3 min ago (2026-11-29T11:57:00.000Z)');
    expect(formatTime(undefined, now)).toBe('never');
  });

  it('percentages and digests', () => {
    expect(formatPercent(undefined)).toBe('-');
    expect(formatPercent(0.875)).toBe('87.5%');
    expect(shortDigest(`sha256:${'0123456789abcdef'.repeat(4)}`)).toBe('sha256:0123456789ab');
  });

  it('tables pad columns, align numbers right and leave no trailing spaces', () => {
    const t = formatTable(['NAME', 'SIZE', 'PINNED'], [['a', '1.0 KiB', ''], ['longer', '12 B', 'yes']], new Set([1]));
    expect(t).toBe(['NAME       SIZE  PINNED', 'a       1.0 KiB', 'longer     12 B  yes', ''].join('\n'));
  });
});
