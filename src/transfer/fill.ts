/**
 * One download's copy loop: opens the upstream body (with Range after a cut), gives each chunk to
 * the readers and, behind them, to the temp file (write-behind), and switches to pass-through when
 * the store fills up.
 *
 * Resumes as long as there is progress: a transient failure (cut, reset, timeout) after an attempt
 * that delivered new bytes is resumed at once, however many times; attempts that deliver nothing
 * back off (jittered, doubling) and give up after `maxResumes` of them in a row or once the time
 * since the last new byte would pass the stall budget; against an upstream assumed offline
 * (upstream/availability.ts) an attempt waits for its next probe. Readers keep their streams meanwhile.
 *
 * Progress means real progress: once its first body opens, a download whose upstream delivers fewer
 * than `minProgress.bytes` in a `minProgress.windowMs` fails as too slow (not resumed). An idle
 * timeout alone ends a body only when no byte at all comes; an upstream sending a byte now and then,
 * or cutting every body after a few bytes, would hold the download, its temp file and its clients
 * for as long as it liked.
 */
import type { Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreFullError, type ExternalAppend } from '../storage/store.js';
import { blobOverCap, SINK_LIMIT_CODE, SinkFailure, UpstreamError } from '../upstream/errors.js';
import type { BlobBody, BlobSink, SunkBody } from '../upstream/types.js';
import type { Download } from './download.js';
import { isTransient, PassThroughAbandonedError } from './errors.js';
import { WriteBehind } from './write-behind.js';

/** Bytes a download may run ahead of its temp file (held in memory for the readers meanwhile). */
const WRITE_LAG = 32 * 1024 * 1024;

/** Backoff of attempts that deliver nothing: first delay, cap, and the budget since the last new byte. */
export interface ResumeBackoff {
  baseMs: number;
  maxMs: number;
  /** Giving up once the time since the last new byte (or the start) plus the next delay would pass this. */
  budgetMs: number;
}

export const DEFAULT_RESUME_BACKOFF: ResumeBackoff = { baseMs: 100, maxMs: 4000, budgetMs: 30_000 };

/** Where a download's bytes can go without crossing this thread (the download thread, offload/). */
export interface BlobSinks {
  /** A sink writing into `file` from its start. */
  open(file: ExternalAppend): OpenSink;
}

/** A BlobSink bound to one temp file, for as many requests (resumes) as the download needs. */
export interface OpenSink extends BlobSink {
  /**
   * No more requests: resolves once the other thread has stopped writing, with its digest of the
   * bytes it wrote (hex), or undefined when it cannot vouch for them.
   */
  close(): Promise<string | undefined>;
  /** Set once the other thread is gone (it died or was stopped): the download cannot go on. */
  readonly failure: Error | undefined;
}

export interface FillOptions {
  /** How many attempts in a row that deliver no new byte are resumed before giving up (progress resets it). */
  maxResumes: number;
  /** Default DEFAULT_RESUME_BACKOFF. */
  backoff?: ResumeBackoff;
  /** Clock for the stall budget (default performance.now). */
  now?: () => number;
  /** A cut body is being resumed at this offset. */
  onResume(offset: number): void;
  /** The store is full: switch the download to pass-through; returns the hash that will verify it. */
  onSpill(cause: unknown): Hash;
  /** When set and the writer allows it, the bytes go to the temp file off this thread. */
  sinks?: BlobSinks;
  /**
   * The floor under real progress (see above); not checked while a pass-through is paced by its
   * readers. Undefined: none.
   */
  minProgress?: MinProgress;
  /**
   * The largest blob a download takes (limits.maxBlobBytes): an announced size above it is refused
   * before any byte is written. Every body is then held to the blob's size once upstream announced
   * one (a resume answered without a size included), and to this cap while none is known: without
   * it an unsized body could stream until the disk is full, and the free-space floor would evict
   * the cache to make room. Undefined: no cap.
   */
  maxBytes?: number;
}

export interface MinProgress {
  bytes: number;
  windowMs: number;
}

