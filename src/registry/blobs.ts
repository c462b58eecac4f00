/**
 * Blobs: served from disk when the repository is known to hold them; otherwise fetched once from
 * upstream, with every concurrent request for the digest (any repository that upstream confirms,
 * any range) joined to that one download.
 */
import type { Readable } from 'node:stream';
import type { ByteRange } from '../storage/store.js';
import { blobOverCap, isUpstreamError } from '../upstream/errors.js';
import type { BlobHead } from '../upstream/types.js';
import type { BlobSource } from '../transfer/inflight.js';
import { SingleFlight } from '../util/single-flight.js';
import { RegistryContext, repoKey } from './context.js';
import { resolveRanges, type RangeSpec } from './range.js';
import { parseDigest, type RepoRef } from './reference.js';

export interface BlobStat {
  size: number | undefined;
}

export type BlobBody = Readable | Buffer;

/** A cached blob kept as a plain file (see BlobService.file). */
export interface BlobFile {
  size: number;
  /** `<alg>/<2 hex>/<hex>`, relative to the store's blob directory. */
  path: string;
}

export interface BlobResponse {
  /** Full blob size, when known (unknown only while a download from an upstream that sent no length runs). */
  size: number | undefined;
  /**
   * The ranges served (inclusive, sorted, merged), when the client asked for ranges and they are
   * honoured; several only for a cached blob (a miss with several ranges is answered whole).
   */
  ranges: ByteRange[] | undefined;
  /** The bytes: of the whole blob or its one range. A stream, or for a small cached blob the bytes themselves. */
  body: BlobBody;
  /** For several ranges: opens each after the first (whose bytes are `body`), in order, each once. */
  openRange?: (range: ByteRange) => Promise<BlobBody>;
  source: 'cache' | 'upstream';
}

export class BlobService {
  /** One upstream HEAD per (repository, digest) at a time. */
  private readonly heads = new SingleFlight<BlobHead>();

  constructor(private readonly ctx: RegistryContext) {}

  /** Asks upstream whether the repository holds the blob (no download), and remembers a yes (and briefly a no). */
  private confirm(ref: RepoRef, digest: string): Promise<BlobHead> {
    return this.heads.run(`${repoKey(ref)}@${digest}`, async () => {
      const key = negativeKey(ref, digest);
      this.ctx.deps.negative.check(key);
      try {
        const head = await this.ctx.upstream(ref).headBlob(ref.repo, digest);
        await this.ctx.link(ref, [digest]);
        return head;
      } catch (e) {
        if (isUpstreamError(e) && e.notFound) this.ctx.deps.negative.remember(key, e);
        throw e;
      }
    });
  }

  /** Size of a blob without downloading it: from disk, or from an upstream HEAD. */
  async stat(ref: RepoRef, digest: string): Promise<BlobStat> {
    parseDigest(digest);
    const local = await this.ctx.localBlobSize(digest);
    // A use is recorded for content the mirror holds or fetches, never for a name alone: a client
    // asking for digests nobody has must not grow the figures (lifecycle/usage.ts).
    if (local !== undefined) this.ctx.deps.usage.blob(digest);
    if (local !== undefined && (await this.ctx.linked(ref, digest))) {
      this.ctx.deps.observer.result('blob', ref.upstream, 'hit');
      return { size: local };
    }
    // A download of it under way for this repository: upstream already said it holds the blob, and how big.
    const running = this.ctx.deps.inflight.get(digest);
    if (local === undefined && running && running.state !== 'failed' && running.size !== undefined && (running.origin === repoKey(ref) || (await this.ctx.linked(ref, digest)))) {
      this.ctx.deps.observer.result('blob', ref.upstream, 'miss');
      return { size: running.size };
    }
    this.ctx.assertOnline('blob', ref);
    const head = await this.confirm(ref, digest);
    const max = this.ctx.deps.maxBlobBytes;
    // Its GET would be refused before a byte is kept (transfer/fill.ts): a HEAD says so too.
    if (local === undefined && max !== undefined && head.size !== undefined && head.size > max) {
      throw blobOverCap(ref.upstream, head.size, max);
    }
    this.ctx.deps.observer.result('blob', ref.upstream, local !== undefined ? 'hit' : 'miss');
    return { size: local ?? head.size };
  }

  /**
   * A cache hit a web server in front may send itself (nginx X-Accel-Redirect): a complete blob the
   * repository holds, kept as a plain file by the store. Does for it what open() does for a hit
   * (membership, confirmed with an upstream HEAD when not yet recorded; last use; the hit metric) and
   * gives its size and its path relative to the store's blob directory. Undefined when it is no such
   * hit (absent, a download under way, a store without files): the caller answers with open().
   */
  async file(ref: RepoRef, digest: string): Promise<BlobFile | undefined> {
    parseDigest(digest);
    const path = this.ctx.deps.blobs.fileOf?.(digest);
    if (path === undefined) return undefined;
    const size = await this.ctx.localBlobSize(digest);
    if (size === undefined) return undefined;
    this.ctx.deps.usage.blob(digest);
    if (!(await this.ctx.linked(ref, digest))) {
      this.ctx.assertOnline('blob', ref);
      await this.confirm(ref, digest);
    }
    this.ctx.deps.observer.result('blob', ref.upstream, 'hit');
    return { size, path };
  }

