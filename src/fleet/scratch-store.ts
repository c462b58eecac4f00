/**
 * Where a replica keeps the bytes it streams from another replica (the owner of the download):
 * on its own disk, not in the shared store, which the owner fills. Writers go to a local scratch
 * store and are verified there like any download; at commit the bytes are discarded, unless this
 * replica took the download over from an owner that died (`promote(digest)`), in which case the
 * verified blob is copied into the shared store first. Reads go to the shared store.
 *
 * Only `createWriter` and `open` are used by the transfer engine; the rest delegates to the shared
 * store so this is a BlobStore like any other.
 */
import type { Readable } from 'node:stream';
import type { BlobInfo, BlobStore, BlobWriter, ByteRange, StatOptions } from '../storage/store.js';

export class ScratchStore implements BlobStore {
  constructor(
    private readonly scratch: BlobStore,
    private readonly shared: BlobStore,
    /** Whether this replica owns the digest's download now (took it over): the blob goes to the shared store. */
    private readonly promote: (digest: string) => boolean,
  ) {}

  init(): Promise<void> {
    return this.scratch.init();
  }
  stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    return this.shared.stat(digest, opts);
  }
  open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    return this.shared.open(digest, range);
  }
  read(digest: string): Promise<Buffer | undefined> {
    return this.shared.read(digest);
  }
  put(digest: string, bytes: Uint8Array): Promise<void> {
    return this.shared.put(digest, bytes);
  }
  delete(digest: string): Promise<void> {
    return this.shared.delete(digest);
  }
  list(): AsyncIterable<BlobInfo> {
    return this.shared.list();
  }
  busy(digest: string): boolean {
    return this.shared.busy(digest);
  }
  space(): Promise<{ free: number; total: number } | undefined> {
    return this.shared.space();
  }
  sweepTemp(olderThanMs: number): Promise<number> {
    return this.scratch.sweepTemp(olderThanMs);
  }

  async createWriter(digest: string): Promise<BlobWriter> {
    const inner = await this.scratch.createWriter(digest);
    const scratch = this.scratch;
    const shared = this.shared;
    const promote = this.promote;
    return {
      digest,
      get written() {
        return inner.written;
      },
      write: (data) => inner.write(data),
      readAt: (position, length, into) => inner.readAt(position, length, into),
      abort: () => inner.abort(),
      close: () => inner.close(),
      async commit(expectedSize, onVerified) {
        await inner.commit(expectedSize, onVerified);
        try {
          if (promote(digest) && !(await shared.stat(digest))) await copyInto(scratch, shared, digest);
        } finally {
          await scratch.delete(digest);
        }
      },
    };
  }
}

/** Copies a verified blob from one store to another (the target verifies it again). */
async function copyInto(from: BlobStore, to: BlobStore, digest: string): Promise<void> {
  const src = await from.open(digest);
  if (!src) throw new Error(`scratch copy of ${digest} vanished before it was promoted`);
  let w: BlobWriter;
  try {
    w = await to.createWriter(digest);
  } catch (e) {
    // The shared store refused (unreachable, full): the scratch file is deleted next, and an open
    // handle would keep its disk space (and its blob busy) until a garbage collection.
    src.destroy();
    throw e;
  }
  try {
    let batch: Uint8Array[] = [];
    let bytes = 0;
    for await (const chunk of src as AsyncIterable<Uint8Array>) {
      batch.push(chunk);
      bytes += chunk.length;
      if (bytes >= 4 * 1024 * 1024) {
        await w.write(batch);
        batch = [];
        bytes = 0;
      }
    }
    if (batch.length) await w.write(batch);
    await w.commit();
  } catch (e) {
    src.destroy();
    await w.abort();
    throw e;
  } finally {
    await w.close();
  }
}
