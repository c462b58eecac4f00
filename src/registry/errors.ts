/**
 * One error type for everything a client can be told. It carries the OCI error code; the HTTP edge
 * (http/errors.ts) is the only place that turns it into a status and an envelope.
 */
export type OciCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'TAG_INVALID'
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'TOOMANYREQUESTS'
  | 'UNSUPPORTED'
  | 'SIZE_INVALID'
  | 'UNAVAILABLE'
  | 'UNKNOWN';

export interface RegistryErrorOptions {
  detail?: unknown;
  /** Seconds, passed to the client as Retry-After (rate limits, outages). */
  retryAfter?: number;
  /** Overrides the status chosen by the code (e.g. 416 for an unsatisfiable range, 502 vs 503). */
  status?: number;
  /** For a 416: the full size, sent as `Content-Range: bytes *\/size`. */
  size?: number;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: OciCode;
  readonly detail: unknown;
  readonly retryAfter: number | undefined;
  readonly status: number | undefined;
  readonly size: number | undefined;

  constructor(code: OciCode, message: string, opts: RegistryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.detail = opts.detail;
    this.retryAfter = opts.retryAfter;
    this.status = opts.status;
    this.size = opts.size;
  }
}

export const isRegistryError = (e: unknown): e is RegistryError => e instanceof RegistryError;

/** Errors for which a cached (stale) answer is better than passing the failure on. */
export function isUpstreamFailure(e: unknown): boolean {
  return isRegistryError(e) && (e.code === 'UNAVAILABLE' || e.code === 'TOOMANYREQUESTS');
}
