/**
 * The cache lifecycle's operations (CacheAdmin): what the admin API and `regmirror cache` call.
 * Purges remove images as units and never a blob another retained image references.
 */
import type { Logger } from '../observability/types.js';
import type { MetaStore, RepoKey } from '../storage/meta-store.js';
import type { BlobStore } from '../storage/store.js';
import type { Evictor } from './evictor.js';
import { takeInventory, type ImageUnit, type Inventory } from './inventory.js';
import { validatePin, type PinSet } from './pins.js';
import { emptyRemoved, repoName, type Remover } from './remover.js';
import type { CacheAdmin, CacheSummary, EvictionResult, GcResult, ImageInfo, PurgeResult, PurgeTarget, RepositoryInfo } from './types.js';
import { blobKey, type UsageTracker } from './usage.js';

/** Figures of the process's life, for the summary. */
export interface CacheFigures {
  hits: number;
  misses: number;
  bytesSaved: number;
}

export interface CacheAdminDeps {
  meta: MetaStore;
  blobs: BlobStore;
  usage: UsageTracker;
  pins: PinSet;
  remover: Remover;
  evictor: Evictor;
  cacheBytes: () => { bytes: number; blobs: number };
  figures: () => Promise<CacheFigures>;
  limitBytes: number | undefined;
  now: () => number;
  logger: Logger;
  /** Temp files older than this are a crash's leftovers (GC removes them). */
  tempGraceMs: number;
  /** Told what a purge removed (for the eviction metrics, reason purge). */
  onPurged?: (blobs: number, bytes: number) => void;
}

/** A user-facing error of the lifecycle (a bad pattern, an unknown repository): the admin API answers 400/404. */
export class AdminError extends Error {
  constructor(readonly kind: 'invalid' | 'not_found', message: string) {
    super(message);
    this.name = 'AdminError';
  }
}

export class CacheAdminService implements CacheAdmin {
  constructor(private readonly deps: CacheAdminDeps) {}

  private inventory(only?: RepoKey): Promise<Inventory> {
    const mark = this.deps.remover.mark();
    return takeInventory({ meta: this.deps.meta, blobs: this.deps.blobs, usage: this.deps.usage, now: this.deps.now }, only).then((inv) => ({ ...inv, mark }));
  }

  async summary(): Promise<CacheSummary> {
    const inv = await this.inventory();
    const { bytes, blobs } = this.deps.cacheBytes();
    const space = await this.deps.blobs.space();
    const f = await this.deps.figures();
    const uses = [...inv.images.map((i) => i.lastUsed), ...[...inv.sizes.keys()].filter((d) => !inv.refs.has(d)).map((d) => this.deps.usage.get(blobKey(d)))].filter(
      (u): u is number => u !== undefined,
    );
    return {
      bytes,
      blobs,
      images: inv.images.length,
      repositories: new Set(inv.images.map((i) => `${i.upstream}/${i.repo}`)).size,
      limitBytes: this.deps.limitBytes,
      freeBytes: space?.free,
      minFreeBytes: this.deps.evictor.floor(space?.total),
      hitRatio: f.hits + f.misses > 0 ? f.hits / (f.hits + f.misses) : undefined,
      bytesSaved: f.bytesSaved,
      oldestUse: uses.length > 0 ? Math.min(...uses) : undefined,
      pins: this.deps.pins.all(),
    };
  }

