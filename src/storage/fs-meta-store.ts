/** Filesystem MetaStore: small JSON files written atomically (temp + rename) under repos/. */
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isNotFound, readdirOrEmpty } from './fs-store.js';
import { StorePaths, type RepoKey } from './paths.js';
import type { MetaStore, StateName, StoredDoc, TagRecord } from './meta-store.js';

export class FsMetaStore implements MetaStore {
  readonly paths: StorePaths;

  constructor(root: string) {
    this.paths = new StorePaths(root);
  }

  async getTag(ref: RepoKey, tag: string): Promise<TagRecord | undefined> {
    const v = await this.readJson(this.paths.tag(ref, tag));
    if (!v || typeof v !== 'object' || !Array.isArray((v as TagRecord).variants)) return undefined;
    return v as TagRecord;
  }

  putTag(ref: RepoKey, tag: string, record: TagRecord): Promise<void> {
    return this.writeJson(this.paths.tag(ref, tag), record);
  }

  async hasLink(ref: RepoKey, digest: string): Promise<boolean> {
    try {
      await stat(this.paths.link(ref, digest));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async addLinks(ref: RepoKey, digests: string[]): Promise<void> {
    const dirs = new Set(digests.map((d) => dirname(this.paths.link(ref, d))));
    await Promise.all([...dirs].map((d) => mkdir(d, { recursive: true })));
    await Promise.all(
      digests.map(async (d) => {
        const h = await open(this.paths.link(ref, d), 'a');
        await h.close();
      }),
    );
  }

  async getManifestType(ref: RepoKey, digest: string): Promise<string | undefined> {
    try {
      const t = (await readFile(this.paths.manifest(ref, digest), 'utf8')).trim();
      return t === '' ? undefined : t;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async addManifests(ref: RepoKey, manifests: Array<{ digest: string; mediaType: string }>): Promise<void> {
    const dirs = new Set(manifests.map((m) => dirname(this.paths.manifest(ref, m.digest))));
    await Promise.all([...dirs].map((d) => mkdir(d, { recursive: true })));
    await mkdir(this.paths.tmpDir, { recursive: true });
    // Temp + rename: a reader sees the old media type or the new one, never an empty file.
    await Promise.all(
      manifests.map((m) => this.replace(this.paths.manifest(ref, m.digest), m.mediaType)),
    );
  }

  async getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined> {
    const v = await this.readJson(this.paths.doc(ref, name));
    if (!v || typeof v !== 'object' || typeof (v as StoredDoc).fetchedAt !== 'number') return undefined;
    return v as StoredDoc;
  }

  putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void> {
    return this.writeJson(this.paths.doc(ref, name), doc);
  }

  async listRepos(): Promise<RepoKey[]> {
    const out: RepoKey[] = [];
    let upstreams: string[];
    try {
      upstreams = await readdir(this.paths.reposDir);
    } catch (e) {
      if (isNotFound(e)) return out;
      throw e;
    }
    const walk = async (upstream: string, dir: string, parts: string[]): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      if (parts.length > 0 && entries.some((e) => e.name === '_tags' || e.name === '_manifests')) out.push({ upstream, repo: parts.join('/') });
      for (const e of entries) if (e.isDirectory() && !e.name.startsWith('_')) await walk(upstream, join(dir, e.name), [...parts, e.name]);
    };
    for (const u of upstreams) await walk(u, join(this.paths.reposDir, u), []);
    return out;
  }

  async listTags(ref: RepoKey): Promise<string[]> {
    return (await readdirOrEmpty(join(this.paths.repoDir(ref), '_tags'))).filter((t) => !t.startsWith('.'));
  }

  async deleteTag(ref: RepoKey, tag: string): Promise<void> {
    await unlink(this.paths.tag(ref, tag)).catch(ignoreNotFound);
  }

  async listManifests(ref: RepoKey): Promise<Array<{ digest: string; mediaType: string }>> {
    const out: Array<{ digest: string; mediaType: string }> = [];
    for (const digest of await this.digestsUnder(join(this.paths.repoDir(ref), '_manifests'))) {
      const mediaType = await this.getManifestType(ref, digest);
      if (mediaType) out.push({ digest, mediaType });
    }
    return out;
  }

  listLinks(ref: RepoKey): Promise<string[]> {
    return this.digestsUnder(join(this.paths.repoDir(ref), '_links'));
  }

  async forget(ref: RepoKey, digests: string[]): Promise<void> {
    await Promise.all(digests.flatMap((d) => [unlink(this.paths.manifest(ref, d)).catch(ignoreNotFound), unlink(this.paths.link(ref, d)).catch(ignoreNotFound)]));
  }

  async deleteRepo(ref: RepoKey): Promise<void> {
    const dir = this.paths.repoDir(ref);
    // Only this repository's own records: nested repositories (a/b under a) keep theirs.
    await Promise.all(['_tags', '_links', '_manifests', '_docs'].map((d) => rm(join(dir, d), { recursive: true, force: true })));
  }

  getState(name: StateName): Promise<unknown> {
    return this.readJson(this.paths.state(name));
  }

  putState(name: StateName, value: unknown): Promise<void> {
    return this.writeJson(this.paths.state(name), value);
  }

  /** `<dir>/<alg>/<hex>` files as digests. */
  private async digestsUnder(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const alg of await readdirOrEmpty(dir)) for (const hex of await readdirOrEmpty(join(dir, alg))) if (/^[a-f0-9]{32,128}$/.test(hex)) out.push(`${alg}:${hex}`);
    return out;
  }

  private async readJson(path: string): Promise<unknown> {
    try {
      return JSON.parse(await readFile(path, 'utf8'));
    } catch (e) {
      // A missing or unreadable record is a cache miss, never an error for the client.
      if (isNotFound(e) || e instanceof SyntaxError) return undefined;
      throw e;
    }
  }

  private async writeJson(path: string, value: unknown): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    await mkdir(this.paths.tmpDir, { recursive: true });
    await this.replace(path, JSON.stringify(value));
  }

  /**
   * Writes `path` whole through a temp file and a rename. A failed write or rename (a full disk, the
   * directory purged meanwhile) removes its temp file: tmp/ is swept only at start, and a full disk
   * must not lose its last bytes to leftovers of each failed attempt.
   */
  private async replace(path: string, text: string): Promise<void> {
    const tmp = this.paths.tmp('meta');
    try {
      await writeFile(tmp, text);
      await rename(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }
}

function ignoreNotFound(e: unknown): void {
  if (!isNotFound(e)) throw e;
}
