/**
 * One upstream download per digest, which any number of readers join. The download writes to a
 * BlobWriter (temp file, hashed as it goes); every reader streams the bytes already written, then the
 * bytes as they arrive, at its own pace, so a slow client never slows the download or the others.
 * Readers hanging up never cancel it: the cache still wants the blob. A digest mismatch or a failure
 * that resumes cannot mend destroys every reader's stream (an aborted response, never a wrong body).
 */
import { Readable } from 'node:stream';
import type { BlobStore, BlobWriter } from '../storage/store.js';
import { DigestMismatchError } from '../storage/store.js';
import type { BlobBody } from '../upstream/types.js';
import { RegistryError } from './errors.js';

/** Opens the upstream body at an offset (a Range resume when offset > 0). */
export type BlobSource = (offset: number) => Promise<BlobBody>;

export interface InflightObserver {
  started(digest: string): void;
  /** A request joined a download already under way. */
  joined(digest: string): void;
  resumed(digest: string, offset: number): void;
  completed(digest: string, bytes: number): void;
  failed(digest: string, error: unknown): void;
}

export interface InflightOptions {
  store: BlobStore;
  observer: InflightObserver;
  /** How many times a cut body is resumed with a Range request before giving up. */
  maxResumes?: number;
  /** How long a finished download stays joinable (bridges the gap until its blob is seen on disk). */
  lingerMs?: number;
}

const READ_CHUNK = 1024 * 1024;

export class Download {
  size: number | undefined;
  state: 'starting' | 'running' | 'done' | 'failed' = 'starting';
  error: unknown;
  /** Resolves once upstream answered with a body (size known if upstream said); rejects if it never did. */
  readonly ready: Promise<void>;
  /** Resolves when the blob is verified and stored; rejects on failure. */
  readonly finished: Promise<void>;
  writer: BlobWriter | undefined;
  private refs = 1;
  private waiters: Array<() => void> = [];
  private last: { offset: number; bytes: Uint8Array } | undefined;
  private resolveReady!: () => void;
  private rejectReady!: (e: unknown) => void;
  private resolveFinished!: () => void;
  private rejectFinished!: (e: unknown) => void;

  /**
   * @param origin the repository whose upstream request started it: that repository is confirmed to
   *   contain the blob once `ready` resolves; others must be confirmed before they join.
   */
  constructor(readonly digest: string, readonly origin: string) {
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.finished = new Promise((res, rej) => {
      this.resolveFinished = res;
      this.rejectFinished = rej;
    });
    // Failures are delivered to readers and requests; these keep Node from calling them unhandled.
    this.ready.catch(() => undefined);
    this.finished.catch(() => undefined);
  }

  get written(): number {
    return this.writer?.written ?? 0;
  }

  /** A stream of the blob from `start` to `end` (inclusive; default: to the end). */
  createReader(start = 0, end?: number): Readable {
    this.refs++;
    return new DownloadReader(this, start, end);
  }

  /** @internal resolves at the next write, completion or failure. */
  nextProgress(): Promise<void> {
    return new Promise((res) => this.waiters.push(res));
  }

  /**
   * @internal records the chunk just written (kept in memory so readers at the live edge take it
   * from there instead of reading it back) and wakes the readers.
   */
  notify(chunk?: { offset: number; bytes: Uint8Array }): void {
    if (chunk) this.last = chunk;
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** @internal bytes [pos, end) if they lie in the last chunk written, else undefined. */
  bytesAt(pos: number, end: number): Uint8Array | undefined {
    const c = this.last;
    if (!c || pos < c.offset || pos >= c.offset + c.bytes.length) return undefined;
    return c.bytes.subarray(pos - c.offset, Math.min(end, c.offset + c.bytes.length) - c.offset);
  }

  /** @internal */
  markRunning(size: number | undefined): void {
    this.size = size;
    this.state = 'running';
    this.resolveReady();
  }

  /** @internal */
  markDone(): void {
    this.state = 'done';
    this.resolveReady();
    this.resolveFinished();
    this.notify();
  }

  /** @internal */
  markFailed(e: unknown): void {
    this.state = 'failed';
    this.error = e;
    this.rejectReady(e);
    this.rejectFinished(e);
    this.notify();
  }

  /** @internal drops one reference; the writer's read handle closes with the last. */
  release(): void {
    if (--this.refs === 0) void this.writer?.close();
  }
}

class DownloadReader extends Readable {
  private pos: number;
  private pumping = false;

  constructor(private readonly dl: Download, start: number, private readonly end: number | undefined) {
    super({ highWaterMark: READ_CHUNK });
    this.pos = start;
  }

