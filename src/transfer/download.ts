/**
 * One blob download from upstream and the readers joined to it.
 *
 * Normally every byte received is first written to the store's temp file; readers stream what is on
 * disk, then the bytes as they arrive, each at its own pace (a slow client never slows the download).
 *
 * When the store is full ("spilled": no writer, or a write failed with ENOSPC) the bytes still reach
 * the readers, now through a bounded window of recent chunks in memory, and the download waits for
 * its slowest reader (a plain pass-through proxy); nothing is kept. A reader that falls behind the
 * window is aborted rather than given a gap, and one that takes nothing for readerStallMs is cut
 * loose so that the others go on.
 *
 * Until the digest is verified the last byte of the blob is held back from every reader: a client
 * that received Content-Length bytes takes the body as complete, so a mismatch must leave it short.
 */
import { Readable, type Writable } from 'node:stream';
import type { BlobStore, BlobWriter } from '../storage/store.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { watchResponse } from '../util/response-end.js';

const READ_CHUNK = 512 * 1024;
/** Bytes of recent chunks a spilled download keeps for its readers (besides any not yet on disk). */
export const SPILL_WINDOW = 16 * 1024 * 1024;
/**
 * Bytes already in the temp file that a stored download still keeps in memory for readers close
 * behind the live edge: they take the chunks as received instead of reading them back from the
 * file (a read, a buffer and a copy per 512 KiB; a tenth of a cold pull's CPU in the profile).
 * Readers further behind read the file. 8 MiB raised the mirror's peak RSS with 20 warm clients
 * after a cold download from ~150 to 167-180 MiB (memory the allocator kept); 2 MiB keeps it at
 * ~150 and still serves live readers from memory (bench/RESULTS.md, issue 13).
 */
const KEEP_BEHIND = 2 * 1024 * 1024;
/**
 * How long a pass-through waits for a reader that takes nothing before it cuts that reader loose
 * (its client sees a cut transfer) so the others go on. Without it one client that stopped reading
 * held every other client of the blob until upstream's body timeout ended the download for all.
 */
export const DEFAULT_READER_STALL_MS = 10_000;

interface Chunk {
  offset: number;
  bytes: Uint8Array;
}

export type DownloadState = 'starting' | 'running' | 'done' | 'failed';

/**
 * Readers see a download through `ready`, `finished`, the read-only figures and `open()`; only the
 * downloader (inflight.ts) moves it on, through the methods marked so.
 */
export class Download {
  private size_: number | undefined;
  private state_: DownloadState = 'starting';
  private error_: unknown;
  private received_ = 0;
  private writer_: BlobWriter | undefined;
  private spilled_ = false;
  private verified_ = false;
  /** Resolves once upstream answered with a body (size known if upstream said); rejects if it never did. */
  readonly ready: Promise<void>;
  /** Resolves when the blob is complete and verified (stored, unless spilled); rejects on failure. */
  readonly finished: Promise<void>;
  private refs = 1;
  private waiters: Array<() => void> = [];
  private wakePending = false;
  private window: Chunk[] = [];
  private windowBytes = 0;
  private readonly readers = new Set<DownloadReader>();
  /** Readers, or requests about to open one (claims), it has had: until then a pass-through waits for the first. */
  private hadReaders = false;
  /** Requests that joined and have not yet opened their reader or given up (claim()). */
  private claims = 0;
  private spillWaiters: Array<() => void> = [];
  private resolveReady!: () => void;
  private rejectReady!: (e: unknown) => void;
  private resolveFinished!: () => void;
  private rejectFinished!: (e: unknown) => void;

