/**
 * The MetaStore contract: what every implementation (the filesystem store, the memory-cached
 * decorator, a shared backend later) must do, through the interface only.
 */
import { describe, expect, it, beforeEach, afterEach } from 'vitest';
import type { MetaStore, RepoKey, TagRecord } from '../../src/storage/meta-store.js';
import { digestOf } from '../helpers/digest.js';

export interface MetaStoreFixture {
  store: MetaStore;
  /** A second handle on the same data (a fresh process, another replica), when the backend has one. */
  reopen?: () => Promise<MetaStore>;
  cleanup(): Promise<void>;
}

const alpine: RepoKey = { upstream: 'docker.io', repo: 'library/alpine' };
const other: RepoKey = { upstream: 'ghcr.io', repo: 'owner/alpine' };
const record = (digest: string, fetchedAt = 1000): TagRecord => ({
  version: 2,
  variants: [{ digest, mediaType: 'application/vnd.oci.image.index.v1+json', size: 1234, fetchedAt }],
});
const byKey = (a: RepoKey, b: RepoKey) => `${a.upstream}/${a.repo}`.localeCompare(`${b.upstream}/${b.repo}`);

export function metaStoreContract(name: string, make: () => Promise<MetaStoreFixture>): void {
  describe(`MetaStore contract: ${name}`, () => {
    let fx: MetaStoreFixture;
    let meta: MetaStore;
    beforeEach(async () => {
      fx = await make();
      meta = fx.store;
    });
    afterEach(() => fx.cleanup());

    it('tags: absent is undefined; a record round-trips and is replaced whole; repositories and upstreams stay apart', async () => {
      expect(await meta.getTag(alpine, 'latest')).toBeUndefined();
      await meta.putTag(alpine, 'latest', record(digestOf('a')));
      expect(await meta.getTag(alpine, 'latest')).toEqual(record(digestOf('a')));
      const narrowed: TagRecord = { version: 2, variants: [{ digest: digestOf('c'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, fetchedAt: 2, narrowedFor: [] }] };
      await meta.putTag(alpine, 'latest', narrowed);
      expect(await meta.getTag(alpine, 'latest')).toEqual(narrowed);
      expect(await meta.getTag(other, 'latest')).toBeUndefined();
      expect(await meta.getTag(alpine, 'other')).toBeUndefined();
    });

    it('links: false until added, then true; idempotent, with duplicates and concurrent calls', async () => {
      const d = digestOf('layer');
      expect(await meta.hasLink(alpine, d)).toBe(false);
      await Promise.all([meta.addLinks(alpine, [d, d]), meta.addLinks(alpine, [d])]);
      expect(await meta.hasLink(alpine, d)).toBe(true);
      expect(await meta.hasLink(other, d)).toBe(false);
      expect(await meta.hasLink(alpine, digestOf('nope'))).toBe(false);
      await meta.addLinks(alpine, []);
      const sha512 = digestOf('layer', 'sha512');
      expect(await meta.hasLink(alpine, sha512)).toBe(false);
      await meta.addLinks(alpine, [sha512]);
      expect(await meta.hasLink(alpine, sha512)).toBe(true);
    });

    it('manifests: a digest is a manifest of a repository only once recorded, with its media type (last write wins)', async () => {
      const d = digestOf('manifest');
      expect(await meta.getManifestType(alpine, d)).toBeUndefined();
      await meta.addManifests(alpine, [{ digest: d, mediaType: 'application/vnd.oci.image.index.v1+json' }]);
      expect(await meta.getManifestType(alpine, d)).toBe('application/vnd.oci.image.index.v1+json');
      expect(await meta.getManifestType(other, d)).toBeUndefined();
      await meta.addManifests(alpine, [{ digest: d, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json' }]);
      expect(await meta.getManifestType(alpine, d)).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
      // A link alone does not make a manifest.
      await meta.addLinks(alpine, [digestOf('config')]);
      expect(await meta.getManifestType(alpine, digestOf('config'))).toBeUndefined();
    });

    it('docs: round-trip and miss', async () => {
      expect(await meta.getDoc(alpine, 'tags')).toBeUndefined();
      await meta.putDoc(alpine, 'tags', { fetchedAt: 5, body: ['a', 'b'] });
      expect(await meta.getDoc(alpine, 'tags')).toEqual({ fetchedAt: 5, body: ['a', 'b'] });
      expect(await meta.getDoc(other, 'tags')).toBeUndefined();
    });

    it('listRepos: repositories holding a tag or a manifest record, nested names and several upstreams; not links or docs alone', async () => {
      expect(await meta.listRepos()).toEqual([]);
      await meta.putTag({ upstream: 'docker.io', repo: 'a' }, 'v1', record(digestOf('a')));
      await meta.putTag({ upstream: 'docker.io', repo: 'a/b/c' }, 'v1', record(digestOf('c')));
      await meta.addManifests(other, [{ digest: digestOf('g'), mediaType: 'application/vnd.oci.image.manifest.v1+json' }]);
      await meta.addLinks({ upstream: 'docker.io', repo: 'only/links' }, [digestOf('l')]);
      await meta.putDoc({ upstream: 'docker.io', repo: 'only/docs' }, 'tags', { fetchedAt: 1, body: [] });
      expect((await meta.listRepos()).sort(byKey)).toEqual([{ upstream: 'docker.io', repo: 'a' }, { upstream: 'docker.io', repo: 'a/b/c' }, other].sort(byKey));
    });

    it('lifecycle: lists and deletes tags, manifest records and links; deletes a repository; keeps state documents', async () => {
      await meta.putTag(alpine, 'a', record(digestOf('a')));
      await meta.putTag(alpine, 'b', record(digestOf('b')));
      expect((await meta.listTags(alpine)).sort()).toEqual(['a', 'b']);
      await meta.deleteTag(alpine, 'a');
      await meta.deleteTag(alpine, 'never');
      expect(await meta.listTags(alpine)).toEqual(['b']);
      expect(await meta.getTag(alpine, 'a')).toBeUndefined();
      const m = { digest: digestOf('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json' };
      await meta.addManifests(alpine, [m]);
      await meta.addLinks(alpine, [m.digest, digestOf('layer')]);
      expect(await meta.listManifests(alpine)).toEqual([m]);
      expect((await meta.listLinks(alpine)).sort()).toEqual([m.digest, digestOf('layer')].sort());
      await meta.forget(alpine, [m.digest, digestOf('absent')]);
      expect(await meta.getManifestType(alpine, m.digest)).toBeUndefined();
      expect(await meta.hasLink(alpine, m.digest)).toBe(false);
      expect(await meta.hasLink(alpine, digestOf('layer'))).toBe(true);
      // A nested repository keeps its records when its parent is deleted.
      const nested = { upstream: alpine.upstream, repo: `${alpine.repo}/sub` };
      await meta.putTag(nested, 'x', record(digestOf('x')));
      await meta.deleteRepo(alpine);
      expect(await meta.listTags(alpine)).toEqual([]);
      expect(await meta.hasLink(alpine, digestOf('layer'))).toBe(false);
      expect(await meta.getTag(nested, 'x')).toEqual(record(digestOf('x')));
      expect(await meta.listRepos()).toEqual([nested]);
      expect(await meta.getState('pins')).toBeUndefined();
      await meta.putState('pins', ['docker.io/library/a']);
      expect(await meta.getState('pins')).toEqual(['docker.io/library/a']);
    });

    it('what was written is there for a fresh handle on the same data', async () => {
      if (!fx.reopen) return;
      await meta.putTag(alpine, 'latest', record(digestOf('a')));
      await meta.addLinks(alpine, [digestOf('l')]);
      await meta.addManifests(alpine, [{ digest: digestOf('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json' }]);
      const again = await fx.reopen();
      expect(await again.getTag(alpine, 'latest')).toEqual(record(digestOf('a')));
      expect(await again.hasLink(alpine, digestOf('l'))).toBe(true);
      expect(await again.getManifestType(alpine, digestOf('m'))).toBe('application/vnd.oci.image.manifest.v1+json');
    });
  });
}
