/**
 * The download thread (src/offload/): blob bodies from a real HTTP upstream written into the temp
 * file by the worker, with the transfer engine, the filesystem store and the upstream client around
 * it as the mirror wires them. What the readers get, what is kept, what upstream saw, and that no
 * chunk of the body crossed the main thread.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DownloadThread } from '../../src/offload/download-thread.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { InflightDownloads, type Download, type InflightObserver } from '../../src/transfer/inflight.js';
import { AvailabilityGuard } from '../../src/upstream/availability.js';
import { UpstreamClient } from '../../src/upstream/client.js';
import { SinkFailure } from '../../src/upstream/errors.js';
import type { UpstreamObserver } from '../../src/upstream/types.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { blobOf, makeImage, makeRandomLayer, pseudoRandomBytes, type Blob } from '../helpers/images.js';
import { waitFor } from '../helpers/wait.js';

const layer = makeRandomLayer(3 * 1024 * 1024, 'download-thread');
const image = makeImage({ layers: [layer] });

let hub: FakeUpstream;
let dispatcher: Agent;
beforeAll(async () => {
  hub = await FakeUpstream.start();
  hub.putImage('library/app', image, 'v1');
  dispatcher = new Agent();
});
afterAll(async () => {
  await dispatcher.close();
  await hub.close();
});

interface Rig {
  store: FsBlobStore;
  thread: DownloadThread;
  inflight: InflightDownloads;
  /** The upstream client the rig's downloads use. */
  client: UpstreamClient;
  events: string[];
  upstreamBytes: () => number;
  root: string;
  /** Starts (or joins) the download of the layer and returns it with a reader from 0. */
  pull(): { dl: Download; reader: Readable };
}

const rigs: Rig[] = [];
afterEach(async () => {
  await hub.resetFaults();
  for (const r of rigs.splice(0)) {
    await r.thread.close();
    await rm(r.root, { recursive: true, force: true });
  }
});

async function rig(opts: { idleMs?: number; onOnline?: () => void; maxBlobBytes?: number } = {}): Promise<Rig> {
  const root = await mkdtemp(join(tmpdir(), 'download-thread-'));
  const store = new FsBlobStore(root);
  await store.init();
  let bytes = 0;
  const observer: UpstreamObserver = { request: () => undefined, bytes: (_u, n) => (bytes += n), token: () => undefined, rateLimit: () => undefined };
  const client = new UpstreamClient({ name: 'docker.io', url: hub.url, dispatcher, now: Date.now, observer, timeouts: { headers: 5000, bodyIdle: 2000 }, maxManifestBytes: 4 << 20, userAgent: 'test' });
  const { maxBlobBytes, ...threadOpts } = opts;
  const thread = new DownloadThread({ agent: { connect: { timeout: 2000 }, keepAliveTimeout: 30_000, connections: 8 }, ...threadOpts });
  const events: string[] = [];
  const inflightObserver: InflightObserver = {
    started: () => events.push('started'),
    joined: () => events.push('joined'),
    resumed: (_d, at) => events.push(`resumed@${at}`),
    completed: () => events.push('completed'),
    spilled: () => events.push('spilled'),
    failed: () => events.push('failed'),
  };
  const inflight = new InflightDownloads({ store, observer: inflightObserver, sinks: thread, lingerMs: 0, ...(maxBlobBytes !== undefined ? { maxBlobBytes } : {}) });
  const r: Rig = {
    store,
    thread,
    inflight,
    client,
    events,
    root,
    upstreamBytes: () => bytes,
    pull: () => {
      const dl = inflight.join(layer.digest, 'docker.io/library/app', (offset, sink) => client.getBlob('library/app', layer.digest, offset, sink));
      return { dl, reader: dl.createReader() };
    },
  };
  rigs.push(r);
  return r;
}

/** Reads a stream to its end, recording the largest number of chunk bytes the download held meanwhile. */
async function drain(r: Readable, dl: Download): Promise<{ bytes: Buffer; error?: Error; maxBuffered: number }> {
  const parts: Buffer[] = [];
  let maxBuffered = 0;
  try {
    for await (const c of r) {
      parts.push(c as Buffer);
      maxBuffered = Math.max(maxBuffered, dl.buffered);
    }
    return { bytes: Buffer.concat(parts), maxBuffered };
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: e as Error, maxBuffered };
  }
}

