import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/storage/fs-store.js';
import { StoreFullError } from '../../src/storage/store.js';
import { CachingBlobStore } from '../../src/cache/caching-blob-store.js';
import type { BlobStore } from '../../src/storage/store.js';
import { blobStoreContract, digestOf } from './store.contract.js';

const fsFixture = (wrap: (s: FsBlobStore) => BlobStore) => async () => {
  const root = await mkdtemp(join(tmpdir(), 'fs-store-contract-'));
  return {
    store: wrap(new FsBlobStore(root)),
    cleanup: () => rm(root, { recursive: true, force: true }),
    tempEntries: async () => readdir(join(root, 'tmp')).catch(() => []),
    plantLeftover: async () => {
      await mkdir(join(root, 'tmp', 'nested-dir'), { recursive: true });
      await writeFile(join(root, 'tmp', 'blob-12345-crashed'), randomBytes(1000));
      await writeFile(join(root, 'tmp', 'nested-dir', 'x'), 'x');
    },
  };
};
blobStoreContract('FsBlobStore', fsFixture((s) => s));
// The memory cache in front must keep every promise of the store (a small budget, so entries come and go).
blobStoreContract('CachingBlobStore over FsBlobStore', fsFixture((s) => new CachingBlobStore(s, { memoryBytes: 64 * 1024, maxEntries: 8 })));

/** Every file below `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

describe('FsBlobStore on disk', () => {
  let parent: string;
  let root: string;
  let store: FsBlobStore;

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), 'fs-store-'));
    root = join(parent, 'root');
    store = new FsBlobStore(root);
    await store.init();
  });
  afterEach(() => rm(parent, { recursive: true, force: true }));

  it('init creates blobs/, repos/ and tmp/, and removes a leftover file in tmp/', async () => {
    expect((await readdir(root)).sort()).toEqual(['blobs', 'repos', 'tmp']);
    await writeFile(join(root, 'tmp', 'blob-1-leftover'), 'half a download');
    const again = new FsBlobStore(root);
    await again.init();
    expect(existsSync(join(root, 'tmp', 'blob-1-leftover'))).toBe(false);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('a writer for an algorithm Node cannot hash is refused before any temp file is made', async () => {
    for (let i = 0; i < 3; i++) await expect(store.createWriter(`md4x:${'a'.repeat(32)}`)).rejects.toThrow();
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('lays blobs out as blobs/<alg>/<2 hex>/<hex>', async () => {
    const bytes = Buffer.from('layout');
    const d = digestOf(bytes);
    const hex = d.slice('sha256:'.length);
    await store.put(d, bytes);
    expect(await filesUnder(join(root, 'blobs'))).toEqual([join('sha256', hex.slice(0, 2), hex)]);
    expect(await readFile(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex))).toEqual(bytes);
    expect(store.paths.blob(d)).toBe(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex));

    const d512 = digestOf(bytes, 'sha512');
    const hex512 = d512.slice('sha512:'.length);
    await store.put(d512, bytes);
    expect(existsSync(join(root, 'blobs', 'sha512', hex512.slice(0, 2), hex512))).toBe(true);
  });

  it('keeps an in-progress write in tmp/ and nothing under blobs/ until commit', async () => {
    const bytes = randomBytes(4096);
    const d = digestOf(bytes);
    const w = await store.createWriter(d);
    try {
      await w.write(bytes);
      expect(await filesUnder(join(root, 'blobs'))).toEqual([]);
      const tmp = await readdir(join(root, 'tmp'));
      expect(tmp).toHaveLength(1);
      expect((await stat(join(root, 'tmp', tmp[0]!))).size).toBe(4096);
      await w.commit(bytes.length);
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
      expect(await filesUnder(join(root, 'blobs'))).toHaveLength(1);
    } finally {
      await w.close();
    }
  });

  describe('a temp file another thread appends to (external)', () => {
    /** Writes as the download thread does: positional writes on the descriptor, then the counts. */
    async function appendElsewhere(bytes: Buffer, hex: (real: string) => string | undefined): Promise<{ w: Awaited<ReturnType<FsBlobStore['createWriter']>>; read: Buffer }> {
      const w = await store.createWriter(digestOf(bytes));
      const ext = w.external!()!;
      expect(ext.algorithm).toBe('sha256');
      const half = bytes.length >> 1;
      writeSync(ext.fd, bytes, 0, half, 0);
      ext.appended(half);
      expect(w.written).toBe(half);
      const read = await w.readAt(0, bytes.length);
      writeSync(ext.fd, bytes, half, bytes.length - half, half);
      ext.appended(bytes.length);
      ext.finished(hex(digestOf(bytes).slice('sha256:'.length)));
      return { w, read };
    }

    it('reads back what was appended, and commits with the digest the other thread computed', async () => {
      const bytes = randomBytes(100_000);
      const { w, read } = await appendElsewhere(bytes, (real) => real);
      try {
        // Only what `appended` announced is readable.
        expect(read.equals(bytes.subarray(0, 50_000))).toBe(true);
        await expect(w.write(Buffer.from('x'))).rejects.toThrow(/another thread/);
        await w.commit(bytes.length);
        expect((await store.read(digestOf(bytes)))!.equals(bytes)).toBe(true);
      } finally {
        await w.close();
      }
    });

    it('keeps nothing when the other thread says another digest', async () => {
      const bytes = randomBytes(10_000);
      const { w } = await appendElsewhere(bytes, () => '0'.repeat(64));
      try {
        await expect(w.commit(bytes.length)).rejects.toThrow(/digest mismatch/);
        expect(await store.stat(digestOf(bytes))).toBeUndefined();
        expect(await readdir(join(root, 'tmp'))).toEqual([]);
      } finally {
        await w.close();
      }
    });

    it('hashes the file itself when the other thread cannot vouch for its hash', async () => {
      const bytes = randomBytes(3 * 1024 * 1024 + 5);
      const { w } = await appendElsewhere(bytes, () => undefined);
      try {
        await w.commit(bytes.length);
        expect(await store.stat(digestOf(bytes))).toEqual({ digest: digestOf(bytes), size: bytes.length });
      } finally {
        await w.close();
      }
    });

    it('is offered only before anything was written, and once', async () => {
      const w = await store.createWriter(digestOf(Buffer.from('ab')));
      try {
        await w.write(Buffer.from('a'));
        expect(w.external!()).toBeUndefined();
      } finally {
        await w.close();
      }
      const w2 = await store.createWriter(digestOf(Buffer.from('ab')));
      try {
        expect(w2.external!()).toBeDefined();
        expect(w2.external!()).toBeUndefined();
      } finally {
        await w2.close();
      }
    });
  });

  it('creates nothing outside its root', async () => {
    const a = randomBytes(10_000);
    await store.put(digestOf(a), a);
    await store.put(digestOf(a, 'sha512'), a);
    await expect(store.put(digestOf(Buffer.from('x')), Buffer.from('y'))).rejects.toThrow();
    const w = await store.createWriter(digestOf(Buffer.from('aborted')));
    await w.write(Buffer.from('aborted'));
    await w.abort();
    await w.close();
    await store.delete(digestOf(a));
    expect(await readdir(parent)).toEqual(['root']);
  });

  it('refuses to build a path from something that is not a digest', async () => {
    await expect(store.createWriter('sha256:../../../etc/passwd')).rejects.toThrow(/not a digest/);
    await expect(store.stat('sha256:../../x')).rejects.toThrow(/not a digest/);
    await expect(store.read('../sha256:abcd')).rejects.toThrow(/not a digest/);
    await expect(store.put('sha256:/etc/passwd', Buffer.from(''))).rejects.toThrow(/not a digest/);
    expect(await readdir(parent)).toEqual(['root']);
  });

  it('list yields each blob once and ignores stray files under blobs/', async () => {
    const bytes = [Buffer.from('a'), Buffer.from('b'), Buffer.from('c')];
    for (const b of bytes) await store.put(digestOf(b), b);
    await mkdir(join(root, 'blobs', 'sha256', 'zz'), { recursive: true });
    await writeFile(join(root, 'blobs', 'sha256', 'zz', 'README'), 'not a blob');
    const listed: string[] = [];
    for await (const info of store.list()) listed.push(info.digest);
    expect(listed.sort()).toEqual(bytes.map((b) => digestOf(b)).sort());
  });
});

