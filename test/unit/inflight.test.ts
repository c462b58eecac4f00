import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UpstreamError } from '../../src/upstream/errors.js';
import { ScribblingPool } from '../helpers/scribbling-pool.js';
import { SlowSink } from '../helpers/slow-sink.js';
import { waitFor } from '../helpers/wait.js';
import { InflightDownloads, type BlobSource, type Download, type InflightObserver } from '../../src/transfer/inflight.js';
import { SPILL_WINDOW } from '../../src/transfer/download.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { StoreFullError, type BlobStore, type BlobWriter } from '../../src/storage/store.js';
import type { BlobBody } from '../../src/upstream/types.js';
import { digestOf, expectBytes } from '../storage/store.contract.js';

const CHUNK = 64 * 1024;
const ORIGIN = 'docker.io/library/alpine';

/** How one call of the scripted upstream behaves. */
interface Step {
  /** Throw (a cut connection) after sending this many bytes of this body. */
  cutAfter?: number;
  /** End the body cleanly after this many bytes (a truncated response). */
  endAfter?: number;
  /** Answer from 0 whatever offset was asked (an upstream that ignores Range). */
  ignoreRange?: boolean;
  /** Answers a Range from its start rounded down to a multiple of this (a CDN serving ranges in blocks): a 206 from before the offset asked. */
  roundDown?: number;
  /** The bytes sent instead of the real blob (a corrupted upstream). */
  data?: Buffer;
  /** The size announced; default the blob's length, null for none. */
  size?: number | null;
  /** Fail before any body (an upstream error status). */
  openError?: unknown;
  /** Wait this long before answering (slow response headers). */
  openDelayMs?: number;
  /** Send the body `bytes` at a time, `everyMs` apart (a trickle). */
  pace?: { bytes: number; everyMs: number };
}

interface Script {
  source: BlobSource;
  /** The offset of every call, in order. */
  offsets: number[];
  cancels: number;
}

/**
 * A scripted upstream: call i behaves as steps[i] (the last step repeats). Bodies are async generators
 * yielding 64 KiB chunks with a turn of the event loop between them, so readers interleave with the
 * download as they would with a network.
 */
function scripted(blob: Buffer, steps: Step[] = [{}]): Script {
  const script: Script = { offsets: [], cancels: 0, source: undefined as unknown as BlobSource };
  script.source = async (offset: number): Promise<BlobBody> => {
    const step = steps[Math.min(script.offsets.length, steps.length - 1)]!;
    script.offsets.push(offset);
    await tick();
    if (step.openDelayMs) await sleep(step.openDelayMs);
    if (step.openError) throw step.openError;
    const data = step.data ?? blob;
    const start = step.ignoreRange ? 0 : step.roundDown ? offset - (offset % step.roundDown) : offset;
    const chunk = step.pace?.bytes ?? CHUNK;
    let cancelled = false;
    async function* body(): AsyncGenerator<Uint8Array> {
      let sent = 0;
      for (let pos = start; pos < data.length && !cancelled; pos += chunk) {
        let piece = data.subarray(pos, Math.min(pos + chunk, data.length));
        const limit = step.cutAfter ?? step.endAfter;
        if (limit !== undefined && sent + piece.length > limit) piece = piece.subarray(0, limit - sent);
        if (piece.length > 0) yield piece;
        sent += piece.length;
        if (step.cutAfter !== undefined && sent >= step.cutAfter) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        if (step.endAfter !== undefined && sent >= step.endAfter) return;
        await (step.pace ? sleep(step.pace.everyMs) : tick());
      }
    }
    return {
      start,
      size: step.size === null ? undefined : (step.size ?? blob.length),
      body: body(),
      cancel: () => {
        cancelled = true;
        script.cancels++;
      },
    };
  };
  return script;
}

interface Received {
  bytes: Buffer;
  error: Error | undefined;
  ended: boolean;
}

/** Reads a stream to its end, error or premature close, optionally slowly (`stall`: a pause of `ms` after each `every` bytes). */
function collect(r: Readable, opts: { slow?: boolean; stall?: { every: number; ms: number } } = {}): Promise<Received> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let error: Error | undefined;
    let sinceStall = 0;
    r.on('data', (c: Buffer) => {
      chunks.push(c);
      sinceStall += c.length;
      const pause = opts.slow ? 2 : opts.stall && sinceStall >= opts.stall.every ? opts.stall.ms : 0;
      if (pause > 0) {
        sinceStall = 0;
        r.pause();
        setTimeout(() => r.resume(), pause);
      }
    });
    r.on('end', () => (ended = true));
    r.on('error', (e) => (error = e));
    r.on('close', () => resolve({ bytes: Buffer.concat(chunks), error, ended }));
  });
}