/** Downloads `b` (put in the hub under library/app) through the rig and reads it whole. */
async function pullBlob(r: Rig, b: Blob): Promise<{ bytes: Buffer; error?: Error }> {
  const dl = r.inflight.join(b.digest, 'docker.io/library/app', (offset, sink) => r.client.getBlob('library/app', b.digest, offset, sink));
  const got = await drain(dl.createReader(), dl);
  await dl.finished;
  return got;
}

/** The GETs that carried the blob's bytes (the registry redirects them to its CDN). */
const blobGets = () => hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET');

describe('the download thread', () => {
  it('writes the body into the temp file off the main thread; readers stream it live; the blob is kept verified', async () => {
    const r = await rig();
    hub.resetCounters();
    // Slow enough that the reader is at the live edge for most of the body.
    Object.assign(hub.faults, { trickle: { bytesPerTick: 256 * 1024, tickMs: 20 } });
    const { dl, reader } = r.pull();
    let before: number | undefined;
    reader.once('data', () => (before = dl.received));
    const got = await drain(reader, dl);
    await dl.finished;
    expect(got.error).toBeUndefined();
    expect(digestOf(got.bytes)).toBe(layer.digest);
    // The first bytes reached the reader long before the last left upstream: streamed live.
    expect(before).toBeLessThan(layer.size / 2);
    // No chunk was held by the main thread's download: the bytes came from the file.
    expect(got.maxBuffered).toBe(0);
    expect(await r.store.stat(layer.digest)).toEqual({ digest: layer.digest, size: layer.size });
    expect(digestOf((await r.store.read(layer.digest))!)).toBe(layer.digest);
    expect(r.upstreamBytes()).toBe(layer.size);
    expect(blobGets()).toHaveLength(1);
    expect(r.events).toEqual(['started', 'completed']);
  });

  it('reuses its buffers from one download to the next without mixing their bytes: ten at once, trickled, then ten in turn', async () => {
    const r = await rig();
    // 100 KiB to 1.2 MiB: bodies inside one 512 KiB batch and across several, most of them parked
    // with bytes that came with the head.
    const blobs = Array.from({ length: 20 }, (_, i) => blobOf(pseudoRandomBytes(100 * 1024 + i * 61 * 1024, `thread-reuse-${i}`), 'application/octet-stream'));
    for (const b of blobs) hub.putBlob('library/app', b);
    hub.resetCounters();
    // Slow enough that the ten bodies are written side by side, partial batches flushed by the timer.
    Object.assign(hub.faults, { trickle: { bytesPerTick: 48 * 1024, tickMs: 5 } });
    const pull = (b: Blob) => pullBlob(r, b);
    const results = await Promise.all(blobs.slice(0, 10).map(pull));
    for (const b of blobs.slice(10)) results.push(await pull(b));
    for (const [i, b] of blobs.entries()) {
      expect(results[i]!.error, `blob ${i}`).toBeUndefined();
      expect(digestOf(results[i]!.bytes), `blob ${i}`).toBe(b.digest);
      expect(digestOf((await r.store.read(b.digest))!), `blob ${i} kept`).toBe(b.digest);
    }
    expect(blobGets()).toHaveLength(20);
    expect(r.events.filter((e) => e === 'completed')).toHaveLength(20);
  });

  it('requests cancelled, or their sink closed, while their heads are parked give their buffers back once: the downloads after them are intact', async () => {
    const r = await rig();
    const blobs = Array.from({ length: 20 }, (_, i) => blobOf(pseudoRandomBytes(300 * 1024 + i * 37 * 1024, `thread-parked-${i}`), 'application/octet-stream'));
    for (const b of blobs) hub.putBlob('library/app', b);
    const pull = (b: Blob) => pullBlob(r, b);
    // Six downloads leave their batch buffers as the thread's spares.
    await Promise.all(blobs.slice(0, 6).map(pull));
    // Four GETs answered and parked (the bytes that came with each head held in spares), then left:
    // two cancelled, two with their sink closed under them.
    for (const [i, b] of blobs.slice(6, 10).entries()) {
      const w = await r.store.createWriter(b.digest);
      const sink = r.thread.open(w.external!()!);
      const body = await r.client.getBlob('library/app', b.digest, 0, sink);
      expect(body.direct).toBeDefined();
      if (i % 2 === 0) body.direct!.cancel();
      await sink.close();
      await w.abort();
      await w.close();
    }
    // Ten at once, trickled, so their batches are in use side by side: a buffer given back twice
    // would be two downloads' batch.
    Object.assign(hub.faults, { trickle: { bytesPerTick: 48 * 1024, tickMs: 5 } });
    const results = await Promise.all(blobs.slice(10).map(pull));
    for (const [i, b] of blobs.slice(10).entries()) {
      expect(results[i]!.error, `blob ${i}`).toBeUndefined();
      expect(digestOf(results[i]!.bytes), `blob ${i}`).toBe(b.digest);
      expect(digestOf((await r.store.read(b.digest))!), `blob ${i} kept`).toBe(b.digest);
    }
  });

  it('resumes a cut body with a Range request into the same file and hash', async () => {
    const r = await rig();
    hub.resetCounters();
    Object.assign(hub.faults, { truncateBlobAfter: 1024 * 1024 + 17, truncateBlobTimes: 1 });
    const { dl, reader } = r.pull();
    const got = await drain(reader, dl);
    await dl.finished;
    expect(got.error).toBeUndefined();
    expect(digestOf(got.bytes)).toBe(layer.digest);
    const gets = blobGets();
    expect(gets.length).toBe(2);
    const range = String(gets[1]!.headers.range);
    expect(range).toMatch(/^bytes=\d+-$/);
    const at = Number(/^bytes=(\d+)-$/.exec(range)![1]);
    expect(at).toBeGreaterThan(0);
    expect(at).toBeLessThanOrEqual(1024 * 1024 + 17);
    expect(r.events).toEqual(['started', `resumed@${at}`, 'completed']);
    expect(digestOf((await r.store.read(layer.digest))!)).toBe(layer.digest);
  });

  it('writes nothing past the size cap of a body without a size: the download fails as too large, keeps nothing', async () => {
    // Not a multiple of the worker's 512 KiB batches: the cap falls inside one.
    const cap = 1024 * 1024 + 100 * 1024;
    const r = await rig({ maxBlobBytes: cap });
    // Small chunks, so the worker batches them: the cap counts what waits in a batch too.
    Object.assign(hub.faults, { chunkedBlobs: true, trickle: { bytesPerTick: 32 * 1024, tickMs: 1 } });
    const { dl, reader } = r.pull();
    const got = await drain(reader, dl);
    await dl.finished.catch(() => undefined);
    expect(got.error?.message).toMatch(/more than limits\.maxBlobBytes \(1150976\) of a blob without a size/);
    expect(got.bytes.length).toBeLessThanOrEqual(cap);
    // What the worker wrote (the upstream client counts the written bytes), not what it read.
    expect(r.upstreamBytes()).toBeLessThanOrEqual(cap);
    expect(r.events).toEqual(['started', 'failed']);
    expect(await r.store.stat(layer.digest)).toBeUndefined();
    expect(await readdir(join(r.root, 'tmp'))).toEqual([]);
  });

  it('keeps nothing and cuts every reader when the bytes do not match the digest', async () => {
    const r = await rig();
    Object.assign(hub.faults, { corruptBlob: true });
    const { dl, reader } = r.pull();
    const got = await drain(reader, dl);
    await expect(dl.finished).rejects.toThrow(/digest/);
    expect(got.error).toBeDefined();
    // The last byte is held back until verified: the client never has the whole length.
    expect(got.bytes.length).toBeLessThan(layer.size);
    expect(await r.store.stat(layer.digest)).toBeUndefined();
    await waitFor(async () => (await readdir(join(r.root, 'tmp'))).length === 0, 3000, 'an empty tmp/');
    expect(r.events).toEqual(['started', 'failed']);
  });

  it('fails the downloads it was writing when the worker dies, keeps nothing, and starts a new worker for the next', async () => {
    const r = await rig();
    Object.assign(hub.faults, { trickle: { bytesPerTick: 64 * 1024, tickMs: 20 } });
    const first = r.pull();
    const draining = drain(first.reader, first.dl);
    await waitFor(() => first.dl.received > 0, 5000, 'the first bytes');
    // The worker exits unasked (as on a crash).
    await (r.thread as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    const got = await draining;
    await expect(first.dl.finished).rejects.toThrow(/download thread/);
    expect(got.error).toBeDefined();
    expect(got.bytes.length).toBeLessThan(layer.size);
    expect(await r.store.stat(layer.digest)).toBeUndefined();
    await waitFor(async () => (await readdir(join(r.root, 'tmp'))).length === 0, 3000, 'an empty tmp/');

    await hub.resetFaults();
    hub.resetCounters();
    const second = r.pull();
    const ok = await drain(second.reader, second.dl);
    await second.dl.finished;
    expect(digestOf(ok.bytes)).toBe(layer.digest);
    expect(ok.maxBuffered).toBe(0);
    expect(digestOf((await r.store.read(layer.digest))!)).toBe(layer.digest);
  });

  it('lets an idle worker go and starts another for the next download; tells its owner each time one is online', async () => {
    let online = 0;
    const r = await rig({ idleMs: 100, onOnline: () => online++ });
    Object.assign(hub.faults, { trickle: { bytesPerTick: 512 * 1024, tickMs: 20 } });
    const first = r.pull();
    const draining = drain(first.reader, first.dl);
    await waitFor(() => first.dl.received > 0, 5000, 'the first bytes');
    expect(r.thread.running).toBe(true);
    expect(digestOf((await draining).bytes)).toBe(layer.digest);
    await first.dl.finished;
    expect(online).toBe(1);
    await waitFor(() => !r.thread.running, 5000, 'the idle worker gone');
    // The same blob again: removed from the store, so it is downloaded anew, by a new worker.
    await r.store.delete(layer.digest);
    r.inflight.removed(layer.digest);
    hub.resetCounters();
    const second = r.pull();
    const got = await drain(second.reader, second.dl);
    await second.dl.finished;
    expect(r.thread.running).toBe(true);
    expect(digestOf(got.bytes)).toBe(layer.digest);
    expect(got.maxBuffered).toBe(0);
    expect(blobGets()).toHaveLength(1);
    // main.ts sets the young generation's cap again then (V8 resets it for a new isolate, src/heap.ts).
    expect(online).toBe(2);
  });

  it('leaves the file to this thread when the source ignores the sink (a fleet owner reading the shared store)', async () => {
    const r = await rig();
    // The rig's own client, through a source that never passes the sink on.
    const { client } = r;
    const dl = r.inflight.join(layer.digest, 'docker.io/library/app', (offset) => client.getBlob('library/app', layer.digest, offset));
    const got = await drain(dl.createReader(), dl);
    await dl.finished;
    expect(got.error).toBeUndefined();
    expect(digestOf(got.bytes)).toBe(layer.digest);
    expect(digestOf((await r.store.read(layer.digest))!)).toBe(layer.digest);
    expect(r.thread.running).toBe(false);
    expect(r.events).toEqual(['started', 'completed']);
  });

  it('a stopped thread fails the download as its own failure, not as an unreachable upstream', async () => {
    const r = await rig();
    await r.thread.close();
    const { client } = r;
    const guard = new AvailabilityGuard(client, { offlineMinMs: 60_000, offlineMaxMs: 60_000, now: Date.now, logger: { warn: () => undefined, info: () => undefined } });
    try {
      const dl = r.inflight.join(layer.digest, 'docker.io/library/app', (offset, sink) => guard.getBlob('library/app', layer.digest, offset, sink));
      await expect(dl.finished).rejects.toBeInstanceOf(SinkFailure);
      expect(guard.offline).toBe(false);
      expect(await r.store.stat(layer.digest)).toBeUndefined();
    } finally {
      guard.close();
    }
  });

  it('once closed, fails what it was writing and takes no more', async () => {
    const r = await rig();
    Object.assign(hub.faults, { trickle: { bytesPerTick: 64 * 1024, tickMs: 20 } });
    const first = r.pull();
    const draining = drain(first.reader, first.dl);
    await waitFor(() => first.dl.received > 0, 5000, 'the first bytes');
    await r.thread.close();
    expect((await draining).error).toBeDefined();
    await expect(first.dl.finished).rejects.toThrow(/download thread/);
    expect(await r.store.stat(layer.digest)).toBeUndefined();
    expect(() => r.thread.prestart()).toThrow(/stopped/);
  });
});
