/**
 * Writes a download's chunks to its BlobWriter behind the network: chunks queued behind a write go
 * together in the next one (a writev), one write in flight, so receiving the next bytes never waits for the disk, and the
 * lag (bytes received but not yet written) stays bounded: past `maxLag` the producer waits.
 * Bytes not yet written stay listed in `pending()` (readers get them from the download's window).
 */
import type { BlobWriter } from '../storage/store.js';

const MAX_WRITE = 1024 * 1024;

export class WriteBehind {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private flushing = false;
  /** The first write error (a StoreFullError or an I/O error), rethrown to the producer. */
  private error: Error | undefined;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly writer: BlobWriter,
    private readonly maxLag: number,
    /** Called after each completed write (the download trims its window). */
    private readonly onWritten: () => void,
  ) {}

  /** Queues a chunk for writing. Throws the error an earlier write met (e.g. StoreFullError). */
  push(chunk: Uint8Array): void {
    if (this.error !== undefined) throw this.error;
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (!this.flushing) void this.flush();
  }

  /** Resolves once the lag is below the bound. Throws a write error. */
  async belowLag(): Promise<void> {
    while (this.error === undefined && this.queued > this.maxLag) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error !== undefined) throw this.error;
  }

  /** Resolves once every queued byte is written. Throws a write error. */
  async drain(): Promise<void> {
    while (this.error === undefined && (this.queued > 0 || this.flushing)) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error !== undefined) throw this.error;
  }

  /** Chunks received but not (successfully) written, in order. */
  pending(): Uint8Array[] {
    return [...this.queue];
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        let n = 0;
        let count = 0;
        while (count < this.queue.length && (count === 0 || n + this.queue[count]!.length <= MAX_WRITE)) n += this.queue[count++]!.length;
        const parts = this.queue.slice(0, count);
        await this.writer.write(parts.length === 1 ? parts[0]! : parts);
        // Only now do the chunks leave the queue: a failed write leaves them pending.
        this.queue.splice(0, count);
        this.queued -= n;
        this.onWritten();
        this.wake();
      }
    } catch (e) {
      this.error = e instanceof Error ? e : new Error(String(e));
    } finally {
      this.flushing = false;
      this.wake();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}
