/**
 * V8 heap sizes the server sets on itself when it starts: flags V8 reads while it runs, so a running
 * process can set them (V8 calls changing flags after start-up unsupported in general; these are
 * plain numbers it reads on use). They are process-wide: the download thread's isolate follows them
 * too. config/default.yaml `heap` has the figures behind the defaults.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** 0 leaves V8's own growing factor; otherwise the limit is (1 + percent/100) × what survived. */
export function applyHeapGrowth(percent: number, setFlags: (flags: string) => void = setFlagsFromString): void {
  if (!Number.isInteger(percent) || percent < 0) throw new RangeError(`heap growth must be a whole number of percent, not ${percent}`);
  if (percent === 0) return;
  setFlags(`--heap-growing-percent=${percent}`);
}

export interface YoungGenerationCap {
  /** Sets the flag again: V8 resets it whenever an isolate is made (call it once a Worker is online). */
  readonly reassert: () => void;
  readonly stop: () => void;
}

export interface YoungGenerationDeps {
  setFlags: (flags: string) => void;
  /** The bytes of one semi-space now (V8's new space is two of them). */
  semiSpaceBytes: () => number;
  /** Calls `check` after every garbage collection; returns a function that stops that. */
  afterEachGc: (check: () => void) => () => void;
}

const MiB = 1024 * 1024;

const v8Deps: YoungGenerationDeps = {
  setFlags: setFlagsFromString,
  semiSpaceBytes: () => (getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0) / 2,
  afterEachGc: (check) => {
    const observer = new PerformanceObserver(check);
    observer.observe({ entryTypes: ['gc'] });
    return () => observer.disconnect();
  },
};

/**
 * Holds V8's young generation at `semiSpaceMiB` per semi-space (0: V8 decides, 16 MiB on 64-bit).
 * `--max-semi-space-size` would do it but is read only when the heap is made, so every launcher
 * would need it on its command line. Instead the new space grows as V8 grows it (by
 * `--semi-space-growth-factor`, 2) until it reaches the cap, and from then on the factor is 1, which
 * V8 reads each time it grows the space: it stays where it is. It is 2 again whenever V8 has shrunk
 * the space below the cap (as it does when allocation slows), so the space can grow back to it.
 *
 * The check runs after each collection once the event loop turns (a PerformanceObserver). Allocation
 * that outpaces it (many MiB within a few tasks, as a process's first seconds may) can grow the space
 * past the cap before the check; it then stays at that size until V8 shrinks it, as without the cap.
 * Under 500 clients it held at the cap (test/faults/load.test.ts). V8 also puts a factor below 2 back
 * to 2 whenever it makes an isolate (a Worker), so the owner calls `reassert()` once a Worker is
 * online (the download thread's owner does); without it the space grew past the cap after a Worker
 * in 2 runs of 3 of test/ops/young-generation.test.ts. The reset comes when the Worker's isolate is
 * made, before 'online' reaches the owner: a collection in between still grows the space once (one
 * doubling; CI saw it once in seven runs of that test).
 */
export function capYoungGeneration(semiSpaceMiB: number, deps: YoungGenerationDeps = v8Deps): YoungGenerationCap {
  if (!Number.isInteger(semiSpaceMiB) || semiSpaceMiB < 0) throw new RangeError(`the semi-space cap must be a whole number of MiB, not ${semiSpaceMiB}`);
  if (semiSpaceMiB === 0) return { reassert: () => undefined, stop: () => undefined };
  const cap = semiSpaceMiB * MiB;
  let factor = 0;
  const apply = () => {
    const want = deps.semiSpaceBytes() >= cap ? 1 : 2;
    // 1 is set again after every collection: a Worker made since may have put 2 back unseen. 2 is
    // what V8 puts back, so a 2 set here is still there.
    if (want === 2 && factor === 2) return;
    factor = want;
    deps.setFlags(`--semi-space-growth-factor=${want}`);
  };
  apply();
  const stop = deps.afterEachGc(apply);
  return { reassert: apply, stop };
}
