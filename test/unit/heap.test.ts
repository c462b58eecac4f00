import { describe, expect, it } from 'vitest';
import { applyHeapGrowth, capYoungGeneration } from '../../src/heap.js';

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

describe('capYoungGeneration', () => {
  const MiB = 1024 * 1024;
  const fake = (semiMiB: number) => {
    const flags: string[] = [];
    const state = { semi: semiMiB * MiB, gc: undefined as (() => void) | undefined, stopped: false };
    const deps = {
      setFlags: (f: string) => void flags.push(f.replace('--semi-space-growth-factor=', '')),
      semiSpaceBytes: () => state.semi,
      afterEachGc: (check: () => void) => {
        state.gc = check;
        return () => void (state.stopped = true);
      },
    };
    const collect = (semi: number) => {
      state.semi = semi * MiB;
      state.gc!();
    };
    return { flags, state, deps, collect };
  };

  it('lets V8 grow the space (factor 2) below the cap and stops it (factor 1) from the cap on, set again after every collection', () => {
    const f = fake(0.5);
    const cap = capYoungGeneration(8, f.deps);
    expect(f.flags).toEqual(['2']);
    f.collect(2);
    f.collect(4);
    // 2 is what V8 would put back: not set again while it holds.
    expect(f.flags).toEqual(['2']);
    f.collect(8);
    f.collect(8);
    // 1 again after each collection: a Worker made in between may have reset it unseen.
    expect(f.flags).toEqual(['2', '1', '1']);
    // V8 shrank the space (allocation slowed): it may grow back to the cap.
    f.collect(2);
    expect(f.flags).toEqual(['2', '1', '1', '2']);
    cap.reassert();
    f.collect(8);
    cap.reassert();
    expect(f.flags).toEqual(['2', '1', '1', '2', '1', '1']);
    cap.stop();
    expect(f.state.stopped).toBe(true);
  });

  it('0 leaves the young generation to V8: no flag, no observer', () => {
    const f = fake(1);
    capYoungGeneration(0, f.deps).reassert();
    expect(f.flags).toEqual([]);
    expect(f.state.gc).toBeUndefined();
  });

  it.each([-1, 2.5, Number.NaN])('refuses %s before anything reaches V8', (bad) => {
    const f = fake(1);
    expect(() => capYoungGeneration(bad, f.deps)).toThrow(RangeError);
    expect(f.flags).toEqual([]);
  });
});
