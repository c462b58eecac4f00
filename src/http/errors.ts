/**
 * The HTTP edge's one mapping from errors to responses: the OCI error envelope
 * `{"errors":[{"code","message","detail"}]}` with the status the code calls for. Nothing becomes a
 * bare 500: an unexpected error is an UNKNOWN envelope.
 */
import { RegistryError, type OciCode } from '../registry/errors.js';

const STATUS: Record<OciCode, number> = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  NAME_INVALID: 400,
  TAG_INVALID: 400,
  RANGE_INVALID: 416,
  PAGINATION_NUMBER_INVALID: 400,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  TOOMANYREQUESTS: 429,
  UNSUPPORTED: 405,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
};

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function errorResponse(e: unknown): ErrorResponse {
  const err = e instanceof RegistryError ? e : new RegistryError('UNKNOWN', 'internal error');
  const status = err.status ?? STATUS[err.code];
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
  if (err.retryAfter !== undefined) headers['retry-after'] = String(err.retryAfter);
  if (status === 416 && err.size !== undefined) headers['content-range'] = `bytes */${err.size}`;
  const entry: { code: string; message: string; detail?: unknown } = { code: err.code, message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return { status, headers, body: JSON.stringify({ errors: [entry] }) };
}
