/**
 * The BlobStore contract on a real Ceph RGW (the run's shared Ceph, test/helpers/ceph.ts; a bucket
 * per store), plus what only the S3 store does: multipart uploads that appear only verified, the
 * lifecycle sweep of stale uploads, and typed errors when the object store cannot be reached.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, CreateMultipartUploadCommand, DeleteBucketCommand, DeleteObjectsCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CachingBlobStore } from '../../src/cache/caching-blob-store.js';
import { addOutageBreaker } from '../../src/storage/s3-breaker.js';
import { s3ClientConfig } from '../../src/storage/s3-client.js';
import { S3BlobStore } from '../../src/storage/s3-store.js';
import { DigestMismatchError, StoreFullError, StoreUnavailableError, type BlobStore } from '../../src/storage/store.js';
import { cephSkipReason, s3Server, type S3Server } from '../helpers/ceph.js';
import { freePort, listenOn } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { blobStoreContract, digestOf, expectBytes, readStream } from './store.contract.js';

const SKIP = cephSkipReason('S3 blob store');
const MiB = 1024 * 1024;

describe.skipIf(SKIP !== undefined)('S3BlobStore on Ceph RGW', () => {
  let s3: S3Server;
  let client: S3Client;
  /** One bucket for the contract suites; each store gets a prefix of its own in it. */
  let shared: string;
  let n = 0;
  beforeAll(async () => {
    s3 = await s3Server();
    client = s3.client();
    shared = await s3.newBucket();
  }, 180_000);
  afterAll(async () => {
    if (shared) await s3.removeBucket(shared);
    client?.destroy();
  });

  /** A store under a fresh prefix with its own spool directory; `partSize` small so multipart runs often. */
  const fixture = (wrap: (s: S3BlobStore) => BlobStore) => async () => {
    const bucket = shared;
    const spoolDir = await mkdtemp(join(tmpdir(), 's3-spool-'));
    const prefix = `store-${++n}/`;
    const store = new S3BlobStore({ client, bucket, prefix, spoolDir, partSize: 5 * MiB });
    return {
      store: wrap(store),
      cleanup: async () => {
        await s3.clear(bucket, prefix);
        await rm(spoolDir, { recursive: true, force: true });
      },
      /** Local spool files and upload records, and multipart uploads under the prefix. */
      tempEntries: async () => {
        const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
        return [...(await readdir(spoolDir).catch(() => [])), ...(uploads.Uploads ?? []).map((u) => `upload:${u.Key}`)];
      },
      /** What a crash mid-write leaves: a spool file, and a multipart upload with a part and its record. */
      plantLeftover: async () => {
        const key = `${prefix}blobs/sha256/ab/${'ab'.repeat(32)}`;
        const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
        await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: randomBytes(1000) }));
        await writeFile(join(spoolDir, 'blob-1-crashed'), randomBytes(1000));
        await writeFile(join(spoolDir, 'blob-1-crashed.upload'), JSON.stringify({ key, uploadId: UploadId }));
      },
    };
  };
  blobStoreContract('S3BlobStore (Ceph RGW)', fixture((s) => s));
  blobStoreContract('CachingBlobStore over S3BlobStore (Ceph RGW)', fixture((s) => new CachingBlobStore(s, { memoryBytes: 64 * 1024, maxEntries: 8 })));

  describe('multipart', () => {
    let bucket: string;
    let spoolDir: string;
    let store: S3BlobStore;
    beforeAll(async () => {
      bucket = await s3.newBucket();
      spoolDir = await mkdtemp(join(tmpdir(), 's3-spool-'));
      store = new S3BlobStore({ client, bucket, prefix: '', spoolDir, partSize: 5 * MiB });
      await store.init();
    });
    afterAll(async () => {
      await s3.removeBucket(bucket);
      await rm(spoolDir, { recursive: true, force: true });
    });

    const uploads = async () => (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];
    const objects = async () => ((await client.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map((o) => o.Key);

    it('uploads parts while the bytes arrive, shows no object until commit, then the verified whole', async () => {
      const bytes = randomBytes(17 * MiB + 3);
      const d = digestOf(bytes);
      const w = await store.createWriter(d);
      for (let off = 0; off < bytes.length; off += MiB) await w.write(bytes.subarray(off, off + MiB));
      // Parts go up during the writes, in the background: an upload opens, and still no object.
      await waitFor(async () => (await uploads()).length > 0, 10_000, 'the multipart upload to open');
      expect((await uploads()).map((u) => u.Key)).toEqual([store.keys.blob(d)]);
      expect(await objects()).toEqual([]);
      expect(await store.stat(d)).toBeUndefined();
      expectBytes(await w.readAt(9 * MiB, MiB), bytes.subarray(9 * MiB, 10 * MiB));
      await w.commit(bytes.length);
      await w.close();
      expect(await uploads()).toEqual([]);
      expect(await store.stat(d)).toEqual({ digest: d, size: bytes.length });
      expectBytes(await readStream((await store.open(d))!), bytes);
      expectBytes(await readStream((await store.open(d, { start: 5 * MiB - 10, end: 10 * MiB + 10 }))!), bytes.subarray(5 * MiB - 10, 10 * MiB + 11));
    });

    it('a large blob that does not match its digest leaves no object and no upload', async () => {
      const bytes = randomBytes(11 * MiB);
      const d = digestOf(Buffer.from('something else'));
      const w = await store.createWriter(d);
      for (let off = 0; off < bytes.length; off += MiB) await w.write(bytes.subarray(off, off + MiB));
      // The parts upload in the background: wait for the upload to open (under load it trails write()).
      await waitFor(async () => (await uploads()).length > 0, 10_000, 'the multipart upload to open');
      expect(await uploads()).toHaveLength(1);
      await expect(w.commit()).rejects.toBeInstanceOf(DigestMismatchError);
      await w.close();
      expect(await uploads()).toEqual([]);
      expect(await store.stat(d)).toBeUndefined();
      expect(await readdir(spoolDir)).toEqual([]);
    });

    it('concurrent large writers of one digest: both commit, one whole object, no upload left', async () => {
      const bytes = randomBytes(12 * MiB + 1);
      const d = digestOf(bytes);
      const [w1, w2] = await Promise.all([store.createWriter(d), store.createWriter(d)]);
      for (let off = 0; off < bytes.length; off += MiB) await Promise.all([w1.write(bytes.subarray(off, off + MiB)), w2.write(bytes.subarray(off, off + MiB))]);
      await Promise.all([w1.commit(bytes.length), w2.commit(bytes.length)]);
      await Promise.all([w1.close(), w2.close()]);
      expect(await uploads()).toEqual([]);
      expectBytes(await store.read(d), bytes);
      expect((await objects()).filter((k) => k === store.keys.blob(d))).toHaveLength(1);
    });

    it('sweepTemp aborts uploads older than its age (a crashed replica) and leaves younger ones', async () => {
      const key = store.keys.blob(digestOf(Buffer.from('crashed elsewhere')));
      await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      expect(await store.sweepTemp(60 * 60 * 1000)).toBe(0);
      expect(await uploads()).toHaveLength(1);
      // Ceph's clock and ours: anything initiated before "now + 1 s" counts as older than -1 s.
      expect(await store.sweepTemp(-1000)).toBe(1);
      expect(await uploads()).toEqual([]);
    });
  });

  describe('when the object store is full (a quota radosgw enforces)', () => {
    let full: S3BlobStore;
    let fullClient: S3Client;
    let spoolDir: string;
    let bucket: string;
    beforeAll(async () => {
      spoolDir = await mkdtemp(join(tmpdir(), 's3-spool-'));
      fullClient = s3.client(await s3.quotaUser(1024 * 1024));
      bucket = `full-${process.pid}-${Date.now()}`;
      await fullClient.send(new CreateBucketCommand({ Bucket: bucket }));
      full = new S3BlobStore({ client: fullClient, bucket, prefix: '', spoolDir, partSize: 5 * MiB });
      await full.init();
    });
    afterAll(async () => {
      const keys = (await inBucket()).map((Key) => ({ Key: Key! }));
      if (keys.length > 0) await fullClient.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
      await fullClient.send(new DeleteBucketCommand({ Bucket: bucket }));
      fullClient.destroy();
      await rm(spoolDir, { recursive: true, force: true });
    });
    const inBucket = async () => ((await fullClient.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map((o) => o.Key);
    const openUploads = async () => (await fullClient.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];

    it('put and a small writer throw StoreFullError (not unavailable) and keep nothing; a blob within the quota still fits', async () => {
      const big = randomBytes(2 * MiB);
      const err = await full.put(digestOf(big), big).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreFullError);
      expect(err, (err as Error)?.message).not.toBeInstanceOf(StoreUnavailableError);
      const w = await full.createWriter(digestOf(big));
      await w.write(big);
      await expect(w.commit(big.length)).rejects.toBeInstanceOf(StoreFullError);
      await w.close();
      expect(await inBucket()).toEqual([]);
      const small = randomBytes(1000);
      await full.put(digestOf(small), small);
      expectBytes(await full.read(digestOf(small)), small);
    });

    it('a large writer: write() throws StoreFullError once a part is refused (the download passes through), and abort leaves no upload', async () => {
      const bytes = randomBytes(16 * MiB);
      const w = await full.createWriter(digestOf(bytes));
      let thrown: unknown;
      try {
        for (let off = 0; off < bytes.length; off += MiB) await w.write(bytes.subarray(off, off + MiB));
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(StoreFullError);
      // What was written stays readable for the readers of the pass-through.
      expectBytes(await w.readAt(0, w.written), bytes.subarray(0, w.written));
      await w.abort();
      await w.close();
      expect(await openUploads()).toEqual([]);
      expect(await full.stat(digestOf(bytes))).toBeUndefined();
      expect(await readdir(spoolDir)).toEqual([]);
    });
  });

  describe('when the object store cannot be reached', () => {
    let dead: S3BlobStore;
    let deadClient: S3Client;
    let spoolDir: string;
    beforeAll(async () => {
      spoolDir = await mkdtemp(join(tmpdir(), 's3-spool-'));
      // A port nothing listens on: every request is refused.
      deadClient = new S3Client(s3ClientConfig({ endpoint: `http://127.0.0.1:${await freePort()}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'x', secretAccessKey: 'y' }, maxAttempts: 1 }));
      dead = new S3BlobStore({ client: deadClient, bucket: 'nowhere', prefix: '', spoolDir });
    });
    afterAll(async () => {
      deadClient.destroy();
      await rm(spoolDir, { recursive: true, force: true });
    });

    it('init still succeeds (the mirror starts), and every operation throws StoreUnavailableError, a StoreFullError', async () => {
      await dead.init();
      const d = digestOf(Buffer.from('x'));
      for (const op of [() => dead.stat(d), () => dead.open(d), () => dead.read(d), () => dead.createWriter(d), () => dead.put(d, Buffer.from('x')), () => dead.delete(d), () => dead.sweepTemp(0)]) {
        const err = await op().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(StoreUnavailableError);
        expect(err).toBeInstanceOf(StoreFullError);
      }
      await expect((async () => {
        for await (const b of dead.list()) void b;
      })()).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(await readdir(spoolDir)).toEqual([]);
    });

    it('with the outage breaker, an endpoint that drops connections is tried once per period, not by every call', async () => {
      const sockets: Socket[] = [];
      const black = createServer((sock) => {
        sockets.push(sock);
        sock.destroy(); // accepts and hangs up: no HTTP answer
      });
      const port = await listenOn(black);
      const c = new S3Client(s3ClientConfig({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'x', secretAccessKey: 'y' }, maxAttempts: 1 }));
      const clock = { now: 1_000_000 };
      addOutageBreaker(c, 5000, () => clock.now);
      const store = new S3BlobStore({ client: c, bucket: 'b', prefix: '', spoolDir });
      const d = digestOf(Buffer.from('x'));
      try {
        await expect(store.stat(d)).rejects.toBeInstanceOf(StoreUnavailableError);
        expect(sockets).toHaveLength(1);
        // Open: every call fails at once, typed, without a connection.
        for (const op of [() => store.stat(d), () => store.read(d), () => store.createWriter(d), () => store.put(d, Buffer.from('x'))]) await expect(op()).rejects.toBeInstanceOf(StoreUnavailableError);
        expect(sockets).toHaveLength(1);
        // After the period one call tries again.
        clock.now += 5001;
        await expect(store.stat(d)).rejects.toBeInstanceOf(StoreUnavailableError);
        expect(sockets).toHaveLength(2);
      } finally {
        c.destroy();
        await new Promise<void>((r) => black.close(() => r()));
      }
    });

    it('a wrong secret or a missing bucket is unavailable too, not a crash', async () => {
      const bucket = await s3.newBucket();
      const wrong = new S3Client(s3ClientConfig({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: 'wrong' }, maxAttempts: 1 }));
      try {
        const bad = new S3BlobStore({ client: wrong, bucket, prefix: '', spoolDir });
        await expect(bad.stat(digestOf(Buffer.from('x')))).rejects.toBeInstanceOf(StoreUnavailableError);
        const missing = new S3BlobStore({ client, bucket: `${bucket}-missing`, prefix: '', spoolDir });
        await expect(missing.put(digestOf(Buffer.from('x')), Buffer.from('x'))).rejects.toBeInstanceOf(StoreUnavailableError);
      } finally {
        wrong.destroy();
        await s3.removeBucket(bucket);
      }
    });
  });
});