/**
 * The floor the server sets, per `timeouts.bodyIdle` window: 64 KiB in 30 s is ~2 KiB/s, far below
 * any real link a registry is pulled over (a 64 kbit/s line brings 240 KiB in that time).
 */
export const MIN_PROGRESS_BYTES = 64 * 1024;

export class Fill {
  private readonly disk: WriteBehind | undefined;
  /** Bytes of the current body still to drop (upstream ignored the Range and started over). */
  private skip = 0;
  /** The temp file as another thread writes it, and the sink doing so (until closed). */
  private ext: ExternalAppend | undefined;
  private sink: OpenSink | undefined;
  /**
   * No sink is offered (any more): there are no sinks, or a body came through this thread, or the
   * download spilled. The sink opens at the first request made through it, so a source that ignores
   * it (a fleet owner's, which may read the shared store) keeps the writer's own write().
   */
  private sinkless: boolean;
  /** The body being copied now, cancelled when the download is found too slow. */
  private current: BlobBody | undefined;
  /** Set once the download delivered less than the floor in a window: the download's failure. */
  private tooSlow: UpstreamError | undefined;
  private watch: NodeJS.Timeout | undefined;

  constructor(
    private readonly dl: Download,
    private readonly source: (offset: number, sink?: BlobSink) => Promise<BlobBody>,
    private readonly opts: FillOptions,
    /** Set when the download is already a pass-through (the store was full from the start). */
    private hash: Hash | undefined,
  ) {
    this.disk = dl.writer && !dl.spilled ? new WriteBehind(dl.writer, WRITE_LAG, () => dl.trim()) : undefined;
    // Only a writer that can hand its file over (the filesystem store's) is offered a sink.
    this.sinkless = !this.disk || !opts.sinks || typeof dl.writer!.external !== 'function';
  }

  /** What the source may send its GET through (undefined: this thread takes the body). */
  private offer(): BlobSink | undefined {
    if (this.sinkless || this.dl.spilled) return undefined;
    if (this.sink) return this.sink;
    return {
      request: (req) => {
        const sink = this.openSink();
        return sink ? sink.request(req) : Promise.reject(new SinkFailure('the temp file can no longer be handed to another thread'));
      },
    };
  }

  private openSink(): OpenSink | undefined {
    if (!this.sink && !this.sinkless) {
      this.ext = this.dl.writer!.external?.();
      if (this.ext) this.sink = this.opts.sinks!.open(this.ext);
      else this.sinkless = true;
    }
    return this.sink;
  }

  /** Copies the whole blob; returns the hash verifying a spilled download (undefined when stored). */
  async run(): Promise<Hash | undefined> {
    try {
      return await this.attempts();
    } finally {
      clearInterval(this.watch);
      // Before the writer is committed or aborted: the other thread must have stopped writing.
      await this.closeSink();
    }
  }

  /** The download's failure once found too slow, unless its body was whole when it was cancelled. */
  private slowFailure(): UpstreamError | undefined {
    const { dl } = this;
    return this.tooSlow && (dl.size === undefined || dl.received < dl.size) ? this.tooSlow : undefined;
  }

  /** From the first body on: every window must bring `minProgress.bytes`, or the body is cancelled and the download fails. */
  private watchProgress(): void {
    const floor = this.opts.minProgress;
    if (!floor || this.watch) return;
    const clock = this.opts.now ?? (() => performance.now());
    let mark = this.dl.received;
    let since = clock();
    this.watch = setInterval(() => {
      const { dl } = this;
      if (dl.spilled || this.tooSlow) return;
      if (clock() - since < floor.windowMs) return;
      const got = dl.received - mark;
      mark = dl.received;
      since = clock();
      if (got >= floor.bytes) return;
      this.tooSlow = new UpstreamError('timeout', upstreamOf(dl.origin), `upstream sent ${got} bytes of the blob in ${floor.windowMs} ms, fewer than ${floor.bytes}: too slow`);
      this.current?.cancel();
    }, Math.max(10, floor.windowMs / 4));
    this.watch.unref();
  }

