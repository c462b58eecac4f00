/**
 * Several replicas, one cache (issue 14): three real replica processes (`node dist/main.js`) over one
 * real Ceph RGW bucket (the run's shared Ceph) with their records in one real Redis that also
 * coordinates them (storage.redis.url == fleet.redisUrl, as a deployment runs), in front of one fake
 * upstream that records every request. One upstream fetch per blob per fleet, a dead owner taken
 * over, that Redis going away and coming back (records and coordination fall back together), real
 * clients through nginx.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cephSkipReason, s3Server, type S3Server } from '../helpers/ceph.js';
import { digestOf, digestOfStream } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { blobOf, busyboxImage, makeImage, makeRandomLayer, MT, pseudoRandomBytes, type Image } from '../helpers/images.js';
import { redisServerAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { requireTools } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';
import { startDockerd } from '../e2e/harness/dockerd.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from '../e2e/harness/tools.js';
import { fetchBlob, pull, startFleet, type ImageRef, type Replica } from './harness.js';
import { startNginx } from './nginx.js';

const ACCEPT = MT.ociManifest;
const LEASE_TTL_MS = 3000;

const SKIP = cephSkipReason('fleet on S3 + Redis') ?? requireTools('fleet on S3 + Redis', { 'redis-server': redisServerAvailable() });

let fake: FakeUpstream;
let redis: RedisServer;
let s3: S3Server;
let client: S3Client;
let bucket: string;
let replicas: Replica[];
const PREFIX = 'fleet/';

const ref = (repo: string, tag: string, img: Image): ImageRef => ({ repo, tag, blobs: [img.config.digest, ...img.layers.map((l) => l.digest)] });
const blobGets = (digest: string) => fake.requests.filter((r) => r.kind === 'blob' && r.method === 'GET' && r.path.endsWith(digest));
const fleetMetric = async (r: Replica, name: string, labels: Record<string, string>) => r.mirror.metric(name, labels);

beforeAll(async () => {
  if (SKIP) return;
  [s3, redis, fake] = await Promise.all([s3Server(), startRedis(), FakeUpstream.start({ auth: 'none', cdn: false })]);
  client = s3.client();
  bucket = await s3.newBucket();
  const storage = {
    type: 's3',
    s3: { endpoint: s3.endpoint, region: s3.region, bucket, prefix: PREFIX, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, partSize: '8MiB' },
    redis: { url: redis.url, keyPrefix: 'fleet-meta:' },
  };
  replicas = await startFleet({ n: 3, upstreams: { 'docker.io': { url: fake.url, libraryPrefix: true } }, redisUrl: redis.url, leaseTtlMs: LEASE_TTL_MS, extraConfig: { storage } });
  await Promise.all(replicas.map((r) => waitFor(async () => (await fleetMetric(r, 'mirror_fleet_coordination', { mode: 'fleet' })) === 1, 10_000, `${r.id} to reach Redis`)));
}, 180_000);

afterAll(async () => {
  await Promise.all((replicas ?? []).map((r) => r.mirror.stop()));
  if (bucket) await s3.removeBucket(bucket);
  client?.destroy();
  await Promise.all([redis?.close(), fake?.close()]);
});

/** The blob's object in the bucket holds exactly the bytes its digest names (objects appear only whole). */
async function storedWhole(digest: string): Promise<boolean> {
  const key = `${PREFIX}blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
  try {
    const o = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return (await digestOfStream(o.Body as AsyncIterable<Uint8Array>)) === digest;
  } catch (e) {
    if ((e as Error).name === 'NoSuchKey') return false;
    throw e;
  }
}

/** Keys of every blob object in the bucket. */
async function objectKeys(): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${PREFIX}blobs/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(o.Key!);
    token = page.NextContinuationToken;
  } while (token);
  return keys;
}

describe.skipIf(SKIP !== undefined)('three replicas over one S3 bucket and one Redis', () => {
  it('30 concurrent clients spread over the replicas: upstream sees each blob once, every body is right, non-owners stream before the download ends', async () => {
    const shared = [makeRandomLayer(2 * 1024 * 1024, 'fleet-shared-1'), makeRandomLayer(1024 * 1024, 'fleet-shared-2')];
    const a = makeImage({ layers: [shared[0]!, shared[1]!, makeRandomLayer(512 * 1024, 'fleet-a')] });
    const b = makeImage({ layers: [shared[0]!, shared[1]!, makeRandomLayer(512 * 1024, 'fleet-b')] });
    const big = makeImage({ layers: [blobOf(pseudoRandomBytes(256 * 1024 * 1024, 'fleet-big'), MT.ociLayer)] });
    fake.putImage('library/alpha', a, 'v1');
    fake.putImage('library/beta', b, 'v1');
    fake.putImage('library/big', big, 'v1');
    const images = [ref('alpha', 'v1', a), ref('beta', 'v1', b), ref('big', 'v1', big)];
    // At least 0.64 s for the big layer (at most 400 MiB/s): every client joins while it runs.
    fake.faults.trickle = { bytesPerTick: 4 * 1024 * 1024, tickMs: 10 };
    try {
      // Client i pulls image i % 3 through replica floor(i / 3) % 3: ten clients per image, spread over all three replicas.
      const clients = Array.from({ length: 30 }, (_, i) => ({ replica: replicas[Math.floor(i / 3) % 3]!, image: images[i % 3]! }));
      const results = await Promise.all(clients.map((c) => pull(c.replica.mirror.url, c.image, ACCEPT)));

      // Every body was checked against its digest by pull(); every blob crossed from upstream once.
      const all = new Set([a, b, big].flatMap((img) => [img.config.digest, ...img.layers.map((l) => l.digest)]));
      const takeovers = await Promise.all(replicas.map((r) => fleetMetric(r, 'mirror_fleet_downloads_total', { role: 'takeover' })));
      for (const d of all) expect(blobGets(d), `${d}: ${blobGets(d).map((g) => `${g.path} range=${String(g.headers.range)}`).join('; ')}; takeovers ${takeovers.join(',')}; big ${big.layers[0]!.digest}`).toHaveLength(1);

      // The big layer: every client had its first byte before any had its last (which comes only
      // once the one upstream download is complete and verified).
      const bigFetches = results.flatMap((r) => r.filter((f) => f.digest === big.layers[0]!.digest));
      expect(bigFetches).toHaveLength(10);
      const firstEnd = Math.min(...bigFetches.map((f) => f.endAt));
      for (const f of bigFetches) expect(f.firstByteAt).toBeLessThan(firstEnd);

      // Each blob had one owner in the fleet; the other replicas streamed from it.
      const owners = await Promise.all(replicas.map((r) => fleetMetric(r, 'mirror_fleet_downloads_total', { role: 'owner' })));
      const peers = await Promise.all(replicas.map((r) => fleetMetric(r, 'mirror_fleet_downloads_total', { role: 'peer' })));
      expect(owners.reduce((x, y) => x + y, 0)).toBe(all.size);
      expect(peers.reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
      const peerReads = await Promise.all(replicas.map((r) => fleetMetric(r, 'mirror_fleet_peer_reads_total', {})));
      expect(peerReads.reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
      for (const d of all) await waitFor(() => storedWhole(d), 20_000, `${d} whole in the bucket`);
    } finally {
      fake.faults.trickle = undefined;
    }
  }, 150_000);

  it('the owner killed with SIGKILL mid-download: the other replicas take over and their clients complete; nothing partial is stored', async () => {
    const layer = blobOf(pseudoRandomBytes(48 * 1024 * 1024, 'fleet-kill'), MT.ociLayer);
    const img = makeImage({ layers: [layer] });
    fake.putImage('library/kill', img, 'v1');
    const [owner, r1, r2] = replicas as [Replica, Replica, Replica];
    // The manifest first everywhere (membership), then the owner starts the slow download alone.
    for (const r of replicas) expect((await fetch(`${r.mirror.url}/v2/kill/manifests/v1`, { headers: { accept: ACCEPT } })).status).toBe(200);
    fake.faults.trickle = { bytesPerTick: 256 * 1024, tickMs: 10 }; // ~25 MiB/s: about 2 s
    try {
      const url = (r: Replica) => `${r.mirror.url}/v2/kill/blobs/${layer.digest}`;
      const ownerClient = fetchBlob(url(owner), layer.digest).catch((e: Error) => e);
      await waitFor(() => blobGets(layer.digest).length === 1, 10_000, 'the owner to start the upstream download');
      const started = performance.now();
      const received = [0, 0, 0];
      const others = [r1, r2, r1].map((r, i) => fetchBlob(url(r), layer.digest, { progress: (n) => (received[i] = n) }));
      await waitFor(() => received.every((n) => n > 1024 * 1024), 20_000, () => `every client of the other replicas to have bytes (${received.join(', ')})`);
      await owner.mirror.kill('SIGKILL');
      const done = await Promise.all(others);
      const elapsed = performance.now() - started;
      for (const f of done) expect(f.size).toBe(layer.size);
      expect(await ownerClient).toBeInstanceOf(Error); // its own client lost its connection with it
      // One replica took over, resuming with Range where the owner's stream stopped.
      const gets = blobGets(layer.digest);
      expect(gets, gets.map((g) => `${g.method} ${g.path} ${String(g.headers.range)}`).join('; ')).toHaveLength(2);
      expect(String(gets[1]!.headers.range ?? '')).toMatch(/^bytes=[1-9]\d*-$/);
      const takeovers = (await fleetMetric(r1, 'mirror_fleet_downloads_total', { role: 'takeover' })) + (await fleetMetric(r2, 'mirror_fleet_downloads_total', { role: 'takeover' }));
      expect(takeovers).toBe(1);
      // Within the lease expiry plus the transfer time (48 MiB at ~25 MiB/s, with slack for 2 busy cores).
      expect(elapsed).toBeLessThan(LEASE_TTL_MS + 15_000);
      // The replica that took over stores the blob once verified (its clients may finish first);
      // before that no object of it exists at all (the owner's multipart upload never completed).
      const key = `${PREFIX}blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`;
      await waitFor(() => storedWhole(layer.digest), 20_000, 'the blob whole in the bucket');
      expect((await objectKeys()).filter((k) => k === key)).toHaveLength(1);
      // The dead owner's multipart upload never became an object; restarted, it aborts it (its spool records it).
      await owner.mirror.restart();
      await waitFor(async () => ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }))).Uploads ?? []).length === 0, 20_000, 'the dead owner\'s multipart upload to be aborted');
    } finally {
      fake.faults.trickle = undefined;
      if (owner.mirror.exited) await owner.mirror.restart();
    }
  }, 60_000);

  it('Redis stopped mid-run: serving never stops, each replica says it coordinates and reads its records locally; back with Redis, one fetch per blob again', async () => {
    const mk = (seed: string) => makeImage({ layers: [makeRandomLayer(256 * 1024, seed)] });
    const earlier = mk('fleet-redis-earlier');
    const during = mk('fleet-redis-down');
    const after = mk('fleet-redis-back');
    fake.putImage('library/earlier', earlier, 'v1');
    fake.putImage('library/during', during, 'v1');
    fake.putImage('library/after', after, 'v1');
    const [r0] = replicas;
    await pull(r0!.mirror.url, ref('earlier', 'v1', earlier), ACCEPT);
    for (const r of replicas) expect(await fleetMetric(r, 'mirror_meta_store_mode', { mode: 'remote' })).toBe(1);

    // One Redis holds the records and the coordination: both fall back together.
    await redis.stop();
    await Promise.all(
      replicas.map(async (r) => {
        await waitFor(async () => (await fleetMetric(r, 'mirror_fleet_coordination', { mode: 'local' })) === 1, 10_000, `${r.id} to switch to local coordination`);
        await waitFor(async () => (await fleetMetric(r, 'mirror_meta_store_mode', { mode: 'local' })) === 1, 10_000, `${r.id} to read its records locally`);
      }),
    );
    // The replica that pulled an image before the outage serves it from its own records: no new upstream fetch.
    await pull(r0!.mirror.url, ref('earlier', 'v1', earlier), ACCEPT);
    for (const d of [earlier.config.digest, earlier.layers[0]!.digest]) expect(blobGets(d)).toHaveLength(1);
    for (const r of replicas) await pull(r.mirror.url, ref('earlier', 'v1', earlier), ACCEPT);
    for (const r of replicas) await pull(r.mirror.url, ref('during', 'v1', during), ACCEPT);
    for (const r of replicas) {
      expect(r.mirror.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('fleet coordination lost'))).toBe(true);
      expect(r.mirror.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('metadata store lost'))).toHaveLength(1);
      expect(await fleetMetric(r, 'mirror_fleet_coordination_transitions_total', { to: 'local' })).toBeGreaterThanOrEqual(1);
      expect(await fleetMetric(r, 'mirror_meta_store_transitions_total', { to: 'local' })).toBe(1);
    }
    expect(await Promise.all(replicas.map((r) => fleetMetric(r, 'mirror_fleet_downloads_total', { role: 'local' })))).not.toContain(undefined);

    await redis.start();
    await Promise.all(
      replicas.map(async (r) => {
        await waitFor(async () => (await fleetMetric(r, 'mirror_fleet_coordination', { mode: 'fleet' })) === 1, 10_000, `${r.id} to reach Redis again`);
        await waitFor(async () => (await fleetMetric(r, 'mirror_meta_store_mode', { mode: 'remote' })) === 1, 10_000, `${r.id} to read its records from Redis again`);
      }),
    );
    for (const r of replicas) {
      expect(r.mirror.lines.some((l) => l.msg === 'fleet coordination through Redis restored')).toBe(true);
      expect(r.mirror.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('metadata store restored'))).toHaveLength(1);
    }
    await Promise.all(replicas.flatMap((r) => [pull(r.mirror.url, ref('after', 'v1', after), ACCEPT), pull(r.mirror.url, ref('after', 'v1', after), ACCEPT)]));
    for (const d of [after.config.digest, after.layers[0]!.digest]) expect(blobGets(d)).toHaveLength(1);
    // Redis came back empty (no persistence): the records of what the fleet pulled since are in it again.
    const check = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      expect(await check.hexists('fleet-meta:tags|docker.io/library/after', 'v1')).toBe(1);
    } finally {
      check.disconnect();
    }
  }, 60_000);

  const CLIENTS_SKIP = ['nginx', 'skopeo', 'dockerd', 'docker', 'containerd', 'runc'].filter((t) => !hasTool(t)).join(', ') || (isRoot() ? undefined : 'needs root (dockerd)');
  const busy = busyboxImage({ cmd: ['/bin/sh', '-c', 'echo fleet-e2e'] });
  it.skipIf(CLIENTS_SKIP !== undefined || !busy)('real clients through nginx round robin over the replicas: skopeo copy and a dockerd pull succeed, each blob fetched once', async () => {
    fake.putImage('library/fleetbusy', busy!, '1');
    const lb = await startNginx(replicas.map((r) => r.mirror.url));
    const work = makeTempDir('regmirror-fleet-clients-');
    const host = lb.url.replace('http://', '');
    const dkd = await startDockerd({ mirrors: [lb.url], insecureRegistries: [host] });
    try {
      const dest = join(work, 'skopeo');
      const copy = await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/library/fleetbusy:1`, `dir:${dest}`], { timeoutMs: 60_000 });
      expect(copy.code, copy.stderr).toBe(0);
      for (const l of busy!.layers) expect(digestOf(await readFile(join(dest, l.digest.slice(7))))).toBe(l.digest);
      const pulled = await dkd.docker(['pull', 'fleetbusy:1'], { timeoutMs: 120_000 });
      expect(pulled.code, `${pulled.stderr}${dkd.logs().slice(-2000)}`).toBe(0);
      const ran = await dkd.docker(['run', '--rm', '--network', 'none', 'fleetbusy:1'], { timeoutMs: 60_000 });
      expect(ran.code, ran.stderr).toBe(0);
      expect(ran.stdout).toContain('fleet-e2e');
      // Round robin really spread the requests, and upstream saw each blob once for the whole fleet.
      const log = (await lb.accessLog()).join('\n');
      for (const r of replicas) expect(log, `nginx sent requests to ${r.mirror.url}`).toContain(r.mirror.url.replace('http://', ''));
      for (const d of [busy!.config.digest, ...busy!.layers.map((l) => l.digest)]) expect(blobGets(d), d).toHaveLength(1);
    } finally {
      await dkd.stop();
      await lb.stop();
      await cleanupDir(work);
    }
  }, 180_000);
});
