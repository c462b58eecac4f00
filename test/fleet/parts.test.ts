/**
 * The fleet's parts on their own, against real servers: leases on a real redis-server (only the
 * holder renews or releases; a vanished lease is taken back on renewal), the peer endpoint over
 * real HTTP (a hostile or misconfigured peer gets 401 and nothing else; Range; bad input refused),
 * and the fleet configuration's validation.
 */
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configWithDefaults } from '../../src/config.js';
import { FleetCoordinator } from '../../src/fleet/coordinator.js';
import { Leases } from '../../src/fleet/leases.js';
import { InflightDownloads, type InflightObserver } from '../../src/transfer/inflight.js';
import { FleetReaders, TrackedBlobStore } from '../../src/fleet/readers.js';
import { loadConfig } from '../../src/config.js';
import { parse as parseYaml } from 'yaml';
import { RedisLink } from '../../src/fleet/link.js';
import { PeerClient } from '../../src/fleet/peer-client.js';
import { peerHandler, sameSecret } from '../../src/fleet/peer-endpoint.js';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { StoreUnavailableError, type BlobStore } from '../../src/storage/store.js';
import { silentLogger } from '../../src/mirror.js';
import { Agent } from 'undici';
import { readFileSync } from 'node:fs';
import { digestOf } from '../helpers/digest.js';
import { pseudoRandomBytes } from '../helpers/images.js';
import { listenOn } from '../helpers/ports.js';
import { redisServerAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { requireTools } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';

const DEFAULTS = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8');
const SECRET = 'parts-secret-0123456789abcdef';
const noInflightEvents: InflightObserver = { started() {}, joined() {}, resumed() {}, completed() {}, spilled() {}, failed() {} };

describe.skipIf(requireTools('fleet leases', { 'redis-server': redisServerAvailable() }) !== undefined)('leases on a real Redis', () => {
  let redis: RedisServer;
  const links: RedisLink[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const l of links) await l.close();
    await redis?.close();
  });
  const replica = async (id: string) => {
    const modes: string[] = [];
    const link = new RedisLink(new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 }), { logger: silentLogger, observer: { mode: (m) => modes.push(m) }, url: redis.url });
    links.push(link);
    await waitFor(() => link.up, 5000, `${id} connected`);
    return { leases: new Leases(link, { id, url: `http://${id}` }, 'parts:', 1000), modes };
  };

  /** A coordinator over `store` (the shared store) with its own scratch under `dir`, on the last replica's link. */
  const coordinatorOver = async (leases: Leases, store: BlobStore, dir: string, onRole: (role: string) => void = () => undefined) => {
    const scratch = new FsBlobStore(join(dir, 'scratch'));
    await scratch.init();
    return new FleetCoordinator({
      link: links[links.length - 1]!,
      leases,
      main: new InflightDownloads({ store, observer: noInflightEvents }),
      peers: new InflightDownloads({ store: scratch, observer: noInflightEvents }),
      store,
      peer: new PeerClient({ secret: SECRET, dispatcher: new Agent(), headersTimeoutMs: 1000, bodyIdleMs: 1000 }),
      logger: silentLogger,
      observer: { download: onRole },
    });
  };

  /**
   * A coordinator over a fresh shared store, as coordinatorOver; `read` joins the download of
   * `bytes` (its upstream counted in `upstreamCalls`) and reads it whole. Call `cleanup` after.
   */
  const coordinatorRig = async (leases: Leases, name: string) => {
    const dir = await mkdtemp(join(tmpdir(), `fleet-${name}-`));
    const store = new FsBlobStore(join(dir, 'shared'));
    await store.init();
    const rig = {
      store,
      roles: [] as string[],
      upstreamCalls: 0,
      read: async (bytes: Buffer) => {
        const dl = await coordinator.join(digestOf(bytes), 'docker.io/library/x', async (offset) => {
          rig.upstreamCalls++;
          return { start: offset, size: bytes.length, body: (async function* () { yield bytes.subarray(offset); })(), cancel: () => undefined };
        });
        await dl.ready;
        const chunks: Buffer[] = [];
        for await (const c of await dl.open()) chunks.push(c as Buffer);
        await dl.finished;
        return Buffer.concat(chunks);
      },
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
    const coordinator = await coordinatorOver(leases, store, dir, (role) => rig.roles.push(role));
    return Object.assign(rig, { coordinator });
  };

  it('one holder at a time; only the holder renews or releases; a lease gone from Redis is taken back by its holder', async () => {
    const a = await replica('a');
    const b = await replica('b');
    expect(await a.leases.acquire('lease:x')).toBe(true);
    expect(await b.leases.acquire('lease:x')).toBe(false);
    expect(await b.leases.holder('lease:x')).toEqual({ id: 'a', url: 'http://a' });
    expect(await b.leases.renew('lease:x')).toBe(false);
    await b.leases.release('lease:x'); // not b's: left alone
    expect((await a.leases.holder('lease:x'))?.id).toBe('a');
    expect(await a.leases.renew('lease:x')).toBe(true);
    await a.leases.release('lease:x');
    expect(await b.leases.holder('lease:x')).toBeUndefined();
    // Redis lost the key (restarted empty): the holder's next renewal takes it back.
    expect(await a.leases.renew('lease:y')).toBe(true);
    expect((await b.leases.holder('lease:y'))?.id).toBe('a');
    // Expiry: nobody renews, the lease lapses and another replica may take it.
    await waitFor(async () => (await b.leases.holder('lease:y')) === undefined, 5000, 'the lease to expire');
    expect(await b.leases.acquire('lease:y')).toBe(true);
    // whileHeld runs the work only for the holder.
    expect(await a.leases.whileHeld('evict', async () => 'ran')).toBe('ran');
    expect(await b.leases.acquire('evict')).toBe(true);
    expect(await a.leases.whileHeld('evict', async () => 'ran')).toBeUndefined();
  });

  it('a renewed lease another replica took meanwhile is reported lost, once', async () => {
    const a = await replica('lost-a');
    const b = await replica('lost-b');
    expect(await a.leases.acquire('lease:z')).toBe(true);
    let lost = 0;
    const stop = a.leases.keepRenewed('lease:z', () => lost++);
    try {
      // Redis restarted empty (or a's lease lapsed while it was away), and b took the lease.
      await links[links.length - 1]!.call((c) => c.del('parts:lease:z'));
      expect(await b.leases.acquire('lease:z')).toBe(true);
      await waitFor(() => lost === 1, 5000, 'the loss reported');
      expect((await b.leases.holder('lease:z'))?.id).toBe('lost-b');
      // Later renewals (a tick is a third of the 1 s TTL) fail too, and are not reported again.
      await new Promise((r) => setTimeout(r, 700));
      expect(lost).toBe(1);
    } finally {
      stop();
    }
  });

  it('the lease taken for a blob another replica stored meanwhile: read from the store, upstream not asked, no "owner" counted', async () => {
    const { leases } = await replica('c');
    const rig = await coordinatorRig(leases, 'coord');
    try {
      const stored = pseudoRandomBytes(300_000, 'coord-stored');
      const fresh = pseudoRandomBytes(200_000, 'coord-fresh');
      await rig.store.put(digestOf(stored), stored);
      expect((await rig.read(stored)).equals(stored)).toBe(true);
      expect(rig.upstreamCalls).toBe(0);
      expect(rig.roles).toEqual([]);
      expect((await rig.read(fresh)).equals(fresh)).toBe(true);
      expect(rig.upstreamCalls).toBe(1);
      expect(rig.roles).toEqual(['owner']);
    } finally {
      await rig.cleanup();
    }
  });

  it('a lease taken by a SET whose reply came too late is ours: the download counts as "owner", upstream is asked once', async () => {
    const { leases } = await replica('slow-reply');
    // The first acquire reaches Redis and takes the lease, but its caller hears a timeout.
    let timedOut = false;
    const acquire = leases.acquire.bind(leases);
    leases.acquire = async (name) => {
      const taken = await acquire(name);
      if (!timedOut) {
        timedOut = true;
        throw new Error('Command timed out');
      }
      return taken;
    };
    const rig = await coordinatorRig(leases, 'slow');
    try {
      const bytes = pseudoRandomBytes(200_000, 'coord-slow-reply');
      expect((await rig.read(bytes)).equals(bytes)).toBe(true);
      expect(timedOut).toBe(true);
      expect(rig.roles).toEqual(['owner']);
      expect(rig.upstreamCalls).toBe(1);
      expect(rig.coordinator.owns(digestOf(bytes))).toBe(false);
    } finally {
      await rig.cleanup();
    }
  });

  it('the shared store away (S3 unreachable, Redis up): a cold blob is fetched and passed through uncached, not failed', async () => {
    const { leases } = await replica('s3-away');
    const dir = await mkdtemp(join(tmpdir(), 'fleet-away-'));
    try {
      const fs = new FsBlobStore(join(dir, 'shared'));
      await fs.init();
      const away = () => Promise.reject(new StoreUnavailableError(new Error('connect ECONNREFUSED 127.0.0.1:1')));
      // What the S3 store answers while its endpoint is down: every call fails as unavailable.
      const store = Object.assign(Object.create(fs) as FsBlobStore, { stat: away, open: away, read: away, put: away, createWriter: away });
      let upstreamCalls = 0;
      const coordinator = await coordinatorOver(leases, store, dir);
      const bytes = pseudoRandomBytes(250_000, 'coord-away');
      const dl = await coordinator.join(digestOf(bytes), 'docker.io/library/x', async (offset: number) => {
        upstreamCalls++;
        return { start: offset, size: bytes.length, body: (async function* () { yield bytes.subarray(offset); })(), cancel: () => undefined };
      });
      await dl.ready;
      const chunks: Buffer[] = [];
      for await (const c of await dl.open()) chunks.push(c as Buffer);
      await dl.finished;
      expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
      expect(upstreamCalls).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads of a blob on any replica keep it from eviction until the stream closes; a lock lets one evictor run', async () => {
    const a = await replica('ra');
    const b = await replica('rb');
    const dir = await mkdtemp(join(tmpdir(), 'fleet-readers-'));
    try {
      const store = new FsBlobStore(dir);
      await store.init();
      const bytes = pseudoRandomBytes(200_000, 'readers');
      const d = digestOf(bytes);
      await store.put(d, bytes);
      const readersA = new FleetReaders(links.at(-2)!, 'ra', 'parts:', 30_000);
      const readersB = new FleetReaders(links.at(-1)!, 'rb', 'parts:', 30_000);
      const tracked = new TrackedBlobStore(store, readersA);
      const stream = (await tracked.open(d))!;
      // Replica b (the evictor) sees replica a's read.
      await waitFor(() => readersB.reading(d), 5000, 'the read to be registered');
      stream.destroy();
      await waitFor(async () => !(await readersB.reading(d)), 5000, 'the read to end');
      // One evictor at a time across replicas.
      let inside = 0;
      let most = 0;
      const pass = async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setTimeout(r, 200));
        inside--;
        return 'done';
      };
      const results = await Promise.all([a.leases.whileHeld('evict2', pass), b.leases.whileHeld('evict2', pass)]);
      expect(results.filter((r) => r === 'done')).toHaveLength(1);
      expect(most).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('Redis going away switches the link to local at once (calls fail fast), and back', async () => {
    const a = await replica('c');
    await redis.stop();
    await waitFor(() => a.modes.at(-1) === 'local', 5000, 'the switch to local');
    const started = performance.now();
    await expect(a.leases.acquire('lease:z')).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(1000);
    await redis.start();
    await waitFor(() => a.modes.at(-1) === 'fleet', 10_000, 'the switch back to fleet');
    expect(await a.leases.acquire('lease:z')).toBe(true);
  });
});

describe('the peer endpoint', () => {
  let dir: string;
  let server: Server;
  let base: string;
  const bytes = pseudoRandomBytes(300_000, 'peer-endpoint');
  const digest = digestOf(bytes);
  const agent = new Agent();
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fleet-peer-'));
    const store = new FsBlobStore(dir);
    await store.init();
    await store.put(digest, bytes);
    server = createServer(peerHandler({ secret: SECRET, download: () => undefined, store, logger: silentLogger }));
    base = `http://127.0.0.1:${await listenOn(server)}`;
  });
  afterAll(async () => {
    server?.close();
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves a stored blob to a peer with the secret, from an offset with Range', async () => {
    const peer = new PeerClient({ dispatcher: agent, secret: SECRET, headersTimeoutMs: 5000, bodyIdleMs: 5000 });
    for (const offset of [0, 123_456]) {
      const a = await peer.fetch(base, digest, offset);
      expect(a.kind).toBe('body');
      if (a.kind !== 'body') return;
      expect(a.body.start).toBe(offset);
      expect(a.body.size).toBe(bytes.length);
      const chunks: Uint8Array[] = [];
      for await (const c of a.body.body) chunks.push(c);
      expect(Buffer.concat(chunks).equals(bytes.subarray(offset))).toBe(true);
    }
    expect((await peer.fetch(base, `sha256:${'0'.repeat(64)}`, 0)).kind).toBe('absent');
  });

  it('refuses a wrong or missing secret (401, no bytes), malformed digests and ranges (400), other methods', async () => {
    const wrong = new PeerClient({ dispatcher: agent, secret: 'not-the-fleet-secret', headersTimeoutMs: 5000, bodyIdleMs: 5000 });
    expect(await wrong.fetch(base, digest, 0)).toEqual({ kind: 'refused', status: 401 });
    const url = `${base}/fleet/v1/blobs/${digest}`;
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect((await none.text()).length).toBeLessThan(100);
    expect((await fetch(`${base}/fleet/v1/blobs/sha256:..%2F..%2Fetc`, { headers: { 'x-fleet-secret': SECRET } })).status).toBe(400);
    // sha512, as the registry takes: a digest like any other here (not downloading: 404, not a 400 the peer would give up on).
    expect((await fetch(`${base}/fleet/v1/blobs/sha512:${'ab'.repeat(64)}`, { headers: { 'x-fleet-secret': SECRET } })).status).toBe(404);
    expect((await fetch(`${base}/fleet/v1/blobs/sha512:${'ab'.repeat(32)}`, { headers: { 'x-fleet-secret': SECRET } })).status).toBe(400);
    expect((await fetch(url, { headers: { 'x-fleet-secret': SECRET, range: 'bytes=0-10,20-30' } })).status).toBe(400);
    expect((await fetch(url, { headers: { 'x-fleet-secret': SECRET, range: `bytes=${bytes.length}-` } })).status).toBe(416);
    expect((await fetch(url, { method: 'POST', headers: { 'x-fleet-secret': SECRET } })).status).toBe(405);
    expect(sameSecret(SECRET, SECRET)).toBe(true);
    expect(sameSecret(`${SECRET}x`, SECRET)).toBe(false);
    expect(sameSecret(undefined, SECRET)).toBe(false);
  });
});

