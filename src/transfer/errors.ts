/** Failures of the transfer engine itself, and which failures a Range resume can mend. */
import { DigestMismatchError, StoreFullError } from '../storage/store.js';
import { UpstreamError } from '../upstream/errors.js';

/** A pass-through (store full) whose every client left: nobody wants the rest of the bytes. */
export class PassThroughAbandonedError extends Error {
  constructor() {
    super('store full and no client left for the pass-through');
    this.name = 'PassThroughAbandonedError';
  }
}

/**
 * Cut connections, timeouts, truncated bodies and an edge's 502/503/504 (a CDN hiccup) are worth a
 * Range resume; other upstream statuses, protocol violations, mismatches, full disks and abandoned
 * pass-throughs are not.
 */
export function isTransient(e: unknown): boolean {
  if (e instanceof UpstreamError) return e.kind === 'unreachable' || e.kind === 'timeout' || (e.kind === 'status' && (e.status === 502 || e.status === 503 || e.status === 504));
  return !(e instanceof DigestMismatchError || e instanceof StoreFullError || e instanceof PassThroughAbandonedError);
}
