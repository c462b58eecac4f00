/**
 * What the registry layer needs from an upstream registry. No undici types leak through: bodies are
 * plain async iterables, failures are UpstreamErrors (errors.ts) classified by what went wrong.
 */
export interface ManifestHead {
  mediaType: string;
  /** Docker-Content-Digest, when upstream sent one. */
  digest: string | undefined;
  size: number | undefined;
}

export interface ManifestResult extends ManifestHead {
  bytes: Buffer;
}

export interface BlobHead {
  size: number | undefined;
}

/** An upstream blob body, positioned at `start` (0 unless a Range resume was honoured). */
export interface BlobBody {
  /** Offset of the first byte of `body` in the blob. */
  start: number;
  /** Full blob size when upstream said (Content-Length / Content-Range), else undefined. */
  size: number | undefined;
  body: AsyncIterable<Uint8Array>;
  /** Stops the transfer and releases the connection. */
  cancel(): void;
  /**
   * Set when the GET went through a BlobSink: the bytes do not come through `body` (which is
   * empty) but go straight into the sink's file once `write` is called.
   */
  direct?: SunkBody;
}

/**
 * A blob GET made elsewhere (the download thread, offload/), whose 200/206 body is written into a
 * file there and never crosses this thread. One request per call, no redirect followed: the
 * upstream client keeps auth, redirects and statuses.
 */
export interface BlobSink {
  /**
   * Rejects when no answer came; the error carries the HTTP client's `code` (timeouts, resets), or
   * is a SinkFailure (errors.ts) when the sink itself cannot go on.
   */
  request(req: SinkRequest): Promise<SinkAnswer>;
}

export interface SinkRequest {
  origin: string;
  /** Path and query. */
  path: string;
  headers: Record<string, string>;
  headersTimeout: number;
  bodyTimeout: number;
}

export interface SinkAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body of any other answer than 200/206, up to 64 KiB. */
  text: string;
  /** A 200/206 body, held back until `write` or `cancel`. */
  body: SunkBody | undefined;
}

export interface SunkBody {
  /**
   * Writes the body into the sink's file, less its first `skip` bytes; `onBytes(n)` as each n bytes
   * reach the file. Resolves once the body is complete and written; rejects when the body or a
   * write fails (bytes written before a cut stay written and counted). With `limit`, no byte goes
   * past that file position: a body that would pass it fails with the code SINK_LIMIT_CODE (errors.ts).
   */
  write(skip: number, onBytes: (n: number) => void, limit?: number): Promise<void>;
  /** Stops the transfer; bytes already received are written first. */
  cancel(): void;
}

export interface TagsPage {
  body: unknown;
  /**
   * The query of the upstream `Link` header's next page, as upstream wrote it (`last=…&n=…` for
   * distribution, `n=100&next_page=<token>` for Quay), if any: passed back to getTags as it is.
   */
  next: string | undefined;
}

export interface Upstream {
  readonly name: string;
  /**
   * How long a tag revalidation against this upstream may keep a client waiting before the cached
   * copy is served (the revalidation then finishes in the background). Undefined: 2000 ms. Read it
   * per request: it may be 0 while the upstream is not answering anything (availability.ts).
   */
  readonly revalidateBudgetMs?: number | undefined;
  getManifest(repo: string, reference: string, accept: string[]): Promise<ManifestResult>;
  headManifest(repo: string, reference: string, accept: string[]): Promise<ManifestHead>;
  /** Confirms a blob exists in the repository without downloading it. */
  headBlob(repo: string, digest: string): Promise<BlobHead>;
  /**
   * Starts a blob download at `offset` (Range), following redirects to other hosts without
   * credentials. With a sink, a 200/206 body goes there (`BlobBody.direct`) instead of through `body`.
   */
  getBlob(repo: string, digest: string, offset: number, sink?: BlobSink): Promise<BlobBody>;
  /** One page of the tag list: the first, or the one a previous page's `next` names. */
  getTags(repo: string, page?: string): Promise<TagsPage>;
  /** The referrers index, or undefined when upstream does not implement the referrers API. */
  getReferrers(repo: string, digest: string): Promise<unknown>;
}

/** What an upstream client reports, for metrics. Implementations must not throw. */
export interface UpstreamObserver {
  /** One HTTP exchange with the registry (after redirects), `status` 0 when no response arrived. */
  request(upstream: string, kind: RequestKind, status: number, seconds: number, errorClass: ErrorClass | undefined): void;
  /** Body bytes received from upstream. */
  bytes(upstream: string, n: number): void;
  token(upstream: string, ok: boolean): void;
  /** Docker Hub's `ratelimit-remaining` / `ratelimit-limit` figures. */
  rateLimit(upstream: string, remaining: number, limit: number | undefined): void;
}

export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers';
export type ErrorClass = 'timeout' | 'network' | '4xx' | '5xx' | '429' | 'digest_mismatch' | 'redirect';
export const ERROR_CLASSES: readonly ErrorClass[] = ['timeout', 'network', '4xx', '5xx', '429', 'digest_mismatch', 'redirect'];
export const REQUEST_KINDS: readonly RequestKind[] = ['manifest', 'blob', 'tags', 'referrers'];
