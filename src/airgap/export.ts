/**
 * Export of cached images as an OCI image layout tar, streamed straight from the blob store (no copy
 * on disk): `oci-layout`, `index.json` (one descriptor per image, `org.opencontainers.image.ref.name` =
 * the full upstream reference, e.g. `docker.io/library/postgres:14.5`), then each blob once, however
 * many images share it. Everything is planned (and checked present) before the first byte is written.
 *
 * Delta bundles: `base` is the set of digests the other side already has (from the `.digests` file
 * written beside an earlier bundle); those blobs are left out, the manifests naming them are not
 * (import finds the rest in its cache). Such a bundle is complete only for a mirror that imported the
 * earlier ones; `tar -xOf bundle.tar index.json` still lists what it holds.
 *
 * `since` (ms since the epoch) leaves out the blobs stored in the cache before that time (the blob
 * file's mtime: when it was pulled, prefetched or imported), for a site that imported every bundle
 * made up to then. A store that cannot tell when a blob arrived keeps it in the bundle.
 */
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isIndexType, parseManifest } from '../registry/media-types.js';
import { pickVariant } from '../registry/tag-variants.js';
import type { MetaStore, RepoKey } from '../storage/meta-store.js';
import type { BlobStore } from '../storage/store.js';
import { blobPath, BundleError, descriptor, OCI_INDEX_TYPE, OCI_LAYOUT, platformOf, platformWanted, REF_NAME, type Descriptor } from './layout.js';

export interface ExportDeps {
  blobs: BlobStore;
  meta: MetaStore;
}

/** An image to export: a tag or a root manifest digest of a cached repository. */
export interface ExportRef extends RepoKey {
  tag?: string;
  digest?: string;
}

export interface ExportOptions {
  /** Platforms to keep of each index (`linux/amd64`; a variant may follow); undefined: all cached. */
  platforms?: string[];
  /** Digests the other side already has: left out. */
  base?: ReadonlySet<string>;
  /** Leave out blobs stored before this time (ms since the epoch). */
  since?: number;
}

export interface ExportPlan {
  /** The descriptors of index.json. */
  images: Array<{ reference: string; descriptor: Descriptor }>;
  /** Blobs to write, each once, in order. */
  blobs: Array<{ digest: string; size: number }>;
  /** Every digest the images need (including those left out for `base`): what the other side has after importing. */
  digests: string[];
  /** Bytes of the blobs written. */
  bytes: number;
  /** Blobs left out because the other side has them (in `base`, or stored before `since`). */
  skipped: number;
}

/** Every tagged image of the cache, as ExportRefs. */
export async function allImages(meta: MetaStore): Promise<ExportRef[]> {
  const out: ExportRef[] = [];
  for (const repo of await meta.listRepos()) for (const tag of (await meta.listTags(repo)).sort()) out.push({ ...repo, tag });
  return out.sort((a, b) => `${a.upstream}/${a.repo}:${a.tag}`.localeCompare(`${b.upstream}/${b.repo}:${b.tag}`));
}

