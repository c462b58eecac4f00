/**
 * One upstream fetch per blob per fleet. Before a replica fetches a blob from upstream it takes the
 * digest's lease in Redis (leases.ts):
 *
 * - **Lease taken** (the owner): the download runs as on a single mirror (transfer/inflight.ts) into
 *   the shared store, the lease renewed every third of its TTL until the blob is committed (or the
 *   download failed), then released. Its peer endpoint serves the download live to other replicas.
 * - **Held by another replica**: this replica's clients join a local download whose source is the
 *   owner's peer endpoint (peer-source.ts) and whose bytes go to local scratch (scratch-store.ts), not
 *   the shared store. Late joiners read from offset 0 of that local copy; resumes use Range. If the
 *   owner dies, its lease expires and this replica takes the download over, resuming from upstream
 *   at the offset it reached, and stores the blob itself.
 * - **Redis unreachable**: local coordination (one download per digest per replica), as a single mirror.
 *
 * A replica decides once per digest (concurrent local requests share the decision and the download).
 */
import type { Logger } from '../observability/types.js';
import type { BlobStore } from '../storage/store.js';
import type { BlobCoordinator, BlobSource, Download, InflightDownloads } from '../transfer/inflight.js';
import { SingleFlight } from '../util/single-flight.js';
import type { Leases } from './leases.js';
import type { RedisLink } from './link.js';
import type { PeerClient } from './peer-client.js';
import { PeerSource } from './peer-source.js';
import { lease, storedBody } from './stored.js';

/** How this replica came to serve a download. */
export type FleetRole = 'owner' | 'peer' | 'takeover' | 'local';

export interface FleetObserver {
  download(role: FleetRole): void;
  /** A download's lease was found held by another replica while this one still fetched. */
  leaseLost?(): void;
}

export interface FleetCoordinatorDeps {
  link: RedisLink;
  /** Leases per digest (key `lease:<digest>`). */
  leases: Leases;
  /** Downloads into the shared store (this replica fetching from upstream). */
  main: InflightDownloads;
  /** Downloads streamed from an owner replica into local scratch (built over a ScratchStore whose promote is `owns`). */
  peers: InflightDownloads;
  /** The shared store itself (no memory cache in front: "is it there now?"). */
  store: Pick<BlobStore, 'stat' | 'open'>;
  peer: PeerClient;
  logger: Logger;
  observer: FleetObserver;
  /** How often a replica waiting for an owner (not started yet, or not answering) looks again. Default 100 ms (ttl/4 if shorter). */
  pollMs?: number;
}

export class FleetCoordinator implements BlobCoordinator {
  private readonly deciding = new SingleFlight<Download>();
  /** Digests whose peer download this replica took over: their blob goes into the shared store. */
  private readonly takenOver = new Set<string>();

  constructor(private readonly deps: FleetCoordinatorDeps) {}

  /** Whether this replica took over the download of `digest` from a dead owner (ScratchStore's promote). */
  owns(digest: string): boolean {
    return this.takenOver.has(digest);
  }

  /** The download of `digest` on this replica (from upstream or from a peer), if any: the peer endpoint serves it. */
  download(digest: string): Download | undefined {
    const m = this.deps.main.get(digest);
    if (m && m.state !== 'failed') return m;
    const p = this.deps.peers.get(digest);
    return p && p.state !== 'failed' ? p : undefined;
  }

  async join(digest: string, origin: string, source: BlobSource): Promise<Download> {
    const running = this.running(digest, origin, source);
    if (running) return running;
    return this.deciding.run(digest, () => this.decide(digest, origin, source));
  }

  /** Joins a local download under way (from upstream or a peer), if one is joinable. */
  private running(digest: string, origin: string, source: BlobSource): Download | undefined {
    for (const inflight of [this.deps.main, this.deps.peers]) {
      const d = inflight.get(digest);
      if (d && d.state !== 'failed' && d.joinable && !(d.spilled && d.state === 'done')) return inflight.join(digest, origin, source);
    }
    return undefined;
  }

  private async decide(digest: string, origin: string, source: BlobSource): Promise<Download> {
    const { deps } = this;
    const running = this.running(digest, origin, source);
    if (running) return running;
    let acquired: boolean | undefined;
    // A slow reply on a live connection is tried again (a few times); an unreachable Redis means local.
    for (let attempt = 0; acquired === undefined && attempt < 3 && deps.leases.up; attempt++) {
      acquired = await deps.leases.acquire(lease(digest)).catch(() => undefined);
      // The try before had no reply in time, but its SET may have taken the lease: then this one
      // finds it ours. Read as taken by another replica, this replica became a peer of itself, and
      // its own download counted as a takeover (seen in the fleet test on a loaded machine).
      if (acquired === false && attempt > 0) acquired = (await deps.leases.holder(lease(digest)).catch(() => undefined))?.id === deps.leases.self.id;
    }
    if (acquired === undefined) {
      deps.observer.download('local');
      return deps.main.join(digest, origin, source);
    }
    if (acquired) {
      return this.own(digest, origin, this.storedOr(digest, source, () => deps.observer.download('owner')));
    }
    deps.observer.download('peer');
    const fromPeer = new PeerSource(digest, {
      leases: deps.leases,
      peer: deps.peer,
      store: deps.store,
      upstream: source,
      logger: deps.logger,
      pollMs: deps.pollMs ?? Math.min(100, Math.floor(deps.leases.ttlMs / 4)),
      tookOver: () => {
        this.takenOver.add(digest);
        deps.observer.download('takeover');
        return this.heartbeat(digest);
      },
    });
    const dl = deps.peers.join(digest, origin, (offset) => fromPeer.open(offset));
    void dl.finished.catch(() => undefined).finally(() => {
      fromPeer.done();
      // The promotion (in the writer's commit) is over once `finished` settles.
      this.takenOver.delete(digest);
    });
    return dl;
  }

  /** Starts the download as the lease's owner; renews the lease until it is stored or failed, then lets go. */
  private own(digest: string, origin: string, source: BlobSource): Download {
    const dl = this.deps.main.join(digest, origin, source);
    const stop = this.heartbeat(digest);
    void dl.finished.catch(() => undefined).finally(stop);
    return dl;
  }

  /** Keeps the digest's lease while a download we own runs; the returned function stops and releases it. */
  private heartbeat(digest: string): () => void {
    const stop = this.deps.leases.keepRenewed(lease(digest), () => {
      this.deps.observer.leaseLost?.();
      this.deps.logger.warn({ digest }, 'lost the lease of a fleet download to another replica (Redis was away or lost its data): it may fetch the blob from upstream too');
    });
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      stop();
      void this.deps.leases.release(lease(digest));
    };
  }

  /**
   * The upstream source, unless the blob reached the shared store between the caller's look and the
   * lease (another replica finished and let go just then): then its bytes come from the store and
   * upstream is not asked again.
   */
  private storedOr(digest: string, source: BlobSource, onUpstream: () => void): BlobSource {
    // An owner only counts as one (metric role "owner": fetched from upstream) once it asks upstream:
    // a replica that asked just before another stored the blob gets the lease it released and reads the store.
    let asked = false;
    const upstream: BlobSource = (offset) => {
      if (!asked) {
        asked = true;
        onUpstream();
      }
      return source(offset);
    };
    return async (offset) => (await storedBody(this.deps.store, digest, offset)) ?? upstream(offset);
  }
}
