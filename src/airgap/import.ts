/**
 * Import of an OCI image layout bundle (a tar or a directory) into the cache, never contacting an
 * upstream. In three phases:
 *   1. stage: every blob entry is written through BlobStore.createWriter and committed with its size,
 *      which verifies its digest (blobs are content-addressed, so a verified blob in the store is
 *      harmless: nothing refers to it until phase 3; GC removes it if the import fails);
 *   2. verify: every image index.json names must be complete: each manifest, config and layer in the
 *      bundle or already in the cache, with the size its descriptor says (an index may lack some of its
 *      platforms, as the cache itself may, but not all of them);
 *   3. record, per image: manifest records and links first, the tag last (its visibility); an index's
 *      tag also gets its linux/amd64 manifest as the answer for clients accepting no index type.
 * A bad bundle fails in 1 or 2 with a BundleError naming the first bad entry, and no record changes.
 * Imported tags get fetchedAt = now: served offline, and online revalidated after the normal TTL.
 */
import { DigestMismatchError, type BlobStore } from '../storage/store.js';
import type { MetaStore, RepoKey, TagVariant } from '../storage/meta-store.js';
import { isIndexType, parseManifest } from '../registry/media-types.js';
import { BundleError, classifyEntry, descriptor, MAX_INDEX_BYTES, MAX_OCI_LAYOUT_BYTES, parseIndex, REF_NAME, splitRefName, type Descriptor } from './layout.js';
import type { BundleEntry } from './source.js';

export interface ImportDeps {
  blobs: BlobStore;
  meta: MetaStore;
  now: () => number;
  /** A client-visible repository name (`docker.io/library/alpine`, `alpine`) → where the cache keeps it; throws when no upstream serves it. */
  route(name: string): RepoKey;
  maxManifestBytes: number;
  /** Keeps blobs from eviction and GC until released (a running mirror); every blob the import stages or relies on is held until its tags are written. */
  hold?(digests: Iterable<string>): () => void;
  /** Where a use is recorded (a running mirror's usage): an imported image counts as just pulled, so eviction takes it after older ones. */
  usage?: { manifest(upstream: string, repo: string, digest: string): void; blob(digest: string): void };
}

export interface ImportOptions {
  /** The repository for ref names that are plain tags (as `skopeo copy … oci-archive:x.tar:TAG` writes them). */
  repository?: string;
}

export interface ImportedImage {
  /** `<upstream>/<repo>:<tag>` as cached. */
  reference: string;
  digest: string;
  mediaType: string;
  /** Platform manifests of an index present after the import (0 for a single image). */
  platforms: number;
}

export interface ImportResult {
  images: ImportedImage[];
  /** Blob entries in the bundle, and how many of them the cache did not have. */
  blobs: number;
  newBlobs: number;
  /** Bytes of the blob entries. */
  bytes: number;
}

interface Plan {
  repo: RepoKey;
  tag: string;
  root: Descriptor;
  manifests: Array<{ digest: string; mediaType: string }>;
  digests: Set<string>;
  platforms: number;
  /** For an index: its linux/amd64 manifest, what upstream answers clients that accept no index (recorded narrowed). */
  narrowed?: Descriptor;
}

/** Platform manifests an index may list: real ones list a few dozen (with attestations); more is a bundle made to be expensive. */
const MAX_INDEX_CHILDREN = 1024;

export async function importBundle(entries: AsyncIterable<BundleEntry>, deps: ImportDeps, opts: ImportOptions = {}): Promise<ImportResult> {
  const releases: Array<() => void> = [];
  const held = new Set<string>();
  const hold = (digest: string) => {
    if (!deps.hold || held.has(digest)) return;
    held.add(digest);
    releases.push(deps.hold([digest]));
  };
  try {
    return await importHeld(entries, deps, opts, hold);
  } finally {
    for (const release of releases) release();
  }
}

