import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsMetaStore } from '../../src/storage/fs-meta-store.js';
import type { RepoKey, TagRecord } from '../../src/storage/meta-store.js';
import { CachingMetaStore } from '../../src/cache/caching-meta-store.js';
import { digestOf } from '../helpers/digest.js';
import { metaStoreContract } from './meta-store.contract.js';

const fsFixture = async (wrap: (s: FsMetaStore) => import('../../src/storage/meta-store.js').MetaStore) => {
  const root = await mkdtemp(join(tmpdir(), 'meta-contract-'));
  return { store: wrap(new FsMetaStore(root)), reopen: async () => wrap(new FsMetaStore(root)), cleanup: () => rm(root, { recursive: true, force: true }) };
};
metaStoreContract('FsMetaStore', () => fsFixture((s) => s));
metaStoreContract('CachingMetaStore over FsMetaStore', () => fsFixture((s) => new CachingMetaStore(s, { maxEntries: 4 })));

const alpine: RepoKey = { upstream: 'docker.io', repo: 'library/alpine' };
const record = (digest: string, fetchedAt = 1000): TagRecord => ({
  variants: [{ digest, mediaType: 'application/vnd.oci.image.index.v1+json', size: 1234, fetchedAt }],
});
const byKey = (a: RepoKey, b: RepoKey) => `${a.upstream}/${a.repo}`.localeCompare(`${b.upstream}/${b.repo}`);

