/**
 * A BufferPool that scribbles over every buffer given back and records it: a buffer given back while
 * a write still reads it shows as an overwritten chunk in a SlowSink (slow-sink.ts). A buffer given
 * back again while it waits idle (two owners) is counted in `doubles`.
 */
import { BufferPool } from '../../src/util/buffer-pool.js';

export class ScribblingPool extends BufferPool {
  readonly given: Buffer[] = [];
  doubles = 0;
  private readonly waiting = new Set<Buffer>();
  override take(n: number, least?: number): Buffer {
    const buf = super.take(n, least);
    this.waiting.delete(buf);
    return buf;
  }
  override give(buf: Buffer): void {
    if (this.waiting.has(buf)) this.doubles++;
    this.waiting.add(buf);
    buf.fill(0xee);
    this.given.push(buf);
    super.give(buf);
  }
  /** Whether `ab` is the memory of a buffer given back here. */
  gave(ab: ArrayBufferLike): boolean {
    return this.given.some((g) => g.buffer === ab);
  }
}