async function importHeld(entries: AsyncIterable<BundleEntry>, deps: ImportDeps, opts: ImportOptions, hold: (digest: string) => void): Promise<ImportResult> {
  // ---- 1. stage ----
  const staged = new Map<string, number>();
  let layoutSeen = false;
  let index: Descriptor[] | undefined;
  let newBlobs = 0;
  let bytes = 0;
  for await (const e of entries) {
    const kind = classifyEntry(e.name, e.isDir);
    if (kind.kind === 'oci-layout') {
      const v = parseJson(await readBounded(e, MAX_OCI_LAYOUT_BYTES, 'oci-layout'), 'oci-layout') as { imageLayoutVersion?: unknown } | null;
      if (typeof v?.imageLayoutVersion !== 'string') throw new BundleError('oci-layout: no imageLayoutVersion');
      layoutSeen = true;
    } else if (kind.kind === 'index') {
      index = parseIndex(await readBounded(e, MAX_INDEX_BYTES, 'index.json'));
    } else if (kind.kind === 'blob') {
      hold(kind.digest);
      const existed = (await deps.blobs.stat(kind.digest)) !== undefined;
      await stage(e, kind.digest, deps.blobs);
      staged.set(kind.digest, e.size);
      bytes += e.size;
      if (!existed) newBlobs++;
    } else {
      for await (const _ of e.body) {
        // skipped (directories, files an OCI layout does not define)
      }
    }
  }
  if (!layoutSeen) throw new BundleError('not an OCI image layout: no oci-layout entry');
  if (!index) throw new BundleError('not an OCI image layout: no index.json entry');
  if (index.length === 0) throw new BundleError('index.json names no images');

  // ---- 2. verify ----
  // Held before it is looked at: what is found present stays so until the tags are written.
  const sizeOf = async (digest: string) => {
    hold(digest);
    return staged.get(digest) ?? (await deps.blobs.stat(digest))?.size;
  };
  const plans: Plan[] = [];
  for (const [i, root] of index.entries()) {
    const where = `index.json manifests[${i}]`;
    const refName = root.annotations?.[REF_NAME];
    if (typeof refName !== 'string' || refName === '') throw new BundleError(`${where} (${root.digest}): no ${REF_NAME} annotation, so no tag to import it as`);
    const { name, tag } = splitRefName(refName);
    const repoName = name === '' ? opts.repository : name;
    if (repoName === undefined) throw new BundleError(`${where}: ref name ${JSON.stringify(refName)} is a plain tag: give the repository (--repository)`);
    let repo: RepoKey;
    try {
      repo = deps.route(repoName);
    } catch (err) {
      throw new BundleError(`${where}: ${repoName}: ${(err as Error).message}`);
    }
    const plan: Plan = { repo, tag, root, manifests: [], digests: new Set(), platforms: 0 };
    await verifyManifest(root, `${repoName}:${tag}`, plan, sizeOf, deps, true);
    plans.push(plan);
  }

  // ---- 3. record, one image at a time (the tag last) ----
  const images: ImportedImage[] = [];
  const now = deps.now();
  for (const p of plans) {
    await deps.meta.addManifests(p.repo, p.manifests);
    await deps.meta.addLinks(p.repo, [...p.digests]);
    const variants: TagVariant[] = [{ digest: p.root.digest, mediaType: p.root.mediaType, size: p.root.size, fetchedAt: now }];
    // Offline, a client that accepts no index type still gets what upstream would give it.
    if (p.narrowed) variants.push({ digest: p.narrowed.digest, mediaType: p.narrowed.mediaType, size: p.narrowed.size, fetchedAt: now, narrowedFor: [] });
    await deps.meta.putTag(p.repo, p.tag, { version: 2, variants });
    for (const m of p.manifests) deps.usage?.manifest(p.repo.upstream, p.repo.repo, m.digest);
    for (const d of p.digests) deps.usage?.blob(d);
    images.push({ reference: `${p.repo.upstream}/${p.repo.repo}:${p.tag}`, digest: p.root.digest, mediaType: p.root.mediaType, platforms: p.platforms });
  }
  return { images, blobs: staged.size, newBlobs, bytes };
}

