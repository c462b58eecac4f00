/**
 * The Redis key layout of the shared metadata. Every key starts with the configured prefix, so
 * several fleets (or test runs) can share one Redis without seeing each other's records.
 *
 *   <p>tags|<upstream>/<repo>        hash   tag -> TagRecord JSON
 *   <p>links|<upstream>/<repo>       set    digests the repository is known to contain
 *   <p>manifests|<upstream>/<repo>   hash   digest -> media type it was stored with as a manifest
 *   <p>docs|<upstream>/<repo>        hash   name -> StoredDoc JSON (tags/list, referrers answers)
 *   <p>repos                         set    `<upstream>/<repo>` of repositories with a tag or manifest record
 *   <p>state|<name>                  string a lifecycle state document as JSON (usage, pins)
 *
 * `|` never occurs in an upstream key (a host name, maybe with a port) or a repository name, and an
 * upstream key holds no `/`: the repository id `<upstream>/<repo>` splits back unambiguously.
 */
import type { RepoKey } from './paths.js';

export type RepoRecordKind = 'tags' | 'links' | 'manifests' | 'docs';

export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** `<upstream>/<repo>`: the member of the repos set and the suffix of a repository's keys. */
  repoId(ref: RepoKey): string {
    // Defence in depth: the registry validated both, but a key must never be built from anything else.
    if (!/^[A-Za-z0-9.:[\]-]+$/.test(ref.upstream) || !/^[a-z0-9][a-z0-9._/-]*$/.test(ref.repo)) {
      throw new Error(`not a repository key: ${ref.upstream.slice(0, 80)}/${ref.repo.slice(0, 200)}`);
    }
    return `${ref.upstream}/${ref.repo}`;
  }

  parseRepoId(id: string): RepoKey | undefined {
    const i = id.indexOf('/');
    if (i <= 0 || i === id.length - 1) return undefined;
    return { upstream: id.slice(0, i), repo: id.slice(i + 1) };
  }

  repo(kind: RepoRecordKind, ref: RepoKey): string {
    return `${this.prefix}${kind}|${this.repoId(ref)}`;
  }

  get repos(): string {
    return `${this.prefix}repos`;
  }

  state(name: string): string {
    return `${this.prefix}state|${name}`;
  }
}