  async open(ref: RepoRef, digest: string, specs: RangeSpec[] | undefined): Promise<BlobResponse> {
    parseDigest(digest);
    const { deps } = this.ctx;
    const local = await this.ctx.localBlobSize(digest);
    if (local !== undefined) {
      deps.usage.blob(digest);
      if (!(await this.ctx.linked(ref, digest))) {
        this.ctx.assertOnline('blob', ref);
        await this.confirm(ref, digest);
      }
      const ranges = specs ? resolveRanges(specs, local) : undefined;
      const first = ranges?.[0] ?? wholeBlob(local);
      const body = await this.readLocal(digest, local, first);
      if (body) {
        deps.observer.result('blob', ref.upstream, 'hit');
        const res: BlobResponse = { size: local, ranges, body, source: 'cache' };
        if (ranges && ranges.length > 1) {
          res.openRange = async (r) => {
            const b = await this.readLocal(digest, local, r);
            if (!b) throw new Error(`blob ${digest} left the cache while being served`);
            return b;
          };
        }
        return res;
      }
      // Gone from disk since we looked (the store forgot its size): fetch it again.
    }
    this.ctx.assertOnline('blob', ref);
    const key = negativeKey(ref, digest);
    deps.negative.check(key);
    try {
      return await this.fromUpstream(ref, digest, specs?.length === 1 ? specs[0] : undefined);
    } catch (e) {
      if (isUpstreamError(e) && e.notFound) deps.negative.remember(key, e);
      throw e;
    }
  }

  /** Streams the live download; one range at most (several are answered with the whole body). */
  private async fromUpstream(ref: RepoRef, digest: string, spec: RangeSpec | undefined): Promise<BlobResponse> {
    const { deps } = this.ctx;
    const upstream = this.ctx.upstream(ref);
    const origin = repoKey(ref);
    const running = deps.inflight.get(digest);
    if (running && running.origin !== origin && !(await this.ctx.linked(ref, digest))) {
      // Joining a download another repository started: confirm this one holds the blob first.
      await this.confirm(ref, digest);
    }
    const source: BlobSource = (offset, sink) => upstream.getBlob(ref.repo, digest, offset, sink);
    // A client pulling again right after a pull finished must see a hit, in its header and in the
    // metrics, not a miss. Not a spilled one (passed through a full store: nothing is kept).
    const stored = deps.inflight.holdsVerified(digest);
    const dl = deps.coordinator ? await deps.coordinator.join(digest, origin, source) : deps.inflight.join(digest, origin, source);
    // Until this request has its reader (or fails), a pass-through waits for it, and gives up when it does.
    const unclaim = dl.claim();
    try {
      await dl.ready;
      // Upstream has it and its bytes are coming: a use (a download by digest is younger than any GC's grace).
      deps.usage.blob(digest);
      if (dl.origin === origin) await this.ctx.link(ref, [digest]);
      let size = dl.size;
      if (size === undefined && spec) {
        // The size comes with the end. A pass-through keeps nothing to wait on: whole, then (a Range may be ignored).
        await dl.spilledOrEnded();
        // Failed meanwhile: the client gets the error as a status, not a 200 cut short.
        if (dl.state === 'failed') await dl.finished;
        if (dl.state === 'done') size = dl.received;
      }
      const range = spec && size !== undefined ? resolveRanges([spec], size)?.[0] : undefined;
      const ranges = range ? [range] : undefined;
      const hit = stored && dl === running;
      deps.observer.result('blob', ref.upstream, hit ? 'hit' : 'miss');
      return { size, ranges, body: await dl.open(range?.start ?? 0, range?.end), source: hit ? 'cache' : 'upstream' };
    } finally {
      unclaim();
    }
  }

  /** The blob's bytes (or a range of them) from disk: one read for a small blob, else a stream. */
  private async readLocal(digest: string, size: number, range: ByteRange | undefined): Promise<BlobBody | undefined> {
    if (size > SMALL_BLOB) return this.ctx.deps.blobs.open(digest, range);
    const bytes = await this.ctx.deps.blobs.read(digest);
    return bytes && range ? bytes.subarray(range.start, range.end + 1) : bytes;
  }
}

/** Blobs up to this size are answered from one read into memory, not a file stream. */
const SMALL_BLOB = 64 * 1024;

/** The whole blob as a range: lets the store size its reads without another stat. */
const wholeBlob = (size: number): ByteRange | undefined => (size > 0 ? { start: 0, end: size - 1 } : undefined);

const negativeKey = (ref: RepoRef, digest: string) => `blob ${repoKey(ref)}@${digest}`;