  private async attempts(): Promise<Hash | undefined> {
    const now = this.opts.now ?? (() => performance.now());
    const backoff = this.opts.backoff ?? DEFAULT_RESUME_BACKOFF;
    let fruitless = 0;
    let lastProgress = now();
    for (;;) {
      const before = this.dl.received;
      let cause: unknown;
      try {
        if (this.tooSlow) throw this.tooSlow;
        const body = await this.open();
        this.current = body;
        this.watchProgress();
        try {
          await this.copy(body);
        } finally {
          this.current = undefined;
        }
        // A cancelled body may end without an error.
        const slow = this.slowFailure();
        if (slow) throw slow;
        if (!this.dl.spilled) await this.disk!.drain().catch((e: unknown) => this.spillNow(e));
        return this.hash;
      } catch (e) {
        const slow = this.slowFailure();
        if (slow) throw slow;
        if (!(e instanceof ResumableFailure)) throw e;
        cause = e.cause;
      }
      if (this.dl.received > before) {
        fruitless = 0;
        lastProgress = now();
      } else {
        fruitless++;
        let delay = jittered(Math.min(backoff.maxMs, backoff.baseMs * 2 ** (fruitless - 1)));
        // An upstream assumed offline is probed in the background: try again after the probe.
        if (cause instanceof UpstreamError && cause.assumedOffline && cause.retryAfter !== undefined) delay = Math.max(delay, cause.retryAfter * 1000);
        if (fruitless > this.opts.maxResumes || now() - lastProgress + delay > backoff.budgetMs) throw cause;
        await sleep(delay);
      }
      this.opts.onResume(this.dl.received);
    }
  }

  /** The upstream body from where we are. A transient failure after the start is a ResumableFailure. */
  private async open(): Promise<BlobBody> {
    const { dl } = this;
    let body: BlobBody;
    try {
      body = await this.source(dl.received, this.offer());
    } catch (e) {
      if (this.sink?.failure) throw this.sink.failure;
      // Failing before any body is the request's answer (a 404, a refusal): not retried here.
      if (dl.state === 'starting' || !isTransient(e)) throw e;
      throw new ResumableFailure(e);
    }
    const max = this.opts.maxBytes;
    if (max !== undefined && body.size !== undefined && body.size > max) {
      body.cancel();
      throw blobOverCap(upstreamOf(dl.origin), body.size, max);
    }
    if (dl.state === 'starting') dl.markRunning(body.size);
    // A body from before where we are (a 200 ignoring the Range, a 206 from a CDN that rounds ranges
    // down) has its first `skip` bytes dropped; one from beyond it would leave a hole.
    this.skip = dl.received - body.start;
    if (this.skip < 0) {
      body.cancel();
      throw new UpstreamError('protocol', upstreamOf(dl.origin), `upstream resumed at ${body.start}, not at ${dl.received}`);
    }
    return body;
  }

  /** Copies one body to the end of the blob; a transient failure is a ResumableFailure; throws what cannot be mended. */
  private async copy(body: BlobBody): Promise<void> {
    if (body.direct) return this.copyDirect(body.direct);
    const { dl } = this;
    if (this.sink && !dl.spilled) {
      // Its file belongs to the other thread now: this thread may not write it.
      body.cancel();
      throw new Error('a body came through this thread after the temp file was handed to another');
    }
    this.sinkless = true;
    try {
      for await (const chunk of body.body) await this.take(chunk, body);
      if (dl.size !== undefined && dl.received < dl.size) throw new Error(`upstream body ended at ${dl.received} of ${dl.size} bytes`);
    } catch (e) {
      body.cancel();
      // The connection failed after the last byte arrived: the body is complete.
      if (dl.size !== undefined && dl.received >= dl.size && !(e instanceof StoreFullError)) return;
      if (!isTransient(e)) throw e;
      throw new ResumableFailure(e);
    }
  }

