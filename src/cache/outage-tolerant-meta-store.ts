/**
 * A remote MetaStore (Redis, shared by a fleet) with a local one beside it for outages (a decorator
 * with the same interface, like OutageTolerantBlobStore): while the remote store answers, it is the
 * source of truth and every successful write also goes to the local store (write-through), so the
 * replica holds what it recorded itself. While the remote store is unreachable (it throws
 * MetaUnavailableError), the replica keeps serving from the local store:
 *
 * - Reads of one record (tag, link, manifest type, document, lifecycle state) answer from the local
 *   store. What that can cost: a tag record may be older than the fleet's (it carries its fetchedAt
 *   and is revalidated by its TTL as always); a link is only ever written by a replica that fetched
 *   the manifest from upstream, so a local link is true and membership is never granted wrongly (an
 *   absent one sends the request upstream, as on any miss).
 * - Writes go to the local store only. They are not replayed to the remote store when it returns:
 *   the records are what upstream said, and the next revalidation (tag TTL) or fetch writes them to
 *   the remote store again; replaying could overwrite what other replicas recorded meanwhile.
 * - Listings (repositories, tags, manifests, links), deletes and pinning are the cache lifecycle's
 *   (eviction, GC, purge, pins) and the catalog's: they throw. A partial local listing must never look like the whole
 *   cache to a lifecycle pass deciding what to delete; a pass that fails deletes nothing.
 *
 * The mode (`remote` or `local`) follows the calls (any answer is `remote`, any MetaUnavailableError
 * `local`) and the connection (`reachable()`); each switch is one log line and one observer call,
 * not one per call. In `local` mode one call per `probeIntervalMs` tries the remote store and the
 * others do not: a Redis that stopped answering on an open connection (a partition, not a refusal)
 * costs one reply timeout per interval, not one per call a client waits on.
 */
import { MetaUnavailableError, type MetaStore, type RepoKey, type StateName, type StoredDoc, type TagRecord } from '../storage/meta-store.js';
import type { Logger } from '../observability/types.js';

export type MetaStoreMode = 'remote' | 'local';

export interface MetaModeObserver {
  /** The mode changed (also called once at construction with `remote`). */
  mode(mode: MetaStoreMode): void;
}

export interface OutageTolerantMetaStoreDeps {
  logger: Logger;
  observer: MetaModeObserver;
  /** Where the remote store is and where the local one (for the log lines; no secrets). */
  remoteName: string;
  localName: string;
  /** In local mode, how often a call tries the remote store again (0: every call). */
  probeIntervalMs: number;
  now: () => number;
}

export class OutageTolerantMetaStore implements MetaStore {
  private mode_: MetaStoreMode = 'remote';
  /** When a call last tried the remote store in local mode. */
  private lastProbe = -Infinity;

  constructor(
    private readonly remote: MetaStore,
    private readonly local: MetaStore,
    private readonly deps: OutageTolerantMetaStoreDeps,
  ) {
    deps.observer.mode('remote');
  }

  get mode(): MetaStoreMode {
    return this.mode_;
  }

  /** The remote store's connection is up (true) or gone (false, with why): switches without waiting for a call. */
  reachable(up: boolean, reason?: string): void {
    this.set(up ? 'remote' : 'local', reason);
  }

  getTag(ref: RepoKey, tag: string): Promise<TagRecord | undefined> {
    return this.read((s) => s.getTag(ref, tag));
  }
  putTag(ref: RepoKey, tag: string, record: TagRecord): Promise<void> {
    return this.write((s) => s.putTag(ref, tag, record));
  }
  hasLink(ref: RepoKey, digest: string): Promise<boolean> {
    return this.read((s) => s.hasLink(ref, digest));
  }
  addLinks(ref: RepoKey, digests: string[]): Promise<void> {
    return this.write((s) => s.addLinks(ref, digests));
  }
  getManifestType(ref: RepoKey, digest: string): Promise<string | undefined> {
    return this.read((s) => s.getManifestType(ref, digest));
  }
  addManifests(ref: RepoKey, manifests: Array<{ digest: string; mediaType: string }>): Promise<void> {
    return this.write((s) => s.addManifests(ref, manifests));
  }
  getDoc(ref: RepoKey, name: string): Promise<StoredDoc | undefined> {
    return this.read((s) => s.getDoc(ref, name));
  }
  putDoc(ref: RepoKey, name: string, doc: StoredDoc): Promise<void> {
    return this.write((s) => s.putDoc(ref, name, doc));
  }
  getState(name: StateName): Promise<unknown> {
    return this.read((s) => s.getState(name));
  }
  /**
   * Usage is kept locally like any record; pins are an operator's decision that must reach every
   * replica and outlive a restart: while Redis is away, pinning fails (and says why) instead of
   * pretending.
   */
  putState(name: StateName, value: unknown): Promise<void> {
    return name === 'pins' ? this.remoteFirst((s) => s.putState(name, value)) : this.write((s) => s.putState(name, value));
  }

