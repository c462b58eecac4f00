/**
 * The one contract every BlobStore implementation must pass (style rule 3). Run it from a
 * `<impl>.test.ts` file:
 *
 *   blobStoreContract('FsBlobStore', async () => ({ store: new FsBlobStore(dir), cleanup, tempEntries, plantLeftover }));
 *
 * `make` returns a fresh, empty store that has NOT been initialised yet (the suite calls init()).
 * The optional hooks let the suite look at an implementation's temp area: without them the checks
 * that "nothing is left behind" are limited to what the public interface shows.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DigestMismatchError, type BlobStore, type BlobWriter } from '../../src/storage/store.js';
import { digestOf } from '../helpers/digest.js';

export interface BlobStoreFixture {
  store: BlobStore;
  cleanup(): Promise<void>;
  /** Names of in-progress (temp) entries: every failed or aborted write must leave none. */
  tempEntries?(): Promise<string[]>;
  /** Leaves behind what a crash in the middle of a write would (called before init). */
  plantLeftover?(): Promise<void>;
}

/** Re-exported for the suites that import it from here; the one definition is helpers/digest.ts. */
export { digestOf };

/** Compares bytes by size and hash: deep equality on megabyte buffers is very slow in expect(). */
export function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeDefined();
  expect({ size: actual!.length, digest: digestOf(actual!) }).toEqual({ size: expected.length, digest: digestOf(expected) });
}

