/**
 * MetaStore on Redis (ioredis), shared by every replica of a fleet. Each record is one Redis value
 * (a hash field, a set member or a string) written by one command, so a reader sees the old or the
 * new record, never a torn one; the repository list is kept in the same transaction as the record
 * that puts a repository on it, and taken off by a script that sees the records are gone.
 * Key layout: redis-keys.ts. The client is injected (the composition root owns its connection and
 * its retry policy: it should fail commands fast while Redis is away, not queue them). A command
 * that fails without an answer from Redis (connection lost or refused, timed out, offline) reaches
 * the caller as a MetaUnavailableError; an error Redis answered with (a ReplyError) as ioredis
 * threw it; a key that names no repository as the plain Error of redis-keys.ts.
 */
import type { Redis } from 'ioredis';
import { MetaUnavailableError, type MetaStore, type RepoKey, type StateName, type StoredDoc, type TagRecord } from './meta-store.js';
import { RedisKeys } from './redis-keys.js';

/**
 * Deletes fields or members, then takes the repository off the list when it holds no tag and no
 * manifest record any more. KEYS: tags, manifests, links, repos. ARGV: repo id, what ('tag' | 'digests'
 * | 'repo'), names...
 */
const FORGET = `
local what = ARGV[2]
if what == 'tag' then
  redis.call('HDEL', KEYS[1], ARGV[3])
elseif what == 'digests' then
  for i = 3, #ARGV do
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('SREM', KEYS[3], ARGV[i])
  end
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then redis.call('SREM', KEYS[4], ARGV[1]) end
return 0
`;

export class RedisMetaStore implements MetaStore {
  readonly keys: RedisKeys;

  /** `keyPrefix` starts every key (e.g. `regmirror:`), so fleets sharing a Redis stay apart. */
  constructor(private readonly redis: Redis, keyPrefix: string) {
    this.keys = new RedisKeys(keyPrefix);
  }

  async getTag(ref: RepoKey, tag: string): Promise<TagRecord | undefined> {
    const v = parseJson(await r(this.redis.hget(this.keys.repo('tags', ref), tag)));
    if (!v || typeof v !== 'object' || !Array.isArray((v as TagRecord).variants)) return undefined;
    return v as TagRecord;
  }

  async putTag(ref: RepoKey, tag: string, record: TagRecord): Promise<void> {
    await r(this.exec(this.redis.multi().hset(this.keys.repo('tags', ref), tag, JSON.stringify(record)).sadd(this.keys.repos, this.keys.repoId(ref))));
  }

  async hasLink(ref: RepoKey, digest: string): Promise<boolean> {
    return (await r(this.redis.sismember(this.keys.repo('links', ref), digest))) === 1;
  }

  async addLinks(ref: RepoKey, digests: string[]): Promise<void> {
    if (digests.length === 0) return;
    await r(this.redis.sadd(this.keys.repo('links', ref), ...digests));
  }

  async getManifestType(ref: RepoKey, digest: string): Promise<string | undefined> {
    const t = await r(this.redis.hget(this.keys.repo('manifests', ref), digest));
    return t === null || t === '' ? undefined : t;
  }

  async addManifests(ref: RepoKey, manifests: Array<{ digest: string; mediaType: string }>): Promise<void> {
    if (manifests.length === 0) return;
    const fields = new Map(manifests.map((m) => [m.digest, m.mediaType])); // last write wins, as in order
    await r(this.exec(this.redis.multi().hset(this.keys.repo('manifests', ref), fields).sadd(this.keys.repos, this.keys.repoId(ref))));
  }

  async getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined> {
    const v = parseJson(await r(this.redis.hget(this.keys.repo('docs', ref), name)));
    if (!v || typeof v !== 'object' || typeof (v as StoredDoc).fetchedAt !== 'number') return undefined;
    return v as StoredDoc;
  }

  async putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void> {
    await r(this.redis.hset(this.keys.repo('docs', ref), name, JSON.stringify(doc)));
  }

  async listRepos(): Promise<RepoKey[]> {
    const ids = await r(this.redis.smembers(this.keys.repos));
    return ids.map((id) => this.keys.parseRepoId(id)).filter((r): r is RepoKey => r !== undefined);
  }

  async listTags(ref: RepoKey): Promise<string[]> {
    return r(this.redis.hkeys(this.keys.repo('tags', ref)));
  }

  async deleteTag(ref: RepoKey, tag: string): Promise<void> {
    await this.forgetScript(ref, 'tag', [tag]);
  }

  async listManifests(ref: RepoKey): Promise<Array<{ digest: string; mediaType: string }>> {
    const all = await r(this.redis.hgetall(this.keys.repo('manifests', ref)));
    return Object.entries(all)
      .filter(([, mediaType]) => mediaType !== '')
      .map(([digest, mediaType]) => ({ digest, mediaType }));
  }

  async listLinks(ref: RepoKey): Promise<string[]> {
    return r(this.redis.smembers(this.keys.repo('links', ref)));
  }

  async forget(ref: RepoKey, digests: string[]): Promise<void> {
    if (digests.length === 0) return;
    await this.forgetScript(ref, 'digests', digests);
  }

  async deleteRepo(ref: RepoKey): Promise<void> {
    // Only this repository's own keys: a nested repository (a/b under a) has keys of its own.
    await this.forgetScript(ref, 'repo', []);
  }

  async getState(name: StateName): Promise<unknown> {
    return parseJson(await r(this.redis.get(this.keys.state(name))));
  }

  async putState(name: StateName, value: unknown): Promise<void> {
    await r(this.redis.set(this.keys.state(name), JSON.stringify(value)));
  }

  private async forgetScript(ref: RepoKey, what: 'tag' | 'digests' | 'repo', names: string[]): Promise<void> {
    const k = (kind: 'tags' | 'manifests' | 'links' | 'docs') => this.keys.repo(kind, ref);
    await r(this.redis.eval(FORGET, 5, k('tags'), k('manifests'), k('links'), this.keys.repos, k('docs'), this.keys.repoId(ref), what, ...names));
  }

  /** Runs a MULTI; an error of any command in it is thrown (ioredis reports them per command). */
  private async exec(multi: ReturnType<Redis['multi']>): Promise<void> {
    const results = await multi.exec();
    if (results === null) throw new Error('redis transaction was discarded');
    for (const [err] of results) if (err) throw err;
  }
}

/**
 * Awaits one Redis command (the keys were built before it, so a bad name is not mistaken for an
 * outage): an answer Redis gave (ReplyError) is rethrown as is, anything else means Redis did not
 * answer (connection closed or refused, offline, command timeout, retries exhausted).
 */
async function r<T>(command: Promise<T>): Promise<T> {
  try {
    return await command;
  } catch (e) {
    if ((e as Error)?.name === 'ReplyError') throw e;
    throw new MetaUnavailableError(e);
  }
}

/** A missing or unreadable value is a cache miss, never an error for the client. */
function parseJson(s: string | null): unknown {
  if (s === null) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
