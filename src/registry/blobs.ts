/**
 * Blobs: served from disk when the repository is known to hold them; otherwise fetched once from
 * upstream, with every concurrent request for the digest (any repository that upstream confirms,
 * any range) joined to that one download.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ByteRange } from '../storage/store.js';
import { StoreFullError } from '../storage/store.js';
import { RegistryContext, repoKey } from './context.js';
import { RegistryError } from './errors.js';
import { resolveRange, type RangeSpec } from './range.js';
import { parseDigest, type RepoRef } from './reference.js';

export interface BlobStat {
  size: number | undefined;
}

export interface BlobResponse {
  /** Full blob size, when known (unknown only while a download from an upstream that sent no length runs). */
  size: number | undefined;
  /** The inclusive range served, when the client asked for one. */
  range: ByteRange | undefined;
  stream: Readable;
  source: 'cache' | 'upstream';
}

export class BlobService {
  constructor(private readonly ctx: RegistryContext) {}

  /** Size of a blob without downloading it: from disk, or from an upstream HEAD. */
  async stat(ref: RepoRef, digest: string): Promise<BlobStat> {
    parseDigest(digest);
    const local = await this.ctx.localBlobSize(digest);
    if (local !== undefined && (await this.ctx.linked(ref, digest))) {
      this.ctx.deps.observer.result('blob', ref.upstream, 'hit');
      return { size: local };
    }
    this.ctx.assertOnline('blob', ref);
    const head = await this.ctx.upstream(ref).headBlob(ref.repo, digest);
    await this.ctx.link(ref, [digest]);
    this.ctx.deps.observer.result('blob', ref.upstream, local !== undefined ? 'hit' : 'miss');
    return { size: local ?? head.size };
  }

  async open(ref: RepoRef, digest: string, spec: RangeSpec | undefined): Promise<BlobResponse> {
    parseDigest(digest);
    const { deps } = this.ctx;
    const local = await this.ctx.localBlobSize(digest);
    if (local !== undefined) {
      if (!(await this.ctx.linked(ref, digest))) {
        this.ctx.assertOnline('blob', ref);
        await this.ctx.upstream(ref).headBlob(ref.repo, digest);
        await this.ctx.link(ref, [digest]);
      }
      const range = spec ? resolveRange(spec, local) : undefined;
      const stream = await deps.blobs.open(digest, range);
      if (stream) {
        deps.observer.result('blob', ref.upstream, 'hit');
        return { size: local, range, stream, source: 'cache' };
      }
      deps.index.blobSizes.delete(digest); // gone from disk since we looked: fetch it again
    }
    this.ctx.assertOnline('blob', ref);
    return this.fromUpstream(ref, digest, spec);
  }

  private async fromUpstream(ref: RepoRef, digest: string, spec: RangeSpec | undefined): Promise<BlobResponse> {
    const { deps } = this.ctx;
    const upstream = this.ctx.upstream(ref);
    const origin = repoKey(ref);
    const running = deps.inflight.get(digest);
    if (running && running.origin !== origin && !(await this.ctx.linked(ref, digest))) {
      // Joining a download another repository started: confirm this one holds the blob first.
      await upstream.headBlob(ref.repo, digest);
      await this.ctx.link(ref, [digest]);
    }
    const dl = deps.inflight.join(digest, origin, (offset) => upstream.getBlob(ref.repo, digest, offset));
    try {
      await dl.ready;
    } catch (e) {
      if (e instanceof StoreFullError) return this.passThrough(ref, digest, spec);
      throw e;
    }
    if (dl.origin === origin) await this.ctx.link(ref, [digest]);
    let size = dl.size;
    if (size === undefined && spec) {
      await dl.finished;
      size = dl.written;
    }
    const range = spec && size !== undefined ? resolveRange(spec, size) : undefined;
    deps.observer.result('blob', ref.upstream, 'miss');
    return { size, range, stream: dl.createReader(range?.start ?? 0, range?.end), source: 'upstream' };
  }

  /**
   * The store cannot take the blob (disk full): hand the upstream bytes straight to this client,
   * keeping nothing, so the mirror still serves.
   */
  private async passThrough(ref: RepoRef, digest: string, spec: RangeSpec | undefined): Promise<BlobResponse> {
    const { deps } = this.ctx;
    deps.logger.warn({ repo: ref.repo, upstream: ref.upstream, digest }, 'blob store full: passing the blob through uncached');
    const first = await this.ctx.upstream(ref).getBlob(ref.repo, digest, 0);
    const size = first.size;
    let range: ByteRange | undefined;
    let body = first;
    if (spec && size !== undefined) {
      range = resolveRange(spec, size);
      if (range.start > 0) {
        first.cancel();
        body = await this.ctx.upstream(ref).getBlob(ref.repo, digest, range.start);
      }
    }
    const end = range ? range.end + 1 - body.start : Infinity;
    // A whole blob is hashed on the way through: a mismatch errors the stream before its end, so the
    // client sees an aborted transfer rather than a wrong blob.
    const hash = range ? undefined : createHash(digest.slice(0, digest.indexOf(':')));
    async function* limited(): AsyncIterable<Uint8Array> {
      let sent = 0;
      let held: Uint8Array | undefined; // the last chunk waits for the hash, so a wrong body never completes
      for await (const c of body.body) {
        const take = c.subarray(0, Math.max(0, end - sent));
        sent += take.length;
        hash?.update(take);
        if (held) yield held;
        held = take.length > 0 ? take : undefined;
        if (sent >= end) break;
      }
      if (hash && `${digest.slice(0, digest.indexOf(':') + 1)}${hash.digest('hex')}` !== digest) {
        throw new RegistryError('DIGEST_INVALID', 'upstream blob does not match its digest', { status: 502 });
      }
      if (held) yield held;
    }
    const stream = Readable.from(limited(), { objectMode: false });
    stream.on('close', () => body.cancel());
    deps.observer.result('blob', ref.upstream, 'miss');
    if (!range && spec && size === undefined) throw new RegistryError('RANGE_INVALID', 'range not satisfiable', { status: 416 });
    return { size, range, stream, source: 'upstream' };
  }
}