/** Writes one blob entry through a writer; its digest and size are verified by commit. */
async function stage(e: BundleEntry, digest: string, blobs: BlobStore): Promise<void> {
  const name = `blobs/${digest.replace(':', '/')}`;
  const w = await blobs.createWriter(digest);
  try {
    for await (const chunk of e.body) await w.write(chunk);
    if (w.written !== e.size) throw new BundleError(`entry ${name}: ${w.written} bytes, its header says ${e.size} (truncated)`);
    await w.commit(e.size);
  } catch (err) {
    await w.abort().catch(() => undefined);
    if (err instanceof DigestMismatchError) throw new BundleError(`entry ${name}: content does not match its digest (it is ${err.actual}, ${err.size} bytes)`);
    throw err;
  } finally {
    await w.close().catch(() => undefined);
  }
}

async function verifyManifest(
  d: Descriptor,
  image: string,
  plan: Plan,
  sizeOf: (digest: string) => Promise<number | undefined>,
  deps: ImportDeps,
  root: boolean,
): Promise<void> {
  const what = `${image}: ${root ? 'manifest' : 'platform manifest'} ${d.digest}`;
  await present(d, what, sizeOf);
  if (d.size > deps.maxManifestBytes) throw new BundleError(`${what}: ${d.size} bytes, larger than a manifest may be (${deps.maxManifestBytes})`);
  const bytes = await deps.blobs.read(d.digest);
  if (!bytes) throw new BundleError(`${what}: neither in the bundle nor in the cache`);
  const parsed = parseManifest(bytes, d.mediaType);
  if (!parsed) throw new BundleError(`${what}: not JSON`);
  if (parsed.mediaType !== d.mediaType) throw new BundleError(`${what}: its descriptor says ${d.mediaType}, the manifest says ${parsed.mediaType}`);
  plan.manifests.push({ digest: d.digest, mediaType: d.mediaType });
  plan.digests.add(d.digest);
  const json = JSON.parse(bytes.toString('utf8')) as { manifests?: unknown[]; config?: unknown; layers?: unknown[] };
  if (isIndexType(d.mediaType)) {
    if (!root) throw new BundleError(`${what}: an index inside an index is not supported`);
    if (!Array.isArray(json.manifests) || json.manifests.length === 0) throw new BundleError(`${what}: an index that lists no platform manifests`);
    if (json.manifests.length > MAX_INDEX_CHILDREN) throw new BundleError(`${what}: ${json.manifests.length} platform manifests (at most ${MAX_INDEX_CHILDREN})`);
    const children = json.manifests.map((c, i) => descriptor(c, `${what} manifests[${i}]`));
    const checked = new Set<string>();
    for (const c of children) {
      // Each manifest once, however often the index repeats it.
      if (checked.has(c.digest)) continue;
      checked.add(c.digest);
      // An index may lack some platforms (the cache keeps only those pulled), never all of them.
      if ((await sizeOf(c.digest)) === undefined) continue;
      await verifyManifest(c, image, plan, sizeOf, deps, false);
      plan.platforms++;
      if (!plan.narrowed && c.platform?.os === 'linux' && c.platform.architecture === 'amd64') plan.narrowed = c;
    }
    if (plan.platforms === 0) throw new BundleError(`${what}: none of its ${children.length} platform manifests is in the bundle or the cache`);
    return;
  }
  if (json.config === undefined || !Array.isArray(json.layers)) throw new BundleError(`${what}: not an image manifest (no config and layers)`);
  const parts = [descriptor(json.config, `${what} config`), ...json.layers.map((l, i) => descriptor(l, `${what} layers[${i}]`))];
  for (const [i, p] of parts.entries()) {
    await present(p, `${image}: ${i === 0 ? 'config' : 'layer'} ${p.digest}`, sizeOf);
    plan.digests.add(p.digest);
  }
}

async function present(d: Descriptor, what: string, sizeOf: (digest: string) => Promise<number | undefined>): Promise<void> {
  const size = await sizeOf(d.digest);
  if (size === undefined) throw new BundleError(`${what}: neither in the bundle nor in the cache`);
  if (size !== d.size) throw new BundleError(`${what}: ${size} bytes, its descriptor says ${d.size}`);
}

async function readBounded(e: BundleEntry, max: number, what: string): Promise<Buffer> {
  if (e.size > max) throw new BundleError(`${what}: ${e.size} bytes (at most ${max})`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of e.body) {
    n += c.length;
    if (n > max) throw new BundleError(`${what}: more than ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BundleError(`${what}: not JSON`);
  }
}
