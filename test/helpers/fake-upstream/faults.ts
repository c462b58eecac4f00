/**
 * Fault switches: the `faults` object tests flip, and the failures it injects that are not about
 * bodies (those are in bodies.ts): injected statuses and 429s after auth, corrupted manifests.
 */
import { PULL_LIMIT_MESSAGE } from './rate-limit.js';
import { ociError, type Ctx } from './protocol.js';
import type { Faults } from './types.js';

/**
 * A fresh, empty set of switches. `refuse` is an accessor so a test can flip it like the others;
 * the listener change behind it is asynchronous (prefer `await goDown()/goUp()`).
 */
export function faultSwitches(refuse: { get(): boolean; set(v: boolean): void }): Faults {
  const faults: Faults = {};
  Object.defineProperty(faults, 'refuse', { enumerable: true, get: refuse.get, set: refuse.set });
  return faults;
}

/** Clears every switch but `refuse` (the caller re-listens). */
export function clearFaults(faults: Faults): void {
  for (const k of Object.keys(faults) as Array<keyof Faults>) if (k !== 'refuse') delete faults[k];
}

/** Answers `rateLimited` or `status` (for manifest/blob/tags/referrers, after auth); true when it did. */
export function injectedFailure(ctx: Ctx, f: Faults): boolean {
  if (f.rateLimited) {
    const retryAfter = f.rateLimited.retryAfter ?? 60;
    ociError(ctx, 429, 'TOOMANYREQUESTS', f.rateLimited.message ?? PULL_LIMIT_MESSAGE, null, { 'retry-after': retryAfter });
    return true;
  }
  if (f.status !== undefined) {
    ociError(ctx, f.status, errorCodeFor(f.status), `injected status ${f.status}`);
    return true;
  }
  return false;
}

function errorCodeFor(status: number): string {
  switch (status) {
    case 400: return 'UNSUPPORTED';
    case 401: return 'UNAUTHORIZED';
    case 403: return 'DENIED';
    case 404: return 'NOT_FOUND';
    case 429: return 'TOOMANYREQUESTS';
    case 503: return 'UNAVAILABLE';
    default: return 'UNKNOWN';
  }
}

/** A same-length, still-valid-JSON alteration: change one hex digit of the last digest in the body. */
export function corruptJson(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  const at = out.lastIndexOf('sha256:');
  if (at < 0) return Buffer.concat([out, Buffer.from(' ')]);
  const i = at + 'sha256:'.length;
  out[i] = out[i] === 0x30 ? 0x31 : 0x30; // '0' <-> '1'
  return out;
}
