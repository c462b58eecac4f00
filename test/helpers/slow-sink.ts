/**
 * A Writable standing in for a client socket, for bodies that write themselves (storage's FileBody,
 * transfer's DownloadReader) and reuse their buffers: it holds every chunk for a few ms before it
 * calls back and checks at that moment that the chunk still holds the bytes it was given (a buffer
 * read into again too early would not). `failAfter` chunks taken, each further write fails.
 */
import { Writable } from 'node:stream';

export class SlowSink extends Writable {
  readonly parts: Buffer[] = [];
  readonly buffers = new Set<ArrayBufferLike>();
  /** The buffers of the writes that failed. */
  readonly failed = new Set<ArrayBufferLike>();
  overwritten = 0;
  constructor(private readonly failAfter = Infinity) {
    super({ highWaterMark: 1 });
  }
  override _write(chunk: Buffer, _enc: string, cb: (err?: Error | null) => void): void {
    const copy = Buffer.from(chunk);
    this.buffers.add(chunk.buffer);
    if (this.parts.length >= this.failAfter) {
      this.failed.add(chunk.buffer);
      return void setImmediate(() => cb(new Error('socket gone')));
    }
    setTimeout(() => {
      if (!copy.equals(chunk)) this.overwritten++;
      this.parts.push(copy);
      cb();
    }, 2);
  }
  /** Everything taken so far, in order. */
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}
