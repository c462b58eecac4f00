/**
 * What the services report, and the logger they write to: interfaces only, implemented by
 * metrics.ts and the process logger (pino), injected by the composition root.
 */
export type CacheResult = 'hit' | 'miss' | 'stale' | 'revalidated';
export type CacheKind = 'manifest' | 'blob' | 'tags' | 'referrers';
export const CACHE_KINDS: readonly CacheKind[] = ['manifest', 'blob', 'tags', 'referrers'];
export const CACHE_RESULTS: readonly CacheResult[] = ['hit', 'miss', 'stale', 'revalidated'];

/** Cache outcomes, for metrics. Implementations must not throw. */
export interface CacheObserver {
  result(kind: CacheKind, upstream: string, result: CacheResult): void;
  /** Upstream sent a manifest whose bytes do not match its digest (rejected, not kept). */
  rejected(upstream: string): void;
}

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  /** Whether a level is written (pino's): lets a hot path skip building what would be dropped. */
  isLevelEnabled?(level: 'debug' | 'info' | 'warn' | 'error'): boolean;
}
