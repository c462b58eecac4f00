/**
 * One blob being written to S3. Every byte goes to a local spool file first (hashed on the way):
 * joined readers read it back with readAt() at disk speed, and a part is uploaded from it as soon
 * as a part's worth has arrived, so the upload runs alongside the download. Nothing becomes an
 * object before commit() has verified the digest:
 *
 *   - a blob smaller than one part is one PutObject with `If-None-Match: *` (a concurrent writer
 *     that already stored it wins; ours is a no-op);
 *   - a larger one is a multipart upload on the final key, completed only after verification
 *     (S3 shows no object until then). Ceph 16.2 ignores conditions on CompleteMultipartUpload, so a
 *     HEAD first makes a commit of a blob already there a no-op; two writers racing past the HEAD
 *     both complete verified, identical bytes, so the object is never torn or wrong.
 *
 * A failed verification or abort() aborts the multipart upload. A record of each open multipart
 * upload sits beside the spool file, so the next init() of this replica aborts what a crash left.
 */
import { createHash, type Hash } from 'node:crypto';
import { unlink, writeFile, type FileHandle } from 'node:fs/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { classifyS3Error, isNoSuchUpload, isPreconditionFailed, isS3NotFound } from './s3-errors.js';
import { DigestMismatchError, StoreFullError, type BlobWriter } from './store.js';

export interface S3WriterTarget {
  client: S3Client;
  bucket: string;
  key: string;
  /** Bytes per uploaded part (at least 5 MiB, S3's minimum for all parts but the last). */
  partSize: number;
  /** Parts uploading at once per writer (write() waits beyond it: back-pressure on the download). */
  partsInFlight: number;
  /** Told when this writer created the object (not when it found it there). */
  added(size: number): void;
}

export class S3BlobWriter implements BlobWriter {
  written = 0;
  private readonly hash: Hash;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private closed = false;
  /** Bytes handed to part uploads so far. */
  private uploaded = 0;
  private partsStarted = 0;
  private uploadId: string | undefined;
  private readonly parts: Array<{ PartNumber: number; ETag: string }> = [];
  private readonly inflight = new Set<Promise<void>>();
  /** The first failure of a background part upload, thrown by the next write() or commit(). */
  private failure: Error | undefined;

  constructor(
    readonly digest: string,
    private readonly target: S3WriterTarget,
    private readonly handle: FileHandle,
    private readonly spoolPath: string,
  ) {
    this.hash = createHash(digest.slice(0, digest.indexOf(':')));
  }

  private get recordPath(): string {
    return `${this.spoolPath}.upload`;
  }

  async write(data: Uint8Array | Uint8Array[]): Promise<void> {
    if (this.state !== 'open') throw new Error('write after commit or abort');
    if (this.failure) throw this.failure;
    const chunks = Array.isArray(data) ? data : [data];
    const total = chunks.reduce((n, c) => n + c.length, 0);
    try {
      let pos = this.written;
      for (const c of chunks) {
        for (let off = 0; off < c.length; ) {
          const { bytesWritten } = await this.handle.write(c, off, c.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException)?.code;
      throw code === 'ENOSPC' || code === 'EDQUOT' ? new StoreFullError(e) : e;
    }
    for (const c of chunks) this.hash.update(c);
    this.written += total;
    // From here the bytes are appended, so this call must not throw: a caller that sees a write fail
    // takes its bytes as not written (the download re-hashes [0, written) plus what it still holds when
    // it switches to pass-through; counting them twice would fail verification). A part upload that
    // failed meanwhile is thrown by the next write() or commit().
    while (this.written - this.uploaded >= this.target.partSize && !this.failure) {
      while (this.inflight.size >= this.target.partsInFlight) await Promise.race(this.inflight);
      if (this.failure) break; // set by a part upload while we waited
      this.startPart(this.target.partSize);
    }
  }

  async readAt(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.written - position, into ? into.length : Infinity));
    const buf = into ?? Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.handle.read(buf, got, n - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === buf.length ? buf : buf.subarray(0, got);
  }

  /** Uploads the next `size` spooled bytes as the next part, in the background. */
  private startPart(size: number): void {
    const start = this.uploaded;
    const partNumber = ++this.partsStarted;
    this.uploaded += size;
    const p = (async () => {
      try {
        const uploadId = await this.ensureUpload();
        const body = await this.readAt(start, size);
        const res = await this.target.client.send(
          new UploadPartCommand({
            Bucket: this.target.bucket,
            Key: this.target.key,
            UploadId: uploadId,
            PartNumber: partNumber,
            Body: body,
            ContentLength: body.length,
            ContentMD5: md5(body),
          }),
        );
        this.parts.push({ PartNumber: partNumber, ETag: res.ETag ?? '' });
      } catch (e) {
        this.failure ??= classifyS3Error(e);
      }
    })();
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private uploadStarting: Promise<string> | undefined;

  private ensureUpload(): Promise<string> {
    this.uploadStarting ??= (async () => {
      const res = await this.target.client.send(new CreateMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, ContentType: 'application/octet-stream' }));
      if (!res.UploadId) throw new Error('S3 CreateMultipartUpload answered without an UploadId');
      this.uploadId = res.UploadId;
      // What the next init() of this replica aborts, should this process die before commit or abort.
      await writeFile(this.recordPath, JSON.stringify({ key: this.target.key, uploadId: res.UploadId }));
      return res.UploadId;
    })();
    return this.uploadStarting;
  }

