/**
 * One upstream download per digest, which any number of readers join (see download.ts for how
 * readers stream it). Readers hanging up never cancel a download the cache still wants. A digest
 * mismatch, or a failure that Range resumes cannot mend, destroys every reader's stream (an aborted
 * response, never a wrong body) and keeps nothing. A full store turns the download into a
 * pass-through.
 */
import { createHash, type Hash } from 'node:crypto';
import type { BlobStore } from '../storage/store.js';
import { DigestMismatchError, StoreFullError } from '../storage/store.js';
import { UpstreamError } from '../upstream/errors.js';
import type { BlobBody, BlobSink } from '../upstream/types.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { Download } from './download.js';
import { Fill, upstreamOf, type BlobSinks, type MinProgress } from './fill.js';


export { Download } from './download.js';
export { PassThroughAbandonedError } from './errors.js';
export type { BlobSinks, OpenSink } from './fill.js';


/**
 * Opens the upstream body at an offset (a Range resume when offset > 0). A source that can, sends
 * the GET through `sink` (its body then comes as `BlobBody.direct`); one that cannot ignores it.
 */
export type BlobSource = (offset: number, sink?: BlobSink) => Promise<BlobBody>;

/**
 * What the blob path asks before a download starts, when something beyond this process decides who
 * fetches (the fleet: src/fleet/coordinator.ts). It returns the download the caller's readers join:
 * this process's own from `source`, or one fed from elsewhere. Without one, `InflightDownloads.join`.
 */
export interface BlobCoordinator {
  join(digest: string, origin: string, source: BlobSource): Promise<Download>;
}

export interface InflightObserver {
  started(digest: string): void;
  /** A request joined a download already under way. */
  joined(digest: string): void;
  resumed(digest: string, offset: number): void;
  completed(digest: string, bytes: number): void;
  /** The store was full: the blob is being passed through uncached. */
  spilled(digest: string, cause: unknown): void;
  /** `origin` is the `<upstream>/<repo>` whose request started the download. */
  failed(digest: string, error: unknown, origin: string): void;
}