export async function readStream(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

export function blobStoreContract(name: string, make: () => Promise<BlobStoreFixture>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let fx: BlobStoreFixture;
    let store: BlobStore;
    const writers: BlobWriter[] = [];

    /** A writer closed after the test, whatever happens in it. */
    const writer = async (digest: string): Promise<BlobWriter> => {
      const w = await store.createWriter(digest);
      writers.push(w);
      return w;
    };
    const expectNoTempEntries = async () => {
      if (fx.tempEntries) expect(await fx.tempEntries()).toEqual([]);
    };

    beforeEach(async () => {
      fx = await make();
      store = fx.store;
      await store.init();
    });

    afterEach(async () => {
      for (const w of writers.splice(0)) await w.close();
      await fx.cleanup();
    });

    describe('init', () => {
      it('sweeps what a crashed write left in the temp area', async () => {
        const other = await make();
        try {
          await other.plantLeftover?.();
          if (other.tempEntries && other.plantLeftover) expect((await other.tempEntries()).length).toBeGreaterThan(0);
          await other.store.init();
          if (other.tempEntries) expect(await other.tempEntries()).toEqual([]);
          expect(await collect(other.store.list())).toEqual([]);
        } finally {
          await other.cleanup();
        }
      });

      it('after a restart, bytes of a write that never committed are not a blob, and the digest can be written again', async () => {
        const bytes = randomBytes(10_000);
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await store.init(); // what start-up after a crash does
        expect(await store.stat(d)).toBeUndefined();
        await expectNoTempEntries();
        await store.put(d, bytes);
        expectBytes(await store.read(d), bytes);
      });

      it('is idempotent and keeps committed blobs', async () => {
        const bytes = Buffer.from('kept across restarts');
        const d = digestOf(bytes);
        await store.put(d, bytes);
        await store.init();
        expect(await store.stat(d)).toEqual({ digest: d, size: bytes.length });
        expectBytes(await store.read(d), bytes);
      });
    });

    describe('absent digests', () => {
      const absent = digestOf(Buffer.from('never stored'));

      it('stat, open and read answer undefined', async () => {
        expect(await store.stat(absent)).toBeUndefined();
        expect(await store.open(absent)).toBeUndefined();
        expect(await store.open(absent, { start: 0, end: 1 })).toBeUndefined();
        expect(await store.read(absent)).toBeUndefined();
      });

      it('an empty store lists nothing and deleting an absent digest is a no-op', async () => {
        expect(await collect(store.list())).toEqual([]);
        await expect(store.delete(absent)).resolves.toBeUndefined();
        expect(await store.stat(absent)).toBeUndefined();
      });
    });

    describe('put', () => {
      it('stores bytes readable through stat, read and open (whole and inclusive ranges)', async () => {
        const bytes = Buffer.from('0123456789abcdefghij');
        const d = digestOf(bytes);
        await store.put(d, bytes);
        expect(await store.stat(d)).toEqual({ digest: d, size: 20 });
        expectBytes(await store.read(d), bytes);
        expectBytes(await readStream((await store.open(d))!), bytes);
        expect((await readStream((await store.open(d, { start: 2, end: 5 }))!)).toString()).toBe('2345');
        expect((await readStream((await store.open(d, { start: 0, end: 0 }))!)).toString()).toBe('0');
        expect((await readStream((await store.open(d, { start: 19, end: 19 }))!)).toString()).toBe('j');
        expect((await readStream((await store.open(d, { start: 10, end: 19 }))!)).toString()).toBe('abcdefghij');
      });

      it('serves ranges of a multi-megabyte blob exactly, across internal chunk boundaries', async () => {
        const bytes = randomBytes(3 * 1024 * 1024 + 123);
        const d = digestOf(bytes);
        await store.put(d, bytes);
        expect(await store.stat(d)).toEqual({ digest: d, size: bytes.length });
        expectBytes(await readStream((await store.open(d))!), bytes);
        expectBytes(await store.read(d), bytes);
        const start = 1024 * 1024 - 7;
        const end = 2 * 1024 * 1024 + 7;
        expectBytes(await readStream((await store.open(d, { start, end }))!), bytes.subarray(start, end + 1));
        expectBytes(await readStream((await store.open(d, { start: 3 * 1024 * 1024, end: bytes.length - 1 }))!), bytes.subarray(3 * 1024 * 1024));
      });

      it('stores the empty blob', async () => {
        const empty = Buffer.alloc(0);
        const d = digestOf(empty);
        expect(d).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
        await store.put(d, empty);
        expect(await store.stat(d)).toEqual({ digest: d, size: 0 });
        expect((await store.read(d))!.length).toBe(0);
        expect((await readStream((await store.open(d))!)).length).toBe(0);
      });

      it('refuses bytes that do not match the digest and keeps nothing', async () => {
        const d = digestOf(Buffer.from('the real content'));
        const err = await store.put(d, Buffer.from('something else')).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DigestMismatchError);
        expect((err as DigestMismatchError).expected).toBe(d);
        expect((err as DigestMismatchError).actual).toBe(digestOf(Buffer.from('something else')));
        expect(await store.stat(d)).toBeUndefined();
        expect(await store.read(d)).toBeUndefined();
        await expectNoTempEntries();
      });

      it('putting a digest that is already stored succeeds and changes nothing', async () => {
        const bytes = Buffer.from('twice');
        const d = digestOf(bytes);
        await store.put(d, bytes);
        await store.put(d, bytes);
        expectBytes(await store.read(d), bytes);
        expect(await collect(store.list())).toEqual([{ digest: d, size: 5 }]);
        await expectNoTempEntries();
      });
    });

    describe('writer', () => {
      it('publishes the bytes only at commit', async () => {
        const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(1)];
        const bytes = Buffer.concat(parts);
        const d = digestOf(bytes);
        const w = await writer(d);
        expect(w.digest).toBe(d);
        expect(w.written).toBe(0);
        for (const p of parts) await w.write(p);
        expect(w.written).toBe(bytes.length);
        expect(await store.stat(d)).toBeUndefined();
        expect(await store.open(d)).toBeUndefined();
        await w.commit(bytes.length);
        expect(await store.stat(d)).toEqual({ digest: d, size: bytes.length });
        expectBytes(await store.read(d), bytes);
        await w.close();
        expectBytes(await store.read(d), bytes); // closing a committed writer keeps the blob
        await expectNoTempEntries();
      });

      it('commit without an expected size verifies the digest alone', async () => {
        const bytes = Buffer.from('no size given');
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await w.commit();
        expectBytes(await store.read(d), bytes);
      });

      it('commit with the wrong bytes throws DigestMismatchError and keeps nothing', async () => {
        const good = Buffer.from('good bytes');
        const bad = Buffer.from('evil bytes');
        const d = digestOf(good);
        const w = await writer(d);
        await w.write(bad);
        const err = await w.commit(bad.length).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DigestMismatchError);
        expect((err as DigestMismatchError).actual).toBe(digestOf(bad));
        expect((err as DigestMismatchError).size).toBe(bad.length);
        expect(await store.stat(d)).toBeUndefined();
        expect(await store.read(d)).toBeUndefined();
        await expectNoTempEntries();
        await expect(w.abort()).resolves.toBeUndefined(); // safe after a failed commit
        await w.close();
        expect(await store.stat(d)).toBeUndefined();
      });

      it('commit with a size other than the bytes written throws and keeps nothing', async () => {
        const bytes = Buffer.from('exactly 24 bytes long!!!');
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await expect(w.commit(bytes.length + 1)).rejects.toBeInstanceOf(DigestMismatchError);
        expect(await store.stat(d)).toBeUndefined();
        await expectNoTempEntries();
      });

      it('abort keeps nothing, and the writer refuses further writes and commits', async () => {
        const bytes = randomBytes(5000);
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await w.abort();
        expect(await store.stat(d)).toBeUndefined();
        await expectNoTempEntries();
        await expect(w.write(bytes)).rejects.toThrow();
        await expect(w.commit()).rejects.toThrow();
        expect(await store.stat(d)).toBeUndefined();
      });

      it('close without commit discards the bytes', async () => {
        const bytes = randomBytes(100);
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await w.close();
        expect(await store.stat(d)).toBeUndefined();
        await expectNoTempEntries();
      });

      it('refuses writes after commit, and a second commit', async () => {
        const bytes = Buffer.from('once');
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes);
        await w.commit(4);
        await expect(w.write(Buffer.from('more'))).rejects.toThrow();
        await expect(w.commit(4)).rejects.toThrow();
        expectBytes(await store.read(d), bytes);
      });

      it('readAt returns the bytes written so far, before and after commit, until close', async () => {
        const a = randomBytes(3000);
        const b = randomBytes(4000);
        const bytes = Buffer.concat([a, b]);
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(a);
        expectBytes(await w.readAt(0, a.length), a);
        expectBytes(await w.readAt(100, 50), a.subarray(100, 150));
        // Asking past what was written returns only what exists.
        expectBytes(await w.readAt(2900, 500), a.subarray(2900));
        await w.write(b);
        expectBytes(await w.readAt(2900, 500), bytes.subarray(2900, 3400));
        // Concurrent readers at different positions.
        const [r1, r2, r3] = await Promise.all([w.readAt(0, 7000), w.readAt(3000, 4000), w.readAt(6999, 10)]);
        expectBytes(r1, bytes);
        expectBytes(r2, b);
        expectBytes(r3, bytes.subarray(6999));
        await w.commit(bytes.length);
        expectBytes(await w.readAt(0, bytes.length), bytes);
        expectBytes(await w.readAt(5000, 100), bytes.subarray(5000, 5100));
      });

      it('readAt still works after abort (for readers of a failed download), until close', async () => {
        const bytes = randomBytes(2048);
        const w = await writer(digestOf(Buffer.from('other')));
        await w.write(bytes);
        await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
        expectBytes(await w.readAt(0, 2048), bytes);
        await w.abort();
        expectBytes(await w.readAt(1024, 1024), bytes.subarray(1024));
      });

      it('two concurrent writers of one digest both commit and the content is right', async () => {
        const bytes = randomBytes(256 * 1024);
        const d = digestOf(bytes);
        const [w1, w2] = await Promise.all([writer(d), writer(d)]);
        for (let off = 0; off < bytes.length; off += 16 * 1024) {
          const chunk = bytes.subarray(off, off + 16 * 1024);
          await Promise.all([w1.write(chunk), w2.write(chunk)]);
        }
        await Promise.all([w1.commit(bytes.length), w2.commit(bytes.length)]);
        expect(await store.stat(d)).toEqual({ digest: d, size: bytes.length });
        expectBytes(await store.read(d), bytes);
        await Promise.all([w1.close(), w2.close()]);
        expectBytes(await store.read(d), bytes);
        expect(await collect(store.list())).toEqual([{ digest: d, size: bytes.length }]);
        await expectNoTempEntries();
      });

      it('write takes several chunks at once, in order, and verifies them like single writes', async () => {
        const bytes = randomBytes(300 * 1024 + 5);
        const d = digestOf(bytes);
        const w = await writer(d);
        await w.write(bytes.subarray(0, 1000));
        await w.write([bytes.subarray(1000, 70_000), bytes.subarray(70_000, 70_001), bytes.subarray(70_001)]);
        expect(w.written).toBe(bytes.length);
        expectBytes(await w.readAt(69_990, 20), bytes.subarray(69_990, 70_010));
        let verified = false;
        await w.commit(bytes.length, () => (verified = true));
        expect(verified).toBe(true);
        await w.close();
        expectBytes(await store.read(d), bytes);
      });

      it('a writer for a digest already stored commits as a no-op', async () => {
        const bytes = Buffer.from('already here');
        const d = digestOf(bytes);
        await store.put(d, bytes);
        const w = await writer(d);
        await w.write(bytes);
        await expect(w.commit(bytes.length)).resolves.toBeUndefined();
        expectBytes(await store.read(d), bytes);
      });

      it('a failed writer does not disturb a stored blob of the same digest', async () => {
        const bytes = Buffer.from('precious');
        const d = digestOf(bytes);
        await store.put(d, bytes);
        const w = await writer(d);
        await w.write(Buffer.from('garbage!'));
        await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
        await w.close();
        expectBytes(await store.read(d), bytes);
      });
    });

    describe('delete and list', () => {
      it('delete removes a blob', async () => {
        const keep = Buffer.from('keep');
        const drop = Buffer.from('drop');
        await store.put(digestOf(keep), keep);
        await store.put(digestOf(drop), drop);
        await store.delete(digestOf(drop));
        expect(await store.stat(digestOf(drop))).toBeUndefined();
        expect(await store.read(digestOf(drop))).toBeUndefined();
        expect(await store.open(digestOf(drop))).toBeUndefined();
        expect(await store.read(digestOf(keep))).toEqual(keep);
        expect(await collect(store.list())).toEqual([{ digest: digestOf(keep), size: 4 }]);
      });

      it('busy while a stream of the blob is open, and not after', async () => {
        const b = randomBytes(200_000);
        await store.put(digestOf(b), b);
        expect(store.busy(digestOf(b))).toBe(false);
        const s = (await store.open(digestOf(b)))!;
        expect(store.busy(digestOf(b))).toBe(true);
        await new Promise<void>((resolve) => {
          s.once('close', () => resolve());
          s.resume();
        });
        expect(store.busy(digestOf(b))).toBe(false);
      });

      it('space tells free and total bytes, or nothing; sweepTemp leaves in-progress writes younger than its age', async () => {
        const space = await store.space();
        if (space) expect(space.total).toBeGreaterThanOrEqual(space.free);
        const pending = Buffer.from('in progress');
        const w = await writer(digestOf(pending));
        await w.write(pending);
        expect(await store.sweepTemp(60 * 60 * 1000)).toBe(0);
        await w.commit(pending.length);
        expect(await store.read(digestOf(pending))).toEqual(pending);
      });

      it('list yields every stored blob with its size, and nothing in progress', async () => {
        const blobs = [Buffer.from('one'), Buffer.from('two two'), randomBytes(100_000)];
        const expected = [];
        for (const [i, b] of blobs.entries()) {
          const d = digestOf(b, i === 1 ? 'sha512' : 'sha256');
          await store.put(d, b);
          expected.push({ digest: d, size: b.length });
        }
        const pending = Buffer.from('in progress');
        const w = await writer(digestOf(pending));
        await w.write(pending);
        const listed = await collect(store.list());
        expect(sortByDigest(listed)).toEqual(sortByDigest(expected));
      });
    });

    describe('sha512', () => {
      it('stores, reads, ranges, lists and deletes sha512 blobs', async () => {
        const bytes = randomBytes(9000);
        const d = digestOf(bytes, 'sha512');
        expect(d).toMatch(/^sha512:[0-9a-f]{128}$/);
        await store.put(d, bytes);
        expect(await store.stat(d)).toEqual({ digest: d, size: 9000 });
        expectBytes(await store.read(d), bytes);
        expectBytes(await readStream((await store.open(d, { start: 8000, end: 8999 }))!), bytes.subarray(8000));
        expect(await collect(store.list())).toEqual([{ digest: d, size: 9000 }]);
        await store.delete(d);
        expect(await store.stat(d)).toBeUndefined();
      });

      it('verifies sha512 writers with the sha512 hash', async () => {
        const bytes = Buffer.from('sha512 content');
        const d = digestOf(bytes, 'sha512');
        const w = await writer(d);
        await w.write(Buffer.from('sha512 c0ntent'));
        const err = await w.commit().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DigestMismatchError);
        expect((err as DigestMismatchError).actual).toMatch(/^sha512:[0-9a-f]{128}$/);
        expect(await store.stat(d)).toBeUndefined();
        // The sha256 digest of the same bytes is a different blob.
        const w2 = await writer(d);
        await w2.write(bytes);
        await w2.commit(bytes.length);
        expectBytes(await store.read(d), bytes);
        expect(await store.stat(digestOf(bytes, 'sha256'))).toBeUndefined();
      });
    });
  });
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function sortByDigest<T extends { digest: string }>(xs: T[]): T[] {
  return [...xs].sort((a, b) => a.digest.localeCompare(b.digest));
}
