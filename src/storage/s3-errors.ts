/**
 * What an S3 SDK failure means to the BlobStore contract: absent, a lost race, a full store, an
 * unreachable store, or a bug. The SDK's exceptions carry a name and the HTTP status; network
 * failures carry a Node error code.
 */
import { StoreFullError, StoreUnavailableError } from './store.js';

interface SdkError {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

const status = (e: unknown): number | undefined => (e as SdkError)?.$metadata?.httpStatusCode;
const name = (e: unknown): string | undefined => (e as SdkError)?.name;

/** The object (or the range's object) does not exist. */
export function isS3NotFound(e: unknown): boolean {
  return name(e) === 'NoSuchKey' || name(e) === 'NotFound' || status(e) === 404;
}

/** A conditional write lost: the object exists already (If-None-Match: *). */
export function isPreconditionFailed(e: unknown): boolean {
  return name(e) === 'PreconditionFailed' || status(e) === 412;
}

/** The multipart upload is gone (completed or aborted by someone else, or swept). */
export function isNoSuchUpload(e: unknown): boolean {
  return name(e) === 'NoSuchUpload';
}

/** Out of space or over a quota: the store cannot take these bytes. */
function isFull(e: unknown): boolean {
  const n = name(e);
  return n === 'QuotaExceeded' || n === 'InsufficientStorage' || n === 'EntityTooLarge' || status(e) === 507;
}

/**
 * The store cannot serve anyone now: no connection, a timeout, a 5xx, or credentials or a bucket
 * that the object store refuses (a misconfiguration, which the mirror survives by passing through).
 */
function isUnavailable(e: unknown): boolean {
  const s = status(e);
  if (s === undefined) return true; // no HTTP answer at all: connection refused, reset, DNS, timeout, credentials provider
  if (s >= 500) return true;
  const n = name(e);
  return s === 403 || n === 'NoSuchBucket' || n === 'InvalidAccessKeyId' || n === 'SignatureDoesNotMatch' || n === 'AccessDenied';
}

/** The contract's typed error for a failure of a write or read (StoreFullError or StoreUnavailableError), else `e`. */
export function classifyS3Error(e: unknown): Error {
  if (e instanceof StoreFullError) return e;
  if (isFull(e)) return new StoreFullError(e);
  if (isUnavailable(e)) return new StoreUnavailableError(e);
  return e as Error;
}
