/**
 * FileBody: a stored blob's bytes as a Readable, and writeInto() (the HTTP answer's path), which
 * reuses two buffers (or one): a buffer must never be read into again before the writer called
 * back for it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBody } from '../../src/storage/file-body.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import type { BufferPool } from '../../src/util/buffer-pool.js';
import { digestOf } from '../helpers/digest.js';
import { ScribblingPool } from '../helpers/scribbling-pool.js';
import { SlowSink } from '../helpers/slow-sink.js';

const KiB = 1024;

describe('FileBody', () => {
  let dir: string;
  let file: string;
  const bytes = randomBytes(300 * KiB + 123);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'file-body-'));
    file = join(dir, 'blob');
    await writeFile(file, bytes);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const body = async (start: number, end: number, chunk: number) => new FileBody(await open(file, 'r'), start, end, chunk);
  const closed = (b: FileBody) => (b.closed ? Promise.resolve() : new Promise<void>((r) => b.once('close', () => r())));
  /** A store holding `bytes`, and a way to open them as the HTTP path gets them. */
  const storeWithBlob = async () => {
    const store = new FsBlobStore(join(dir, 'store'));
    await store.init();
    const digest = digestOf(bytes);
    await store.put(digest, bytes);
    return { store, digest, openBody: async () => (await store.open(digest))! as unknown as FileBody };
  };

  it('writeInto writes the range with two buffers, each reused only after the writer took it', async () => {
    const b = await body(1000, bytes.length - 1, 16 * KiB);
    const sink = new SlowSink();
    const finished = new Promise<void>((r) => sink.once('finish', () => r()));
    const n = await b.writeInto(sink);
    await finished;
    await closed(b);
    expect(Buffer.concat(sink.parts).equals(bytes.subarray(1000))).toBe(true);
    expect(n).toBe(bytes.length - 1000);
    expect(sink.parts.length).toBeGreaterThan(10);
    expect(sink.overwritten).toBe(0);
    expect(sink.buffers.size).toBeLessThanOrEqual(2);
  });

  it('a body smaller than one read takes one buffer; an empty one just ends', async () => {
    const small = await body(10, 99, 64 * KiB);
    const sink = new SlowSink();
    expect(await small.writeInto(sink)).toBe(90);
    expect(Buffer.concat(sink.parts).equals(bytes.subarray(10, 100))).toBe(true);

    const empty = await body(0, -1, 1);
    const none = new SlowSink();
    const finished = new Promise<void>((r) => none.once('finish', () => r()));
    expect(await empty.writeInto(none)).toBe(0);
    await finished;
    expect(none.parts).toEqual([]);
  });

  it('a file shorter than the range cuts the transfer (the writer is destroyed), never a short body', async () => {
    const b = await body(0, bytes.length - 1, 16 * KiB);
    await truncate(file, 100 * KiB);
    const sink = new SlowSink();
    const errored = new Promise<Error>((r) => sink.once('error', r));
    const n = await b.writeInto(sink);
    expect((await errored).message).toMatch(/ended at byte 102400/);
    expect(sink.destroyed).toBe(true);
    expect(n).toBeLessThanOrEqual(100 * KiB);
    await closed(b);
  });

  it('when the writer fails or closes first, the body stops and closes its file', async () => {
    const b = await body(0, bytes.length - 1, 16 * KiB);
    const sink = new SlowSink(3);
    sink.on('error', () => undefined);
    const n = await b.writeInto(sink);
    expect(n).toBe(3 * 16 * KiB);
    await closed(b);

    const c = await body(0, bytes.length - 1, 16 * KiB);
    const gone = new SlowSink();
    const written = c.writeInto(gone);
    gone.destroy();
    expect(await written).toBeLessThan(bytes.length);
    await closed(c);
  });

  it('a writer closed before writeInto starts (the client left during the lookup) gets nothing and the file is closed', async () => {
    const b = await body(0, bytes.length - 1, 16 * KiB);
    const sink = new SlowSink();
    sink.destroy();
    await new Promise((r) => sink.once('close', r));
    expect(await b.writeInto(sink)).toBe(0);
    expect(sink.parts).toEqual([]);
    await closed(b);
  });

  it('as a Readable it gives the same bytes; a short file is an error there too', async () => {
    const b = await body(5, bytes.length - 6, 16 * KiB);
    const chunks: Buffer[] = [];
    for await (const c of b) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(bytes.subarray(5, bytes.length - 5))).toBe(true);

    const short = await body(0, bytes.length - 1, 16 * KiB);
    await truncate(file, 20 * KiB);
    await expect(
      (async () => {
        for await (const c of short) void c;
      })(),
    ).rejects.toThrow(/ended at byte 20480/);
  });

  it('writeInto refuses a body already being read', async () => {
    const b = await body(0, bytes.length - 1, 16 * KiB);
    b.on('data', () => undefined);
    expect(() => b.writeInto(new SlowSink())).toThrow(/already being read/);
    b.destroy();
    await closed(b);
  });

  describe('with a pool of buffers', () => {
    const pooled = async (pool: BufferPool, start: number, end: number, chunk: number) => new FileBody(await open(file, 'r'), start, end, chunk, pool);

    it('gives its buffers back once the writer called back for them, and the next answer takes them again', async () => {
      const pool = new ScribblingPool(1024 * KiB);
      const first = new SlowSink();
      expect(await (await pooled(pool, 0, bytes.length - 1, 16 * KiB)).writeInto(first)).toBe(bytes.length);
      expect(first.bytes.equals(bytes)).toBe(true);
      expect(first.overwritten).toBe(0);
      expect(pool.given.length).toBe(2);
      expect(pool.idleSize).toBe(2 * 16 * KiB);

      const second = new SlowSink();
      await (await pooled(pool, 7, 70 * KiB, 16 * KiB)).writeInto(second);
      expect(second.bytes.equals(bytes.subarray(7, 70 * KiB + 1))).toBe(true);
      expect(second.overwritten).toBe(0);
      expect([...second.buffers].every((ab) => pool.gave(ab))).toBe(true);
      expect(pool.doubles).toBe(0);
    });

    it('reads no more than the planned size into a larger buffer of the pool (a power of two)', async () => {
      const pool = new ScribblingPool();
      const sink = new SlowSink();
      await (await pooled(pool, 0, bytes.length - 1, 100_000)).writeInto(sink);
      expect(sink.bytes.equals(bytes)).toBe(true);
      expect([...sink.buffers].every((ab) => ab.byteLength === 128 * KiB)).toBe(true);
      expect(sink.parts.map((p) => p.length)).toEqual([100_000, 100_000, 100_000, bytes.length - 300_000]);
    });

    it('after a busy spell (only 64 KiB buffers idle) a body planned for 256 KiB reads reads at least 128 KiB at a time', async () => {
      const pool = new ScribblingPool();
      const small = Array.from({ length: 8 }, () => pool.take(64 * KiB));
      for (const b of small) pool.give(b);
      const sink = new SlowSink();
      await (await pooled(pool, 0, bytes.length - 1, 256 * KiB)).writeInto(sink);
      expect(sink.bytes.equals(bytes)).toBe(true);
      expect(sink.parts.slice(0, -1).every((p) => p.length >= 128 * KiB)).toBe(true);
      expect([...sink.buffers].some((ab) => small.some((b) => b.buffer === ab))).toBe(false);
    });

    it('twenty answers at once share one pool without a byte of one reaching another', async () => {
      const pool = new ScribblingPool(256 * KiB);
      const ranges = Array.from({ length: 20 }, (_, i) => [i * 997, bytes.length - 1 - i * 1009] as const);
      const sinks = ranges.map(() => new SlowSink());
      await Promise.all(ranges.map(async ([s, e], i) => (await pooled(pool, s, e, [4, 8, 16, 64][i % 4]! * KiB)).writeInto(sinks[i]!)));
      for (const [i, [s, e]] of ranges.entries()) {
        expect(sinks[i]!.overwritten, `answer ${i}`).toBe(0);
        expect(sinks[i]!.bytes.equals(bytes.subarray(s, e + 1)), `answer ${i}`).toBe(true);
      }
      expect(pool.given.length).toBeGreaterThanOrEqual(20);
      expect(pool.doubles).toBe(0);
    });

    it('with a plan of one read it takes one buffer and reads into it again only after the writer called back', async () => {
      const pool = new ScribblingPool(1024 * KiB);
      const sink = new SlowSink();
      const b = new FileBody(await open(file, 'r'), 5, bytes.length - 1, { chunk: () => 16 * KiB, reads: () => 1 }, pool);
      expect(await b.writeInto(sink)).toBe(bytes.length - 5);
      expect(sink.bytes.equals(bytes.subarray(5))).toBe(true);
      expect(sink.parts.length).toBe(Math.ceil((bytes.length - 5) / (16 * KiB)));
      expect(sink.overwritten).toBe(0);
      expect(sink.buffers.size).toBe(1);
      expect(pool.given.length).toBe(1);
    });

    it('follows its plan as it changes: larger buffers and the second one go back to the pool, smaller reads go on', async () => {
      const pool = new ScribblingPool(4096 * KiB);
      const sink = new SlowSink();
      // Two reads of 128 KiB planned, then (as if many streams opened meanwhile) one of 16 KiB.
      let reads = 0; // reads() is asked once before each read, after chunk()
      const plan = { chunk: () => (reads < 2 ? 128 * KiB : 16 * KiB), reads: (): 1 | 2 => (++reads <= 2 ? 2 : 1) };
      const b = new FileBody(await open(file, 'r'), 0, bytes.length - 1, plan, pool);
      expect(await b.writeInto(sink)).toBe(bytes.length);
      expect(sink.bytes.equals(bytes)).toBe(true);
      expect(sink.overwritten).toBe(0);
      expect(pool.doubles).toBe(0);
      const sizes = sink.parts.map((p) => p.length);
      expect(sizes.slice(0, 2)).toEqual([128 * KiB, 128 * KiB]);
      expect(sizes.slice(2).every((n) => n <= 16 * KiB)).toBe(true);
      // Both 128 KiB buffers went back as soon as each was free; after them one 16 KiB buffer did every read.
      const big = pool.given.filter((g) => g.length === 128 * KiB);
      expect(big.length).toBe(2);
      expect(new Set([...sink.buffers].filter((ab) => ab.byteLength === 16 * KiB)).size).toBe(1);
      expect(sink.buffers.size).toBe(3);
    });

    it('a buffer whose write failed is not given back (the stream may still hold it)', async () => {
      const pool = new ScribblingPool(1024 * KiB);
      const sink = new SlowSink(3);
      sink.on('error', () => undefined);
      const b = await pooled(pool, 0, bytes.length - 1, 16 * KiB);
      expect(await b.writeInto(sink)).toBe(3 * 16 * KiB);
      await closed(b);
      expect(sink.failed.size).toBe(1);
      expect([...sink.failed].some((ab) => pool.gave(ab))).toBe(false);
      expect(pool.given.length).toBeLessThanOrEqual(1);
    });
  });

  it('through FsBlobStore: past 64 open streams (reads at the 64 KiB floor) a new stream holds one buffer, not two', async () => {
    const { openBody } = await storeWithBlob();
    const buffersOfNext = async () => {
      const sink = new SlowSink();
      const s = await openBody();
      await s.writeInto(sink);
      await closed(s);
      expect(sink.bytes.equals(bytes)).toBe(true);
      expect(sink.overwritten).toBe(0);
      return sink.buffers.size;
    };
    const held: FileBody[] = [];
    for (let i = 0; i < 63; i++) held.push(await openBody());
    expect(await buffersOfNext()).toBe(2); // the 64th: 64 KiB reads, two of them
    held.push(await openBody());
    expect(await buffersOfNext()).toBe(1); // the 65th
    for (const h of held) h.destroy();
    await Promise.all(held.map(closed));
  });

  it('through FsBlobStore: a stream opened alone reads as the streams open when it reads, not as at its open', async () => {
    const { openBody } = await storeWithBlob();
    const first = await openBody(); // alone: the whole 300 KiB in one read
    const held: FileBody[] = [];
    for (let i = 0; i < 70; i++) held.push(await openBody());
    const sink = new SlowSink();
    await first.writeInto(sink);
    await closed(first);
    expect(sink.bytes.equals(bytes)).toBe(true);
    expect(sink.parts.length).toBe(Math.ceil(bytes.length / (64 * KiB)));
    expect(sink.parts.slice(0, -1).every((p) => p.length === 64 * KiB)).toBe(true);
    expect(sink.buffers.size).toBe(1);
    for (const h of held) h.destroy();
    await Promise.all(held.map(closed));
  });

  it('through FsBlobStore: the blob counts as busy until writeInto is done with it', async () => {
    const { store, digest, openBody } = await storeWithBlob();
    const s = await openBody();
    expect(store.busy(digest)).toBe(true);
    const sink = new SlowSink();
    await s.writeInto(sink);
    await closed(s);
    expect(Buffer.concat(sink.parts).equals(bytes)).toBe(true);
    expect(store.busy(digest)).toBe(false);
  });
});
