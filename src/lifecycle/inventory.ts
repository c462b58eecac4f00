/**
 * What the cache holds, as images: for every repository, each root manifest (what a tag names, or
 * a manifest pulled by digest that no cached index of the repository lists) with everything it
 * references (an index's platform manifests, their configs and layers). Taken from the stores when
 * needed (eviction, purge, the admin API), never kept up to date request by request.
 */
import { parseManifest, isIndexType } from '../registry/media-types.js';
import type { MetaStore, RepoKey } from '../storage/meta-store.js';
import type { BlobStore } from '../storage/store.js';
import { blobKey, manifestKey } from './usage.js';

export interface ImageUnit {
  upstream: string;
  repo: string;
  /** The root manifest. */
  digest: string;
  mediaType: string;
  tags: string[];
  /** Every digest of the image (root, platform manifests, configs, layers), present on disk or not. */
  digests: Set<string>;
  platforms: string[];
  /** Latest use of its manifests, else when a tag of it was last confirmed. */
  lastUsed: number | undefined;
}

export interface Inventory {
  takenAt: number;
  /** The remover's arrival mark when the inventory began (blobs stored later are not in it). */
  mark?: number;
  images: ImageUnit[];
  /** Every blob on disk, with its size. */
  sizes: Map<string, number>;
  /** How many images reference each digest. */
  refs: Map<string, number>;
  /** The retained images of each repository (`<upstream>/<repo>`), kept current by the remover. */
  byRepo: Map<string, Set<ImageUnit>>;
  repos: RepoKey[];
}

export interface InventoryDeps {
  meta: MetaStore;
  blobs: Pick<BlobStore, 'list' | 'read'>;
  usage: { get(key: string): number | undefined };
  now: () => number;
}

interface Platform {
  os?: unknown;
  architecture?: unknown;
  variant?: unknown;
}

export async function takeInventory(deps: InventoryDeps, only?: RepoKey): Promise<Inventory> {
  const takenAt = deps.now();
  const sizes = new Map<string, number>();
  for await (const b of deps.blobs.list()) sizes.set(b.digest, b.size);
  const repos = only ? [only] : await deps.meta.listRepos();
  const images: ImageUnit[] = [];
  const parsed = new Map<string, ReturnType<typeof parseManifest> | null>();
  const read = async (digest: string) => {
    if (!parsed.has(digest)) {
      const bytes = sizes.has(digest) ? await deps.blobs.read(digest) : undefined;
      parsed.set(digest, bytes ? (parseManifest(bytes) ?? null) : null);
    }
    return parsed.get(digest) ?? undefined;
  };
  for (const ref of repos) images.push(...(await imagesOf(deps, ref, read)));
  const refs = new Map<string, number>();
  const byRepo = new Map<string, Set<ImageUnit>>();
  for (const img of images) {
    for (const d of img.digests) refs.set(d, (refs.get(d) ?? 0) + 1);
    const k = `${img.upstream}/${img.repo}`;
    const set = byRepo.get(k) ?? new Set<ImageUnit>();
    set.add(img);
    byRepo.set(k, set);
  }
  return { takenAt, images, sizes, refs, repos, byRepo };
}

async function imagesOf(deps: InventoryDeps, ref: RepoKey, read: (d: string) => Promise<ReturnType<typeof parseManifest>>): Promise<ImageUnit[]> {
  const manifests = new Map((await deps.meta.listManifests(ref)).map((m) => [m.digest, m.mediaType]));
  const tagsOf = new Map<string, string[]>();
  const confirmed = new Map<string, number>();
  for (const tag of await deps.meta.listTags(ref)) {
    const rec = await deps.meta.getTag(ref, tag);
    for (const v of rec?.variants ?? []) {
      tagsOf.set(v.digest, [...(tagsOf.get(v.digest) ?? []), tag]);
      confirmed.set(v.digest, Math.max(confirmed.get(v.digest) ?? 0, v.fetchedAt));
      if (!manifests.has(v.digest)) manifests.set(v.digest, v.mediaType);
    }
  }
  // Children of an index of this repository belong to that index's image, not to images of their own.
  const children = new Set<string>();
  const platformsOf = new Map<string, string[]>();
  for (const [digest, mediaType] of manifests) {
    if (!isIndexType(mediaType)) continue;
    const p = await read(digest);
    if (!p) continue;
    for (const c of p.children) children.add(c.digest);
    platformsOf.set(digest, await platforms(digest, deps, read));
  }
  const out: ImageUnit[] = [];
  for (const [digest, mediaType] of manifests) {
    if (children.has(digest) && !tagsOf.has(digest)) continue;
    const digests = new Set<string>([digest]);
    const p = await read(digest);
    const uses: number[] = [];
    const use = (d: string) => {
      const u = deps.usage.get(manifestKey(ref.upstream, ref.repo, d));
      if (u !== undefined) uses.push(u);
    };
    use(digest);
    for (const r of p?.references ?? []) {
      digests.add(r);
      const child = p?.children.some((c) => c.digest === r) ? await read(r) : undefined;
      if (child) {
        use(r);
        for (const rr of child.references) digests.add(rr);
      }
    }
    const lastUsed = uses.length > 0 ? Math.max(...uses) : confirmed.get(digest);
    out.push({ upstream: ref.upstream, repo: ref.repo, digest, mediaType, tags: (tagsOf.get(digest) ?? []).sort(), digests, platforms: platformsOf.get(digest) ?? [], lastUsed });
  }
  return out;
}

/** `os/arch[/variant]` of an index's children, from the index's descriptors. */
async function platforms(digest: string, deps: InventoryDeps, read: (d: string) => Promise<ReturnType<typeof parseManifest>>): Promise<string[]> {
  const bytes = await deps.blobs.read(digest);
  if (!bytes || !(await read(digest))) return [];
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { manifests?: Array<{ platform?: Platform }> };
    return (doc.manifests ?? [])
      .map((m) => m.platform)
      .filter((pl): pl is Platform => !!pl && typeof pl.os === 'string' && typeof pl.architecture === 'string')
      .map((pl) => [pl.os, pl.architecture, typeof pl.variant === 'string' ? pl.variant : undefined].filter(Boolean).join('/'));
  } catch {
    return [];
  }
}

/** Last use of a blob on its own (pulled by digest), for blobs no image references. */
export const blobLastUse = (usage: InventoryDeps['usage'], digest: string): number | undefined => usage.get(blobKey(digest));
