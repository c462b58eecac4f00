/**
 * A stored blob's bytes [start, end] from an open file: what FsBlobStore.open() returns.
 *
 * As a Readable it reads chunk by chunk like fs.ReadStream, for every consumer (a fleet peer, a
 * bundle export, a download's copy). An HTTP answer takes writeInto() instead (http/send.ts
 * `WritesItself`; storage does not import http, so the shape is matched, not named): two buffers
 * (one when the store serves many streams), each read into again once the socket has taken what it
 * held. A Readable's chunks are fresh buffers that only a garbage collection frees, and V8 lets
 * ~64 MiB of such memory gather before it collects: 20 clients of a warm blob held 41 MiB of them
 * at their peak.
 *
 * A file that ends before `end` (changed under the store) is an error either way, never a short
 * body under a Content-Length that promised more.
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import type { BufferPool } from '../util/buffer-pool.js';
import { watchResponse } from '../util/response-end.js';

/**
 * How an answer reads, asked again before every read: a stream opened in a quiet spell shrinks its
 * reads (and gives its larger buffers back) once many streams are open.
 */
export interface ReadPlan {
  /** Bytes per read (never more than the range holds). */
  chunk(): number;
  /** Buffers at most: 2 lets the next read overlap the last write; 1 makes them take turns. */
  reads(): 1 | 2;
}

export class FileBody extends Readable {
  private pos: number;
  /** Exclusive. */
  private readonly stop: number;
  private taken = false;
  private readonly plan: ReadPlan;
  /** The Readable side's read size (fixed when the body is made). */
  private readonly chunk: number;

  /**
   * Owns `handle` from here on: it is closed when the body is destroyed or done. `plan`: a read size
   * (two buffers), or a ReadPlan. writeInto takes its buffers from `buffers` and gives them back
   * (without it, it makes its own).
   */
  constructor(
    private readonly handle: FileHandle,
    start: number,
    endInclusive: number,
    plan: number | ReadPlan,
    private readonly buffers?: BufferPool,
  ) {
    const chunk = Math.max(1, Math.min(typeof plan === 'number' ? plan : plan.chunk(), endInclusive + 1 - start));
    super({ highWaterMark: chunk });
    this.chunk = chunk;
    this.plan = typeof plan === 'number' ? { chunk: () => plan, reads: () => 2 } : plan;
    this.pos = start;
    this.stop = endInclusive + 1;
  }

  override _read(): void {
    const len = Math.min(this.chunk, this.stop - this.pos);
    if (len <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafeSlow(len);
    this.handle.read(buf, 0, len, this.pos).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) return void this.destroy(endedEarly(this.pos, this.stop));
        this.pos += bytesRead;
        this.push(bytesRead === len ? buf : buf.subarray(0, bytesRead));
      },
      (e: unknown) => this.destroy(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // FileHandle.close waits for a read still under way.
    this.handle.close().then(
      () => cb(err),
      (e: unknown) => cb(err ?? (e as Error)),
    );
  }

  /**
   * Writes the bytes into `out` and ends it, with the plan's reads' worth of memory, reused. Each
   * buffer is read into again only after `out` called back for it (the socket has the bytes). On a
   * failure (a read error, the file ending early, `out` closing first) `out` is destroyed, so the
   * client sees a cut transfer. Resolves, never rejects, with the bytes `out` took, as soon as that
   * is known (the request log reads it); the body is destroyed then and closes its file after any
   * read under way. Only on a body nothing has read.
   *
   * With a pool, a buffer goes back to it once no read into it and no write from it is under way:
   * after a write that called back without an error, a read that finished after the end, or at the
   * end for one unused. One whose write failed is left to the collector (the stream may still hold it).
   */
  writeInto(out: Writable): Promise<number> {
    if (this.taken || this.readableFlowing !== null || this.readableLength > 0 || this.destroyed) throw new Error('writeInto: the body is already being read');
    this.taken = true;
    return new Promise((resolve) => {
      const total = this.stop - this.pos;
      const pool = this.buffers;
      let made = 0;
      const free: Buffer[] = [];
      let written = 0;
      let writing = 0;
      let reading = false;
      const end = watchResponse(out, () => {
        this.destroy();
        if (pool) for (const buf of free.splice(0)) pool.give(buf);
        resolve(written);
      });
      const settle = end.settle;
      const step = () => {
        if (end.over || reading) return;
        if (this.pos >= this.stop) {
          if (writing === 0) settle();
          return;
        }
        // Never more than the range holds: a small blob must not cost a large buffer (the whole
        // range, not what is left of it, which only shrinks).
        const size = Math.max(1, Math.min(this.plan.chunk(), total));
        const reads = this.plan.reads();
        let buf = free.pop();
        // Made for a quieter spell: twice the read size or more (the pool's next size up is less),
        // or one buffer more than the plan allows now. Back to the pool; one of the size is taken.
        if (buf && (made > reads || (pool && buf.length >= 2 * size))) {
          pool?.give(buf);
          made--;
          buf = undefined;
        }
        // A second buffer (if the plan allows one) only while bytes are left beyond what the first
        // one holds (it is out being written). From a pool, an idle buffer of half the size serves
        // when none of the size waits (read sizes follow the number of streams): a smaller read
        // rather than a new buffer, but never so small that a lone client after a busy spell reads
        // in crumbs.
        if (!buf && made < reads) {
          made++;
          buf = pool ? pool.take(size, Math.ceil(size / 2)) : Buffer.allocUnsafeSlow(size);
        }
        if (!buf) return;
        reading = true;
        // Never more than the planned size: a pool's buffer may be larger (a power of two).
        const len = Math.min(buf.length, size, this.stop - this.pos);
        const into = buf;
        this.handle.read(into, 0, len, this.pos).then(
          ({ bytesRead }) => {
            reading = false;
            if (end.over) return pool?.give(into);
            if (bytesRead === 0) {
              pool?.give(into);
              return settle(endedEarly(this.pos, this.stop));
            }
            this.pos += bytesRead;
            writing++;
            out.write(bytesRead === into.length ? into : into.subarray(0, bytesRead), (err) => {
              writing--;
              if (err) return settle(err);
              written += bytesRead;
              if (end.over) pool?.give(into);
              else free.push(into);
              step();
            });
            step();
          },
          (e: unknown) => {
            reading = false;
            settle(e as Error);
          },
        );
      };
      step();
    });
  }
}

const endedEarly = (at: number, stop: number) => new Error(`blob file ended at byte ${at}, ${stop - at} bytes before the end of the range`);
