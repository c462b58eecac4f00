/**
 * Buffers reused between answers instead of made for each one. A buffer made per answer is garbage
 * that only a garbage collection frees, and V8 lets ~64 MiB of such memory gather on an isolate
 * before its external-memory limit forces one: under 500 clients that was 54 MiB of the peak (read
 * buffers of served blobs, heaptrack). A buffer given back here is taken again by the next answer.
 *
 * Contract:
 * - `take(n)` gives a buffer of at least n bytes (n rounded up to a power of two, at least 4 KiB);
 *   its contents are whatever the last user left. Above 1 MiB it is made to measure and never kept.
 *   `take(n, least)` may give a smaller idle one, of at least `least` bytes, rather than make one.
 * - `give(buf)` is for a buffer from `take` that nothing refers to any more: no read into it and no
 *   write from it still under way. A caller unsure of that (a write that failed) does not give it
 *   back; it is then collected as before. Giving back a buffer twice is a bug: two users would share it.
 * - At most `maxIdleBytes` wait here. A buffer given back when that is reached takes the place of
 *   idle ones of other sizes (the largest first); when all idle ones are its size, it is let go.
 */
const MIN_CLASS = 4 * 1024;
const MAX_CLASS = 1024 * 1024;
/** The default cap on idle bytes: two 64 KiB reads (the store's floor) for 64 streams. */
const DEFAULT_MAX_IDLE = 8 * 1024 * 1024;

export class BufferPool {
  /** Idle buffers by size (each a power of two from MIN_CLASS to MAX_CLASS). */
  private readonly idle = new Map<number, Buffer[]>();
  private idleBytes = 0;

  constructor(private readonly maxIdleBytes = DEFAULT_MAX_IDLE) {}

  /**
   * A buffer of at least n bytes; or, when none of that size waits, the largest idle one of at least
   * `least` bytes (a caller that reads in chunks then reads smaller ones instead of making a buffer).
   */
  take(n: number, least = n): Buffer {
    if (n > MAX_CLASS) return Buffer.allocUnsafeSlow(n);
    const size = sizeFor(n);
    for (let s = size, floor = sizeFor(Math.min(least, n)); s >= floor; s /= 2) {
      const buf = this.idle.get(s)?.pop();
      if (!buf) continue;
      this.idleBytes -= s;
      return buf;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(buf: Buffer): void {
    const size = buf.length;
    // A view of a larger buffer (or one made to measure) is not one of ours.
    if (size > MAX_CLASS || size !== sizeFor(size) || buf.byteOffset !== 0 || buf.buffer.byteLength !== size) return;
    if (size > this.maxIdleBytes) return;
    // What was just given back is what answers use now (read sizes follow the number of streams):
    // idle buffers of other sizes make room for it, the largest first.
    while (this.idleBytes + size > this.maxIdleBytes && this.dropOther(size));
    if (this.idleBytes + size > this.maxIdleBytes) return;
    let list = this.idle.get(size);
    if (!list) this.idle.set(size, (list = []));
    list.push(buf);
    this.idleBytes += size;
  }

  /** Lets go of one idle buffer of a size other than `keep` (the largest such); false if there is none. */
  private dropOther(keep: number): boolean {
    let largest = 0;
    for (const [size, list] of this.idle) if (size !== keep && list.length > 0 && size > largest) largest = size;
    if (largest === 0) return false;
    this.idle.get(largest)!.pop();
    this.idleBytes -= largest;
    return true;
  }

  /** Bytes waiting to be taken again. */
  get idleSize(): number {
    return this.idleBytes;
  }
}

function sizeFor(n: number): number {
  let size = MIN_CLASS;
  while (size < n) size *= 2;
  return size;
}
