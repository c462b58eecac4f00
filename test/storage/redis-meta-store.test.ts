/**
 * The MetaStore contract on a real redis-server (test/helpers/redis-server.ts), plus what only a
 * shared backend must do: key prefixes keep fleets apart, a corrupt value is a miss, and a second
 * client (another replica) sees every write at once.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CachingMetaStore } from '../../src/cache/caching-meta-store.js';
import { OutageTolerantMetaStore } from '../../src/cache/outage-tolerant-meta-store.js';
import type { Logger } from '../../src/observability/types.js';
import { FsMetaStore } from '../../src/storage/fs-meta-store.js';
import { MetaUnavailableError, type MetaStore, type RepoKey, type TagRecord } from '../../src/storage/meta-store.js';
import { RedisMetaStore } from '../../src/storage/redis-meta-store.js';
import { digestOf } from '../helpers/digest.js';
import { redisServerAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { requireTools } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';
import { metaStoreContract } from './meta-store.contract.js';

const silent: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

const SKIP = requireTools('Redis meta store', { 'redis-server': redisServerAvailable() });

describe.skipIf(SKIP !== undefined)('RedisMetaStore on a real redis-server', () => {
  let server: RedisServer;
  const clients: Redis[] = [];
  let n = 0;
  const client = () => {
    const c = new Redis(server.url, { maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await server?.close();
  });

  /** A fresh prefix per store: the same Redis, nothing shared. */
  const fixture = (wrap: (s: RedisMetaStore) => MetaStore) => async () => {
    const prefix = `contract-${++n}:`;
    const c = client();
    return {
      store: wrap(new RedisMetaStore(c, prefix)),
      reopen: async () => wrap(new RedisMetaStore(client(), prefix)),
      cleanup: async () => {
        const keys = await c.keys(`${prefix}*`);
        if (keys.length > 0) await c.del(...keys);
      },
    };
  };
  metaStoreContract('RedisMetaStore', fixture((s) => s));
  metaStoreContract('CachingMetaStore over RedisMetaStore', fixture((s) => new CachingMetaStore(s, { maxEntries: 4 })));
  // The serving mirror's store: Redis with a local fallback written through beside it (one directory per fixture, kept across reopen).
  metaStoreContract('OutageTolerantMetaStore over RedisMetaStore', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meta-fallback-'));
    const tolerant = (s: RedisMetaStore) => new OutageTolerantMetaStore(s, new FsMetaStore(dir), { logger: silent, observer: { mode: () => undefined }, remoteName: 'redis', localName: dir, probeIntervalMs: 0, now: Date.now });
    const fx = await fixture(tolerant)();
    const cleanup = async () => {
      await fx.cleanup();
      await rm(dir, { recursive: true, force: true });
    };
    return { ...fx, cleanup };
  });

  describe('shared by a fleet', () => {
    const alpine: RepoKey = { upstream: 'docker.io', repo: 'library/alpine' };
    const record = (d: string): TagRecord => ({ version: 2, variants: [{ digest: d, mediaType: 'application/vnd.oci.image.index.v1+json', size: 1, fetchedAt: 1 }] });
    let a: RedisMetaStore;
    let b: RedisMetaStore;
    let raw: Redis;
    beforeEach(async () => {
      raw = client();
      await raw.flushall();
      a = new RedisMetaStore(client(), 'fleet-a:');
      b = new RedisMetaStore(client(), 'fleet-b:');
    });

    it('two key prefixes on one Redis are two separate caches, and every key starts with its prefix', async () => {
      await a.putTag(alpine, 'latest', record(digestOf('a')));
      await a.addLinks(alpine, [digestOf('l')]);
      await a.addManifests(alpine, [{ digest: digestOf('m'), mediaType: 'x/y' }]);
      await a.putDoc(alpine, 'tags', { fetchedAt: 1, body: [] });
      await a.putState('pins', ['x']);
      expect(await b.getTag(alpine, 'latest')).toBeUndefined();
      expect(await b.hasLink(alpine, digestOf('l'))).toBe(false);
      expect(await b.listRepos()).toEqual([]);
      expect(await b.getState('pins')).toBeUndefined();
      const keys = await raw.keys('*');
      expect(keys.length).toBeGreaterThan(0);
      for (const k of keys) expect(k.startsWith('fleet-a:')).toBe(true);
    });

    it('another replica (its own connection) reads what one wrote at once; deletes too', async () => {
      const other = new RedisMetaStore(client(), 'fleet-a:');
      await a.putTag(alpine, 'latest', record(digestOf('1')));
      expect(await other.getTag(alpine, 'latest')).toEqual(record(digestOf('1')));
      await other.deleteRepo(alpine);
      expect(await a.getTag(alpine, 'latest')).toBeUndefined();
      expect(await a.listRepos()).toEqual([]);
    });

    it('a corrupt value is a miss, and a good write mends it', async () => {
      await raw.hset('fleet-a:tags|docker.io/library/alpine', 'torn', '{"variants":[{"dig');
      await raw.hset('fleet-a:tags|docker.io/library/alpine', 'shape', '{"digest":"x"}');
      await raw.hset('fleet-a:docs|docker.io/library/alpine', 'tags', '{"body":[]}');
      await raw.set('fleet-a:state|usage', 'not json');
      expect(await a.getTag(alpine, 'torn')).toBeUndefined();
      expect(await a.getTag(alpine, 'shape')).toBeUndefined();
      expect(await a.getDoc(alpine, 'tags')).toBeUndefined();
      expect(await a.getState('usage')).toBeUndefined();
      await a.putTag(alpine, 'torn', record(digestOf('ok')));
      expect(await a.getTag(alpine, 'torn')).toEqual(record(digestOf('ok')));
    });

    it('concurrent writers and readers of one tag: every read is a whole record', async () => {
      const records = Array.from({ length: 20 }, (_, i) => ({
        version: 2,
        variants: Array.from({ length: 50 }, (_, j) => ({ digest: digestOf(`${i}-${j}`), mediaType: 'x/y', size: j, fetchedAt: i })),
      }));
      const other = new RedisMetaStore(client(), 'fleet-a:');
      const seen: Array<TagRecord | undefined> = [];
      await Promise.all([...records.map((r, i) => (i % 2 ? a : other).putTag(alpine, 'latest', r)), ...records.map(async () => seen.push(await other.getTag(alpine, 'latest')))]);
      const valid = new Set(records.map((r) => JSON.stringify(r)));
      for (const s of seen) if (s !== undefined) expect(valid.has(JSON.stringify(s))).toBe(true);
    });

    it('the repository list follows tag and manifest records as they come and go, also under concurrent writes', async () => {
      await Promise.all([a.putTag(alpine, 't1', record(digestOf('1'))), a.addManifests(alpine, [{ digest: digestOf('m'), mediaType: 'x/y' }])]);
      expect(await a.listRepos()).toEqual([alpine]);
      await a.deleteTag(alpine, 't1');
      expect(await a.listRepos()).toEqual([alpine]); // the manifest record keeps it listed
      await a.forget(alpine, [digestOf('m')]);
      expect(await a.listRepos()).toEqual([]);
      // Links and documents alone do not list a repository.
      await a.addLinks(alpine, [digestOf('l')]);
      await a.putDoc(alpine, 'tags', { fetchedAt: 1, body: [] });
      expect(await a.listRepos()).toEqual([]);
    });

    it('refuses keys built from something that is not a repository', async () => {
      await expect(a.getTag({ upstream: 'docker.io', repo: 'a|b' }, 'x')).rejects.toThrow(/not a repository/);
      await expect(a.addLinks({ upstream: 'a/b', repo: 'x' }, [digestOf('x')])).rejects.toThrow(/not a repository/);
    });
  });

  describe('OutageTolerantMetaStore while its Redis is away', () => {
    const alpine: RepoKey = { upstream: 'docker.io', repo: 'library/alpine' };
    const record = (d: string): TagRecord => ({ version: 2, variants: [{ digest: d, mediaType: 'application/vnd.oci.image.index.v1+json', size: 1, fetchedAt: 1 }] });

    it('answers single records from what it wrote through, lists and deletes fail, nothing is invented; one switch each way', async () => {
      const own = await startRedis(); // stopped here: not the suite's Redis
      const dir = await mkdtemp(join(tmpdir(), 'meta-fallback-'));
      const c = new Redis(own.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000, retryStrategy: () => 100 });
      c.on('error', () => undefined);
      const modes: string[] = [];
      const store = new OutageTolerantMetaStore(new RedisMetaStore(c, 'x:'), new FsMetaStore(dir), { logger: silent, observer: { mode: (m) => modes.push(m) }, remoteName: 'redis', localName: dir, probeIntervalMs: 0, now: Date.now });
      try {
        await waitFor(() => c.status === 'ready', 5000, 'the client to connect');
        await store.putTag(alpine, 'latest', record(digestOf('a')));
        await store.addLinks(alpine, [digestOf('l')]);
        await store.putState('pins', ['docker.io/library/alpine']);
        await own.stop();
        // Reads: the records this store wrote, and misses for what it never saw (a link is never granted from elsewhere).
        expect(await store.getTag(alpine, 'latest')).toEqual(record(digestOf('a')));
        expect(await store.hasLink(alpine, digestOf('l'))).toBe(true);
        expect(await store.hasLink(alpine, digestOf('other'))).toBe(false);
        expect(await store.getState('pins')).toEqual(['docker.io/library/alpine']);
        expect(store.mode).toBe('local');
        // Writes are kept locally.
        await store.putTag(alpine, 'new', record(digestOf('n')));
        expect(await store.getTag(alpine, 'new')).toEqual(record(digestOf('n')));
        // Listings and deletes are the lifecycle's: a partial local answer must never drive a deletion.
        await expect(store.listRepos()).rejects.toBeInstanceOf(MetaUnavailableError);
        await expect(store.listLinks(alpine)).rejects.toBeInstanceOf(MetaUnavailableError);
        await expect(store.forget(alpine, [digestOf('l')])).rejects.toBeInstanceOf(MetaUnavailableError);
        // Usage is kept locally; a pin must reach every replica: pinning fails rather than pretend.
        await store.putState('usage', { savedAt: 2, entries: {} });
        expect(await store.getState('usage')).toEqual({ savedAt: 2, entries: {} });
        await expect(store.putState('pins', [])).rejects.toBeInstanceOf(MetaUnavailableError);
        expect(await store.getState('pins')).toEqual(['docker.io/library/alpine']); // the failed pin change is kept nowhere
        await own.start();
        await waitFor(() => c.status === 'ready', 5000, 'the client to reconnect');
        // Redis came back empty: its (missing) answer is the truth again, and what is written now lands in it.
        expect(await store.getTag(alpine, 'latest')).toBeUndefined();
        expect(store.mode).toBe('remote');
        await store.addLinks(alpine, [digestOf('back')]);
        expect(await c.sismember('x:links|docker.io/library/alpine', digestOf('back'))).toBe(1);
        expect(modes).toEqual(['remote', 'local', 'remote']);
      } finally {
        c.disconnect();
        await own.close();
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('a Redis that stops answering on an open connection costs one reply timeout per probe interval, not one per call', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'meta-fallback-'));
      const c = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 300 });
      clients.push(c);
      const pauser = client();
      const clock = { now: 1_000_000 };
      let remoteCalls = 0;
      const redisStore = new RedisMetaStore(c, 'probe:');
      const counted = new Proxy(redisStore, {
        get: (target, prop, receiver) => {
          const v: unknown = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? (...a: unknown[]) => (remoteCalls++, (v as (...x: unknown[]) => unknown).apply(target, a)) : v;
        },
      });
      const store = new OutageTolerantMetaStore(counted, new FsMetaStore(dir), { logger: silent, observer: { mode: () => undefined }, remoteName: 'redis', localName: dir, probeIntervalMs: 5000, now: () => clock.now });
      try {
        await waitFor(() => c.status === 'ready', 5000, 'the client to connect');
        await store.putTag(alpine, 'latest', record(digestOf('p')));
        // Every client's commands wait (the connection stays open): the next call times out and switches to local.
        await pauser.client('PAUSE', 5000, 'ALL');
        expect(await store.getTag(alpine, 'latest')).toEqual(record(digestOf('p')));
        expect(store.mode).toBe('local');
        const calls = remoteCalls;
        for (let i = 0; i < 5; i++) expect(await store.hasLink(alpine, digestOf('x'))).toBe(false);
        await store.putTag(alpine, 'local-only', record(digestOf('q')));
        await expect(store.listRepos()).rejects.toBeInstanceOf(MetaUnavailableError);
        expect(remoteCalls).toBe(calls); // none of these waited on Redis
        await pauser.client('UNPAUSE');
        clock.now += 5000; // the interval has passed: the next call asks Redis, which answers
        expect(await store.getTag(alpine, 'local-only')).toBeUndefined();
        expect(remoteCalls).toBe(calls + 1);
        expect(store.mode).toBe('remote');
      } finally {
        await pauser.client('UNPAUSE').catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});

