/**
 * The source of a download this replica does not own: the owner replica's peer endpoint, asked
 * again at the offset reached after every cut (the transfer engine resumes with it as with an
 * upstream). While the owner does not answer, it waits for the owner's lease to change: once the
 * lease is free (the owner finished, failed, or died and the lease expired) it reads the stored
 * blob if there is one, else takes the lease and resumes from upstream at that offset — a
 * takeover, after which this replica stores the blob. Without Redis it takes over at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../observability/types.js';
import type { BlobStore } from '../storage/store.js';
import type { BlobSource } from '../transfer/inflight.js';
import { UpstreamError } from '../upstream/errors.js';
import type { BlobBody } from '../upstream/types.js';
import { lease, storedBody } from './stored.js';
import type { Leases } from './leases.js';
import type { PeerClient } from './peer-client.js';

export interface PeerSourceDeps {
  leases: Leases;
  peer: PeerClient;
  store: Pick<BlobStore, 'stat' | 'open'>;
  /** The upstream source, for a takeover. */
  upstream: BlobSource;
  logger: Logger;
  pollMs: number;
  /** Called once when this replica takes the download over; returns what stops its lease heartbeat. */
  tookOver(): () => void;
}

export class PeerSource {
  private stopHeartbeat: (() => void) | undefined;

  constructor(private readonly digest: string, private readonly deps: PeerSourceDeps) {}

  /** The download is over: stop renewing a lease taken over. */
  done(): void {
    this.stopHeartbeat?.();
  }

  async open(offset: number): Promise<BlobBody> {
    const { deps, digest } = this;
    const key = lease(digest);
    // Bounded: an owner's lease expires ttl after its last renewal; a live owner answers.
    const deadline = Date.now() + 4 * deps.leases.ttlMs + 30_000;
    for (;;) {
      if (this.stopHeartbeat) return deps.upstream(offset);
      let holder;
      try {
        holder = await deps.leases.holder(key);
      } catch {
        if (!deps.leases.up) return this.takeOver(offset, 'Redis unreachable');
        await sleep(deps.pollMs); // a slow reply: ask again
        continue;
      }
      if (!holder || holder.id === deps.leases.self.id) {
        const stored = await storedBody(deps.store, digest, offset);
        if (stored) return stored;
        let taken: boolean;
        try {
          taken = await deps.leases.acquire(key);
        } catch {
          if (!deps.leases.up) return this.takeOver(offset, 'Redis unreachable');
          continue;
        }
        if (taken || holder?.id === deps.leases.self.id) return this.takeOver(offset, 'the owner let go of the lease without storing the blob');
        continue;
      }
      try {
        const answer = await deps.peer.fetch(holder.url, digest, offset);
        if (answer.kind === 'body') return answer.body;
        if (answer.kind === 'refused') {
          deps.logger.error({ peer: holder.url, status: answer.status }, 'a fleet peer refused our secret (fleet.secret differs between replicas?)');
          return this.takeOver(offset, 'peer refused the fleet secret');
        }
        // absent: the owner has not started yet, or finished a moment ago; look at the lease again.
      } catch {
        // The owner does not answer (died, or restarting): its lease will expire.
      }
      if (Date.now() > deadline) throw new UpstreamError('unreachable', digest, `fleet owner ${holder.id} of ${digest} neither answers nor lets its lease expire`);
      await sleep(deps.pollMs);
    }
  }

  private takeOver(offset: number, why: string): Promise<BlobBody> {
    this.stopHeartbeat ??= this.deps.tookOver();
    this.deps.logger.info({ digest: this.digest, offset, why }, 'taking over a fleet download from upstream');
    return this.deps.upstream(offset);
  }
}
