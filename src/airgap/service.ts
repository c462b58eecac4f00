/**
 * Bundles in and out of one cache: what the CLI (data directory) and the admin API (running mirror)
 * share. Built over the stores by the composition root (mirror.ts: openAirgap, buildMirror).
 */
import type { Writable } from 'node:stream';
import type { MetaStore, RepoKey } from '../storage/meta-store.js';
import type { BlobStore } from '../storage/store.js';
import { allImages, planExport, writeBundle, type ExportOptions, type ExportPlan, type ExportRef } from './export.js';
import { importBundle, type ImportOptions, type ImportResult } from './import.js';
import type { BundleEntry } from './source.js';

export interface AirgapDeps {
  blobs: BlobStore;
  meta: MetaStore;
  now: () => number;
  /** A client-visible repository name → where the cache keeps it; throws when no upstream serves it. */
  route(name: string): RepoKey;
  maxManifestBytes: number;
  /** Keeps blobs from eviction and GC until the release is called (a running mirror's remover); absent offline. */
  hold?(digests: Iterable<string>): () => void;
  /** Where a running mirror records uses: an import counts as a pull. */
  usage?: { manifest(upstream: string, repo: string, digest: string): void; blob(digest: string): void };
}

export class Airgap {
  constructor(private readonly deps: AirgapDeps) {}

  /** Verifies and imports a bundle (see import.ts); throws BundleError naming the first bad entry. */
  import(entries: AsyncIterable<BundleEntry>, opts: ImportOptions = {}): Promise<ImportResult> {
    return importBundle(entries, this.deps, opts);
  }

  route(name: string): RepoKey {
    return this.deps.route(name);
  }

  /** Every tagged image in the cache. */
  all(): Promise<ExportRef[]> {
    return allImages(this.deps.meta);
  }

  planExport(refs: ExportRef[], opts: ExportOptions = {}): Promise<ExportPlan> {
    return planExport(refs, this.deps, opts);
  }

  writeBundle(plan: ExportPlan, out: Writable, onBytes?: (n: number) => void): Promise<void> {
    return writeBundle(plan, this.deps, out, onBytes);
  }
}