class RecordingObserver implements InflightObserver {
  events: Array<[string, string, ...unknown[]]> = [];
  started(d: string) {
    this.events.push(['started', d]);
  }
  joined(d: string) {
    this.events.push(['joined', d]);
  }
  resumed(d: string, offset: number) {
    this.events.push(['resumed', d, offset]);
  }
  completed(d: string, bytes: number) {
    this.events.push(['completed', d, bytes]);
  }
  spilled(d: string, cause: unknown) {
    this.events.push(['spilled', d, cause]);
  }
  failed(d: string, e: unknown) {
    this.events.push(['failed', d, e]);
  }
  count(kind: string) {
    return this.events.filter((e) => e[0] === kind).length;
  }
}

const enospc = () => new StoreFullError(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));

/** Every BlobStore method of `inner`, bound: a test store replaces the ones it changes. */
function delegate(inner: FsBlobStore): BlobStore {
  return {
    init: () => inner.init(),
    stat: (d) => inner.stat(d),
    open: (d, r) => inner.open(d, r),
    read: (d) => inner.read(d),
    put: (d, b) => inner.put(d, b),
    delete: (d) => inner.delete(d),
    list: () => inner.list(),
    busy: (d) => inner.busy(d),
    space: () => inner.space(),
    sweepTemp: (ms) => inner.sweepTemp(ms),
    createWriter: (d) => inner.createWriter(d),
  };
}

/** Every method of `w`, bound, with `overrides` in their place. */
function wrapWriter(w: BlobWriter, overrides: Partial<Pick<BlobWriter, 'write' | 'commit'>>): BlobWriter {
  return {
    get digest() {
      return w.digest;
    },
    get written() {
      return w.written;
    },
    write: (c) => w.write(c),
    readAt: (p, l, into) => w.readAt(p, l, into),
    commit: (size, onVerified) => w.commit(size, onVerified),
    abort: () => w.abort(),
    close: () => w.close(),
    ...overrides,
  };
}

/** A store whose writers fail with ENOSPC from the start, or once `capacity` bytes are written (a disk filling up mid-download). */
function fullStore(inner: FsBlobStore, capacity?: number): BlobStore {
  return {
    ...delegate(inner),
    createWriter: async (d): Promise<BlobWriter> => {
      if (capacity === undefined) throw enospc();
      const w = await inner.createWriter(d);
      return wrapWriter(w, {
        write: async (c) => {
          // Writes are coalesced behind the download, so capacity is counted in bytes, not calls.
          const n = Array.isArray(c) ? c.reduce((a, b) => a + b.length, 0) : c.length;
          if (w.written + n > capacity) throw enospc();
          await w.write(c);
        },
      });
    },
  };
}

