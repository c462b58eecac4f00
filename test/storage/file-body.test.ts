/**
 * FileBody: a stored blob's bytes as a Readable, and writeInto() (the HTTP answer's path), which
 * reuses two buffers: a buffer must never be read into again before the writer called back for it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBody } from '../../src/storage/file-body.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { digestOf } from '../helpers/digest.js';
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

  it('through FsBlobStore: the blob counts as busy until writeInto is done with it', async () => {
    const store = new FsBlobStore(join(dir, 'store'));
    await store.init();
    const digest = digestOf(bytes);
    await store.put(digest, bytes);
    const s = (await store.open(digest))! as unknown as FileBody;
    expect(store.busy(digest)).toBe(true);
    const sink = new SlowSink();
    await s.writeInto(sink);
    await closed(s);
    expect(Buffer.concat(sink.parts).equals(bytes)).toBe(true);
    expect(store.busy(digest)).toBe(false);
  });
});
