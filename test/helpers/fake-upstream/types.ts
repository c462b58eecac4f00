/** The fake upstream's public types: its options, fault switches and the request record. */

export interface FakeUpstreamOptions {
  /** Registry listen address. Default '127.0.0.1'. */
  host?: string;
  /** Default 'bearer' (Docker Hub style). */
  auth?: 'bearer' | 'basic' | 'none';
  /**
   * Bearer: the token endpoint requires these as HTTP Basic (anonymous tokens only when unset).
   * Basic: the registry requires these (any well-formed Basic header is accepted when unset).
   */
  credentials?: { username: string; password: string };
  /** `expires_in` of issued tokens; they really expire (on the `now` clock). Default 300. */
  tokenTtlSeconds?: number;
  /** Default true: blob GETs redirect (307) to a CDN server on 127.0.0.2 (or `host`). */
  cdn?: boolean | { host?: string };
  /** Docker Hub pull limit: manifest GETs decrement `remaining`; at 0 they get 429. Mutable later via `rateLimit`. */
  rateLimit?: { limit: number; remaining: number };
  /** Default true: serve the OCI 1.1 referrers API from stored manifests' `subject`. */
  referrers?: boolean;
  /**
   * A tag naming a list whose type the request does not accept is answered with its linux/amd64
   * child when the request accepts that (distribution 2.8 does this for Docker manifest lists;
   * Docker Hub for OCI indexes too). Default 'docker'; other unaccepted lists get 404.
   */
  narrowLists?: 'docker' | 'all';
  /**
   * The fake's clock (ms since the epoch), default Date.now: token expiry (`tokenTtlSeconds`,
   * `issued_at`) and the expiry of CDN redirect URLs follow it, so tests move time instead of sleeping.
   */
  now?: () => number;
}

export type RequestKind = 'token' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'base' | 'cdn' | 'other';

export interface RecordedRequest {
  method: string;
  path: string;
  /** The raw query string without '?'. */
  query: string;
  host: string;
  headers: Record<string, string | string[] | undefined>;
  /** The status sent (set when headers go out; 0 if the connection died first). */
  status: number;
  server: 'registry' | 'cdn' | 'token';
  kind: RequestKind;
}

export interface Faults {
  /** Registry (and token endpoint) answer 503 UNAVAILABLE to everything. */
  down?: boolean;
  /** Accessor: true closes both listeners (connections refused), false re-listens on the same ports. Prefer `await goDown()/goUp()`. */
  refuse?: boolean;
  /** Answer this status (with an OCI error body) to manifest/blob/tags/referrers requests, after auth. */
  status?: number;
  /** 429 TOOMANYREQUESTS + Retry-After (default 60) to manifest/blob/tags/referrers requests, after auth. */
  rateLimited?: { retryAfter?: number; message?: string };
  /** Blob bodies (registry or CDN): send this many bytes of each response, then drop the connection. */
  truncateBlobAfter?: number;
  /** How many responses truncateBlobAfter applies to (decremented each time); unset = every response. */
  truncateBlobTimes?: number;
  /** Flip the byte at offset floor(size/2) of the blob, in whichever response covers it. */
  corruptBlob?: boolean;
  /** Manifest GET bodies get one hex digit changed: same length, still JSON, digest no longer matches. */
  corruptManifest?: boolean;
  /** Wait this long before answering anything (registry, token and CDN). */
  delayMs?: number;
  /** Blob bodies sent `bytesPerTick` at a time every `tickMs`. */
  trickle?: { bytesPerTick: number; tickMs: number };
  /** Tag lists paged by the server at `size` a page: with `last` (distribution) or an opaque `next_page` token on an absolute URL (Quay). */
  tagPages?: { size: number; style: 'distribution' | 'quay' };
  /** Manifests answered in their own type whatever the Accept (no 404 for a type the request does not take). */
  ignoreAccept?: boolean;
  /** Manifest HEADs answered without Docker-Content-Digest ('digest'), or without it and the ETag. */
  manifestHeadWithout?: 'digest' | 'digest-and-etag';
  /** Blob GETs answered chunked, with no Content-Length. */
  chunkedBlobs?: boolean;
  /**
   * Blob GETs answered chunked with the blob's bytes over and over, without end (a broken or hostile
   * upstream), until the client hangs up or `maxBytes` went out; `sent` counts what went out and
   * `hungUp` is set once the client closed the connection first.
   */
  endlessBlobs?: { maxBytes: number; sent: number; hungUp: boolean };
  /** Blob bodies: send this many bytes, then neither send more nor end. */
  stallBlobAfter?: number;
  /**
   * Blob bodies: send `after` bytes (the headers at least), then wait for `until` before the rest (a
   * gate the test opens). Counted from the start of each response's body, a Range resume's too.
   */
  holdBlobBody?: { after: number; until: Promise<void> };
  /** Blob GETs redirect to themselves forever. */
  redirectLoop?: boolean;
  /** Blob GETs redirect here (e.g. 'ftp://x/y'). */
  redirectTo?: string;
  /** Manifest GETs of existing manifests return a body of this many bytes (Content-Length set). */
  hugeManifestBytes?: number;
}

export interface CountFilter {
  method?: string;
  kind?: RequestKind;
  path?: string | RegExp;
  status?: number;
  server?: RecordedRequest['server'];
}
