/**
 * The HTTP edge's one mapping from errors to responses: every error code with its HTTP status and
 * the OCI code its envelope carries (like distribution's errcode registry), and the envelope
 * `{"errors":[{"code","message","detail"}]}`. Nothing becomes a bare 500: an unexpected error is an
 * UNKNOWN envelope. Requests refused before the app (http/server.ts) use the same table.
 */
import { RegistryError, type ErrorCode, type OciCode } from '../registry/errors.js';

interface Entry {
  status: number;
  /** The code the envelope carries, when not the error code itself. */
  oci?: OciCode;
}

export const ERROR_TABLE: Record<ErrorCode, Entry> = {
  BLOB_UNKNOWN: { status: 404 },
  MANIFEST_UNKNOWN: { status: 404 },
  NAME_UNKNOWN: { status: 404 },
  MANIFEST_BLOB_UNKNOWN: { status: 404 },
  DIGEST_INVALID: { status: 400 },
  MANIFEST_INVALID: { status: 400 },
  NAME_INVALID: { status: 400 },
  TAG_INVALID: { status: 400 },
  PAGINATION_NUMBER_INVALID: { status: 400 },
  SIZE_INVALID: { status: 400 },
  RANGE_INVALID: { status: 416 },
  UNAUTHORIZED: { status: 401 },
  DENIED: { status: 403 },
  TOOMANYREQUESTS: { status: 429 },
  UNSUPPORTED: { status: 405 },
  UNAVAILABLE: { status: 503 },
  UNKNOWN: { status: 500 },
  ROUTE_UNKNOWN: { status: 404, oci: 'UNSUPPORTED' },
  METHOD_UNSUPPORTED: { status: 405, oci: 'UNSUPPORTED' },
  DIGEST_UNSUPPORTED: { status: 400, oci: 'UNSUPPORTED' },
  BAD_GATEWAY: { status: 502, oci: 'UNAVAILABLE' },
  UPSTREAM_MANIFEST_INVALID: { status: 502, oci: 'MANIFEST_INVALID' },
  UPSTREAM_DIGEST_INVALID: { status: 502, oci: 'DIGEST_INVALID' },
  REQUEST_INVALID: { status: 400, oci: 'UNSUPPORTED' },
  URI_TOO_LONG: { status: 414, oci: 'UNSUPPORTED' },
  HEADERS_TOO_LARGE: { status: 431, oci: 'UNSUPPORTED' },
};

/** A 401 with the `WWW-Authenticate` challenge the client should answer (http/access.ts). */
export class ChallengeError extends RegistryError {
  constructor(readonly challenge: string, message: string) {
    super('UNAUTHORIZED', message);
  }
}

/** Seconds a client is told to wait after a 503 or 429 that carries no figure of its own. */
export const DEFAULT_RETRY_AFTER = 5;

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function errorResponse(e: unknown): ErrorResponse {
  const err = e instanceof RegistryError ? e : new RegistryError('UNKNOWN', 'internal error');
  const entry = ERROR_TABLE[err.code];
  const status = err.relayStatus ?? entry.status;
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
  if (err.retryAfter !== undefined) headers['retry-after'] = String(err.retryAfter);
  else if (status === 503 || status === 429) headers['retry-after'] = String(DEFAULT_RETRY_AFTER);
  if (err instanceof ChallengeError) headers['www-authenticate'] = err.challenge;
  if (status === 416 && err.size !== undefined) headers['content-range'] = `bytes */${err.size}`;
  const body: { code: string; message: string; detail?: unknown } = { code: entry.oci ?? err.code, message: err.message };
  if (err.detail !== undefined) body.detail = err.detail;
  return { status, headers, body: JSON.stringify({ errors: [body] }) };
}
