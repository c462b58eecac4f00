/**
 * The headroom V8 leaves its old generation, set when the server starts. V8 reads the flag each time
 * it sets the next collection's limit, so setting it on a running isolate takes effect (V8 calls
 * changing flags after start-up unsupported in general; this one is a plain number it reads on use).
 * The flag is process-wide: the download thread's isolate follows it too. config/default.yaml
 * `heap.growthPercent` has the figures behind the default.
 */
import { setFlagsFromString } from 'node:v8';

/** 0 leaves V8's own growing factor; otherwise the limit is (1 + percent/100) × what survived. */
export function applyHeapGrowth(percent: number, setFlags: (flags: string) => void = setFlagsFromString): void {
  if (!Number.isInteger(percent) || percent < 0) throw new RangeError(`heap growth must be a whole number of percent, not ${percent}`);
  if (percent === 0) return;
  setFlags(`--heap-growing-percent=${percent}`);
}