  listRepos(): Promise<RepoKey[]> {
    return this.remoteOnly((s) => s.listRepos());
  }
  listTags(ref: RepoKey): Promise<string[]> {
    return this.remoteOnly((s) => s.listTags(ref));
  }
  listManifests(ref: RepoKey): Promise<Array<{ digest: string; mediaType: string }>> {
    return this.remoteOnly((s) => s.listManifests(ref));
  }
  listLinks(ref: RepoKey): Promise<string[]> {
    return this.remoteOnly((s) => s.listLinks(ref));
  }
  deleteTag(ref: RepoKey, tag: string): Promise<void> {
    return this.remove((s) => s.deleteTag(ref, tag));
  }
  forget(ref: RepoKey, digests: string[]): Promise<void> {
    return this.remove((s) => s.forget(ref, digests));
  }
  deleteRepo(ref: RepoKey): Promise<void> {
    return this.remove((s) => s.deleteRepo(ref));
  }

  /** Whether this call may try the remote store: always in remote mode, one per interval in local mode. */
  private tryRemote(): boolean {
    if (this.mode_ === 'remote') return true;
    const now = this.deps.now();
    if (now - this.lastProbe < this.deps.probeIntervalMs) return false;
    this.lastProbe = now;
    return true;
  }

  private async read<T>(op: (s: MetaStore) => Promise<T>): Promise<T> {
    if (!this.tryRemote()) return op(this.local);
    try {
      const v = await op(this.remote);
      this.set('remote', undefined);
      return v;
    } catch (e) {
      if (!(e instanceof MetaUnavailableError)) throw e;
      this.set('local', e.message);
      return op(this.local);
    }
  }

  /** Both stores at once; the local store's failure matters only when the remote one did not take the write. */
  private async write(op: (s: MetaStore) => Promise<void>): Promise<void> {
    if (!this.tryRemote()) return op(this.local);
    const [remote, local] = await Promise.allSettled([op(this.remote), op(this.local)]);
    if (remote.status === 'fulfilled') {
      this.set('remote', undefined);
      return;
    }
    if (!(remote.reason instanceof MetaUnavailableError)) throw remote.reason;
    this.set('local', remote.reason.message);
    if (local.status === 'rejected') throw local.reason;
  }

  private async remoteOnly<T>(op: (s: MetaStore) => Promise<T>): Promise<T> {
    if (!this.tryRemote()) throw new MetaUnavailableError(new Error(`${this.deps.remoteName} did not answer; trying again within ${this.deps.probeIntervalMs} ms`));
    try {
      const v = await op(this.remote);
      this.set('remote', undefined);
      return v;
    } catch (e) {
      if (e instanceof MetaUnavailableError) this.set('local', e.message);
      throw e;
    }
  }

  /**
   * Both stores (a delete from the local copy too, so a later outage does not bring a removed record
   * back); only the remote store's outcome is the caller's: a purge during an outage fails, and says so.
   */
  private async remove(op: (s: MetaStore) => Promise<void>): Promise<void> {
    const [remote] = await Promise.allSettled([this.remoteOnly(op), op(this.local)]);
    if (remote.status === 'rejected') throw remote.reason;
  }

  /** The remote store, then (only once it took the write) the local copy, best effort: a failed write is kept nowhere. */
  private async remoteFirst(op: (s: MetaStore) => Promise<void>): Promise<void> {
    await this.remoteOnly(op);
    await op(this.local).catch(() => undefined);
  }

  private set(mode: MetaStoreMode, reason: string | undefined): void {
    if (mode === this.mode_) return;
    this.mode_ = mode;
    // The call that found the store gone counts as this interval's probe.
    if (mode === 'local') this.lastProbe = this.deps.now();
    this.deps.observer.mode(mode);
    if (mode === 'local') {
      this.deps.logger.warn(
        { metaStore: this.deps.remoteName, fallback: this.deps.localName, reason },
        'metadata store lost: Redis unreachable, serving from the records this replica keeps locally (tags may be older than the fleet\'s; fetches may repeat across replicas)',
      );
    } else {
      this.deps.logger.info({ metaStore: this.deps.remoteName }, 'metadata store restored: records in Redis again');
    }
  }
}