/** Works out what to write; throws BundleError naming the first image not fully cached. */
export async function planExport(refs: ExportRef[], deps: ExportDeps, opts: ExportOptions = {}): Promise<ExportPlan> {
  const images: ExportPlan['images'] = [];
  const order: string[] = [];
  const sizes = new Map<string, number>();
  const old = new Set<string>(); // stored before `since`
  const need = async (digest: string, what: string, expected?: number) => {
    if (sizes.has(digest)) return;
    const st = await deps.blobs.stat(digest, opts.since !== undefined ? { mtime: true } : undefined);
    if (!st) throw new BundleError(`${what} ${digest} is not in the cache (pull or prefetch it first)`);
    if (expected !== undefined && st.size !== expected) throw new BundleError(`${what} ${digest}: cached size ${st.size}, descriptor says ${expected}`);
    sizes.set(digest, st.size);
    if (opts.since !== undefined && st.mtimeMs !== undefined && st.mtimeMs < opts.since) old.add(digest);
    order.push(digest);
  };
  for (const ref of refs) {
    const name = `${ref.upstream}/${ref.repo}`;
    let root: { digest: string; mediaType: string };
    if (ref.digest !== undefined) {
      const mediaType = await deps.meta.getManifestType(ref, ref.digest);
      if (!mediaType) throw new BundleError(`${name}@${ref.digest} is not cached`);
      root = { digest: ref.digest, mediaType };
    } else {
      const tag = ref.tag ?? 'latest';
      const record = await deps.meta.getTag(ref, tag);
      // The tag's own answer (an index when it has one), not a platform picked for some client.
      const v = pickVariant(record, undefined) ?? record?.variants.find((x) => isIndexType(x.mediaType)) ?? record?.variants[0];
      if (!v) throw new BundleError(`${name}:${tag} is not cached`);
      root = { digest: v.digest, mediaType: v.mediaType };
    }
    const reference = ref.digest !== undefined ? `${name}@${ref.digest}` : `${name}:${ref.tag ?? 'latest'}`;
    const rootBytes = await deps.blobs.read(root.digest);
    if (!rootBytes) throw new BundleError(`${reference}: manifest ${root.digest} is not in the cache`);
    await need(root.digest, `${reference}: manifest`);
    const walkImage = async (digest: string, mediaType: string, bytes: Buffer) => {
      const json = JSON.parse(bytes.toString('utf8')) as { config?: unknown; layers?: unknown[] };
      if (json.config === undefined || !Array.isArray(json.layers)) throw new BundleError(`${reference}: manifest ${digest} (${mediaType}) is not an image manifest`);
      const c = descriptor(json.config, `${reference} config`);
      await need(c.digest, `${reference}: config`, c.size);
      for (const [i, l] of json.layers.entries()) {
        const d = descriptor(l, `${reference} layers[${i}]`);
        await need(d.digest, `${reference}: layer`, d.size);
      }
    };
    if (isIndexType(root.mediaType)) {
      const json = JSON.parse(rootBytes.toString('utf8')) as { manifests?: unknown[] };
      let kept = 0;
      for (const [i, m] of (json.manifests ?? []).entries()) {
        const d = descriptor(m, `${reference} manifests[${i}]`);
        if (!platformWanted(platformOf(d.platform), opts.platforms)) continue;
        const bytes = await deps.blobs.read(d.digest);
        if (!bytes) continue; // a platform never pulled: the bundle carries what the cache has
        await need(d.digest, `${reference}: platform manifest`, d.size);
        await walkImage(d.digest, d.mediaType, bytes);
        kept++;
      }
      if (kept === 0) throw new BundleError(`${reference}: none of its platform manifests${opts.platforms ? ` for ${opts.platforms.join(',')}` : ''} is cached`);
    } else {
      if (!parseManifest(rootBytes, root.mediaType)) throw new BundleError(`${reference}: manifest ${root.digest} is not JSON`);
      await walkImage(root.digest, root.mediaType, rootBytes);
    }
    images.push({ reference, descriptor: { mediaType: root.mediaType, digest: root.digest, size: rootBytes.length, annotations: { [REF_NAME]: reference } } });
  }
  const base = opts.base ?? new Set<string>();
  const blobs = order.filter((d) => !base.has(d) && !old.has(d)).map((digest) => ({ digest, size: sizes.get(digest)! }));
  const digests = [...new Set([...base, ...order])].sort();
  return { images, blobs, digests, bytes: blobs.reduce((n, b) => n + b.size, 0), skipped: order.length - blobs.length };
}

/** The index.json of a plan. */
export function indexJson(plan: ExportPlan): string {
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX_TYPE, manifests: plan.images.map((i) => i.descriptor) }, null, 2);
}

/**
 * Writes the plan as a tar to `out` (which the caller closes). `onBytes` hears each chunk of blob
 * bytes written (for progress). A blob that vanished since planning (evicted) fails the export.
 */
export async function writeBundle(plan: ExportPlan, deps: ExportDeps, out: Writable, onBytes?: (n: number) => void): Promise<void> {
  // `out`'s errors are taken from now on: one while tar-stream loads is held (an error with no
  // listener would end the process) and thrown once it has loaded.
  let early: Error | undefined;
  const hold = (e: Error) => (early ??= e);
  out.on('error', hold);
  // Loaded on first use: a mirror that never exports a bundle never holds the tar code.
  const { pack } = await import('tar-stream');
  if (early) throw early;
  const tar = pack();
  const done = pipeline(tar, out, { end: false });
  out.off('error', hold);
  const mtime = new Date(0);
  const add = (name: string, body: string) =>
    new Promise<void>((resolve, reject) => tar.entry({ name, mtime, mode: 0o644 }, body, (e) => (e ? reject(e) : resolve())));
  try {
    await add('oci-layout', OCI_LAYOUT);
    await add('index.json', indexJson(plan));
    for (const b of plan.blobs) {
      const src: Readable | undefined = await deps.blobs.open(b.digest);
      if (!src) throw new BundleError(`blob ${b.digest} left the cache during the export`);
      const entry = tar.entry({ name: blobPath(b.digest), size: b.size, mtime, mode: 0o644 });
      if (onBytes) src.on('data', (c: Buffer) => onBytes(c.length));
      await pipeline(src, entry);
    }
    tar.finalize();
  } catch (e) {
    tar.destroy(e as Error);
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}

/** Reads a `--base` file: the `.digests` file of an earlier export (one digest a line) or JSON `{"digests": [...]}`. */
export function parseBaseFile(text: string): Set<string> {
  const t = text.trim();
  let list: unknown[];
  if (t.startsWith('{')) {
    const v = JSON.parse(t) as { digests?: unknown };
    if (!Array.isArray(v.digests)) throw new BundleError('base file: no "digests" array');
    list = v.digests;
  } else list = t === '' ? [] : t.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const out = new Set<string>();
  for (const d of list) {
    if (typeof d !== 'string' || !/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(d)) throw new BundleError(`base file: ${JSON.stringify(d).slice(0, 100)} is not a digest`);
    out.add(d);
  }
  return out;
}
