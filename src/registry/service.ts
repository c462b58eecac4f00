/**
 * The registry: the cache policy behind every /v2/ endpoint. The HTTP layer talks to this and to
 * nothing below it: every error that leaves here is a RegistryError (upstream failures are turned
 * into what they mean for the client by upstream-errors.ts).
 */
import type { BlobFile, BlobResponse, BlobStat } from './blobs.js';
import { BlobService } from './blobs.js';
import { RegistryContext, type RegistryDeps } from './context.js';
import { ListingService, type Page, type ReferrersIndex } from './listings.js';
import { ManifestService, type ManifestResponse } from './manifests.js';
import type { RangeSpec } from './range.js';
import { routeName, type RepoRef, type RoutingTable } from './reference.js';
import { toRegistryError, type UpstreamSubject } from './upstream-errors.js';
import { boundedLru } from '../util/lru.js';

/** Rethrows what `p` rejects with as a RegistryError. */
const edge = <T>(p: Promise<T>, subject: UpstreamSubject): Promise<T> =>
  p.catch((e: unknown) => {
    throw toRegistryError(e, subject);
  });

export type { BlobFile, BlobResponse, BlobStat, ManifestResponse, Page, ReferrersIndex, RepoRef };

export class Registry {
  private readonly ctx: RegistryContext;
  private readonly manifests: ManifestService;
  private readonly blobs: BlobService;
  private readonly listings: ListingService;
  /**
   * Names already routed: clients ask for the same few repositories over and over, and validating a
   * name (escapes, components, host part) was a tenth of a cached manifest's CPU. Only names that
   * routed are kept; the routing table never changes in a running mirror.
   */
  private readonly routed = boundedLru<string, RepoRef>(10_000);

  constructor(deps: RegistryDeps, private readonly routing: RoutingTable) {
    this.ctx = new RegistryContext(deps);
    this.manifests = new ManifestService(this.ctx);
    this.blobs = new BlobService(this.ctx);
    this.listings = new ListingService(this.ctx);
  }

  /** Validates a client-visible name and picks its upstream (see reference.ts). */
  route(name: string, ns: string | undefined): RepoRef {
    const key = ns === undefined ? name : `${name}\n${ns}`;
    let ref = this.routed.get(key);
    if (ref === undefined) {
      ref = Object.freeze(routeName(name, ns, this.routing));
      this.routed.set(key, ref);
    }
    return ref;
  }

  getManifest(ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined): Promise<ManifestResponse> {
    return edge(this.manifests.get(ref, reference, accept), 'manifest');
  }

  statBlob(ref: RepoRef, digest: string): Promise<BlobStat> {
    return edge(this.blobs.stat(ref, digest), 'blob');
  }

  /** A cache hit kept as a plain file, checked as openBlob checks it, for nginx to send; undefined otherwise (see BlobService.file). */
  blobFile(ref: RepoRef, digest: string): Promise<BlobFile | undefined> {
    return edge(this.blobs.file(ref, digest), 'blob');
  }

  openBlob(ref: RepoRef, digest: string, ranges: RangeSpec[] | undefined): Promise<BlobResponse> {
    return edge(this.blobs.open(ref, digest, ranges), 'blob');
  }

  listTags(ref: RepoRef, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    return edge(this.listings.tags(ref, n, last), 'tags');
  }

  catalog(n: number | undefined, last: string | undefined): Promise<Page<string>> {
    return this.listings.catalog(n, last);
  }

  referrers(ref: RepoRef, digest: string, artifactType: string | undefined) {
    return edge(this.listings.referrers(ref, digest, artifactType), 'referrers');
  }

  /** Waits for downloads under way to finish, at most `timeoutMs`; false if some were still running. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.ctx.deps.inflight.drain(timeoutMs);
  }

  /** Downloads under way, for metrics and health. */
  get inflightDownloads(): number {
    return this.ctx.deps.inflight.size;
  }
}
