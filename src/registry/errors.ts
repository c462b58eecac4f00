/**
 * One error type for everything a client can be told. It carries an error code; the HTTP edge
 * (http/errors.ts) is the only place that turns a code into a status and an envelope.
 *
 * Codes are the OCI distribution spec's, plus a few of the mirror's own for answers the spec has no
 * code for (each maps to an OCI code in the envelope; see the table in http/errors.ts).
 */
export type OciCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
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

export type ErrorCode =
  | OciCode
  /** Not a registry API path. */
  | 'ROUTE_UNKNOWN'
  /** A method the read-only mirror does not serve (pushes, deletes). */
  | 'METHOD_UNSUPPORTED'
  /** A digest algorithm the mirror does not support. */
  | 'DIGEST_UNSUPPORTED'
  /** Upstream answered with something unusable (a 5xx, a protocol violation). */
  | 'BAD_GATEWAY'
  /** Upstream sent a manifest the mirror refused (not matching its digest, not JSON, too large). */
  | 'UPSTREAM_MANIFEST_INVALID'
  /** Upstream sent a blob whose bytes do not match its digest. */
  | 'UPSTREAM_DIGEST_INVALID'
  /** A request Node's HTTP parser refused (bad request line or header). */
  | 'REQUEST_INVALID'
  | 'URI_TOO_LONG'
  | 'HEADERS_TOO_LARGE';

export const OCI_CODES: ReadonlySet<string> = new Set<OciCode>([
  'BLOB_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'TAG_INVALID',
  'RANGE_INVALID',
  'PAGINATION_NUMBER_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'TOOMANYREQUESTS',
  'UNSUPPORTED',
  'SIZE_INVALID',
  'UNAVAILABLE',
  'UNKNOWN',
]);

export interface RegistryErrorOptions {
  detail?: unknown;
  /** Seconds, passed to the client as Retry-After (rate limits, outages). */
  retryAfter?: number;
  /** For RANGE_INVALID: the full size, sent as `Content-Range: bytes *\/size`. */
  size?: number;
  /**
   * Only for an upstream's 4xx relayed as it was (see upstream-errors.ts): the upstream's status,
   * which then wins over the code's own.
   */
  relayStatus?: number;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  readonly retryAfter: number | undefined;
  readonly size: number | undefined;
  readonly relayStatus: number | undefined;

  constructor(code: ErrorCode, message: string, opts: RegistryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.detail = opts.detail;
    this.retryAfter = opts.retryAfter;
    this.size = opts.size;
    this.relayStatus = opts.relayStatus;
  }
}

export const isRegistryError = (e: unknown): e is RegistryError => e instanceof RegistryError;
