/**
 * The mirror on shared storage: blobs in a real Ceph RGW bucket (the run's shared Ceph), records in
 * a real Redis. A pull fills both; a mirror started afresh (a new, empty data directory: a new
 * replica) serves the image from them with no upstream call. And with S3 unreachable a pull still
 * works: the bytes pass through, verified, and nothing is kept.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cephSkipReason, s3Server, type S3Server } from '../helpers/ceph.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer, makeRandomLayer, MT, type Image } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { freePort } from '../helpers/ports.js';
import { redisServerAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { requireTools } from '../helpers/tools.js';

const SKIP = cephSkipReason('mirror on S3 + Redis') ?? requireTools('mirror on S3 + Redis', { 'redis-server': redisServerAvailable() });

describe.skipIf(SKIP !== undefined)('a mirror on S3 (Ceph RGW) and Redis', () => {
  let s3: S3Server;
  let client: S3Client;
  let bucket: string;
  let redis: RedisServer;
  let hub: FakeUpstream;
  const dirs: string[] = [];
  // A 12 MiB layer goes up as a multipart upload (5 MiB parts); the config and the small layer as one PUT each.
  const big = makeRandomLayer(12 * 1024 * 1024, 's3-big');
  const small = makeLayer([{ path: 'hello.txt', content: 'hello from S3' }]);
  const img = makeImage({ layers: [big, small], format: 'docker' });

  beforeAll(async () => {
    [s3, redis, hub] = await Promise.all([s3Server(), startRedis(), FakeUpstream.start()]);
    client = s3.client();
    bucket = await s3.newBucket();
    hub.putImage('library/app', img, 'v1');
  }, 180_000);
  afterAll(async () => {
    if (bucket) await s3.removeBucket(bucket);
    client?.destroy();
    await Promise.all([redis?.close(), hub?.close()]);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const mirrorOn = async (storage: Record<string, unknown>): Promise<TestMirror> => {
    const dataDir = await mkdtemp(join(tmpdir(), 's3-mirror-'));
    dirs.push(dataDir);
    return startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, dataDir, raw: { storage }, mirrorOptions: { lifecycleTimers: false } });
  };
  const s3Storage = (endpoint = s3.endpoint) => ({
    type: 's3',
    s3: { endpoint, region: s3.region, bucket, prefix: 'fleet/', forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, partSize: '5MiB' },
    redis: { url: redis.url, keyPrefix: 'it:' },
  });

  /** Pulls the image as docker does; every body checked against its digest. */
  const pull = async (mirror: TestMirror, image: Image) => {
    const m = await mirror.request('/v2/app/manifests/v1', { headers: { accept: DOCKER_ACCEPT } });
    expect(m.status).toBe(200);
    expect(m.headers.get('content-type')).toBe(MT.dockerManifest);
    expect(digestOf(Buffer.from(await m.arrayBuffer()))).toBe(image.manifest.digest);
    for (const blob of [image.config, ...image.layers]) {
      const r = await mirror.request(`/v2/library/app/blobs/${blob.digest}`);
      expect(r.status).toBe(200);
      expect(digestOf(Buffer.from(await r.arrayBuffer()))).toBe(blob.digest);
    }
  };
  const blobKeys = async () => ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'fleet/' }))).Contents ?? []).map((o) => o.Key).sort();
  const keyOf = (digest: string) => `fleet/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;

  it('pulls an image into the bucket and Redis; a fresh replica (empty data directory) serves it with no upstream call', async () => {
    const first = await mirrorOn(s3Storage());
    try {
      await pull(first, img);
      // The first pull stored everything: wait until the last blob is committed to S3.
      const all = [img.manifest, img.config, ...img.layers].map((b) => keyOf(b.digest)).sort();
      await expect.poll(blobKeys, { timeout: 10_000 }).toEqual(all);
    } finally {
      await first.stop();
    }
    expect(hub.count({ kind: 'cdn' })).toBe(3); // config + two layers, once each
    expect((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    const r = new Redis(redis.url);
    try {
      expect(await r.hkeys('it:tags|docker.io/library/app')).toEqual(['v1']);
      expect((await r.smembers('it:links|docker.io/library/app')).sort()).toEqual([img.manifest, img.config, ...img.layers].map((b) => b.digest).sort());
    } finally {
      r.disconnect();
    }

    hub.resetCounters();
    const second = await mirrorOn(s3Storage());
    try {
      await pull(second, img);
      // A range from S3 too (a resumed client).
      const part = await second.request(`/v2/library/app/blobs/${big.digest}`, { headers: { range: 'bytes=6000000-6000099' } });
      expect(part.status).toBe(206);
      expect(Buffer.from(await part.arrayBuffer())).toEqual(big.bytes.subarray(6_000_000, 6_000_100));
    } finally {
      await second.stop();
    }
    expect(hub.requests.filter((q) => q.kind !== 'base')).toEqual([]);
  });

  it('S3 lost mid-download: the client still gets every verified byte, nothing partial is an object, and the next start aborts the upload left behind', async () => {
    const layer = makeRandomLayer(16 * 1024 * 1024, 's3-cut');
    const image = makeImage({ layers: [layer], format: 'docker' });
    hub.putImage('library/app', image, 'v1');
    const endpoint = new URL(s3.endpoint);
    // S3 goes away once the first part (5 MiB) of the layer's multipart upload is on its way.
    const proxy = await startTcpProxy({ host: endpoint.hostname, port: Number(endpoint.port) });
    const dataDir = await mkdtemp(join(tmpdir(), 's3-mirror-'));
    dirs.push(dataDir);
    const start = () => startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, dataDir, raw: { storage: { ...s3Storage(proxy.url), redis: { url: '', keyPrefix: 'x:' } } }, mirrorOptions: { lifecycleTimers: false } });
    let mirror = await start();
    try {
      hub.resetCounters();
      const m = await mirror.request('/v2/app/manifests/v1', { headers: { accept: DOCKER_ACCEPT } });
      expect(m.status).toBe(200);
      await m.arrayBuffer();
      const before = proxy.upBytes;
      hub.faults.trickle = { bytesPerTick: 512 * 1024, tickMs: 5 };
      const res = await mirror.request(`/v2/library/app/blobs/${layer.digest}`);
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const chunks: Uint8Array[] = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        if (!proxy.isCut && proxy.upBytes - before > 5 * 1024 * 1024) proxy.cut();
      }
      expect(proxy.isCut).toBe(true);
      expect(digestOf(Buffer.concat(chunks))).toBe(layer.digest);
      expect(hub.count({ kind: 'cdn', path: new RegExp(layer.digest.slice(7)) })).toBe(1);
    } finally {
      delete hub.faults.trickle;
      await mirror.stop({ keepData: true });
    }
    proxy.restore();
    expect(await blobKeys()).not.toContain(keyOf(layer.digest));
    // The abort could not reach S3; its record stays in this replica's spool, and the next start aborts it.
    const uploads = async () => ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).map((u) => u.Key);
    expect(await uploads()).toEqual([keyOf(layer.digest)]);
    mirror = await start();
    await mirror.stop({ keepData: true });
    expect(await uploads()).toEqual([]);
    await proxy.close();
    hub.putImage('library/app', img, 'v1');
  });

  it('with S3 unreachable (nothing listens on its port) a pull still works, verified, passed through and not kept', async () => {
    const other = makeImage({ layers: [makeRandomLayer(300_000, 's3-down')], format: 'docker' });
    hub.putImage('library/app', other, 'v1');
    const dead = `http://127.0.0.1:${await freePort()}`;
    const mirror = await mirrorOn({ ...s3Storage(dead), redis: { url: '', keyPrefix: 'x:' } });
    try {
      hub.resetCounters();
      await pull(mirror, other);
      expect(hub.count({ kind: 'cdn' })).toBe(2);
      // Nothing was kept: the same pull goes upstream again, and works again.
      await pull(mirror, other);
      expect(hub.count({ kind: 'cdn' })).toBe(4);
    } finally {
      await mirror.stop();
      hub.putImage('library/app', img, 'v1');
    }
  });
});