  /**
   * @param origin the repository whose upstream request started it: that repository is confirmed to
   *   contain the blob once `ready` resolves; others must be confirmed before they join.
   */
  constructor(
    readonly digest: string,
    readonly origin: string,
    /** Where a finished download is read from once its reference to the temp file may be gone. */
    private readonly store: Pick<BlobStore, 'open'>,
    /** A pass-through cuts a reader that took nothing for this long (DEFAULT_READER_STALL_MS). */
    private readonly readerStallMs = DEFAULT_READER_STALL_MS,
    /** Where an HTTP answer's read-back buffers come from and go back to (writeInto); none: made per answer. */
    readonly buffers?: BufferPool,
  ) {
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.finished = new Promise((res, rej) => {
      this.resolveFinished = res;
      this.rejectFinished = rej;
    });
    // Failures reach readers and requests; these keep Node from calling them unhandled.
    this.ready.catch(() => undefined);
    this.finished.catch(() => undefined);
  }

  /** Full size, when upstream said (known once `ready`). */
  get size(): number | undefined {
    return this.size_;
  }
  get state(): DownloadState {
    return this.state_;
  }
  /** Why it failed (state 'failed'). */
  get error(): unknown {
    return this.error_;
  }
  /** Bytes received from upstream so far (the offset of the next byte). */
  get received(): number {
    return this.received_;
  }
  /** The temp file, while the store takes the bytes; bytes [0, writer.written) are readable from it. */
  get writer(): BlobWriter | undefined {
    return this.writer_;
  }
  /** The store could not take the bytes: pass-through, nothing kept. */
  get spilled(): boolean {
    return this.spilled_;
  }
  /** Complete and matching its digest (possibly not yet durable on disk). */
  get verified(): boolean {
    return this.verified_;
  }

  /**
   * The one place deciding how a client reads this blob: from the store once the download is done
   * and stored (it may already have let go of its temp file), else live from the download. `end`
   * is inclusive; both default to the whole blob.
   */
  async open(start = 0, end?: number): Promise<Readable> {
    if (this.state_ === 'done' && !this.spilled_) {
      const size = this.size_ ?? this.received_;
      const range = size > 0 ? { start, end: end ?? size - 1 } : undefined;
      const body = await this.store.open(this.digest, range);
      if (body) return body;
    }
    return this.createReader(start, end);
  }