  override _read(): void {
    if (!this.pumping) void this.pump();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.dl.release();
    cb(err);
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const dl = this.dl;
        const limit = this.end !== undefined ? this.end + 1 : Infinity;
        if (this.pos >= limit) return void this.push(null);
        if (dl.state === 'failed') return void this.destroy(asError(dl.error));
        // Until the digest is verified the last byte is held back: a client that got Content-Length
        // bytes would take the body as complete, so a mismatch must leave its body short.
        const verified = dl.state === 'done';
        const ceiling = verified ? dl.written : Math.min(dl.written, (dl.size ?? Infinity) - 1);
        const available = Math.min(ceiling, limit);
        if (this.pos < available) {
          const buf = dl.bytesAt(this.pos, available) ?? (await dl.writer!.readAt(this.pos, Math.min(available - this.pos, READ_CHUNK)));
          if (buf.length === 0) return void this.destroy(new Error('download read past its data'));
          this.pos += buf.length;
          if (!this.push(buf)) return;
          continue;
        }
        if (verified) return void this.push(null);
        await dl.nextProgress();
      }
    } catch (e) {
      this.destroy(asError(e));
    } finally {
      this.pumping = false;
    }
  }
}

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

export class InflightDownloads {
  private readonly downloads = new Map<string, Download>();
  private readonly maxResumes: number;
  private readonly lingerMs: number;

  constructor(private readonly opts: InflightOptions) {
    this.maxResumes = opts.maxResumes ?? 3;
    this.lingerMs = opts.lingerMs ?? 5000;
  }

  get(digest: string): Download | undefined {
    return this.downloads.get(digest);
  }

  /**
   * Resolves when every download under way has finished (verified and stored, or failed and
   * discarded), or after `timeoutMs`, whichever comes first. For graceful shutdown.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const running = [...this.downloads.values()].filter((d) => d.state === 'starting' || d.state === 'running');
    if (running.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((r) => {
      timer = setTimeout(() => r(false), timeoutMs);
    });
    const all = Promise.allSettled(running.map((d) => d.finished)).then(() => true as const);
    try {
      return await Promise.race([all, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  get size(): number {
    let n = 0;
    for (const d of this.downloads.values()) if (d.state === 'starting' || d.state === 'running') n++;
    return n;
  }

  /** Joins the download of `digest` if one is under way, else starts one from `source`. */
  join(digest: string, origin: string, source: BlobSource): Download {
    const existing = this.downloads.get(digest);
    if (existing && existing.state !== 'failed') {
      this.opts.observer.joined(digest);
      return existing;
    }
    const dl = new Download(digest, origin);
    this.downloads.set(digest, dl);
    this.opts.observer.started(digest);
    void this.run(dl, source);
    return dl;
  }

  private async run(dl: Download, source: BlobSource): Promise<void> {
    try {
      dl.writer = await this.opts.store.createWriter(dl.digest);
      await this.fill(dl, dl.writer, source);
      await dl.writer.commit(dl.size);
      this.opts.observer.completed(dl.digest, dl.writer.written);
      dl.markDone();
      // Stay joinable briefly: a request that looked on disk a moment before the rename still finds it.
      setTimeout(() => this.forget(dl), this.lingerMs).unref();
    } catch (e) {
      await dl.writer?.abort();
      this.forget(dl);
      this.opts.observer.failed(dl.digest, e);
      dl.markFailed(e instanceof DigestMismatchError ? new RegistryError('DIGEST_INVALID', 'upstream blob does not match its digest', { status: 502, cause: e }) : e);
    } finally {
      dl.release();
    }
  }

  /** Copies upstream bytes into the writer, resuming a cut transfer with Range up to maxResumes times. */
  private async fill(dl: Download, writer: BlobWriter, source: BlobSource): Promise<void> {
    for (let resumes = 0; ; resumes++) {
      let body: BlobBody;
      try {
        body = await source(writer.written);
      } catch (e) {
        // An upstream that answers with an error status is not worth retrying here.
        if (dl.state === 'starting' || !isTransient(e) || resumes >= this.maxResumes) throw e;
        continue;
      }
      if (dl.state === 'starting') dl.markRunning(body.size);
      let skip = writer.written - body.start;
      if (skip < 0 || (writer.written > 0 && body.start !== 0 && skip !== 0)) {
        body.cancel();
        throw new RegistryError('UNAVAILABLE', 'upstream resumed at the wrong offset', { status: 502 });
      }
      try {
        for await (const chunk of body.body) {
          let c = chunk;
          if (skip > 0) {
            // Upstream ignored the Range and started over: drop what we already have.
            const n = Math.min(skip, c.length);
            skip -= n;
            c = c.subarray(n);
            if (c.length === 0) continue;
          }
          const offset = writer.written;
          await writer.write(c);
          dl.notify({ offset, bytes: c });
        }
        if (dl.size === undefined || writer.written >= dl.size) return;
        throw new Error(`upstream body ended at ${writer.written} of ${dl.size} bytes`);
      } catch (e) {
        body.cancel();
        if (!isTransient(e) || resumes >= this.maxResumes) throw e;
        this.opts.observer.resumed(dl.digest, writer.written);
      }
    }
  }

  private forget(dl: Download): void {
    if (this.downloads.get(dl.digest) === dl) this.downloads.delete(dl.digest);
  }
}

/** Cut connections, body timeouts and truncated bodies are worth a Range resume; statuses and full disks are not. */
function isTransient(e: unknown): boolean {
  if (e instanceof RegistryError) return e.code === 'UNAVAILABLE' && e.status === 503;
  if (e instanceof DigestMismatchError) return false;
  return (e as Error)?.name !== 'StoreFullError';
}