  async repositories(): Promise<RepositoryInfo[]> {
    const inv = await this.inventory();
    const byRepo = new Map<string, ImageUnit[]>();
    for (const img of inv.images) byRepo.set(`${img.upstream}/${img.repo}`, [...(byRepo.get(`${img.upstream}/${img.repo}`) ?? []), img]);
    return [...byRepo.entries()]
      .map(([name, imgs]) => {
        const digests = new Set(imgs.flatMap((i) => [...i.digests]));
        const used = imgs.map((i) => i.lastUsed).filter((u): u is number => u !== undefined);
        return {
          name,
          upstream: imgs[0]!.upstream,
          repo: imgs[0]!.repo,
          bytes: sizeOf(inv, digests),
          images: imgs.length,
          tags: imgs.flatMap((i) => i.tags).sort(),
          lastUsed: used.length > 0 ? Math.max(...used) : undefined,
          pinned: imgs.some((i) => this.deps.pins.matches(i)),
        };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async images(filter?: { upstream: string; repo: string }): Promise<ImageInfo[]> {
    const inv = await this.inventory(filter);
    return inv.images
      .map((i) => ({
        ref: `${i.upstream}/${i.repo}@${i.digest}`,
        upstream: i.upstream,
        repo: i.repo,
        digest: i.digest,
        mediaType: i.mediaType,
        tags: i.tags,
        platforms: i.platforms,
        bytes: sizeOf(inv, i.digests),
        blobs: [...i.digests].filter((d) => inv.sizes.has(d)).length,
        lastUsed: i.lastUsed,
        pinned: this.deps.pins.matches(i),
      }))
      .sort((a, b) => a.ref.localeCompare(b.ref));
  }

  async purge(target: PurgeTarget): Promise<PurgeResult> {
    const inv = await this.inventory();
    const removed = emptyRemoved();
    const { remover } = this.deps;
    if ('all' in target) {
      for (const img of [...inv.images]) await remover.removeImage(inv, img, removed);
      for (const ref of inv.repos) await this.deps.meta.deleteRepo(ref);
      await remover.deleteBlobs(inv, [...inv.sizes.keys()], removed);
    } else {
      const inRepo = inv.images.filter((i) => i.upstream === target.upstream && i.repo === target.repo);
      const chosen = target.digest !== undefined ? inRepo.filter((i) => i.digest === target.digest) : target.tag !== undefined ? inRepo.filter((i) => i.tags.includes(target.tag!)) : inRepo;
      if (chosen.length === 0 && (target.tag !== undefined || target.digest !== undefined || inRepo.length === 0)) {
        throw new AdminError('not_found', `nothing cached for ${repoName(target)}${target.tag ? `:${target.tag}` : ''}${target.digest ? `@${target.digest}` : ''}`);
      }
      const unreferenced: string[] = [];
      for (const img of chosen) unreferenced.push(...(await remover.removeImage(inv, img, removed, target.digest === undefined ? target.tag : undefined)));
      if (target.tag === undefined && target.digest === undefined) await this.deps.meta.deleteRepo(target);
      await remover.deleteBlobs(inv, unreferenced, removed);
    }
    this.deps.onPurged?.(removed.blobs, removed.bytes);
    this.deps.logger.info({ target, ...removed }, 'purged');
    return { tags: removed.tags, images: removed.images, blobs: removed.blobs, bytes: removed.bytes };
  }

  async revalidate(upstream: string, repo: string, tag: string): Promise<boolean> {
    const ref = { upstream, repo };
    const rec = await this.deps.meta.getTag(ref, tag);
    if (!rec) return false;
    // A confirmation time of 0 is past any TTL: the next request asks upstream.
    await this.deps.meta.putTag(ref, tag, { ...rec, variants: rec.variants.map((v) => ({ ...v, fetchedAt: 0 })) });
    return true;
  }

  pins(): Promise<string[]> {
    return this.deps.pins.refresh().then(() => this.deps.pins.all());
  }

  async pin(pattern: string): Promise<string[]> {
    const bad = validatePin(pattern);
    if (bad) throw new AdminError('invalid', bad);
    return this.deps.pins.add(pattern);
  }

  unpin(pattern: string): Promise<string[]> {
    return this.deps.pins.remove(pattern);
  }

  evict(): Promise<EvictionResult | undefined> {
    return this.deps.evictor.run();
  }

  async gc(): Promise<GcResult> {
    const { meta, blobs, remover } = this.deps;
    const inv = await this.inventory();
    let records = 0;
    const linked = new Set<string>();
    for (const ref of inv.repos.length > 0 ? await meta.listRepos() : []) {
      // Tag variants whose manifest is gone: the tag is fetched again when asked for.
      for (const tag of await meta.listTags(ref)) {
        const rec = await meta.getTag(ref, tag);
        if (!rec) continue;
        const rest = rec.variants.filter((v) => inv.sizes.has(v.digest));
        if (rest.length === rec.variants.length) continue;
        records += rec.variants.length - rest.length;
        if (rest.length === 0) await meta.deleteTag(ref, tag);
        else await meta.putTag(ref, tag, { ...rec, variants: rest });
      }
      // Records of content that is gone: not on disk, no retained image references it (a blob an image
      // is still downloading is referenced), and not pulled lately (a download by digest under way).
      const recent = inv.takenAt - this.deps.tempGraceMs;
      const stale = (d: string) => !inv.sizes.has(d) && !inv.refs.has(d) && (this.deps.usage.get(blobKey(d)) ?? 0) < recent;
      const links = await meta.listLinks(ref);
      const gone = links.filter(stale);
      for (const d of links) if (inv.sizes.has(d)) linked.add(d);
      const manifests = (await meta.listManifests(ref)).map((m) => m.digest).filter((d) => stale(d) && !gone.includes(d));
      if (gone.length + manifests.length > 0) await meta.forget(ref, [...gone, ...manifests]);
      records += gone.length + manifests.length;
    }
    // Blobs no record refers to (an eviction cut short by a crash, a purge that met a reader).
    const removed = emptyRemoved();
    await remover.deleteBlobs(
      inv,
      [...inv.sizes.keys()].filter((d) => !inv.refs.has(d) && !linked.has(d)),
      removed,
    );
    // Uses of content that is not stored (passed through a full store, asked for and gone): not kept for ever.
    records += this.deps.usage.prune((d) => inv.sizes.has(d), inv.takenAt - this.deps.tempGraceMs);
    const tempFiles = await blobs.sweepTemp(this.deps.tempGraceMs);
    const result: GcResult = { blobs: removed.blobs, bytes: removed.bytes, records, tempFiles };
    this.deps.logger.info({ ...result }, 'garbage collected');
    return result;
  }
}

function sizeOf(inv: Inventory, digests: Iterable<string>): number {
  let n = 0;
  for (const d of digests) n += inv.sizes.get(d) ?? 0;
  return n;
}
