/**
 * The download thread seen from the main thread: a worker (thread.cjs) that makes blob GETs with its
 * own HTTP/1.1 client (http1.cjs) and writes their 200/206 bodies into the downloads' temp files,
 * hashing them, so that a cold download's socket reads, buffers, hash and writes leave the event
 * loop free for the clients (a cold 256 MiB pull: bench/RESULTS.md, workload 5; docs/architecture.md).
 *
 * The main thread keeps every decision: auth, redirects and statuses (upstream/client.ts), resumes,
 * pass-through and verification (transfer/). It hears of the bytes as counts ("the file now holds
 * [0, n)") and its readers read them from the file.
 *
 * One worker, started at the first download and again after it died; a worker that dies fails the
 * downloads it was writing (their clients get a cut body, nothing is kept) and no other.
 */
import { Worker } from 'node:worker_threads';
import type { ExternalAppend } from '../storage/store.js';
import type { BlobSinks, OpenSink } from '../transfer/inflight.js';
import { SinkFailure } from '../upstream/errors.js';
import type { SinkAnswer, SinkRequest, SunkBody } from '../upstream/types.js';

/** The worker's HTTP client settings: plain data (it crosses to the worker), as for the main dispatcher's Agent. */
export interface DownloadThreadOptions {
  agent: { connect: { timeout: number }; keepAliveTimeout: number; connections: number };
  /** Told when the worker failed or stopped unasked (the downloads it wrote then failed). */
  onCrash?: (e: Error) => void;
  /** Told each time a worker is online (its isolate made: V8 has then reset some flags, src/heap.ts). */
  onOnline?: () => void;
  /**
   * A worker without downloads for this long exits, giving back its memory (about 9 MiB idle); the next
   * download starts a new one (about 80 ms). Default 120 s.
   */
  idleMs?: number;
}

interface Request {
  sid: number;
  phase: 'head' | 'parked' | 'writing';
  answer: (a: SinkAnswer) => void;
  refuse: (e: Error) => void;
  written?: { resolve: () => void; reject: (e: Error) => void };
}

interface Sink {
  file: ExternalAppend;
  /** Bytes the worker said it wrote (the file holds [0, position)). */
  position: number;
  /** Told of every byte written, also of those a cancelled request flushed after its cancel. */
  onBytes: ((n: number) => void) | undefined;
  /** Why the worker is gone, once it is. */
  failure?: Error;
  closed?: (hex: string | undefined) => void;
}

type FromThread =
  | { op: 'head'; rid: number; status: number; headers: Record<string, string | string[]>; text: string }
  | { op: 'progress'; sid: number; position: number }
  | { op: 'end'; rid: number }
  | { op: 'error'; rid: number; error: { name: string; code: string | undefined; message: string } }
  | { op: 'closed'; sid: number; position: number; hex: string | undefined };

