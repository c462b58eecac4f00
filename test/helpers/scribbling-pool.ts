/**
 * A BufferPool that scribbles over every buffer given back and records it: a buffer given back while
 * a write still reads it shows as an overwritten chunk in a SlowSink (slow-sink.ts).
 */
import { BufferPool } from '../../src/util/buffer-pool.js';

export class ScribblingPool extends BufferPool {
  readonly given: Buffer[] = [];
  override give(buf: Buffer): void {
    buf.fill(0xee);
    this.given.push(buf);
    super.give(buf);
  }
  /** Whether `ab` is the memory of a buffer given back here. */
  gave(ab: ArrayBufferLike): boolean {
    return this.given.some((g) => g.buffer === ab);
  }
}
