/**
 * The content-addressed blob store. Manifests are blobs too. Implementations must pass
 * test/storage/store.contract.ts.
 */
import type { Readable } from 'node:stream';

export interface BlobInfo {
  digest: string;
  size: number;
  /**
   * When the blob was stored (ms since the epoch), only when asked for with `stat(d, { mtime: true })`
   * and the store knows it (the filesystem store: the file's mtime, set when the blob was committed).
   */
  mtimeMs?: number;
}

export interface StatOptions {
  /** Also report `mtimeMs`, the time the blob was stored (where the store keeps it). */
  mtime?: boolean;
}

/** Inclusive byte range, as in HTTP. */
export interface ByteRange {
  start: number;
  end: number;
}

export class DigestMismatchError extends Error {
  constructor(readonly expected: string, readonly actual: string, readonly size: number) {
    super(`digest mismatch: expected ${expected}, got ${actual} (${size} bytes)`);
    this.name = 'DigestMismatchError';
  }
}

/** The store cannot take more bytes (disk full, quota): callers may pass bytes through uncached. */
export class StoreFullError extends Error {
  constructor(cause: unknown) {
    super(`blob store is full: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'StoreFullError';
  }
}

/**
 * The store cannot be reached or refuses service (network, credentials, a 5xx of an object store).
 * A StoreFullError for its callers: a download passes the bytes through uncached, verified as ever;
 * the registry treats reads that fail this way as misses (upstream still has the bytes).
 */
export class StoreUnavailableError extends StoreFullError {
  constructor(cause: unknown) {
    super(cause);
    this.message = `blob store is unavailable: ${(cause as Error)?.message ?? cause}`;
    this.name = 'StoreUnavailableError';
  }
}

export interface BlobStore {
  /** Creates the layout and sweeps temp files a crash left behind. Call once before anything else. */
  init(): Promise<void>;
  /** Size of a complete, verified blob; undefined when absent. */
  stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined>;
  /**
   * A stream of the blob (or of the inclusive range), or undefined when absent. The caller owns the
   * stream and must consume or destroy it. The range must lie within the blob.
   */
  open(digest: string, range?: ByteRange): Promise<Readable | undefined>;
  /** The whole blob in memory (for manifests), or undefined when absent. */
  read(digest: string): Promise<Buffer | undefined>;
  /**
   * Starts writing a blob. Writers for the same digest may run at once; the first to commit wins and
   * later commits of verified bytes are no-ops. Throws StoreFullError when no space is left.
   */
  createWriter(digest: string): Promise<BlobWriter>;
  /** Stores a small blob (a manifest) whose bytes are in memory, verifying the digest. */
  put(digest: string, bytes: Uint8Array): Promise<void>;
  delete(digest: string): Promise<void>;
  list(): AsyncIterable<BlobInfo>;
  /** Whether a stream of the blob is open now (eviction leaves such a blob alone). */
  busy(digest: string): boolean;
  /** Free and total bytes where the blobs are kept, when the backend can tell. */
  space(): Promise<{ free: number; total: number } | undefined>;
  /** Removes temp files older than `olderThanMs` (left by a crash); returns how many. */
  sweepTemp(olderThanMs: number): Promise<number>;
  /**
   * Where a blob's file lies relative to the store's blob directory (`<alg>/<2 hex>/<hex>`), for a
   * web server in front of the mirror to send it (nginx X-Accel-Redirect). Only stores keeping every
   * complete blob as one plain file there implement it (the filesystem store; decorators pass it
   * on); says nothing about whether the blob is present. Throws on anything but a valid digest.
   */
  fileOf?(digest: string): string;
}

/**
 * An in-progress blob. write() calls are sequential (await each). Bytes written so far can be read
 * back with readAt() by any number of concurrent readers, also after commit() or abort(), until
 * close(); that is how clients joined to one download stream it.
 */
export interface BlobWriter {
  readonly digest: string;
  /** Bytes written so far. */
  readonly written: number;
  /**
   * Appends bytes (one chunk or several, in order) and feeds the hash. Throws StoreFullError on
   * ENOSPC/EDQUOT. A write that throws appended none of its bytes (`written` unchanged): callers
   * switching to pass-through hash [0, written) and then the bytes they still hold.
   */
  write(data: Uint8Array | Uint8Array[]): Promise<void>;
  /**
   * Reads back up to `length` bytes at `position` (< written). With `into` (at least `length`
   * bytes) the bytes are read into it and a view of it is returned; a reader reuses its buffers so.
   */
  readAt(position: number, length: number, into?: Buffer): Promise<Buffer>;
  /**
   * Verifies the digest (and `expectedSize` when given), makes the data durable and publishes it.
   * Throws DigestMismatchError, after which nothing is kept. `onVerified` runs as soon as the bytes
   * are known good, before the (slow) sync and rename: readers may finish while it is made durable.
   */
  commit(expectedSize?: number, onVerified?: () => void): Promise<void>;
  /** Discards the bytes; nothing is kept. Safe to call after a failed commit. */
  abort(): Promise<void>;
  /** Releases the read handle; call once readers are done (after commit or abort). */
  close(): Promise<void>;
  /**
   * Lets another thread append to the temp file (the download thread, offload/), for a writer
   * that has nothing written yet and keeps a plain local file (the filesystem store); undefined
   * otherwise. After this, `write()` is not called again.
   */
  external?(): ExternalAppend | undefined;
}

/**
 * A temp file another thread appends to. That thread writes at [position, ...) with positional
 * writes and hashes what it writes; it must have stopped writing before the writer is committed,
 * aborted or closed (the descriptor is closed then, and its number may be reused).
 */
export interface ExternalAppend {
  /** The open descriptor of the temp file, for positional writes. */
  readonly fd: number;
  /** The digest's algorithm (`sha256`), for the other thread's hash. */
  readonly algorithm: string;
  /** The file now holds bytes [0, position): readAt() may read them. */
  appended(position: number): void;
  /**
   * The other thread is done: its hex digest of [0, written), which commit() checks; undefined when
   * its hash cannot be trusted (a failed write), and commit() then hashes the file itself.
   */
  finished(hex: string | undefined): void;
  /** An error of the other thread's writes as this store reports it (ENOSPC: StoreFullError). */
  writeError(e: Error): Error;
}
