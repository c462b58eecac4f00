/**
 * Blobs: served from disk when the repository is known to hold them; otherwise fetched once from
 * upstream, with every concurrent request for the digest (any repository that upstream confirms,
 * any range) joined to that one download.
 */
import type { Readable } from 'node:stream';
import type { ByteRange } from '../storage/store.js';
import { RegistryContext, repoKey } from './context.js';
import { resolveRange, type RangeSpec } from './range.js';
import { parseDigest, type RepoRef } from './reference.js';
import { SingleFlight } from './single-flight.js';
import type { BlobHead } from '../upstream/types.js';

export interface BlobStat {
  size: number | undefined;
}

export interface BlobResponse {
  /** Full blob size, when known (unknown only while a download from an upstream that sent no length runs). */
  size: number | undefined;
  /** The inclusive range served, when the client asked for one. */
  range: ByteRange | undefined;
  /** The bytes: a stream, or for a small cached blob the bytes themselves (cheaper than a stream). */
  body: Readable | Buffer;
  source: 'cache' | 'upstream';
}

export class BlobService {
  /** One upstream HEAD per (repository, digest) at a time. */
  private readonly heads = new SingleFlight<BlobHead>();

  constructor(private readonly ctx: RegistryContext) {}

  /** Asks upstream whether the repository holds the blob (no download), and remembers a yes. */
  private confirm(ref: RepoRef, digest: string): Promise<BlobHead> {
    return this.heads.run(`${repoKey(ref)}@${digest}`, async () => {
      const head = await this.ctx.upstream(ref).headBlob(ref.repo, digest);
      await this.ctx.link(ref, [digest]);
      return head;
    });
  }

  /** Size of a blob without downloading it: from disk, or from an upstream HEAD. */
  async stat(ref: RepoRef, digest: string): Promise<BlobStat> {
    parseDigest(digest);
    const local = await this.ctx.localBlobSize(digest);
    if (local !== undefined && (await this.ctx.linked(ref, digest))) {
      this.ctx.deps.observer.result('blob', ref.upstream, 'hit');
      return { size: local };
    }
    this.ctx.assertOnline('blob', ref);
    const head = await this.confirm(ref, digest);
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
        await this.confirm(ref, digest);
      }
      const range = spec ? resolveRange(spec, local) : undefined;
      const body = local <= SMALL_BLOB ? await this.readSmall(digest, range) : await deps.blobs.open(digest, range ?? wholeBlob(local));
      if (body) {
        deps.observer.result('blob', ref.upstream, 'hit');
        return { size: local, range, body, source: 'cache' };
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
      await this.confirm(ref, digest);
    }
    const dl = deps.inflight.join(digest, origin, (offset) => upstream.getBlob(ref.repo, digest, offset));
    await dl.ready;
    if (dl.origin === origin) await this.ctx.link(ref, [digest]);
    let size = dl.size;
    if (size === undefined && spec) {
      await dl.finished;
      size = dl.received;
    }
    const range = spec && size !== undefined ? resolveRange(spec, size) : undefined;
    deps.observer.result('blob', ref.upstream, 'miss');
    if (dl.state === 'done' && !dl.spilled) {
      // Finished while we waited: it is on disk, and the download may already have let go of its file.
      const body = await deps.blobs.open(digest, range ?? (size !== undefined ? wholeBlob(size) : undefined));
      if (body) return { size, range, body, source: 'upstream' };
    }
    return { size, range, body: dl.createReader(range?.start ?? 0, range?.end), source: 'upstream' };
  }

  private async readSmall(digest: string, range: ByteRange | undefined): Promise<Buffer | undefined> {
    const bytes = await this.ctx.deps.blobs.read(digest);
    return bytes && range ? bytes.subarray(range.start, range.end + 1) : bytes;
  }
}

/** Blobs up to this size are answered from one read into memory, not a file stream. */
const SMALL_BLOB = 64 * 1024;

/** The whole blob as a range: lets the store size its reads without another stat. */
const wholeBlob = (size: number): ByteRange | undefined => (size > 0 ? { start: 0, end: size - 1 } : undefined);