  /**
   * Says a request will open a reader soon (it has awaits to go: ready, linking, a range to check).
   * Until it calls the returned release (idempotent; call it in a finally, after opening its reader
   * or failing), a pass-through waits for it and the temp file stays open for it. A pass-through
   * that every claimant gave up on without reading (a 416, a client gone) is abandoned, instead of
   * waiting for ever for a first reader with upstream's connection and its buffered bytes held.
   */
  claim(): () => void {
    this.refs++;
    this.claims++;
    this.hadReaders = true;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.claims--;
      this.release();
      this.wake();
    };
  }

  /** Resolves once the download is a pass-through or has ended (either way). */
  async spilledOrEnded(): Promise<void> {
    if (this.spilled_) return;
    const spilled = new Promise<void>((r) => this.spillWaiters.push(r));
    await Promise.race([spilled, this.finished.catch(() => undefined)]);
  }

  /** A live stream of the blob from `start` to `end` (inclusive; default: to the end). */
  createReader(start = 0, end?: number): Readable {
    this.refs++;
    this.hadReaders = true;
    const r = new DownloadReader(this, start, end);
    this.readers.add(r);
    this.wake();
    return r;
  }

  /** Whether a new reader from offset 0 can still be served (false once a pass-through moved on). */
  get joinable(): boolean {
    return !this.spilled || (this.window[0]?.offset ?? this.received) <= (this.writer?.written ?? 0);
  }

  /** A pass-through whose clients all left (or gave up before reading): nobody wants the rest. */
  get abandoned(): boolean {
    return this.spilled && this.hadReaders && this.readers.size === 0 && this.claims === 0;
  }

  /** Bytes of received chunks held in memory for readers (the rest are read from the temp file). */
  get buffered(): number {
    return this.windowBytes;
  }

  get readerCount(): number {
    return this.readers.size;
  }

  // ---- for the downloader (inflight.ts) ----

  /** The store's writer for this blob. */
  attachWriter(writer: BlobWriter): void {
    this.writer_ = writer;
  }

  markRunning(size: number | undefined): void {
    this.size_ = size;
    this.state_ = 'running';
    this.resolveReady();
  }

  /** Records bytes received (already written to the writer unless spilled) and wakes the readers. */
  append(bytes: Uint8Array): void {
    this.window.push({ offset: this.received_, bytes });
    this.windowBytes += bytes.length;
    this.received_ += bytes.length;
    this.trim();
    this.wakeSoon();
  }

  /**
   * Records bytes another thread wrote straight into the temp file (the writer already counts them):
   * no chunk is kept here, readers read them from the file.
   */
  appendOnDisk(n: number): void {
    this.received_ += n;
    this.trim();
    this.wakeSoon();
  }

  /**
   * Drops chunks no reader needs from memory. Stored: chunks in the temp file that every reader has
   * passed, or that lie more than KEEP_BEHIND behind what is on disk (readers that far back read the
   * file). Spilled: chunks in the temp file or passed by every reader (a spilled download paces
   * itself by its slowest reader, which bounds what stays here). While the download runs the newest
   * chunk always stays, for readers at the live edge; once it is done, nothing no reader needs.
   */
  trim(): void {
    const onDisk = this.writer?.written ?? 0;
    const done = this.state_ === 'done';
    // Once stored, a reader yet to come reads the temp file or the blob, not this window. (A
    // pass-through keeps its bytes for the request that started it, which may not have joined yet.)
    const passed = done && !this.spilled && this.readers.size === 0 ? Infinity : this.slowestReader();
    while (this.window.length > (done ? 0 : 1)) {
      const first = this.window[0]!;
      const end = first.offset + first.bytes.length;
      if (this.spilled ? end > onDisk && end > passed : end > onDisk || (end > passed && onDisk - first.offset <= KEEP_BEHIND)) break;
      this.window.shift();
      this.windowBytes -= first.bytes.length;
    }
  }

  /** Switches to pass-through; bytes [0, writer.written) stay readable from the temp file. */
  spill(): void {
    this.spilled_ = true;
    for (const w of this.spillWaiters.splice(0)) w();
  }

  /** In spill mode: resolves once the slowest reader is within half a window of the live edge. */
  async waitForReaders(): Promise<void> {
    let slowest = this.slowestReader();
    let since = performance.now();
    // One timer for the whole wait (not one per reader's chunk): it wakes the loop to look at the
    // clock, so a stalled reader is cut between readerStallMs and 1.25 × that.
    let tick: NodeJS.Timeout | undefined;
    try {
      while (this.state === 'running' && this.received - this.slowestReader() > SPILL_WINDOW / 2) {
        const at = this.slowestReader();
        if (at !== slowest) {
          slowest = at;
          since = performance.now();
        }
        if (performance.now() - since >= this.readerStallMs) {
          // Cut (asynchronously: a response closes on its own turn) and give them a full period again.
          for (const r of this.readers) if (r.position === at) r.abandon(new Error(`a client took nothing from a pass-through for ${this.readerStallMs} ms`));
          since = performance.now();
        }
        tick ??= setInterval(() => this.wake(), Math.max(10, this.readerStallMs / 4));
        await this.nextProgress();
      }
    } finally {
      clearInterval(tick);
    }
    this.trim();
  }

  /** The bytes received are the whole blob and match its digest: readers may send the last byte. */
  markVerified(): void {
    this.verified_ = true;
    this.wake();
  }

  markDone(): void {
    this.verified_ = true;
    this.state_ = 'done';
    this.trim();
    this.resolveReady();
    this.resolveFinished();
    this.wake();
  }

  markFailed(e: unknown): void {
    this.state_ = 'failed';
    this.error_ = e;
    this.rejectReady(e);
    this.rejectFinished(e);
    this.wake();
  }

  /** Drops one reference; the writer's read handle closes with the last. */
  release(): void {
    if (--this.refs === 0) void this.writer?.close();
  }

  // ---- for readers ----

  /** Resolves at the next chunk, completion, failure or reader progress. */
  nextProgress(): Promise<void> {
    return new Promise((res) => this.waiters.push(res));
  }

  /**
   * Wakes the readers once the chunks of this event-loop turn are in (undici hands over one socket
   * read, at most 64 KiB, at a time): a reader at the live edge then pushes them together and its
   * response writes them in one writev instead of one write per chunk.
   */
  private wakeSoon(): void {
    if (this.wakePending) return;
    this.wakePending = true;
    setImmediate(() => {
      this.wakePending = false;
      this.wake();
    });
  }

  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Bytes from `pos` (up to `end`, exclusive) held in memory, or undefined. */
  fromWindow(pos: number, end: number): Uint8Array | undefined {
    for (let i = this.window.length - 1; i >= 0; i--) {
      const c = this.window[i]!;
      if (pos >= c.offset && pos < c.offset + c.bytes.length) {
        return c.bytes.subarray(pos - c.offset, Math.min(end, c.offset + c.bytes.length) - c.offset);
      }
    }
    return undefined;
  }

  detach(r: DownloadReader): void {
    if (this.readers.delete(r)) {
      this.trim();
      this.release();
      this.wake();
    }
  }

  private slowestReader(): number {
    // The first reader starts at 0, and so does a claimant's; with none left, nobody holds it back.
    if (this.readers.size === 0) return this.hadReaders && this.claims === 0 ? Infinity : 0;
    let min = Infinity;
    for (const r of this.readers) min = Math.min(min, r.position);
    return min;
  }
}