  /** copy() for a body written to the temp file by the other thread: only the counts come here. */
  private async copyDirect(direct: SunkBody): Promise<void> {
    const { dl } = this;
    const skip = this.skip;
    this.skip = 0;
    try {
      // The other thread stops at the bound itself, failing with SINK_LIMIT_CODE.
      await direct.write(skip, (n) => dl.appendOnDisk(n), this.bound());
      if (dl.size !== undefined && dl.received < dl.size) throw new Error(`upstream body ended at ${dl.received} of ${dl.size} bytes`);
    } catch (e) {
      direct.cancel();
      if (this.sink?.failure) throw this.sink.failure;
      if (dl.size !== undefined && dl.received >= dl.size && !(e instanceof StoreFullError)) return;
      if ((e as { code?: unknown }).code === SINK_LIMIT_CODE) throw this.overBound();
      if (e instanceof StoreFullError) {
        // The rest comes through this thread as a pass-through, by a Range resume from what is on disk.
        await this.spillNow(e);
        throw new ResumableFailure(e);
      }
      if (!isTransient(e)) throw e;
      throw new ResumableFailure(e);
    }
  }

  private async closeSink(): Promise<void> {
    const sink = this.sink;
    if (!sink) return;
    this.sink = undefined;
    this.ext!.finished(await sink.close());
  }

  /** One chunk: to the temp file (unless spilled), to the hash (when spilled), to the readers. */
  private async take(chunk: Uint8Array, body: BlobBody): Promise<void> {
    const { dl } = this;
    let c = chunk;
    if (this.skip > 0) {
      const n = Math.min(this.skip, c.length);
      this.skip -= n;
      c = c.subarray(n);
      if (c.length === 0) return;
    }
    // copy() cancels the body for this throw, as for any other (and takes a body that brought the
    // whole blob first for complete).
    const bound = this.bound();
    if (bound !== undefined && dl.received + c.length > bound) throw this.overBound();
    if (!dl.spilled) {
      try {
        this.disk!.push(c);
      } catch (e) {
        await this.spillNow(e);
      }
    }
    if (dl.spilled) {
      this.hash!.update(c);
      if (dl.abandoned) {
        body.cancel();
        throw new PassThroughAbandonedError();
      }
    }
    dl.append(c);
    if (!dl.spilled) await this.disk!.belowLag().catch((e: unknown) => this.spillNow(e));
    if (dl.spilled) await dl.waitForReaders();
  }

  /** No body goes past this: the blob's size once announced, else the cap. */
  private bound(): number | undefined {
    return this.dl.size ?? this.opts.maxBytes;
  }

  private overBound(): UpstreamError {
    const { dl } = this;
    const what = dl.size !== undefined ? `the blob's ${dl.size} bytes` : `limits.maxBlobBytes (${this.opts.maxBytes}) of a blob without a size`;
    return new UpstreamError('protocol', upstreamOf(dl.origin), `upstream sent more than ${what}`);
  }

  /** The store filled up: hash what reached the disk and what was still queued, then pass through. */
  private async spillNow(e: unknown): Promise<void> {
    if (!(e instanceof StoreFullError)) throw e;
    const { dl } = this;
    await this.closeSink();
    this.sinkless = true;
    const hash = this.opts.onSpill(e);
    this.hash = hash;
    for (let pos = 0; pos < dl.writer!.written; ) {
      const part = await dl.writer!.readAt(pos, 1024 * 1024);
      hash.update(part);
      pos += part.length;
    }
    for (const c of this.disk!.pending()) hash.update(c);
  }
}

/** A transient failure of one attempt, worth a Range resume (run() decides whether one is left). */
class ResumableFailure extends Error {
  constructor(override readonly cause: unknown) {
    super('resumable upstream failure');
  }
}

/** The upstream key of an origin `<upstream>/<repo>`. */
export const upstreamOf = (origin: string): string => origin.slice(0, Math.max(0, origin.indexOf('/')));

/** Equal jitter: half the delay fixed, half random, so many downloads do not retry in step. */
const jittered = (ms: number): number => ms / 2 + Math.random() * (ms / 2);
