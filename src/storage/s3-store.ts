/**
 * BlobStore on an S3-compatible object store (AWS S3, Ceph RGW, MinIO, R2), shared by every replica
 * of a fleet. Objects appear only verified (s3-writer.ts); reads use ranged GETs; a local spool
 * directory (private to this replica) holds in-progress bytes for joined readers.
 *
 * Failures: an absent object is `undefined`; an unreachable, refusing or failing object store throws
 * StoreUnavailableError (a StoreFullError: downloads pass through uncached and verified), a full one
 * StoreFullError. `space()` is unknown (undefined): object stores have no free-space figure.
 */
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { StoreEvents } from './fs-store.js';
import { splitDigest } from './paths.js';
import { classifyS3Error, isNoSuchUpload, isPreconditionFailed, isS3NotFound } from './s3-errors.js';
import { S3Keys } from './s3-keys.js';
import { S3BlobWriter } from './s3-writer.js';
import { DigestMismatchError, StoreFullError, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange, type StatOptions } from './store.js';

export interface S3BlobStoreOptions {
  /** The SDK client (endpoint, region, credentials, path style are its configuration). */
  client: S3Client;
  bucket: string;
  /** Prefix of every key (e.g. `regmirror/`); empty: the bucket's root. */
  prefix: string;
  /** A local directory of this replica's in-progress bytes (swept by init()). */
  spoolDir: string;
  /** Bytes per multipart part (default 8 MiB; at least 5 MiB). Blobs smaller than one part are one PUT. */
  partSize?: number;
  /** Parts uploading at once per blob (default 2). */
  partsInFlight?: number;
  events?: StoreEvents;
}

const MIN_PART = 5 * 1024 * 1024;

export class S3BlobStore implements BlobStore {
  readonly keys: S3Keys;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly spoolDir: string;
  private readonly partSize: number;
  private readonly partsInFlight: number;
  /** Open read streams per digest (eviction leaves these blobs alone). */
  private readonly reading = new Map<string, number>();

  constructor(private readonly opts: S3BlobStoreOptions) {
    this.client = opts.client;
    this.bucket = opts.bucket;
    this.keys = new S3Keys(opts.prefix);
    this.spoolDir = opts.spoolDir;
    this.partSize = Math.max(MIN_PART, opts.partSize ?? 8 * 1024 * 1024);
    this.partsInFlight = Math.max(1, opts.partsInFlight ?? 2);
  }

  /**
   * Aborts the multipart uploads this replica's crash left (their records are in the spool
   * directory) and empties the spool. Never fails for an unreachable store: the mirror starts and
   * passes bytes through; an upload it could not abort keeps its record for the next start (and
   * the lifecycle sweep of stale uploads removes it in any case).
   */
  async init(): Promise<void> {
    await mkdir(this.spoolDir, { recursive: true });
    for (const name of await readdir(this.spoolDir)) {
      const path = join(this.spoolDir, name);
      if (name.endsWith('.upload') && (await this.abortRecorded(path))) continue;
      if (!name.endsWith('.upload')) await rm(path, { recursive: true, force: true });
    }
  }

