/**
 * The blob store as the serving path sees it (a decorator with the same interface): while the
 * backend cannot be reached (StoreUnavailableError: an object store down, refusing, failing), a
 * read is a miss and storing a manifest keeps nothing, so the registry fetches from upstream and
 * passes the verified bytes through, as it does for a full store (a StoreFullError from put is
 * kept-nothing too). Writers need no help: the download passes through when createWriter or write
 * throws a StoreFullError. The lifecycle (eviction, GC, admin) uses the store without this
 * decorator, so an outage never looks like an empty cache to it.
 */
import type { Readable } from 'node:stream';
import { StoreFullError, StoreUnavailableError, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange, type StatOptions } from '../storage/store.js';

export class OutageTolerantBlobStore implements BlobStore {
  /** The wrapped store's, when it has one (a decorator hides no capability: nginx's X-Accel-Redirect needs it). */
  readonly fileOf?: (digest: string) => string;

  /** `onOutage` is told of each failure served as a miss (for a log line or a counter; must not throw). */
  constructor(private readonly store: BlobStore, private readonly onOutage: (op: string, e: StoreFullError) => void) {
    if (store.fileOf) this.fileOf = (digest) => store.fileOf!(digest);
  }

  private async miss<T>(op: string, run: () => Promise<T | undefined>): Promise<T | undefined> {
    try {
      return await run();
    } catch (e) {
      if (!(e instanceof StoreUnavailableError)) throw e;
      this.onOutage(op, e);
      return undefined;
    }
  }

  init(): Promise<void> {
    return this.store.init();
  }
  stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    return this.miss('stat', () => this.store.stat(digest, opts));
  }
  open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    return this.miss('open', () => this.store.open(digest, range));
  }
  read(digest: string): Promise<Buffer | undefined> {
    return this.miss('read', () => this.store.read(digest));
  }
  createWriter(digest: string): Promise<BlobWriter> {
    return this.store.createWriter(digest);
  }
  async put(digest: string, bytes: Uint8Array): Promise<void> {
    try {
      await this.store.put(digest, bytes);
    } catch (e) {
      if (!(e instanceof StoreFullError)) throw e;
      this.onOutage('put', e);
    }
  }
  delete(digest: string): Promise<void> {
    return this.store.delete(digest);
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
}