describe('FsMetaStore', () => {
  let root: string;
  let meta: FsMetaStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'fs-meta-'));
    meta = new FsMetaStore(root);
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  describe('tags', () => {
    it('an absent tag is undefined', async () => {
      expect(await meta.getTag(alpine, 'latest')).toBeUndefined();
    });

    it('round-trips a record, under repos/<upstream>/<repo>/_tags/<tag>', async () => {
      const r = record(digestOf('a'));
      await meta.putTag(alpine, 'latest', r);
      expect(await meta.getTag(alpine, 'latest')).toEqual(r);
      expect(JSON.parse(await readFile(join(root, 'repos', 'docker.io', 'library', 'alpine', '_tags', 'latest'), 'utf8'))).toEqual(r);
      // Tags are per repository and per upstream.
      expect(await meta.getTag(alpine, 'edge')).toBeUndefined();
      expect(await meta.getTag({ upstream: 'ghcr.io', repo: 'library/alpine' }, 'latest')).toBeUndefined();
      expect(await meta.getTag({ upstream: 'docker.io', repo: 'library' }, 'latest')).toBeUndefined();
    });

    it('replaces a record whole, and leaves no temp files', async () => {
      const multi: TagRecord = {
        variants: [
          { digest: digestOf('1'), mediaType: 'application/vnd.oci.image.index.v1+json', size: 10, fetchedAt: 1 },
          { digest: digestOf('2'), mediaType: 'application/vnd.docker.distribution.manifest.v2+json', size: 20, fetchedAt: 2 },
        ],
      };
      await meta.putTag(alpine, 'latest', multi);
      await meta.putTag(alpine, 'latest', record(digestOf('3'), 3));
      expect(await meta.getTag(alpine, 'latest')).toEqual(record(digestOf('3'), 3));
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
    });

    it('a write that fails leaves no temp file behind (a full disk must not fill up with leftovers)', async () => {
      // The record's path taken by a non-empty directory: the rename fails, as a purge racing the write or EIO would.
      await mkdir(join(root, 'repos', 'docker.io', 'library', 'alpine', '_tags', 'latest', 'in-the-way'), { recursive: true });
      for (let i = 0; i < 3; i++) await expect(meta.putTag(alpine, 'latest', record(digestOf('x')))).rejects.toThrow();
      await mkdir(join(root, 'repos', 'docker.io', 'library', 'alpine', '_manifests', 'sha256', digestOf('m').slice(7), 'in-the-way'), { recursive: true });
      await expect(meta.addManifests(alpine, [{ digest: digestOf('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json' }])).rejects.toThrow();
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
    });

    it('concurrent readers see a whole old or new record, never a torn one', async () => {
      const records = Array.from({ length: 20 }, (_, i) => ({
        variants: Array.from({ length: 50 }, (_, j) => ({ digest: digestOf(`${i}-${j}`), mediaType: 'x/y', size: j, fetchedAt: i })),
      }));
      await meta.putTag(alpine, 'latest', records[0]!);
      const seen: Array<TagRecord | undefined> = [];
      await Promise.all([
        ...records.map((r) => meta.putTag(alpine, 'latest', r)),
        ...records.map(async () => seen.push(await meta.getTag(alpine, 'latest'))),
      ]);
      const valid = new Set(records.map((r) => JSON.stringify(r)));
      for (const s of seen) expect(valid.has(JSON.stringify(s))).toBe(true);
      expect(valid.has(JSON.stringify(await meta.getTag(alpine, 'latest')))).toBe(true);
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
    });

    it('a corrupt or wrongly shaped record is a miss, not an error', async () => {
      const path = join(root, 'repos', 'docker.io', 'library', 'alpine', '_tags');
      await mkdir(path, { recursive: true });
      await writeFile(join(path, 'torn'), '{"variants":[{"digest":"sha256:ab');
      await writeFile(join(path, 'empty'), '');
      await writeFile(join(path, 'shape'), '{"digest":"sha256:abc"}');
      await writeFile(join(path, 'null'), 'null');
      expect(await meta.getTag(alpine, 'torn')).toBeUndefined();
      expect(await meta.getTag(alpine, 'empty')).toBeUndefined();
      expect(await meta.getTag(alpine, 'shape')).toBeUndefined();
      expect(await meta.getTag(alpine, 'null')).toBeUndefined();
      // A good write over a corrupt record mends it.
      await meta.putTag(alpine, 'torn', record(digestOf('fixed')));
      expect(await meta.getTag(alpine, 'torn')).toEqual(record(digestOf('fixed')));
    });
  });

  describe('links', () => {
    it('hasLink is false until addLinks, then true; other digests and repos stay false', async () => {
      const [a, b, c] = [digestOf('a'), digestOf('b'), digestOf('c')];
      expect(await meta.hasLink(alpine, a)).toBe(false);
      await meta.addLinks(alpine, [a, b]);
      expect(await meta.hasLink(alpine, a)).toBe(true);
      expect(await meta.hasLink(alpine, b)).toBe(true);
      expect(await meta.hasLink(alpine, c)).toBe(false);
      expect(await meta.hasLink({ upstream: 'docker.io', repo: 'library/busybox' }, a)).toBe(false);
      expect(await meta.hasLink({ upstream: 'ghcr.io', repo: 'library/alpine' }, a)).toBe(false);
      const hex = a.slice('sha256:'.length);
      expect(existsSync(join(root, 'repos', 'docker.io', 'library', 'alpine', '_links', 'sha256', hex))).toBe(true);
    });

    it('addLinks is idempotent, also when called concurrently and with duplicates', async () => {
      const a = digestOf('a');
      await meta.addLinks(alpine, [a]);
      await meta.addLinks(alpine, [a, a]);
      await Promise.all([meta.addLinks(alpine, [a]), meta.addLinks(alpine, [a, digestOf('b')])]);
      await meta.addLinks(alpine, []);
      expect(await meta.hasLink(alpine, a)).toBe(true);
      expect(await meta.hasLink(alpine, digestOf('b'))).toBe(true);
      const linkDir = join(root, 'repos', 'docker.io', 'library', 'alpine', '_links', 'sha256');
      expect((await readdir(linkDir)).sort()).toEqual([a, digestOf('b')].map((d) => d.slice(7)).sort());
    });

    it('keeps sha512 links apart from sha256 ones', async () => {
      const d512 = digestOf('x', 'sha512');
      await meta.addLinks(alpine, [d512]);
      expect(await meta.hasLink(alpine, d512)).toBe(true);
      expect(existsSync(join(root, 'repos', 'docker.io', 'library', 'alpine', '_links', 'sha512', d512.slice(7)))).toBe(true);
    });
  });

  describe('manifests', () => {
    it('records a digest as a manifest of one repository, with its media type', async () => {
      const ref = { upstream: 'docker.io', repo: 'library/alpine' };
      expect(await meta.getManifestType(ref, digestOf('m'))).toBeUndefined();
      await meta.addManifests(ref, [{ digest: digestOf('m'), mediaType: 'application/vnd.oci.image.index.v1+json' }]);
      expect(await meta.getManifestType(ref, digestOf('m'))).toBe('application/vnd.oci.image.index.v1+json');
      expect(await meta.getManifestType({ upstream: 'docker.io', repo: 'library/other' }, digestOf('m'))).toBeUndefined();
      await meta.addManifests(ref, [{ digest: digestOf('m'), mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json' }]);
      expect(await meta.getManifestType(ref, digestOf('m'))).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    });
  });

  describe('docs', () => {
    it('round-trips a stored document and misses on an absent one', async () => {
      const doc = { fetchedAt: 42, body: { name: 'library/alpine', tags: ['3.19', 'latest'] } };
      expect(await meta.getDoc(alpine, 'tags')).toBeUndefined();
      await meta.putDoc(alpine, 'tags', doc);
      expect(await meta.getDoc(alpine, 'tags')).toEqual(doc);
      expect(await meta.getDoc(alpine, 'referrers-sha256-abc')).toBeUndefined();
      await meta.putDoc(alpine, 'tags', { fetchedAt: 43, body: [] });
      expect(await meta.getDoc(alpine, 'tags')).toEqual({ fetchedAt: 43, body: [] });
    });

    it('a corrupt document or one without fetchedAt is a miss', async () => {
      const path = join(root, 'repos', 'docker.io', 'library', 'alpine', '_docs', 'tags.json');
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, '{not json');
      expect(await meta.getDoc(alpine, 'tags')).toBeUndefined();
      await writeFile(path, '{"body":{}}');
      expect(await meta.getDoc(alpine, 'tags')).toBeUndefined();
      await writeFile(path, '{"fetchedAt":"yesterday","body":{}}');
      expect(await meta.getDoc(alpine, 'tags')).toBeUndefined();
    });
  });

  describe('listRepos', () => {
    it('is empty before anything was stored (even without a repos/ directory)', async () => {
      expect(await meta.listRepos()).toEqual([]);
    });

    it('finds nested repositories holding manifests or tags on every upstream, and never mistakes _tags or _links for a repository', async () => {
      await meta.putTag({ upstream: 'docker.io', repo: 'a' }, 'v1', record(digestOf('a')));
      await meta.putTag({ upstream: 'docker.io', repo: 'a/b/c' }, 'v1', record(digestOf('c')));
      await meta.addManifests({ upstream: 'docker.io', repo: 'a/b' }, [{ digest: digestOf('b'), mediaType: 'application/vnd.oci.image.manifest.v1+json' }]);
      await meta.putTag(alpine, 'latest', record(digestOf('alpine')));
      await meta.addLinks(alpine, [digestOf('layer')]);
      await meta.addManifests({ upstream: 'ghcr.io', repo: 'owner/repo' }, [{ digest: digestOf('g'), mediaType: 'application/vnd.oci.image.index.v1+json' }]);
      // Links alone (a blob confirmed by upstream) and documents (a tag list, referrers) are no cached manifest.
      await meta.addLinks({ upstream: 'docker.io', repo: 'only/links' }, [digestOf('l')]);
      await meta.putDoc({ upstream: 'docker.io', repo: 'only/docs' }, 'tags', { fetchedAt: 1, body: [] });
      await meta.putTag({ upstream: 'localhost:5000', repo: 'x' }, 'latest', record(digestOf('x')));
      // Tag names that look like repository components must not become repositories.
      await meta.putTag({ upstream: 'docker.io', repo: 'a/b/c' }, 'd', record(digestOf('d')));

      expect((await meta.listRepos()).sort(byKey)).toEqual(
        [
          { upstream: 'docker.io', repo: 'a' },
          { upstream: 'docker.io', repo: 'a/b' },
          { upstream: 'docker.io', repo: 'a/b/c' },
          alpine,
          { upstream: 'ghcr.io', repo: 'owner/repo' },
          { upstream: 'localhost:5000', repo: 'x' },
        ].sort(byKey),
      );
    });

    it('does not list the intermediate path parts of a repository as repositories', async () => {
      await meta.putTag({ upstream: 'quay.io', repo: 'org/team/app' }, 'latest', record(digestOf('app')));
      expect(await meta.listRepos()).toEqual([{ upstream: 'quay.io', repo: 'org/team/app' }]);
    });
  });
});