  /** Whether the recorded upload still needs aborting (the store could not be reached). */
  private async abortRecorded(recordPath: string): Promise<boolean> {
    let record: { key?: unknown; uploadId?: unknown };
    try {
      record = JSON.parse(await readFile(recordPath, 'utf8')) as typeof record;
    } catch {
      await rm(recordPath, { force: true });
      return false;
    }
    if (typeof record.key === 'string' && typeof record.uploadId === 'string') {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: record.key, UploadId: record.uploadId }));
      } catch (e) {
        if (!isNoSuchUpload(e) && !isS3NotFound(e)) return true;
      }
    }
    await rm(recordPath, { force: true });
    return false;
  }

  async stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }));
      const info: BlobInfo = { digest, size: res.ContentLength ?? 0 };
      if (opts?.mtime && res.LastModified) info.mtimeMs = res.LastModified.getTime();
      return info;
    } catch (e) {
      if (isS3NotFound(e)) return undefined;
      throw classifyS3Error(e);
    }
  }

  async open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    let body: Readable;
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
      );
      body = res.Body as Readable;
    } catch (e) {
      if (isS3NotFound(e)) return undefined;
      throw classifyS3Error(e);
    }
    this.reading.set(digest, (this.reading.get(digest) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.reading.get(digest) ?? 1) - 1;
      if (n <= 0) this.reading.delete(digest);
      else this.reading.set(digest, n);
    };
    body.once('close', release);
    body.once('error', release);
    return body;
  }

  async read(digest: string): Promise<Buffer | undefined> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }));
      return Buffer.from(await res.Body!.transformToByteArray());
    } catch (e) {
      if (isS3NotFound(e)) return undefined;
      throw classifyS3Error(e);
    }
  }

  /**
   * Asks the store first (a HEAD): an unreachable store throws StoreUnavailableError here, before
   * any byte, so the download passes through from its start.
   */
  async createWriter(digest: string): Promise<BlobWriter> {
    const key = this.keys.blob(digest);
    await this.stat(digest);
    await mkdir(this.spoolDir, { recursive: true });
    const spoolPath = join(this.spoolDir, `blob-${process.pid}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`);
    let handle;
    try {
      handle = await open(spoolPath, 'w+');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException)?.code;
      throw code === 'ENOSPC' || code === 'EDQUOT' ? new StoreFullError(e) : e;
    }
    return new S3BlobWriter(
      digest,
      {
        client: this.client,
        bucket: this.bucket,
        key,
        partSize: this.partSize,
        partsInFlight: this.partsInFlight,
        added: (size) => this.opts.events?.added(digest, size),
      },
      handle,
      spoolPath,
    );
  }

  async put(digest: string, bytes: Uint8Array): Promise<void> {
    const [alg] = splitDigest(digest);
    const actual = `${alg}:${createHash(alg).update(bytes).digest('hex')}`;
    if (actual !== digest) throw new DigestMismatchError(digest, actual, bytes.length);
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.keys.blob(digest),
          Body: bytes,
          ContentLength: bytes.length,
          ContentMD5: createHash('md5').update(bytes).digest('base64'),
          ContentType: 'application/octet-stream',
          IfNoneMatch: '*',
        }),
      );
    } catch (e) {
      if (isPreconditionFailed(e)) return; // already stored: the work is done
      throw classifyS3Error(e);
    }
    this.opts.events?.added(digest, bytes.length);
  }

  async delete(digest: string): Promise<void> {
    const info = await this.stat(digest);
    if (!info) return;
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }));
    } catch (e) {
      if (isS3NotFound(e)) return;
      throw classifyS3Error(e);
    }
    this.opts.events?.removed(digest, info.size);
  }

  async *list(): AsyncIterable<BlobInfo> {
    let token: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.keys.blobsPrefix, ContinuationToken: token }));
      } catch (e) {
        throw classifyS3Error(e);
      }
      for (const o of res.Contents ?? []) {
        const digest = o.Key === undefined ? undefined : this.keys.digestOf(o.Key);
        if (digest) yield { digest, size: o.Size ?? 0 };
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }

  busy(digest: string): boolean {
    return this.reading.has(digest);
  }

  space(): Promise<{ free: number; total: number } | undefined> {
    return Promise.resolve(undefined);
  }

  /**
   * The lifecycle sweep for crashed replicas: aborts multipart uploads under the blobs prefix
   * started more than `olderThanMs` ago (by any replica) and removes local spool files as old.
   */
  async sweepTemp(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let n = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.keys.blobsPrefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      } catch (e) {
        throw classifyS3Error(e);
      }
      for (const u of res.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated.getTime() > cutoff) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }));
          n++;
        } catch (e) {
          if (!isNoSuchUpload(e)) throw classifyS3Error(e);
        }
      }
      keyMarker = res.IsTruncated ? res.NextKeyMarker : undefined;
      uploadIdMarker = res.IsTruncated ? res.NextUploadIdMarker : undefined;
    } while (keyMarker);
    for (const name of await readdir(this.spoolDir).catch(() => [] as string[])) {
      const p = join(this.spoolDir, name);
      const s = await stat(p).catch(() => undefined);
      if (!s || s.mtimeMs > cutoff) continue;
      await rm(p, { force: true });
      n++;
    }
    return n;
  }
}