export class DownloadThread implements BlobSinks {
  private worker: Worker | undefined;
  private next = 1;
  private readonly requests = new Map<number, Request>();
  private readonly sinks = new Map<number, Sink>();
  private stopping = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DownloadThreadOptions) {}

  open(file: ExternalAppend): OpenSink {
    const worker = this.start();
    const sid = this.next++;
    const sink: Sink = { file, position: 0, onBytes: undefined };
    this.sinks.set(sid, sink);
    this.holdOpen();
    worker.postMessage({ op: 'sink', sid, fd: file.fd, position: 0, algorithm: file.algorithm });
    return {
      get failure() {
        return sink.failure;
      },
      request: (req) => this.request(worker, sid, req),
      close: () =>
        new Promise<string | undefined>((resolve) => {
          if (this.worker !== worker || !this.sinks.has(sid)) return resolve(undefined);
          sink.closed = resolve;
          worker.postMessage({ op: 'close', sid });
        }),
    };
  }

  /** Starts the worker now rather than at the first download. */
  prestart(): void {
    this.start();
  }

  /** Whether a worker is running now. */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Stops the worker; downloads it was writing fail. Call after the downloads have drained. */
  async close(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.idleTimer);
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
    this.failAll(new SinkFailure('the download thread was stopped'));
  }

  private request(worker: Worker, sid: number, req: SinkRequest): Promise<SinkAnswer> {
    if (this.worker !== worker || !this.sinks.has(sid)) return Promise.reject(new SinkFailure('the download thread stopped'));
    const rid = this.next++;
    return new Promise<SinkAnswer>((answer, refuse) => {
      this.requests.set(rid, { sid, phase: 'head', answer, refuse });
      worker.postMessage({ op: 'get', rid, sid, ...req });
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    if (this.stopping) throw new SinkFailure('the download thread was stopped');
    const worker = new Worker(new URL('./thread.cjs', import.meta.url), { workerData: { agent: this.opts.agent } });
    // An idle worker does not keep the process alive; one with downloads does (holdOpen).
    worker.unref();
    worker.on('message', (m: FromThread) => this.onMessage(worker, m));
    if (this.opts.onOnline) worker.once('online', this.opts.onOnline);
    const died = (e: Error) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.failAll(new SinkFailure(`the download thread stopped: ${e.message}`, { cause: e }));
      this.opts.onCrash?.(e);
    };
    worker.on('error', died);
    worker.on('exit', (code) => died(new Error(`it exited (${code})`)));
    this.worker = worker;
    this.holdOpen();
    return worker;
  }

  private onMessage(worker: Worker, m: FromThread): void {
    if (this.worker !== worker) return;
    switch (m.op) {
      case 'head': {
        const r = this.requests.get(m.rid);
        if (!r) return;
        const parked = m.status === 200 || m.status === 206;
        if (!parked) this.requests.delete(m.rid);
        else r.phase = 'parked';
        r.answer({ status: m.status, headers: m.headers, text: m.text, body: parked ? this.body(worker, m.rid) : undefined });
        return;
      }
      case 'progress': {
        const sink = this.sinks.get(m.sid);
        if (!sink) return;
        // The writer first (readers may now read up to here), then the count (which wakes them).
        sink.file.appended(m.position);
        const n = m.position - sink.position;
        sink.position = m.position;
        sink.onBytes?.(n);
        return;
      }
      case 'end': {
        const r = this.requests.get(m.rid);
        if (!r) return;
        this.requests.delete(m.rid);
        r.written?.resolve();
        return;
      }
      case 'error': {
        const r = this.requests.get(m.rid);
        if (!r) return;
        this.requests.delete(m.rid);
        const e = Object.assign(new Error(m.error.message), { name: m.error.name, ...(m.error.code !== undefined ? { code: m.error.code } : {}) });
        if (r.phase === 'head') r.refuse(e);
        else if (r.written) r.written.reject(this.sinks.get(r.sid)?.file.writeError(e) ?? e);
        return;
      }
      case 'closed': {
        const sink = this.sinks.get(m.sid);
        if (!sink) return;
        this.sinks.delete(m.sid);
        this.holdOpen();
        sink.closed?.(m.hex);
        return;
      }
    }
  }

  /** The parked 200/206 body of request `rid`. */
  private body(worker: Worker, rid: number): SunkBody {
    return {
      write: (skip, onBytes, limit) =>
        new Promise<void>((resolve, reject) => {
          const r = this.requests.get(rid);
          if (this.worker !== worker || !r || r.phase !== 'parked') return reject(new Error('the upstream body is no longer available'));
          r.phase = 'writing';
          r.written = { resolve, reject };
          const sink = this.sinks.get(r.sid)!;
          sink.onBytes = onBytes;
          // `at`: where this body continues the file, as far as this thread knows; the worker
          // refuses to write anywhere else.
          worker.postMessage({ op: 'go', rid, skip, at: sink.position, limit });
        }),
      cancel: () => {
        const r = this.requests.get(rid);
        if (!r || this.worker !== worker) return;
        // The worker first writes what it received: that progress still reaches the sink's onBytes.
        worker.postMessage({ op: 'cancel', rid });
        this.requests.delete(rid);
        r.written?.reject(new Error('cancelled'));
      },
    };
  }

  /**
   * Keeps the process alive while downloads are open: their sockets live in the worker, and a
   * command may have nothing else to wait on. (`regmirror prefetch --data-dir` keeps itself alive
   * today, test/ops/prefetch-process.test.ts; this does not rely on it.)
   */
  private holdOpen(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const worker = this.worker;
    if (!worker) return;
    if (this.sinks.size > 0) return void worker.ref();
    worker.unref();
    this.idleTimer = setTimeout(() => {
      if (this.worker !== worker || this.sinks.size > 0) return;
      // Asked to go: not a crash (`died` ignores a worker that is no longer this.worker).
      this.worker = undefined;
      void worker.terminate();
    }, this.opts.idleMs ?? 120_000);
    this.idleTimer.unref();
  }

  private failAll(e: Error): void {
    const requests = [...this.requests.values()];
    const sinks = [...this.sinks.values()];
    this.requests.clear();
    this.sinks.clear();
    for (const r of requests) {
      if (r.phase === 'head') r.refuse(e);
      else r.written?.reject(e);
    }
    // A dead worker writes nothing more; it vouches for nothing either.
    for (const s of sinks) {
      s.failure = e;
      s.closed?.(undefined);
    }
  }
}