describe('FsBlobStore when the disk is full', () => {
  let mnt: string;
  let mounted = false;
  let reason = '';

  beforeAll(async () => {
    mnt = await mkdtemp(join(tmpdir(), 'fs-store-full-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { stdio: 'pipe' });
      mounted = true;
    } catch (e) {
      reason = `cannot mount a 64 KiB tmpfs (${(e as Error).message.split('\n')[0]}): ENOSPC checks skipped`;
      console.warn(reason);
    }
  });

  afterAll(async () => {
    if (mounted) execFileSync('umount', [mnt], { stdio: 'pipe' });
    await rm(mnt, { recursive: true, force: true });
  });

  it('throws StoreFullError on ENOSPC, keeps nothing, and has room again afterwards', async (ctx) => {
    if (!mounted) return ctx.skip(reason);
    const store = new FsBlobStore(join(mnt, 'root'));
    await store.init();
    const big = randomBytes(256 * 1024);
    const d = digestOf(big);

    const err = await store.put(d, big).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreFullError);
    expect(((err as StoreFullError).cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
    expect(await store.stat(d)).toBeUndefined();
    expect(await readdir(join(mnt, 'root', 'tmp'))).toEqual([]);

    // The same through a streaming writer: write() itself throws StoreFullError.
    const w = await store.createWriter(d);
    let thrown: unknown;
    try {
      for (let off = 0; off < big.length; off += 16 * 1024) await w.write(big.subarray(off, off + 16 * 1024));
    } catch (e) {
      thrown = e;
    } finally {
      await w.abort();
      await w.close();
    }
    expect(thrown).toBeInstanceOf(StoreFullError);
    expect(await readdir(join(mnt, 'root', 'tmp'))).toEqual([]);

    // The failed writes freed their space: a small blob still fits.
    const small = randomBytes(8 * 1024);
    await store.put(digestOf(small), small);
    expect(await store.read(digestOf(small))).toEqual(small);
  });
});
