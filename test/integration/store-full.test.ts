/**
 * A full store turns a download into a pass-through: every reader still gets the verified bytes,
 * nothing is kept, and a mismatch still aborts the readers.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { InflightDownloads, type InflightObserver } from '../../src/transfer/inflight.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { StoreFullError, type BlobWriter } from '../../src/storage/store.js';
import type { BlobBody } from '../../src/upstream/types.js';
import { digestOf } from '../helpers/digest.js';
import { pseudoRandomBytes } from '../helpers/images.js';

/** An FsBlobStore whose writers fail with ENOSPC once `capacity` bytes were written (or at creation when 0). */
class FullStore extends FsBlobStore {
  constructor(root: string, private readonly capacity: number) {
    super(root);
  }
  override async createWriter(digest: string): Promise<BlobWriter> {
    if (this.capacity === 0) throw new StoreFullError(Object.assign(new Error('no space'), { code: 'ENOSPC' }));
    const w = await super.createWriter(digest);
    const capacity = this.capacity;
    const write = w.write.bind(w);
    w.write = async (chunk) => {
      const n = Array.isArray(chunk) ? chunk.reduce((a, b) => a + b.length, 0) : chunk.length;
      if (w.written + n > capacity) throw new StoreFullError(Object.assign(new Error('no space'), { code: 'ENOSPC' }));
      return write(chunk);
    };
    return w;
  }
}

/** Writes fine; keeping the verified blob fails (ENOSPC creating blobs/sha256/xx/, S3 away at the upload). */
class NoRoomToKeep extends FsBlobStore {
  override async createWriter(digest: string): Promise<BlobWriter> {
    const w = await super.createWriter(digest);
    const commit = w.commit.bind(w);
    w.commit = (size, onVerified) =>
      commit(size, () => {
        onVerified?.();
        throw new StoreFullError(Object.assign(new Error('ENOSPC: mkdir'), { code: 'ENOSPC' }));
      }).catch(async (e: unknown) => {
        await w.abort();
        throw e;
      });
    return w;
  }
}

function source(bytes: Buffer, chunk = 64 * 1024): (offset: number) => Promise<BlobBody> {
  return async (offset) => {
    async function* body() {
      for (let p = offset; p < bytes.length; p += chunk) {
        await new Promise((r) => setImmediate(r));
        yield bytes.subarray(p, Math.min(bytes.length, p + chunk));
      }
    }
    return { start: offset, size: bytes.length, body: body(), cancel: () => undefined };
  };
}

async function drain(r: Readable): Promise<{ bytes: Buffer; error?: Error }> {
  const parts: Buffer[] = [];
  try {
    for await (const c of r) parts.push(c as Buffer);
    return { bytes: Buffer.concat(parts) };
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: e as Error };
  }
}

const events: string[] = [];
const observer: InflightObserver = {
  started: () => events.push('started'),
  joined: () => events.push('joined'),
  resumed: () => events.push('resumed'),
  completed: () => events.push('completed'),
  spilled: () => events.push('spilled'),
  failed: () => events.push('failed'),
};

describe('a full store', () => {
  let root = '';
  afterEach(async () => {
    events.length = 0;
    if (root) await rm(root, { recursive: true, force: true });
  });

  for (const capacity of [0, 300_000]) {
    it(`passes the blob through to every reader and keeps nothing (store full ${capacity === 0 ? 'from the start' : 'mid-download'})`, async () => {
      root = await mkdtemp(join(tmpdir(), 'full-'));
      const store = new FullStore(root, capacity);
      await store.init();
      const inflight = new InflightDownloads({ store, observer });
      const blob = pseudoRandomBytes(1_000_000, `full-${capacity}`);
      const digest = digestOf(blob);
      const dl = inflight.join(digest, 'r', source(blob));
      await dl.ready;
      const readers = [dl.createReader(), dl.createReader(), dl.createReader(500_000, 599_999)];
      const [a, b, c] = await Promise.all(readers.map(drain));
      expect(a!.error).toBeUndefined();
      expect(a!.bytes.equals(blob)).toBe(true);
      expect(b!.bytes.equals(blob)).toBe(true);
      expect(c!.bytes.equals(blob.subarray(500_000, 600_000))).toBe(true);
      await dl.finished;
      expect(await store.stat(digest)).toBeUndefined();
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
      expect(events).toContain('spilled');
      expect(events).not.toContain('completed');
    });
  }

  it('a blob verified and then not kept (the store refused the last step): readers still get every byte, nothing is kept', async () => {
    root = await mkdtemp(join(tmpdir(), 'full-'));
    const store = new NoRoomToKeep(root);
    await store.init();
    const inflight = new InflightDownloads({ store, observer });
    const blob = pseudoRandomBytes(2_000_000, 'full-at-commit');
    const digest = digestOf(blob);
    const dl = inflight.join(digest, 'r', source(blob));
    await dl.ready;
    // A slow reader: still far from the end when the download is verified and its commit fails.
    const slow = (async () => {
      const parts: Buffer[] = [];
      try {
        for await (const c of dl.createReader()) {
          parts.push(c as Buffer);
          await new Promise((r) => setTimeout(r, 2));
        }
        return { bytes: Buffer.concat(parts) };
      } catch (e) {
        return { bytes: Buffer.concat(parts), error: e as Error };
      }
    })();
    const fast = drain(dl.createReader());
    const [a, b] = await Promise.all([slow, fast]);
    expect(a.error).toBeUndefined();
    expect(a.bytes.equals(blob)).toBe(true);
    expect(b.error).toBeUndefined();
    expect(b.bytes.equals(blob)).toBe(true);
    await dl.finished;
    expect(await store.stat(digest)).toBeUndefined();
    expect(events).toContain('spilled');
    expect(events).not.toContain('failed');
    // The next request fetches afresh.
    expect(inflight.join(digest, 'r', source(blob))).not.toBe(dl);
  });

  it('still aborts readers on a digest mismatch while passing through', async () => {
    root = await mkdtemp(join(tmpdir(), 'full-'));
    const store = new FullStore(root, 0);
    await store.init();
    const inflight = new InflightDownloads({ store, observer });
    const blob = pseudoRandomBytes(400_000, 'full-bad');
    const wrong = Buffer.from(blob);
    wrong[200_000]! ^= 0xff;
    const dl = inflight.join(digestOf(blob), 'r', source(wrong));
    await dl.ready;
    const got = await drain(dl.createReader());
    expect(got.error).toBeDefined();
    expect(got.bytes.length).toBeLessThan(blob.length);
    await expect(dl.finished).rejects.toThrow();
  });
});
