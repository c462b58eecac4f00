/**
 * Removing images from the cache without breaking another: an image's records go first (its tags'
 * variants, its repository's manifest records and links), then the blobs no retained image
 * references any more. A blob being read, or used since the inventory was taken (a new pull that
 * wants it), stays; GC takes what is left over later. A crash between the two steps leaves only
 * unreferenced blobs, which are never served (no record leads to them) and which GC removes.
 */
import { boundedLru } from '../util/lru.js';
import type { MetaStore, RepoKey } from '../storage/meta-store.js';
import type { BlobStore } from '../storage/store.js';
import type { ImageUnit, Inventory } from './inventory.js';
import { blobKey, manifestKey } from './usage.js';

export interface RemoverDeps {
  meta: MetaStore;
  blobs: Pick<BlobStore, 'delete' | 'busy'>;
  usage: { get(key: string): number | undefined; drop(keys: Iterable<string>): void };
  /** Told of every blob deleted (for thrash detection). */
  onDeleted?: (digest: string) => void;
  /**
   * Asked just before each delete, beyond `busy`: false keeps the blob (a replica of the fleet is
   * streaming it; src/fleet/readers.ts). Absent: only this process's readers count.
   */
  mayDelete?: (digest: string) => Promise<boolean>;
}

export interface Removed {
  images: number;
  tags: number;
  blobs: number;
  bytes: number;
}

export const repoName = (r: RepoKey) => `${r.upstream}/${r.repo}`;

export class Remover {
  /** Blobs stored lately, by the sequence number of their arrival: never removed by a pass that did not see them. */
  private readonly arrivals = boundedLru<string, number>(100_000);
  private seq = 0;
  /** Blobs a writer of records (an import) is about to reference, counted: no pass removes them meanwhile. */
  private readonly held = new Map<string, number>();

  constructor(private readonly deps: RemoverDeps) {}

  /**
   * Keeps these blobs from every removal (eviction, GC) until the returned release is called. An
   * import stages blobs that no record references until its tag is written; without this a pass
   * started by those very blobs took them first (never used), and the import reported an image
   * whose layers were gone.
   */
  hold(digests: Iterable<string>): () => void {
    const mine = [...digests];
    for (const d of mine) this.held.set(d, (this.held.get(d) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const d of mine) {
        const n = (this.held.get(d) ?? 1) - 1;
        if (n <= 0) this.held.delete(d);
        else this.held.set(d, n);
      }
    };
  }

  /** A blob was stored (from the store's events). */
  added(digest: string): void {
    this.arrivals.set(digest, ++this.seq);
  }

  /** Marks the start of an inventory: blobs stored after this are not its to remove. */
  mark(): number {
    return this.seq;
  }

  /**
   * Removes the image's records (all its tags, or only `onlyTag`: then the image stays while another
   * tag names it) and returns the digests no image references any more. Updates `inv`.
   */
  async removeImage(inv: Inventory, img: ImageUnit, removed: Removed, onlyTag?: string): Promise<string[]> {
    const { meta } = this.deps;
    const ref = { upstream: img.upstream, repo: img.repo };
    const tags = onlyTag === undefined ? img.tags : img.tags.filter((t) => t === onlyTag);
    for (const tag of tags) {
      const rec = await meta.getTag(ref, tag);
      const rest = (rec?.variants ?? []).filter((v) => v.digest !== img.digest);
      if (rest.length === 0) await meta.deleteTag(ref, tag);
      else await meta.putTag(ref, tag, { ...rec!, variants: rest });
      removed.tags++;
    }
    img.tags = img.tags.filter((t) => !tags.includes(t));
    // Named by another tag, or pulled by digest only when a tag is removed: the image stays.
    if (onlyTag !== undefined && img.tags.length > 0) return [];
    const inRepo = inv.byRepo.get(repoName(img));
    inRepo?.delete(img);
    removed.images++;
    // Only this repository's other images can share its records (links and manifest records are per repository).
    const sameRepo = new Set<string>();
    for (const other of inRepo ?? []) for (const d of other.digests) sameRepo.add(d);
    await meta.forget(ref, [...img.digests].filter((d) => !sameRepo.has(d)));
    this.deps.usage.drop([...img.digests].map((d) => manifestKey(img.upstream, img.repo, d)));
    const unreferenced: string[] = [];
    for (const d of img.digests) {
      const n = (inv.refs.get(d) ?? 1) - 1;
      if (n <= 0) {
        inv.refs.delete(d);
        unreferenced.push(d);
      } else inv.refs.set(d, n);
    }
    return unreferenced;
  }

  /** Whether a blob of the image is being read now: the image is in use, not a candidate. */
  inUse(img: ImageUnit): boolean {
    for (const d of img.digests) if (this.deps.blobs.busy(d)) return true;
    return false;
  }

  /** Deletes blobs no image references, unless being read or used since the inventory. */
  async deleteBlobs(inv: Inventory, digests: Iterable<string>, removed: Removed): Promise<void> {
    for (const d of digests) {
      const size = inv.sizes.get(d);
      if (size === undefined || (inv.refs.get(d) ?? 0) > 0) continue;
      if (this.held.has(d) || this.deps.blobs.busy(d) || (this.deps.usage.get(blobKey(d)) ?? 0) > inv.takenAt) continue;
      if ((this.arrivals.get(d) ?? 0) > (inv.mark ?? Infinity)) continue;
      if (this.deps.mayDelete && !(await this.deps.mayDelete(d))) continue;
      await this.deps.blobs.delete(d);
      this.deps.onDeleted?.(d);
      inv.sizes.delete(d);
      this.deps.usage.drop([blobKey(d)]);
      removed.blobs++;
      removed.bytes += size;
    }
  }
}

export const emptyRemoved = (): Removed => ({ images: 0, tags: 0, blobs: 0, bytes: 0 });
