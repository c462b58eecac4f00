/**
 * A BlobStore with bounded in-memory caches in front (a decorator with the same interface): blob
 * sizes, and the bytes of small blobs read whole (manifests), so a cached manifest or a known blob
 * is answered without touching the disk. Blobs are immutable by digest, so an entry is only ever
 * dropped: when the store says the blob is gone, or when it is deleted through this decorator.
 */
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { BlobInfo, BlobStore, BlobWriter, ByteRange, StatOptions } from '../storage/store.js';
import { boundedLru } from '../util/lru.js';

export interface CachingBlobStoreOptions {
  /** Bytes of small blobs (manifests) kept in memory; 0 keeps none. */
  memoryBytes: number;
  /** Blobs larger than this are never kept in memory. Default 4 MiB. */
  maxCachedBlob?: number;
  /** Entries of the size cache. Default 100 000. */
  maxEntries?: number;
}

export class CachingBlobStore implements BlobStore {
  private readonly sizes: LRUCache<string, number>;
  private readonly bytes: LRUCache<string, Buffer> | undefined;
  private readonly maxCachedBlob: number;

  /** The wrapped store's, when it has one (a decorator hides no capability). */
  readonly fileOf?: (digest: string) => string;

  constructor(private readonly store: BlobStore, opts: CachingBlobStoreOptions) {
    if (store.fileOf) this.fileOf = (digest) => store.fileOf!(digest);
    this.sizes = boundedLru(opts.maxEntries ?? 100_000);
    this.maxCachedBlob = opts.maxCachedBlob ?? 4 * 1024 * 1024;
    this.bytes = opts.memoryBytes > 0 ? new LRUCache({ maxSize: opts.memoryBytes, sizeCalculation: (b) => Math.max(1, b.length + 64) }) : undefined;
  }

  init(): Promise<void> {
    return this.store.init();
  }

  async stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    const size = opts?.mtime ? undefined : this.sizes.get(digest);
    if (size !== undefined) return { digest, size };
    // Asked for the time it was stored: only the store knows (passed through).
    const info = await this.store.stat(digest, opts);
    if (info) this.sizes.set(digest, info.size);
    return info;
  }

  async open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    const s = await this.store.open(digest, range);
    if (!s) this.forget(digest);
    return s;
  }

  async read(digest: string): Promise<Buffer | undefined> {
    const hit = this.bytes?.get(digest);
    if (hit) return hit;
    const b = await this.store.read(digest);
    if (!b) {
      this.forget(digest);
      return undefined;
    }
    this.sizes.set(digest, b.length);
    if (b.length <= this.maxCachedBlob) this.bytes?.set(digest, b);
    return b;
  }

  createWriter(digest: string): Promise<BlobWriter> {
    return this.store.createWriter(digest);
  }

  async put(digest: string, bytes: Uint8Array): Promise<void> {
    await this.store.put(digest, bytes);
    this.sizes.set(digest, bytes.length);
    if (bytes.length <= this.maxCachedBlob) this.bytes?.set(digest, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
  }

  async delete(digest: string): Promise<void> {
    this.forget(digest);
    await this.store.delete(digest);
    this.forget(digest);
  }

  list(): AsyncIterable<BlobInfo> {
    return this.store.list();
  }

  busy(digest: string): boolean {
    return this.store.busy(digest);
  }

  space(): Promise<{ free: number; total: number } | undefined> {
    return this.store.space();
  }

  sweepTemp(olderThanMs: number): Promise<number> {
    return this.store.sweepTemp(olderThanMs);
  }

  private forget(digest: string): void {
    this.sizes.delete(digest);
    this.bytes?.delete(digest);
  }
}