describe('InflightDownloads', () => {
  let root: string;
  let store: FsBlobStore;
  let observer: RecordingObserver;
  let inflight: InflightDownloads;

  const tmpEntries = () => readdir(join(root, 'tmp'));

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'inflight-'));
    store = new FsBlobStore(root);
    await store.init();
    observer = new RecordingObserver();
    inflight = new InflightDownloads({ store, observer, maxResumes: 3, lingerMs: 60_000 });
  });
  afterEach(async () => {
    // Readers finish at verification; the fsync and rename into the store may still be running.
    await inflight.drain(10_000);
    await rm(root, { recursive: true, force: true });
  });

  it('one download, any number of joined readers, all get the identical correct bytes', async () => {
    const blob = randomBytes(1536 * 1024 + 17);
    const d = digestOf(blob);
    const up = scripted(blob);
    const dl = inflight.join(d, ORIGIN, up.source);
    expect(inflight.size).toBe(1);
    const readers = [collect(dl.createReader()), collect(dl.createReader(), { slow: true })];
    await dl.ready;
    expect(dl.size).toBe(blob.length);
    readers.push(collect(inflight.join(d, ORIGIN, up.source).createReader()));
    await waitFor(() => dl.received > blob.length / 2, 2000);
    // Joined mid-way: streams what is on disk, then the live edge.
    readers.push(collect(inflight.join(d, 'docker.io/other/repo', up.source).createReader()));
    readers.push(collect(inflight.join(d, ORIGIN, up.source).createReader(), { slow: true }));

    for (const r of await Promise.all(readers)) {
      expect(r.error).toBeUndefined();
      expect(r.ended).toBe(true);
      expectBytes(r.bytes, blob);
    }
    await dl.finished;
    expect(up.offsets).toEqual([0]);
    expect(observer.count('started')).toBe(1);
    expect(observer.count('joined')).toBe(3);
    expect(observer.events).toContainEqual(['completed', d, blob.length]);
    expect(await store.stat(d)).toEqual({ digest: d, size: blob.length });
    expectBytes(await store.read(d), blob);
    expect(inflight.size).toBe(0);
  });

  it('a reader with start and end gets exactly that slice', async () => {
    const blob = randomBytes(700 * 1024);
    const d = digestOf(blob);
    const dl = inflight.join(d, ORIGIN, scripted(blob).source);
    const [mid, tail, first, last] = await Promise.all([
      collect(dl.createReader(1000, 200_000)),
      collect(dl.createReader(blob.length - 10)),
      collect(dl.createReader(0, 0)),
      collect(dl.createReader(blob.length - 1, blob.length - 1)),
    ]);
    expectBytes(mid.bytes, blob.subarray(1000, 200_001));
    expectBytes(tail.bytes, blob.subarray(blob.length - 10));
    expectBytes(first.bytes, blob.subarray(0, 1));
    expectBytes(last.bytes, blob.subarray(blob.length - 1));
    for (const r of [mid, tail, first, last]) expect(r.ended).toBe(true);
  });

  it('a reader that hangs up does not stop the download: the blob ends up in the store', async () => {
    const blob = randomBytes(1024 * 1024);
    const d = digestOf(blob);
    const up = scripted(blob);
    const dl = inflight.join(d, ORIGIN, up.source);
    const r = dl.createReader();
    let got = 0;
    await new Promise<void>((resolve) =>
      r.on('data', (c: Buffer) => {
        got += c.length;
        r.destroy();
        resolve();
      }),
    );
    expect(got).toBeLessThan(blob.length);
    await dl.finished;
    expect(up.cancels).toBe(0);
    expect(await store.stat(d)).toEqual({ digest: d, size: blob.length });
    expectBytes(await store.read(d), blob);
    expect(await tmpEntries()).toEqual([]);
  });

  it('a digest mismatch errors every reader, never delivers the last byte, and stores nothing', async () => {
    const blob = randomBytes(900 * 1024);
    const d = digestOf(blob);
    const corrupt = Buffer.from(blob);
    corrupt[123_456] = corrupt[123_456]! ^ 0xff;
    const dl = inflight.join(d, ORIGIN, scripted(blob, [{ data: corrupt }]).source);
    const readers = [dl.createReader(), dl.createReader(500_000), dl.createReader(blob.length - 1)].map((r) => collect(r));
    const results = await Promise.all(readers);
    const totals = [blob.length, blob.length - 500_000, 1];
    results.forEach((r, i) => {
      expect(r.ended).toBe(false);
      expect(r.error).toBeInstanceOf(UpstreamError);
      expect((r.error as UpstreamError).kind).toBe('digest_mismatch');
      expect(r.bytes.length).toBeLessThan(totals[i]!);
    });
    await expect(dl.finished).rejects.toMatchObject({ kind: 'digest_mismatch' });
    expect(dl.state).toBe('failed');
    expect(await store.stat(d)).toBeUndefined();
    expect(await tmpEntries()).toEqual([]);
    expect(observer.count('failed')).toBe(1);
    expect(observer.count('completed')).toBe(0);
    // A reader joining after the failure is told at once.
    const late = await collect(dl.createReader());
    expect(late.error).toBeInstanceOf(UpstreamError);
    expect(late.bytes.length).toBe(0);
  });

  describe('writeInto (the HTTP answer\'s path, with reused buffers)', () => {
    type Writes = { writeInto(out: SlowSink): Promise<number> };
    const writeInto = async (r: Readable, sink = new SlowSink()) => {
      sink.on('error', () => undefined);
      const n = await (r as unknown as Writes).writeInto(sink);
      return { n, sink };
    };

    it('readers joined early, mid-way and after get the identical bytes; no buffer is read into before the writer took it', async () => {
      const blob = randomBytes(2 * 1024 * 1024 + 333);
      const d = digestOf(blob);
      const up = scripted(blob);
      const dl = inflight.join(d, ORIGIN, up.source);
      const early = [writeInto(dl.createReader()), writeInto(dl.createReader(1000, 700_000))];
      await waitFor(() => dl.received > blob.length / 2, 2000);
      const mid = writeInto(inflight.join(d, ORIGIN, up.source).createReader());
      const results = await Promise.all([...early, mid]);
      const late = await writeInto(inflight.join(d, ORIGIN, up.source).createReader());
      for (const [i, r] of [...results, late].entries()) {
        const want = i === 1 ? blob.subarray(1000, 700_001) : blob;
        expect(r.sink.overwritten).toBe(0);
        expect(r.n).toBe(want.length);
        expectBytes(r.sink.bytes, want);
        expect(r.sink.writableEnded).toBe(true);
      }
      expect(up.offsets).toEqual([0]);
    });

    it('a buffer for reading back from the file is no larger than what the reader has left to send', async () => {
      const blob = randomBytes(3 * 1024 * 1024);
      const d = digestOf(blob);
      const up = scripted(blob);
      const first = await writeInto(inflight.join(d, ORIGIN, up.source).createReader());
      expect(first.n).toBe(blob.length);
      // The download is over and its window dropped: this reader reads [0, 50000) back from the file.
      const small = await writeInto(inflight.join(d, ORIGIN, up.source).createReader(0, 49_999));
      expectBytes(small.sink.bytes, blob.subarray(0, 50_000));
      expect(small.sink.overwritten).toBe(0);
      expect(up.offsets).toEqual([0]);
      expect([...small.sink.buffers].map((b) => b.byteLength)).toEqual([50_000]);
    });

    it('with a pool, read-back buffers go back to it once written, and no answer sees another\'s bytes', async () => {
      const pool = new ScribblingPool();
      const pooled = new InflightDownloads({ store, observer, lingerMs: 60_000, buffers: pool });
      const blob = randomBytes(2 * 1024 * 1024 + 333);
      const d = digestOf(blob);
      const up = scripted(blob);
      const dl = pooled.join(d, ORIGIN, up.source);
      const early = writeInto(dl.createReader());
      await waitFor(() => dl.received > blob.length / 2, 2000);
      // Joined behind the live edge: these read back from the file.
      const behind = [writeInto(pooled.join(d, ORIGIN, up.source).createReader()), writeInto(pooled.join(d, ORIGIN, up.source).createReader(5, 1_500_000))];
      const results = await Promise.all([early, ...behind]);
      const late = await writeInto(pooled.join(d, ORIGIN, up.source).createReader(100));
      for (const [i, r] of [...results, late].entries()) {
        const want = i === 2 ? blob.subarray(5, 1_500_001) : i === 3 ? blob.subarray(100) : blob;
        expect(r.sink.overwritten, `answer ${i}`).toBe(0);
        expectBytes(r.sink.bytes, want);
      }
      expect(pool.given.length).toBeGreaterThan(0);
      expect([...late.sink.buffers].some((ab) => pool.gave(ab))).toBe(true);
      expect(pool.doubles).toBe(0);
      await pooled.drain(10_000);
    });

    it('a digest mismatch cuts every writer short of the last byte', async () => {
      const blob = randomBytes(900 * 1024);
      const d = digestOf(blob);
      const corrupt = Buffer.from(blob);
      corrupt[4321] = corrupt[4321]! ^ 0xff;
      const dl = inflight.join(d, ORIGIN, scripted(blob, [{ data: corrupt }]).source);
      const results = await Promise.all([writeInto(dl.createReader()), writeInto(dl.createReader(blob.length - 1))]);
      for (const [i, r] of results.entries()) {
        expect(r.sink.destroyed).toBe(true);
        expect(r.sink.writableEnded).toBe(false);
        expect(r.sink.bytes.length).toBeLessThan(i === 0 ? blob.length : 1);
      }
      await expect(dl.finished).rejects.toMatchObject({ kind: 'digest_mismatch' });
    });

    it('a writer that goes away detaches its reader; the download still completes into the store', async () => {
      const blob = randomBytes(1024 * 1024);
      const d = digestOf(blob);
      const dl = inflight.join(d, ORIGIN, scripted(blob).source);
      const r = await writeInto(dl.createReader(), new SlowSink(2));
      expect(r.sink.destroyed).toBe(true);
      expect(r.n).toBeLessThan(blob.length);
      await dl.finished;
      expectBytes(await store.read(d), blob);
    });
  });

  it('without an announced size, a mismatch still errors the readers instead of ending them cleanly', async () => {
    const blob = randomBytes(300 * 1024);
    const d = digestOf(blob);
    const corrupt = Buffer.from(blob);
    corrupt[0] = corrupt[0]! ^ 1;
    const dl = inflight.join(d, ORIGIN, scripted(blob, [{ data: corrupt, size: null }]).source);
    const r = await collect(dl.createReader());
    expect(r.ended).toBe(false);
    expect((r.error as UpstreamError).kind).toBe('digest_mismatch');
    expect(await store.stat(d)).toBeUndefined();
  });

  describe('a cap on a blob\'s size (maxBlobBytes)', () => {
    const MiB = 1024 * 1024;
    it('a body without a size that goes on past it is cut there: readers error having had at most the cap, upstream is cancelled, nothing is kept', async () => {
      inflight = new InflightDownloads({ store, observer, maxBlobBytes: MiB });
      const blob = randomBytes(300 * 1024);
      const d = digestOf(blob);
      // Upstream sends 8 MiB where the blob is 300 KiB, with no size to stop it.
      const up = scripted(blob, [{ data: Buffer.concat(Array.from({ length: 28 }, () => blob)), size: null }]);
      const dl = inflight.join(d, ORIGIN, up.source);
      const r = await collect(dl.createReader());
      expect(r.ended).toBe(false);
      expect(r.error).toBeInstanceOf(UpstreamError);
      expect((r.error as UpstreamError).kind).toBe('protocol');
      expect(r.error!.message).toMatch(/more than limits\.maxBlobBytes \(1048576\) of a blob without a size/);
      expect(r.bytes.length).toBeLessThanOrEqual(MiB);
      expect(dl.received).toBeLessThanOrEqual(MiB);
      expect(up.cancels).toBe(1);
      expect(up.offsets).toEqual([0]);
      await dl.finished.catch(() => undefined);
      expect(await store.stat(d)).toBeUndefined();
      expect(await tmpEntries()).toEqual([]);
      expect(observer.count('failed')).toBe(1);
    });

    it('without a cap, a resume answered without a size is held to the size the first body announced', async () => {
      const blob = randomBytes(300 * 1024);
      const d = digestOf(blob);
      // Cut after 100 KiB; the resume comes back chunked, the rest of the blob and then 4 MiB more.
      const up = scripted(blob, [{ cutAfter: 100 * 1024 }, { size: null, data: Buffer.concat([blob, randomBytes(4 * MiB)]) }]);
      const dl = inflight.join(d, ORIGIN, up.source);
      const r = await collect(dl.createReader());
      expect(r.ended).toBe(false);
      expect((r.error as UpstreamError).kind).toBe('protocol');
      expect(r.error!.message).toMatch(/more than the blob's 307200 bytes/);
      expect(dl.received).toBeLessThanOrEqual(blob.length);
      expect(up.offsets).toEqual([0, 100 * 1024]);
      await dl.finished.catch(() => undefined);
      expect(await store.stat(d)).toBeUndefined();
      expect(await tmpEntries()).toEqual([]);
    });

    it('a body announcing more is refused before any byte is kept; up to the cap a blob is stored as ever', async () => {
      inflight = new InflightDownloads({ store, observer, maxBlobBytes: MiB });
      const big = randomBytes(MiB + 1);
      const up = scripted(big);
      const dl = inflight.join(digestOf(big), ORIGIN, up.source);
      await expect(dl.ready).rejects.toThrow(/announces a blob of 1048577 bytes, over limits\.maxBlobBytes \(1048576\)/);
      expect(dl.received).toBe(0);
      expect(up.cancels).toBe(1);
      expect(await tmpEntries()).toEqual([]);
      const exact = randomBytes(MiB);
      const ok = inflight.join(digestOf(exact), ORIGIN, scripted(exact, [{ size: null }]).source);
      expectBytes((await collect(ok.createReader())).bytes, exact);
      await ok.finished;
      expectBytes(await store.read(digestOf(exact)), exact);
    });
  });

  it('a body cut midway is resumed with a request at the offset reached, and the result is correct', async () => {
    const blob = randomBytes(1024 * 1024 + 5);
    const d = digestOf(blob);
    const cut = 5 * CHUNK + 1000;
    const up = scripted(blob, [{ cutAfter: cut }, {}]);
    const dl = inflight.join(d, ORIGIN, up.source);
    const early = collect(dl.createReader());
    await waitFor(() => up.offsets.length === 2, 2000);
    // A reader joining after the cut reads the first part back from disk, then the resumed part.
    const late = collect(inflight.join(d, ORIGIN, up.source).createReader());
    for (const r of await Promise.all([early, late])) {
      expect(r.error).toBeUndefined();
      expectBytes(r.bytes, blob);
    }
    await dl.finished;
    expect(up.offsets).toEqual([0, cut]);
    expect(up.cancels).toBe(1);
    expect(observer.events).toContainEqual(['resumed', d, cut]);
    expect(observer.count('failed')).toBe(0);
    expectBytes(await store.read(d), blob);
  });

  it.each([
    ['from byte 0 (Range ignored)', { ignoreRange: true }],
    ['from before the offset asked (a CDN rounding ranges down)', { roundDown: 65_536 }],
  ] as const)('a resume that upstream answers %s skips what it already has', async (_, answer) => {
    const blob = randomBytes(500 * 1024);
    const d = digestOf(blob);
    const up = scripted(blob, [{ cutAfter: 200_000 }, answer]);
    const dl = inflight.join(d, ORIGIN, up.source);
    const r = await collect(dl.createReader());
    expect(r.error).toBeUndefined();
    expectBytes(r.bytes, blob);
    expect(up.offsets).toEqual([0, 200_000]);
    // Readers finish once the bytes are verified; the rename into the store follows.
    await dl.finished;
    expectBytes(await store.read(d), blob);
  });

  it('a body that ends short of its announced size is resumed too', async () => {
    const blob = randomBytes(400 * 1024);
    const d = digestOf(blob);
    const up = scripted(blob, [{ endAfter: 100_000 }, { endAfter: 100_000 }, {}]);
    const dl = inflight.join(d, ORIGIN, up.source);
    const r = await collect(dl.createReader());
    expect(r.error).toBeUndefined();
    expectBytes(r.bytes, blob);
    expect(up.offsets).toEqual([0, 100_000, 200_000]);
    expect(observer.count('resumed')).toBe(2);
  });

  it('cuts are resumed however many there are while each attempt delivers new bytes', async () => {
    inflight = new InflightDownloads({ store, observer, maxResumes: 2, lingerMs: 60_000 });
    const blob = randomBytes(1024 * 1024);
    const d = digestOf(blob);
    const up = scripted(blob, [{ cutAfter: 100_000 }]);
    const r = await collect(inflight.join(d, ORIGIN, up.source).createReader());
    expect(r.error).toBeUndefined();
    expectBytes(r.bytes, blob);
    expect(up.offsets).toEqual(Array.from({ length: 11 }, (_, i) => i * 100_000));
    expect(observer.count('resumed')).toBe(10);
  });

  it('more attempts in a row that deliver nothing than maxResumes fail the download: readers error, nothing is stored', async () => {
    inflight = new InflightDownloads({ store, observer, maxResumes: 2, lingerMs: 60_000 });
    const blob = randomBytes(1024 * 1024);
    const d = digestOf(blob);
    const up = scripted(blob, [{ cutAfter: 100_000 }, { cutAfter: 0 }]);
    const dl = inflight.join(d, ORIGIN, up.source);
    const r = await collect(dl.createReader());
    expect(r.ended).toBe(false);
    expect(r.error?.message).toMatch(/socket hang up/);
    expect(r.bytes.length).toBeLessThan(blob.length);
    // One resume after progress, then two fruitless ones (backing off), then it gives up.
    expect(up.offsets).toEqual([0, 100_000, 100_000, 100_000]);
    expect(observer.count('resumed')).toBe(3);
    expect(observer.count('failed')).toBe(1);
    await expect(dl.finished).rejects.toThrow(/socket hang up/);
    expect(await store.stat(d)).toBeUndefined();
    expect(await tmpEntries()).toEqual([]);
    // A failed download is not joined: the next request starts afresh.
    const up2 = scripted(blob);
    const again = inflight.join(d, ORIGIN, up2.source);
    expect(again).not.toBe(dl);
    expectBytes((await collect(again.createReader())).bytes, blob);
    expect(up2.offsets).toEqual([0]);
  });

  describe('a floor under progress (minProgress)', () => {
    const floor = { bytes: 50_000, windowMs: 200 };

    it('a body that trickles below the floor fails the download as too slow, without a resume: readers error, nothing is stored', async () => {
      inflight = new InflightDownloads({ store, observer, maxResumes: 3, lingerMs: 60_000, minProgress: floor });
      const blob = randomBytes(1024 * 1024);
      const d = digestOf(blob);
      // 1,000 bytes every 20 ms: ~10 KB a window, a fifth of the floor; never idle long enough for an idle timeout.
      const up = scripted(blob, [{ pace: { bytes: 1000, everyMs: 20 } }]);
      const dl = inflight.join(d, ORIGIN, up.source);
      const r = await collect(dl.createReader());
      expect(r.ended).toBe(false);
      expect(r.error?.message).toMatch(/fewer than 50000: too slow/);
      expect(r.bytes.length).toBeLessThan(3 * 10_000);
      await expect(dl.finished).rejects.toMatchObject({ kind: 'timeout', upstream: 'docker.io' });
      expect(up.offsets).toEqual([0]);
      expect(up.cancels).toBeGreaterThan(0);
      expect(observer.count('failed')).toBe(1);
      expect(await store.stat(d)).toBeUndefined();
      expect(await tmpEntries()).toEqual([]);
    });

    it('cuts after a few bytes each, resumed at once, are no way around it', async () => {
      inflight = new InflightDownloads({ store, observer, maxResumes: 3, lingerMs: 60_000, minProgress: floor });
      const blob = randomBytes(1024 * 1024);
      const up = scripted(blob, [{ cutAfter: 1000, openDelayMs: 20 }]);
      const dl = inflight.join(digestOf(blob), ORIGIN, up.source);
      const r = await collect(dl.createReader());
      expect(r.error?.message).toMatch(/too slow/);
      // Each attempt brought new bytes, so each was resumed; the floor ended them.
      expect(up.offsets.length).toBeGreaterThan(3);
      expect(up.offsets.length).toBeLessThan(40);
      expect(await store.stat(digestOf(blob))).toBeUndefined();
    });

    it('above the floor a download completes, and the wait for the first body does not count', async () => {
      inflight = new InflightDownloads({ store, observer, maxResumes: 3, lingerMs: 60_000, minProgress: floor });
      const blob = randomBytes(600 * 1024);
      const d = digestOf(blob);
      // Headers after two windows, then 64 KiB every 20 ms: ~640 KB a window.
      const up = scripted(blob, [{ openDelayMs: 2 * floor.windowMs, pace: { bytes: 64 * 1024, everyMs: 20 } }]);
      const r = await collect(inflight.join(d, ORIGIN, up.source).createReader());
      expect(r.error).toBeUndefined();
      expectBytes(r.bytes, blob);
      expect(up.offsets).toEqual([0]);
      await waitFor(async () => (await store.stat(d)) !== undefined, 5000, 'the blob stored');
    });

    it('a pass-through paced by a slow reader is not too slow: that is the reader, not upstream', async () => {
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000, minProgress: floor, readerStallMs: 5000 });
      const blob = randomBytes(SPILL_WINDOW * 2);
      const up = scripted(blob);
      const dl = inflight.join(digestOf(blob), ORIGIN, up.source);
      // Every 4 MiB it stops for a window and a half; the download, more than half its window ahead, waits on it.
      const r = await collect(dl.createReader(), { stall: { every: 4 * 1024 * 1024, ms: floor.windowMs * 1.5 } });
      expect(r.error).toBeUndefined();
      expectBytes(r.bytes, blob);
      expect(dl.spilled).toBe(true);
      expect(up.offsets).toEqual([0]);
    });
  });

  it('an upstream error before any body fails at once, without resuming', async () => {
    const blob = randomBytes(1000);
    const d = digestOf(blob);
    const notFound = new UpstreamError('status', 'docker.io', 'blob unknown to registry', { status: 404, code: 'BLOB_UNKNOWN' });
    const up = scripted(blob, [{ openError: notFound }]);
    const dl = inflight.join(d, ORIGIN, up.source);
    await expect(dl.ready).rejects.toBe(notFound);
    await expect(dl.finished).rejects.toBe(notFound);
    expect(up.offsets).toEqual([0]);
    expect(await store.stat(d)).toBeUndefined();
    expect(inflight.get(d)).toBeUndefined();
  });

  it('a late joiner after completion (within the linger) gets the full bytes', async () => {
    const blob = randomBytes(1024 * 1024 + 3);
    const d = digestOf(blob);
    const up = scripted(blob);
    const dl = inflight.join(d, ORIGIN, up.source);
    await dl.finished;
    await tick();
    const same = inflight.join(d, ORIGIN, up.source);
    expect(same).toBe(dl);
    expect(same.state).toBe('done');
    const r = await collect(same.createReader());
    expect(r.error).toBeUndefined();
    expectBytes(r.bytes, blob);
    expect(up.offsets).toEqual([0]);
  });

  it('a late joiner after every earlier reader has finished gets the full bytes too', async () => {
    const blob = randomBytes(512 * 1024);
    const d = digestOf(blob);
    const dl: Download = inflight.join(d, ORIGIN, scripted(blob).source);
    expectBytes((await collect(dl.createReader())).bytes, blob);
    await dl.finished;
    await tick();
    const r = await collect(inflight.join(d, ORIGIN, scripted(blob).source).createReader(100, 300_000));
    expect(r.error).toBeUndefined();
    expectBytes(r.bytes, blob.subarray(100, 300_001));
  });

  it('holdsVerified(): from verification on, while the store still makes the blob durable and after; never before, nor for a pass-through', async () => {
    const blob = randomBytes(200 * 1024);
    const d = digestOf(blob);
    // The store's last step held: the writer verifies (readers get the last byte), then waits to rename.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const gated: BlobStore = {
      ...delegate(store),
      createWriter: async (digest) => {
        const w = await store.createWriter(digest);
        return wrapWriter(w, {
          commit: async (size, onVerified) => {
            if (digestOf(await w.readAt(0, w.written)) === digest) onVerified?.();
            await held;
            await w.commit(size);
          },
        });
      },
    };
    inflight = new InflightDownloads({ store: gated, observer, lingerMs: 60_000 });
    expect(inflight.holdsVerified(d)).toBe(false); // no download
    const dl = inflight.join(d, ORIGIN, scripted(blob, [{ pace: { bytes: 64 * 1024, everyMs: 5 } }]).source);
    await dl.ready;
    expect(inflight.holdsVerified(d)).toBe(false); // under way, not verified
    expectBytes((await collect(dl.createReader())).bytes, blob);
    expect(await store.stat(d)).toBeUndefined();
    expect(inflight.holdsVerified(d)).toBe(true);
    release();
    await dl.finished;
    expect(await store.stat(d)).toEqual({ digest: d, size: blob.length });
    expect(inflight.holdsVerified(d)).toBe(true); // lingering for late joiners

    // Verified too, but passed through a full store: nothing is kept.
    inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000 });
    const other = randomBytes(100 * 1024);
    const passed = inflight.join(digestOf(other), ORIGIN, scripted(other).source);
    expectBytes((await collect(passed.createReader())).bytes, other);
    expect(passed.verified).toBe(true);
    expect(inflight.holdsVerified(digestOf(other))).toBe(false);
  });

  it('a finished download is forgotten after the linger', async () => {
    inflight = new InflightDownloads({ store, observer, lingerMs: 10 });
    const blob = randomBytes(1000);
    const d = digestOf(blob);
    const dl = inflight.join(d, ORIGIN, scripted(blob).source);
    await dl.finished;
    expect(inflight.get(d)).toBe(dl);
    await sleep(50);
    expect(inflight.get(d)).toBeUndefined();
    expectBytes(await store.read(d), blob);
  });

  it('a finished stored download holds no chunks in memory once its readers are done, while it lingers', async () => {
    const blob = randomBytes(300 * 1024);
    const d = digestOf(blob);
    const dl = inflight.join(d, ORIGIN, scripted(blob).source);
    const r = await collect(dl.createReader());
    expectBytes(r.bytes, blob);
    await dl.finished;
    expect(inflight.get(d)).toBe(dl);
    expect(dl.buffered).toBe(0);
    // A late joiner within the linger still gets every byte (from the temp file).
    const late = await collect(dl.createReader(1000));
    expect(late.error).toBeUndefined();
    expectBytes(late.bytes, blob.subarray(1000));
  });

  it('a finished stored download that nobody read holds no chunks either', async () => {
    const blob = randomBytes(300 * 1024);
    const dl = inflight.join(digestOf(blob), ORIGIN, scripted(blob).source);
    await dl.finished;
    expect(dl.buffered).toBe(0);
  });

  describe('when the store is full (pass-through)', () => {
    it('a finished pass-through keeps its bytes for the request that started it until that one has read them', async () => {
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000 });
      const blob = randomBytes(300 * 1024);
      const dl = inflight.join(digestOf(blob), ORIGIN, scripted(blob).source);
      await dl.finished;
      expect(dl.buffered).toBe(blob.length);
      expectBytes((await collect(dl.createReader())).bytes, blob);
      expect(dl.buffered).toBe(0);
    });

    it('readers still get the verified bytes, nothing is kept, and the next request starts afresh', async () => {
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000 });
      const blob = randomBytes(700 * 1024);
      const d = digestOf(blob);
      const up = scripted(blob);
      const dl = inflight.join(d, ORIGIN, up.source);
      const readers = [collect(dl.createReader()), collect(dl.createReader(1000, 2000))];
      const [whole, part] = await Promise.all(readers);
      expect(whole!.error).toBeUndefined();
      expectBytes(whole!.bytes, blob);
      expectBytes(part!.bytes, blob.subarray(1000, 2001));
      await dl.finished;
      expect(dl.spilled).toBe(true);
      expect(observer.count('spilled')).toBe(1);
      expect(observer.count('completed')).toBe(0);
      expect(await store.stat(d)).toBeUndefined();
      // Nothing on disk to find: a later request is a new pass-through, not a join of the finished one.
      await tick();
      const again = inflight.join(d, ORIGIN, up.source);
      expect(again).not.toBe(dl);
      expectBytes((await collect(again.createReader())).bytes, blob);
      expect(up.offsets).toEqual([0, 0]);
    });

    it('a disk filling up mid-download spills without losing the bytes already written', async () => {
      inflight = new InflightDownloads({ store: fullStore(store, 200 * 1024), observer, lingerMs: 60_000 });
      const blob = randomBytes(600 * 1024);
      const d = digestOf(blob);
      const dl = inflight.join(d, ORIGIN, scripted(blob).source);
      const early = collect(dl.createReader());
      const r = await early;
      expect(r.error).toBeUndefined();
      expectBytes(r.bytes, blob);
      await dl.finished;
      expect(observer.count('spilled')).toBe(1);
      expect(await store.stat(d)).toBeUndefined();
      expect(await tmpEntries()).toEqual([]);
    });

    it('a mismatch in pass-through errors the readers and never delivers the last byte', async () => {
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000 });
      const blob = randomBytes(300 * 1024);
      const d = digestOf(blob);
      const corrupt = Buffer.from(blob);
      corrupt[7] = corrupt[7]! ^ 0xff;
      const dl = inflight.join(d, ORIGIN, scripted(blob, [{ data: corrupt }]).source);
      const r = await collect(dl.createReader());
      expect(r.ended).toBe(false);
      expect((r.error as UpstreamError).kind).toBe('digest_mismatch');
      expect(r.bytes.length).toBeLessThan(blob.length);
    });

    it('a reader that takes nothing is cut loose after readerStallMs; the others get every byte', async () => {
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000, readerStallMs: 200 });
      // More than half the pass-through window: the download has to wait for its slowest reader.
      const blob = randomBytes(SPILL_WINDOW);
      const d = digestOf(blob);
      const up = scripted(blob);
      const dl = inflight.join(d, ORIGIN, up.source);
      // A stream nobody reads, and a response whose client never takes a write.
      const unread = dl.createReader();
      const unreadError = new Promise<Error>((resolve) => unread.on('error', resolve));
      const neverSink = new Writable({ write: () => undefined });
      neverSink.on('error', () => undefined);
      const untaken = (dl.createReader() as unknown as { writeInto(out: Writable): Promise<number> }).writeInto(neverSink);
      const good = await collect(dl.createReader());
      expect(good.error).toBeUndefined();
      expectBytes(good.bytes, blob);
      expect((await unreadError).message).toMatch(/took nothing from a pass-through/);
      expect(await untaken).toBe(0);
      expect(neverSink.destroyed).toBe(true);
      expect(up.offsets).toEqual([0]);
      await dl.finished;
      expect(dl.readerCount).toBe(0);
    });

    it('a reader created just after ready (as a request does, after linking the repository) is not too late', async () => {
      // BlobService awaits dl.ready, then a metadata write (link), then creates its reader: a
      // pass-through must not give up for want of readers before the first one had a chance to join.
      inflight = new InflightDownloads({ store: fullStore(store), observer, lingerMs: 60_000 });
      const blob = randomBytes(700 * 1024);
      const d = digestOf(blob);
      const dl = inflight.join(d, ORIGIN, scripted(blob).source);
      await dl.ready;
      await sleep(5);
      const r = await collect(dl.createReader());
      expect(r.error).toBeUndefined();
      expectBytes(r.bytes, blob);
    });
  });
});
