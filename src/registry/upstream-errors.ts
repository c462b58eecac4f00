/**
 * What an upstream failure means for the client, decided once: relayed as upstream said it (4xx),
 * unavailable (down, timed out, 503, 429: a cached answer is better), or a bad gateway (a 5xx, or
 * an answer the mirror could not use). Never carries the upstream's headers, URLs or credentials.
 */
import { UpstreamError } from '../upstream/errors.js';
import { OCI_CODES, RegistryError, type OciCode } from './errors.js';

export type UpstreamSubject = 'manifest' | 'blob' | 'tags' | 'referrers';

const NOT_FOUND: Record<UpstreamSubject, OciCode> = { manifest: 'MANIFEST_UNKNOWN', blob: 'BLOB_UNKNOWN', tags: 'NAME_UNKNOWN', referrers: 'MANIFEST_UNKNOWN' };
const NOT_FOUND_CODES = new Set(['BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'NAME_UNKNOWN']);

/** The RegistryError for any error met while serving `subject`; RegistryErrors and others pass unchanged. */
export function toRegistryError(e: unknown, subject: UpstreamSubject): unknown {
  if (!(e instanceof UpstreamError)) return e;
  const detail = { upstream: e.upstream, ...(e.status !== undefined ? { status: e.status } : {}) };
  const retry = e.retryAfter !== undefined ? { retryAfter: e.retryAfter } : {};
  switch (e.kind) {
    case 'unreachable':
    case 'timeout':
      return new RegistryError('UNAVAILABLE', e.message, { detail, cause: e, ...retry });
    case 'protocol':
      return new RegistryError(e.code === 'MANIFEST_INVALID' ? 'UPSTREAM_MANIFEST_INVALID' : 'BAD_GATEWAY', e.message, { detail, cause: e });
    case 'digest_mismatch':
      return new RegistryError(subject === 'blob' ? 'UPSTREAM_DIGEST_INVALID' : 'UPSTREAM_MANIFEST_INVALID', `upstream ${subject} does not match its digest; rejected`, { detail, cause: e });
    case 'status':
      break;
  }
  const status = e.status!;
  if (status === 429) return new RegistryError('TOOMANYREQUESTS', e.message, { detail, cause: e, ...retry });
  if (status === 503) return new RegistryError('UNAVAILABLE', e.message, { detail, cause: e, ...retry });
  if (status >= 500 || status < 400) return new RegistryError('BAD_GATEWAY', `upstream ${e.upstream} answered ${status}`, { detail, cause: e, ...retry });
  // A 4xx is the upstream's answer for this client too: relay its status and OCI code.
  let code: OciCode;
  if (status === 404) code = e.code && NOT_FOUND_CODES.has(e.code) ? (e.code as OciCode) : NOT_FOUND[subject];
  else if (status === 401) code = 'UNAUTHORIZED';
  else if (status === 403) code = 'DENIED';
  else code = e.code && OCI_CODES.has(e.code) ? (e.code as OciCode) : 'UNKNOWN';
  return new RegistryError(code, e.message, { detail, cause: e, relayStatus: status });
}

/** Failures for which a cached (stale) answer is better than passing the failure on. */
export function isUpstreamUnavailable(e: unknown): boolean {
  return e instanceof UpstreamError && e.unavailable;
}
