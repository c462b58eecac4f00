import { describe, expect, it } from 'vitest';
import { applyHeapGrowth } from '../../src/heap.js';

describe('applyHeapGrowth', () => {
  const recorder = () => {
    const flags: string[] = [];
    return { flags, set: (f: string) => void flags.push(f) };
  };

  it('sets V8 heap growing percent to the configured value', () => {
    const r = recorder();
    applyHeapGrowth(150, r.set);
    expect(r.flags).toEqual(['--heap-growing-percent=150']);
  });

  it('0 leaves V8 its own factor: no flag is set', () => {
    const r = recorder();
    applyHeapGrowth(0, r.set);
    expect(r.flags).toEqual([]);
  });

  it.each([-1, 1.5, Number.NaN])('refuses %s before anything reaches V8', (bad) => {
    const r = recorder();
    expect(() => applyHeapGrowth(bad, r.set)).toThrow(RangeError);
    expect(r.flags).toEqual([]);
  });
});