class DownloadReader extends Readable {
  private pos: number;
  private pumping = false;
  /** The response writeInto() writes into, once it does. */
  private out: Writable | undefined;

  constructor(private readonly dl: Download, start: number, private readonly end: number | undefined) {
    super({ highWaterMark: READ_CHUNK });
    this.pos = start;
  }

  get position(): number {
    return this.pos;
  }

  override _read(): void {
    if (!this.pumping) void this.pump();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.dl.detach(this);
    cb(err);
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const dl = this.dl;
        const limit = this.end !== undefined ? this.end + 1 : Infinity;
        if (this.pos >= limit) return this.finish();
        if (dl.state === 'failed') return void this.destroy(asError(dl.error));
        const verified = dl.verified;
        const available = this.releasable(limit);
        if (this.pos < available) {
          let buf = dl.fromWindow(this.pos, available);
          if (!buf && dl.writer && this.pos < dl.writer.written) {
            buf = await dl.writer.readAt(this.pos, this.onDisk(available));
          }
          if (!buf || buf.length === 0) return void this.destroy(new Error('reader fell behind a pass-through download'));
          this.pos += buf.length;
          dl.wake(); // a spilled download may be waiting for this reader
          if (!this.push(buf)) return;
          continue;
        }
        if (verified) return this.finish();
        await dl.nextProgress();
      }
    } catch (e) {
      this.destroy(asError(e));
    } finally {
      this.pumping = false;
    }
  }

  private finish(): void {
    this.push(null);
    this.dl.detach(this);
  }

  /** Cut loose by a pass-through that will not wait for it: its consumer sees a failure, its client a cut transfer. */
  abandon(err: Error): void {
    if (this.out) this.out.destroy(err); // writeInto settles on the response's 'close'
    else this.destroy(err);
  }

  /**
   * Where this reader may read up to now (exclusive): what has arrived, short of the blob's last
   * byte until the digest is verified, and not past `limit`. Both paths below read by this rule.
   */
  private releasable(limit: number): number {
    const dl = this.dl;
    const ceiling = dl.verified ? dl.received : Math.min(dl.received, (dl.size ?? Infinity) - 1);
    return Math.min(ceiling, limit);
  }

  /** Bytes from the position to read back from the file in one read (at most READ_CHUNK). */
  private onDisk(available: number): number {
    return Math.min(READ_CHUNK, Math.min(available, this.dl.writer?.written ?? 0) - this.pos);
  }

  /**
   * The HTTP answer's path (http/send.ts `WritesItself`, as storage's FileBody): the same bytes as
   * pump(), under the same rule (the last byte only once verified), written into `out` with at
   * most two writes under way. Chunks still in memory go out as they are; bytes read back from the
   * file go into two buffers, each read into again only after `out` called back for it, where
   * pump() takes a fresh buffer per read (10 readers of a cold 256 MiB blob: 5,000 buffers that only
   * a garbage collection frees). On a failure `out` is destroyed: the client sees a cut transfer.
   * Resolves, never rejects, with the bytes `out` took; the reader is detached by then.
   */
  writeInto(out: Writable): Promise<number> {
    if (this.pumping || this.readableFlowing !== null || this.readableLength > 0 || this.destroyed) throw new Error('writeInto: the reader is already being read');
    this.pumping = true;
    this.out = out;
    return new Promise((resolve) => {
      const free: Buffer[] = [];
      const pool = this.dl.buffers;
      let written = 0;
      let writing = 0;
      let wakeWriter: (() => void) | undefined;
      const end = watchResponse(out, () => {
        this.destroy();
        if (pool) for (const buf of free.splice(0)) pool.give(buf);
        wakeWriter?.();
        resolve(written);
      });
      const settle = end.settle;
      if (end.over) return;
      const send = (bytes: Uint8Array, buf?: Buffer) => {
        writing++;
        out.write(bytes, (err) => {
          writing--;
          if (err) return settle(err);
          written += bytes.length;
          if (buf && end.over) pool?.give(buf);
          else if (buf) free.push(buf);
          const w = wakeWriter;
          wakeWriter = undefined;
          w?.();
        });
      };
      /** Until fewer than `n` writes are under way (or it is over). */
      const below = async (n: number) => {
        while (writing >= n && !end.over) await new Promise<void>((r) => (wakeWriter = r));
      };
      const run = async () => {
        for (;;) {
          if (end.over) return;
          const dl = this.dl;
          const limit = this.end !== undefined ? this.end + 1 : Infinity;
          if (this.pos >= limit) break;
          if (dl.state === 'failed') return settle(asError(dl.error));
          const verified = dl.verified;
          const available = this.releasable(limit);
          if (this.pos < available) {
            await below(2);
            if (end.over) return;
            const held = dl.fromWindow(this.pos, available);
            if (held && held.length > 0) {
              this.pos += held.length;
              dl.wake(); // a spilled download may be waiting for this reader
              send(held);
              continue;
            }
            if (!dl.writer || this.pos >= dl.writer.written) return settle(new Error('reader fell behind a pass-through download'));
            // Fewer than two writes under way and at most two buffers: one is free, or one more may be
            // made, no larger than what is left to send (a small blob must not cost 512 KiB; what is
            // left only shrinks, so a buffer made earlier is never too small for a later read). From
            // a pool it is that size rounded up to a power of two.
            let buf = free.pop();
            if (!buf) {
              const size = Math.max(1, Math.min(READ_CHUNK, Math.min(limit, dl.size ?? Infinity) - this.pos));
              buf = pool ? pool.take(size) : Buffer.allocUnsafeSlow(size);
            }
            const got = await dl.writer.readAt(this.pos, Math.min(this.onDisk(available), buf.length), buf);
            if (end.over || got.length === 0) {
              // The read is over and nothing will send this buffer.
              pool?.give(buf);
              return end.over ? undefined : settle(new Error('reader fell behind a pass-through download'));
            }
            this.pos += got.length;
            dl.wake();
            send(got, buf);
            continue;
          }
          if (verified) break;
          await dl.nextProgress();
        }
        await below(1);
        settle();
      };
      run().catch((e: unknown) => settle(asError(e)));
    });
  }
}

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));
