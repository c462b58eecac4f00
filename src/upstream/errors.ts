/**
 * How an exchange with an upstream registry failed, classified so the layers above can decide what
 * it means (serve stale, resume, relay) without reading messages or statuses of ours. Carries no
 * HTTP status of the mirror: the HTTP edge decides that.
 */
export type UpstreamFailureKind =
  /** No connection (refused, reset before a response, DNS, TLS). */
  | 'unreachable'
  /** Connect, response-header or body-idle timeout. */
  | 'timeout'
  /** Upstream answered with an error status (`status`, and `code` when it sent an OCI envelope). */
  | 'status'
  /** Upstream answered, but not in a way the protocol allows (bad redirect, bad Content-Range, bad JSON, too large). */
  | 'protocol'
  /** Upstream's bytes do not match the digest they were asked for or claimed. */
  | 'digest_mismatch';

export interface UpstreamErrorOptions {
  status?: number;
  code?: string;
  retryAfter?: number;
  /** Failed at once because the upstream is assumed offline (upstream/availability.ts); no request was sent. */
  assumedOffline?: boolean;
  cause?: unknown;
}

export class UpstreamError extends Error {
  readonly kind: UpstreamFailureKind;
  /** The upstream registry's key (`docker.io`). */
  readonly upstream: string;
  /** The upstream's HTTP status, for kind `status`. */
  readonly status: number | undefined;
  /** The upstream's OCI error code (`MANIFEST_UNKNOWN`) when it sent an envelope; for a protocol failure, the code it amounts to. */
  readonly code: string | undefined;
  /** Seconds, from the upstream's Retry-After. */
  readonly retryAfter: number | undefined;
  /** No request was sent: the upstream is assumed offline until a probe finds it back. */
  readonly assumedOffline: boolean;

  constructor(kind: UpstreamFailureKind, upstream: string, message: string, opts: UpstreamErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UpstreamError';
    this.kind = kind;
    this.upstream = upstream;
    this.status = opts.status;
    this.code = opts.code;
    this.retryAfter = opts.retryAfter;
    this.assumedOffline = opts.assumedOffline ?? false;
  }

  /** Upstream is down or overloaded: a cached answer (stale) is better than this failure. */
  get unavailable(): boolean {
    return this.kind === 'unreachable' || this.kind === 'timeout' || (this.kind === 'status' && (this.status! >= 500 || this.status === 429));
  }

  /** Upstream said the thing does not exist (404). */
  get notFound(): boolean {
    return this.kind === 'status' && this.status === 404;
  }
}

export const isUpstreamError = (e: unknown): e is UpstreamError => e instanceof UpstreamError;

/** Upstream announced a blob larger than limits.maxBlobBytes: its GET and its HEAD are refused alike. */
export function blobOverCap(upstream: string, size: number, max: number): UpstreamError {
  return new UpstreamError('protocol', upstream, `upstream announces a blob of ${size} bytes, over limits.maxBlobBytes (${max})`);
}

/**
 * The `code` of a SunkBody.write that stopped at its `limit` (upstream/types.ts): the body went on
 * past the position it was allowed to reach. offload/thread.cjs, plain JavaScript, spells it out too.
 */
export const SINK_LIMIT_CODE = 'REGMIRROR_SINK_LIMIT';

/**
 * A BlobSink that cannot go on (its thread died or was stopped). It says nothing about the upstream:
 * the client passes it on as is, never as "unreachable" (which would mark the upstream offline).
 */
export class SinkFailure extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SinkFailure';
  }
}
