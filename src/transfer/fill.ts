/**
 * One download's copy loop: opens the upstream body (with Range after a cut), gives each chunk to
 * the readers and, behind them, to the temp file (write-behind), and switches to pass-through when
 * the store fills up. Resumes while the failure is transient and resumes are left.
 */
import type { Hash } from 'node:crypto';
import { StoreFullError } from '../storage/store.js';
import { UpstreamError } from '../upstream/errors.js';
import type { BlobBody } from '../upstream/types.js';
import type { Download } from './download.js';
import { isTransient, PassThroughAbandonedError } from './errors.js';
import { WriteBehind } from './write-behind.js';

/** Bytes a download may run ahead of its temp file (held in memory for the readers meanwhile). */
const WRITE_LAG = 32 * 1024 * 1024;

export interface FillOptions {
  /** How many times a cut body is resumed with a Range request before giving up. */
  maxResumes: number;
  /** A cut body is being resumed at this offset. */
  onResume(offset: number): void;
  /** The store is full: switch the download to pass-through; returns the hash that will verify it. */
  onSpill(cause: unknown): Hash;
}

export class Fill {
  private readonly disk: WriteBehind | undefined;
  /** Bytes of the current body still to drop (upstream ignored the Range and started over). */
  private skip = 0;

  constructor(
    private readonly dl: Download,
    private readonly source: (offset: number) => Promise<BlobBody>,
    private readonly opts: FillOptions,
    /** Set when the download is already a pass-through (the store was full from the start). */
    private hash: Hash | undefined,
  ) {
    this.disk = dl.writer && !dl.spilled ? new WriteBehind(dl.writer, WRITE_LAG, () => dl.trim()) : undefined;
  }

  /** Copies the whole blob; returns the hash verifying a spilled download (undefined when stored). */
  async run(): Promise<Hash | undefined> {
    for (let resumes = 0; ; resumes++) {
      const body = await this.open(resumes);
      if (!body) continue;
      if (!(await this.copy(body, resumes))) continue;
      if (!this.dl.spilled) await this.disk!.drain().catch((e: unknown) => this.spillNow(e));
      return this.hash;
    }
  }

  /** The upstream body from where we are; undefined to try again (a transient failure with resumes left). */
  private async open(resumes: number): Promise<BlobBody | undefined> {
    const { dl } = this;
    let body: BlobBody;
    try {
      body = await this.source(dl.received);
    } catch (e) {
      // Failing before any body is the request's answer (a 404, a refusal): not retried here.
      if (dl.state === 'starting' || !isTransient(e) || resumes >= this.opts.maxResumes) throw e;
      return undefined;
    }
    if (dl.state === 'starting') dl.markRunning(body.size);
    this.skip = dl.received - body.start;
    if (this.skip < 0 || (body.start !== 0 && this.skip !== 0)) {
      body.cancel();
      throw new UpstreamError('protocol', dl.origin.slice(0, Math.max(0, dl.origin.indexOf('/'))), `upstream resumed at ${body.start}, not at ${dl.received}`);
    }
    return body;
  }

  /** Copies one body; true when the blob is complete, false to resume. Throws what cannot be mended. */
  private async copy(body: BlobBody, resumes: number): Promise<boolean> {
    const { dl } = this;
    try {
      for await (const chunk of body.body) await this.take(chunk, body);
      if (dl.size !== undefined && dl.received < dl.size) throw new Error(`upstream body ended at ${dl.received} of ${dl.size} bytes`);
      return true;
    } catch (e) {
      body.cancel();
      // The connection failed after the last byte arrived: the body is complete.
      if (dl.size !== undefined && dl.received >= dl.size && !(e instanceof StoreFullError)) return true;
      if (!isTransient(e) || resumes >= this.opts.maxResumes) throw e;
      this.opts.onResume(dl.received);
      return false;
    }
  }

  /** One chunk: to the temp file (unless spilled), to the hash (when spilled), to the readers. */
  private async take(chunk: Uint8Array, body: BlobBody): Promise<void> {
    const { dl } = this;
    let c = chunk;
    if (this.skip > 0) {
      const n = Math.min(this.skip, c.length);
      this.skip -= n;
      c = c.subarray(n);
      if (c.length === 0) return;
    }
    if (!dl.spilled) {
      try {
        this.disk!.push(c);
      } catch (e) {
        await this.spillNow(e);
      }
    }
    if (dl.spilled) {
      this.hash!.update(c);
      if (dl.abandoned) {
        body.cancel();
        throw new PassThroughAbandonedError();
      }
    }
    dl.append(c);
    if (!dl.spilled) await this.disk!.belowLag().catch((e: unknown) => this.spillNow(e));
    if (dl.spilled) await dl.waitForReaders();
  }

  /** The store filled up: hash what reached the disk and what was still queued, then pass through. */
  private async spillNow(e: unknown): Promise<void> {
    if (!(e instanceof StoreFullError)) throw e;
    const { dl } = this;
    const hash = this.opts.onSpill(e);
    this.hash = hash;
    for (let pos = 0; pos < dl.writer!.written; ) {
      const part = await dl.writer!.readAt(pos, 1024 * 1024);
      hash.update(part);
      pos += part.length;
    }
    for (const c of this.disk!.pending()) hash.update(c);
  }
}