  private async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all(this.inflight);
  }

  async commit(expectedSize?: number, onVerified?: () => void): Promise<void> {
    if (this.state !== 'open') throw new Error(`commit after ${this.state}`);
    const actual = `${this.digest.slice(0, this.digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (actual !== this.digest || (expectedSize !== undefined && expectedSize !== this.written)) {
      await this.abort();
      throw new DigestMismatchError(this.digest, actual, this.written);
    }
    onVerified?.();
    try {
      if (this.uploaded === 0) await this.putWhole();
      else await this.completeUpload();
    } catch (e) {
      await this.abort();
      throw classifyS3Error(e);
    }
    this.state = 'committed';
    await unlink(this.spoolPath).catch(() => undefined);
  }

  /** A blob smaller than a part: one conditional PUT. */
  private async putWhole(): Promise<void> {
    const body = await this.readAt(0, this.written);
    try {
      await this.target.client.send(
        new PutObjectCommand({
          Bucket: this.target.bucket,
          Key: this.target.key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body),
          ContentType: 'application/octet-stream',
          IfNoneMatch: '*',
        }),
      );
    } catch (e) {
      if (isPreconditionFailed(e)) return; // stored already (by another writer): the work is done
      throw e;
    }
    this.target.added(this.written);
  }

  private async completeUpload(): Promise<void> {
    if (this.written > this.uploaded) this.startPart(this.written - this.uploaded);
    await this.settle();
    if (this.failure) throw this.failure;
    if (await this.exists()) {
      await this.abortUpload();
      return;
    }
    const parts = [...this.parts].sort((a, b) => a.PartNumber - b.PartNumber);
    await this.target.client.send(
      new CompleteMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: this.uploadId, MultipartUpload: { Parts: parts } }),
    );
    await unlink(this.recordPath).catch(() => undefined);
    this.target.added(this.written);
  }

  private async exists(): Promise<boolean> {
    try {
      await this.target.client.send(new HeadObjectCommand({ Bucket: this.target.bucket, Key: this.target.key }));
      return true;
    } catch (e) {
      if (isS3NotFound(e)) return false;
      throw e;
    }
  }

  private async abortUpload(): Promise<void> {
    await this.settle();
    const uploadId = this.uploadId ?? (await this.uploadStarting?.catch(() => undefined));
    if (uploadId) {
      try {
        await this.target.client.send(new AbortMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: uploadId }));
      } catch (e) {
        // Unreachable now: the record stays, and init() or the lifecycle sweep aborts it later.
        if (!isNoSuchUpload(e) && !isS3NotFound(e)) return;
      }
    }
    await unlink(this.recordPath).catch(() => undefined);
  }

  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    const was = this.state;
    this.state = 'aborted';
    if (was === 'open' || this.uploadId !== undefined) await this.abortUpload();
    // The open handle keeps the bytes readable (readAt after abort) until close().
    await unlink(this.spoolPath).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.state === 'open') await this.abort();
    await this.handle.close().catch(() => undefined);
  }
}

function md5(b: Uint8Array): string {
  return createHash('md5').update(b).digest('base64');
}
