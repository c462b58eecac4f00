/**
 * Reads of shared blobs, recorded fleet-wide so that eviction on one replica never deletes a blob a
 * client of another replica is streaming. A read registers itself in a Redis sorted set per digest
 * (member: replica and read id; score: when the registration lapses, renewed while the stream is
 * open) and leaves it when the stream closes; a replica that dies leaves registrations that lapse
 * after `ttlMs`. Registration never delays serving (fire and forget); the evictor asks
 * `reading(digest)` before each delete and keeps the blob when anyone reads it, or when Redis cannot
 * say.
 */
import type { Readable } from 'node:stream';
import type { BlobInfo, BlobStore, BlobWriter, ByteRange, StatOptions } from '../storage/store.js';
import type { RedisLink } from './link.js';

export class FleetReaders {
  private seq = 0;

  constructor(
    private readonly link: RedisLink,
    private readonly replicaId: string,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {}

  private key(digest: string): string {
    return `${this.prefix}readers:${digest}`;
  }

  /** Registers a read of `digest`; the returned function ends it. Never throws, never waits. */
  track(digest: string): () => void {
    const member = `${this.replicaId}:${++this.seq}`;
    const key = this.key(digest);
    const register = () =>
      void this.link
        .call((r) => r.multi().zadd(key, Date.now() + this.ttlMs, member).pexpire(key, this.ttlMs * 2).exec())
        .catch(() => undefined);
    register();
    const timer = setInterval(register, Math.max(100, Math.floor(this.ttlMs / 3)));
    timer.unref();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      void this.link.call((r) => r.zrem(key, member)).catch(() => undefined);
    };
  }

  /** Whether a replica reads `digest` now; true when Redis cannot tell (keep rather than break a read). */
  async reading(digest: string): Promise<boolean> {
    const key = this.key(digest);
    try {
      const [, count] = (await this.link.call((r) => r.multi().zremrangebyscore(key, '-inf', Date.now()).zcard(key).exec())) ?? [];
      return Number(count?.[1] ?? 1) > 0;
    } catch {
      return true;
    }
  }
}

/** A BlobStore whose streams are registered as fleet reads while open (a decorator of the shared store). */
export class TrackedBlobStore implements BlobStore {
  // No fileOf here on purpose: a file nginx sends (X-Accel-Redirect) is a read no replica could see,
  // so in fleet mode every blob is streamed by the mirror and tracked.
  constructor(private readonly inner: BlobStore, private readonly readers: FleetReaders) {}

  async open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    const end = this.readers.track(digest);
    const body = await this.inner.open(digest, range).catch((e: unknown) => {
      end();
      throw e;
    });
    if (!body) end();
    else body.once('close', end);
    return body;
  }

  init(): Promise<void> {
    return this.inner.init();
  }
  stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    return this.inner.stat(digest, opts);
  }
  read(digest: string): Promise<Buffer | undefined> {
    return this.inner.read(digest);
  }
  createWriter(digest: string): Promise<BlobWriter> {
    return this.inner.createWriter(digest);
  }
  put(digest: string, bytes: Uint8Array): Promise<void> {
    return this.inner.put(digest, bytes);
  }
  delete(digest: string): Promise<void> {
    return this.inner.delete(digest);
  }
  list(): AsyncIterable<BlobInfo> {
    return this.inner.list();
  }
  busy(digest: string): boolean {
    return this.inner.busy(digest);
  }
  space(): Promise<{ free: number; total: number } | undefined> {
    return this.inner.space();
  }
  sweepTemp(olderThanMs: number): Promise<number> {
    return this.inner.sweepTemp(olderThanMs);
  }
}
