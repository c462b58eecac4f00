/**
 * Cache size in bytes and blobs, kept current from store events (added, removed) so a scrape never
 * walks the disk. The disk is walked once, at start, in the background; blobs added while that walk
 * runs are counted by their event only.
 */
import type { BlobInfo } from '../storage/store.js';

export class CacheStats {
  bytes = 0;
  blobs = 0;
  private scanning: Set<string> | undefined;

  added(digest: string, size: number): void {
    this.scanning?.add(digest);
    this.bytes += size;
    this.blobs += 1;
  }

  removed(digest: string, size: number): void {
    this.scanning?.add(digest);
    this.bytes -= size;
    this.blobs -= 1;
  }

  /** Adds what is already on disk. Call once at start. */
  async scan(list: AsyncIterable<BlobInfo>): Promise<void> {
    this.scanning = new Set();
    try {
      for await (const b of list) {
        if (this.scanning.has(b.digest)) continue;
        this.bytes += b.size;
        this.blobs += 1;
      }
    } finally {
      this.scanning = undefined;
    }
  }
}