export interface InflightOptions {
  store: BlobStore;
  observer: InflightObserver;
  /** How many times a cut body is resumed with a Range request before giving up. */
  maxResumes?: number;
  /** How long a finished download stays joinable (bridges the gap until its blob is seen on disk). */
  lingerMs?: number;
  /**
   * Where a download's bytes can go without crossing this thread (the download thread, offload/):
   * used when the store's writer allows it (BlobWriter.external) and the source takes a sink.
   */
  sinks?: BlobSinks;
  /** A pass-through cuts a reader that took nothing for this long (default DEFAULT_READER_STALL_MS, download.ts). */
  readerStallMs?: number;
  /** A download delivering less than this in a window fails as too slow (fill.ts); undefined: no floor. */
  minProgress?: MinProgress;
  /** The largest blob a download takes (fill.ts `maxBytes`); undefined: no cap. */
  maxBlobBytes?: number;
  /** Read-back buffers of the readers' HTTP answers, reused between answers (util/buffer-pool.ts). */
  buffers?: BufferPool;
}

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

  get size(): number {
    let n = 0;
    for (const d of this.downloads.values()) if (d.state === 'starting' || d.state === 'running') n++;
    return n;
  }

  /** The downloads under way (starting or running) with their figures so far: a read-only view for the admin console. */
  list(): Array<{ digest: string; origin: string; received: number; size: number | undefined }> {
    const out: Array<{ digest: string; origin: string; received: number; size: number | undefined }> = [];
    for (const d of this.downloads.values()) if (d.state === 'starting' || d.state === 'running') out.push({ digest: d.digest, origin: d.origin, received: d.received, size: d.size });
    return out;
  }

  /**
   * Resolves when every download under way has finished (stored, or failed and discarded), or after
   * `timeoutMs`, whichever comes first; false if some were still running. For graceful shutdown.
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

  /**
   * Whether a download of `digest` here holds every verified byte and is keeping them (not a
   * pass-through): the cache by another name, while the store makes them durable (sync, rename,
   * upload) or it lingers for late joiners. A reader gets the last byte once the blob is verified,
   * before the store has it: who asks "is it cached?" of a blob just read to the end asks this
   * first, or may see that moment and count it missing.
   */
  holdsVerified(digest: string): boolean {
    const dl = this.downloads.get(digest);
    return dl !== undefined && dl.verified && !dl.spilled && dl.state !== 'failed';
  }

  /** Joins the download of `digest` if one is under way, else starts one from `source`. */
  join(digest: string, origin: string, source: BlobSource): Download {
    const existing = this.downloads.get(digest);
    if (existing && existing.state !== 'failed' && existing.joinable && !(existing.spilled && existing.state === 'done')) {
      this.opts.observer.joined(digest);
      return existing;
    }
    const dl = new Download(digest, origin, this.opts.store, this.opts.readerStallMs, this.opts.buffers);
    this.downloads.set(digest, dl);
    this.opts.observer.started(digest);
    void this.run(dl, source);
    return dl;
  }

  private async run(dl: Download, source: BlobSource): Promise<void> {
    let hash: Hash | undefined;
    try {
      try {
        dl.attachWriter(await this.opts.store.createWriter(dl.digest));
      } catch (e) {
        if (!(e instanceof StoreFullError)) throw e;
        hash = this.spill(dl, e);
      }
      hash = await new Fill(
        dl,
        source,
        {
          maxResumes: this.maxResumes,
          onResume: (at) => this.opts.observer.resumed(dl.digest, at),
          onSpill: (e) => this.spill(dl, e),
          ...(this.opts.sinks ? { sinks: this.opts.sinks } : {}),
          ...(this.opts.minProgress ? { minProgress: this.opts.minProgress } : {}),
          ...(this.opts.maxBlobBytes !== undefined ? { maxBytes: this.opts.maxBlobBytes } : {}),
        },
        hash,
      ).run();
      if (dl.spilled) {
        const actual = `${dl.digest.slice(0, dl.digest.indexOf(':'))}:${hash!.digest('hex')}`;
        if (actual !== dl.digest || (dl.size !== undefined && dl.size !== dl.received)) throw new DigestMismatchError(dl.digest, actual, dl.received);
        dl.markVerified();
        await dl.writer?.abort();
      } else {
        try {
          await dl.writer!.commit(dl.size, () => dl.markVerified());
          this.opts.observer.completed(dl.digest, dl.received);
        } catch (e) {
          // Verified, then not kept: the store refused the last step (full at the rename, S3 away at
          // the upload). The bytes are right and still readable from the writer's open handle: its
          // readers finish as a pass-through's do; the next request fetches again.
          if (!dl.verified || !(e instanceof StoreFullError)) throw e;
          this.opts.observer.spilled(dl.digest, e);
          dl.spill();
        }
      }
      dl.markDone();
      // Stay joinable briefly: a request that looked on disk a moment before the rename still finds
      // it. The download's own reference (keeping the temp file's handle open) goes with it.
      setTimeout(() => {
        this.forget(dl);
        dl.release();
      }, dl.spilled ? 0 : this.lingerMs).unref();
    } catch (e) {
      await dl.writer?.abort();
      this.forget(dl);
      this.opts.observer.failed(dl.digest, e, dl.origin);
      dl.markFailed(e instanceof DigestMismatchError ? new UpstreamError('digest_mismatch', upstreamOf(dl.origin), `upstream blob does not match its digest: ${e.message}`, { cause: e }) : e);
      dl.release();
    }
  }

  /** Switches a download to pass-through; returns the hash that now verifies it (bytes so far included). */
  private spill(dl: Download, cause: unknown): Hash {
    this.opts.observer.spilled(dl.digest, cause);
    dl.spill();
    return createHash(dl.digest.slice(0, dl.digest.indexOf(':')));
  }

  /**
   * The blob was removed from the store: a finished download of it lingering for late joiners must
   * not answer for it any more (the next request fetches it again). A download under way is left alone.
   */
  removed(digest: string): void {
    const dl = this.downloads.get(digest);
    if (dl && dl.state === 'done') this.forget(dl);
  }

  private forget(dl: Download): void {
    if (this.downloads.get(dl.digest) === dl) this.downloads.delete(dl.digest);
  }
}