describe('fleet configuration', () => {
  const base = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } };
  it('is off by default and needs nothing then', () => {
    const c = configWithDefaults(DEFAULTS, base);
    expect(c.fleet.enabled).toBe(false);
    expect(c.fleet.leaseTtlMs).toBe(10_000);
  });
  it('when enabled requires a Redis URL and a secret of 16+ characters, naming the key', () => {
    expect(() => configWithDefaults(DEFAULTS, { ...base, fleet: { enabled: true, secret: SECRET } })).toThrow(/fleet\.redisUrl/);
    expect(() => configWithDefaults(DEFAULTS, { ...base, fleet: { enabled: true, redisUrl: 'redis://r:6379', secret: 'short' } })).toThrow(/fleet\.secret/);
    expect(() => configWithDefaults(DEFAULTS, { ...base, fleet: { enabled: true, redisUrl: 'redis://r:6379', secret: SECRET, replicaId: 'a b' } })).toThrow(/fleet\.replicaId/);
    expect(() => configWithDefaults(DEFAULTS, { ...base, fleet: { enabled: true, redisUrl: 'redis://r:6379', secret: SECRET, advertiseUrl: 'http://x:1/path' } })).toThrow(/fleet\.advertiseUrl/);
    expect(() => configWithDefaults(DEFAULTS, { ...base, fleet: { leaseTtl: 5 } })).toThrow(/fleet\.leaseTtl: unknown key/);
  });
  it('takes the per-replica parts from the environment', () => {
    const c = configWithDefaults(DEFAULTS, base, { MIRROR_FLEET_ENABLED: 'true', MIRROR_FLEET_REDIS_URL: 'redis://r:6379/1', MIRROR_FLEET_SECRET: SECRET, MIRROR_FLEET_REPLICA_ID: 'pod-1', MIRROR_FLEET_ADVERTISE_URL: 'http://10.0.0.7:5002', MIRROR_FLEET_LISTEN: '0.0.0.0:6000' });
    expect(c.fleet).toMatchObject({ enabled: true, redisUrl: 'redis://r:6379/1', replicaId: 'pod-1', advertiseUrl: 'http://10.0.0.7:5002', listen: { host: '0.0.0.0', port: 6000 } });
  });
});

