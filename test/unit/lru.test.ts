import { describe, expect, it } from 'vitest';
import { boundedLru } from '../../src/util/lru.js';

describe('boundedLru', () => {
  it('holds at most n entries and evicts the least recently used', () => {
    const c = boundedLru<string, number>(3);
    c.set('a', 1);
    c.set('b', 2);
    c.set('c', 3);
    expect(c.get('a')).toBe(1); // a is now the most recent
    c.set('d', 4);
    expect(c.size).toBe(3);
    expect(c.has('b')).toBe(false);
    expect([...c.keys()].sort()).toEqual(['a', 'c', 'd']);
  });

  it('stays bounded however many entries pass through', () => {
    const c = boundedLru<number, number>(1000);
    for (let i = 0; i < 50_000; i++) c.set(i, i);
    expect(c.size).toBe(1000);
    expect(c.get(49_999)).toBe(49_999);
    expect(c.get(48_999)).toBeUndefined();
  });
});