describe('the fleet deploy files', () => {
  const env = { MIRROR_FLEET_REDIS_URL: 'redis://redis:6379/0', MIRROR_FLEET_SECRET: SECRET, MIRROR_FLEET_REPLICA_ID: 'pod-1', MIRROR_FLEET_ADVERTISE_URL: 'http://10.0.0.7:5002' };
  it('the compose config and the Kubernetes ConfigMap load as fleet replicas on S3 with Redis records', async () => {
    const compose = loadConfig({ defaults: DEFAULTS, file: new URL('../../deploy/fleet/config.yaml', import.meta.url).pathname, env });
    const dir = await mkdtemp(join(tmpdir(), 'fleet-cm-'));
    try {
      const cm = parseYaml(readFileSync(new URL('../../deploy/kubernetes/fleet/configmap.yaml', import.meta.url), 'utf8')) as { data: Record<string, string> };
      const file = join(dir, 'config.yaml');
      await (await import('node:fs/promises')).writeFile(file, cm.data['config.yaml']!);
      const k8s = loadConfig({ defaults: DEFAULTS, file, env: { MIRROR_FLEET_SECRET: SECRET } });
      for (const c of [compose, k8s]) {
        expect(c.fleet.enabled).toBe(true);
        expect(c.storage.type).toBe('s3');
        expect(c.storage.redis.url).toMatch(/^redis:\/\//);
        expect(c.fleet.redisUrl).toMatch(/^redis:\/\//);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the scratch store', () => {
  it('a promotion the shared store refuses leaves no open handle on the scratch blob, and the blob not busy', async () => {
    const { ScratchStore } = await import('../../src/fleet/scratch-store.js');
    const { StoreUnavailableError } = await import('../../src/storage/store.js');
    const { readdir, readlink } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'scratch-promote-'));
    try {
      const scratch = new FsBlobStore(dir);
      await scratch.init();
      const refusing = { stat: () => Promise.resolve(undefined), createWriter: () => Promise.reject(new StoreUnavailableError(new Error('s3 down'))) };
      // This replica took the download over: its verified bytes are to go to the shared store.
      const store = new ScratchStore(scratch, refusing as unknown as FsBlobStore, () => true);
      const bytes = pseudoRandomBytes(200_000, 'scratch-promote');
      const digest = digestOf(bytes);
      const w = await store.createWriter(digest);
      await w.write(bytes);
      await expect(w.commit(bytes.length)).rejects.toThrow(/s3 down/);
      await w.close();
      let open: string[] = [];
      const noneOpen = async () => {
        open = (await Promise.all((await readdir('/proc/self/fd')).map((f) => readlink(`/proc/self/fd/${f}`).catch(() => '')))).filter((l) => l.startsWith(dir));
        return open.length === 0;
      };
      await waitFor(noneOpen, 2000, () => `no open file under the scratch dir (${open.join(', ')})`);
      expect(scratch.busy(digest)).toBe(false);
      expect(await scratch.stat(digest)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
