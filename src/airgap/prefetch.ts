/**
 * Prefetch: fills the cache with images (the tag's manifest or index, the chosen platforms'
 * manifests, their configs and layers) through the Registry service, exactly as client pulls do, so
 * downloads coalesce with them (one download per digest) and land verified. Blobs already in the
 * store are not read again, so a re-run after an interruption fetches only what is missing.
 * Cancelling stops reading; a download under way finishes for the cache (nobody's hang-up cancels it).
 */
import type { Readable } from 'node:stream';
import { isIndexType } from '../registry/media-types.js';
import type { RepoRef } from '../registry/reference.js';
import { descriptor, platformOf, platformWanted, type Descriptor } from './layout.js';

/** What prefetch needs of the Registry service (registry/service.ts) and the blob store. */
export interface PrefetchDeps {
  getManifest(ref: RepoRef, reference: string, accept: ReadonlySet<string> | undefined): Promise<{ bytes: Buffer; mediaType: string; digest: string }>;
  openBlob(ref: RepoRef, digest: string, ranges: undefined): Promise<{ body: Readable | Buffer }>;
  /** `docker.io/library/alpine` or `alpine` → where it is cached; throws when no upstream serves it. */
  route(name: string): RepoRef;
  /** Whether the blob is complete in the store. */
  has(digest: string): Promise<boolean>;
}

export interface PrefetchImage {
  /** As given (`alpine:3.19`). */
  image: string;
  state: 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
  /** Bytes of the blobs this run had to fetch, known once the manifests are in; and fetched so far. */
  totalBytes: number;
  bytes: number;
  /** Blobs the image needs, and how many of them this run fetched (the rest were cached). */
  blobs: number;
  fetched: number;
  error?: string;
}

export interface PrefetchSnapshot {
  id: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  platforms: string[] | 'all';
  startedAt: number;
  finishedAt?: number;
  images: PrefetchImage[];
  totalBytes: number;
  bytes: number;
}

export interface PrefetchRequest {
  images: string[];
  /** `linux/amd64` …; undefined: every platform of an index. */
  platforms?: string[];
}

/** Splits `name[:tag|@digest]` (a tag defaults to latest). */
export function splitImage(image: string): { name: string; reference: string } {
  const at = image.indexOf('@');
  if (at >= 0) return { name: image.slice(0, at), reference: image.slice(at + 1) };
  const slash = image.lastIndexOf('/');
  const colon = image.indexOf(':', slash + 1);
  return colon >= 0 ? { name: image.slice(0, colon), reference: image.slice(colon + 1) } : { name: image, reference: 'latest' };
}

/** One prefetch run over a list of images, one image at a time. */
export class PrefetchJob {
  readonly images: PrefetchImage[];
  readonly startedAt: number;
  finishedAt: number | undefined;
  private readonly abort = new AbortController();
  /** Settles when every image is done, failed or cancelled; never rejects. */
  readonly done: Promise<void>;

  constructor(
    readonly id: string,
    private readonly req: PrefetchRequest,
    private readonly deps: PrefetchDeps,
    private readonly now: () => number = Date.now,
    /** Hears each image as it finishes (done, failed or cancelled). */
    private readonly onImage?: (img: PrefetchImage) => void,
  ) {
    this.images = req.images.map((image) => ({ image, state: 'queued', totalBytes: 0, bytes: 0, blobs: 0, fetched: 0 }));
    this.startedAt = now();
    this.done = this.run();
  }

  cancel(): void {
    this.abort.abort();
  }

  snapshot(): PrefetchSnapshot {
    const cancelled = this.images.some((i) => i.state === 'cancelled');
    const state = this.finishedAt === undefined ? 'running' : cancelled ? 'cancelled' : this.images.some((i) => i.state === 'failed') ? 'failed' : 'done';
    return {
      id: this.id,
      state,
      platforms: this.req.platforms ?? 'all',
      startedAt: this.startedAt,
      ...(this.finishedAt !== undefined ? { finishedAt: this.finishedAt } : {}),
      images: this.images.map((i) => ({ ...i })),
      totalBytes: this.images.reduce((n, i) => n + i.totalBytes, 0),
      bytes: this.images.reduce((n, i) => n + i.bytes, 0),
    };
  }

  private async run(): Promise<void> {
    for (const img of this.images) {
      if (this.abort.signal.aborted) img.state = 'cancelled';
      else {
        img.state = 'running';
        try {
          await this.fetchImage(img);
          img.state = 'done';
        } catch (e) {
          img.state = this.abort.signal.aborted ? 'cancelled' : 'failed';
          if (img.state === 'failed') img.error = e instanceof Error ? e.message : String(e);
        }
      }
      this.onImage?.(img);
    }
    this.finishedAt = this.now();
  }

  private async fetchImage(img: PrefetchImage): Promise<void> {
    const { name, reference } = splitImage(img.image);
    const ref = this.deps.route(name);
    const root = await this.deps.getManifest(ref, reference, undefined);
    const blobs = new Map<string, number>();
    const image = (bytes: Buffer, what: string) => {
      const json = JSON.parse(bytes.toString('utf8')) as { config?: unknown; layers?: unknown[] };
      // An index inside an index, or anything else without config and layers: nothing to fetch, which must not pass for done.
      if (json.config === undefined || !Array.isArray(json.layers)) throw new Error(`${what} is not an image manifest (no config and layers)`);
      for (const d of [json.config, ...(json.layers ?? [])].filter((x) => x !== undefined).map((x, i) => descriptor(x, `${img.image} blob ${i}`))) blobs.set(d.digest, d.size);
    };
    if (isIndexType(root.mediaType)) {
      const json = JSON.parse(root.bytes.toString('utf8')) as { manifests?: unknown[] };
      const children: Descriptor[] = (json.manifests ?? []).map((m, i) => descriptor(m, `${img.image} manifests[${i}]`));
      const chosen = children.filter((c) => platformWanted(platformOf(c.platform), this.req.platforms));
      if (chosen.length === 0) throw new Error(`no platform of ${children.map((c) => platformOf(c.platform) ?? '?').join(', ')} matches ${this.req.platforms?.join(',')}`);
      for (const c of chosen) {
        this.check();
        image((await this.deps.getManifest(ref, c.digest, undefined)).bytes, `${img.image}: platform manifest ${c.digest}`);
      }
    } else image(root.bytes, `${img.image}: manifest ${root.digest}`);
    img.blobs = blobs.size;
    const missing: Array<[string, number]> = [];
    for (const [digest, size] of blobs) if (!(await this.deps.has(digest))) missing.push([digest, size]);
    img.totalBytes = missing.reduce((n, [, s]) => n + s, 0);
    for (const [digest] of missing) {
      this.check();
      const res = await this.deps.openBlob(ref, digest, undefined);
      if (Buffer.isBuffer(res.body)) img.bytes += res.body.length;
      else {
        const body = res.body;
        const stop = () => body.destroy();
        this.abort.signal.addEventListener('abort', stop, { once: true });
        try {
          for await (const c of body) img.bytes += (c as Buffer).length;
        } finally {
          this.abort.signal.removeEventListener('abort', stop);
        }
      }
      img.fetched++;
    }
    this.check();
  }

  private check(): void {
    if (this.abort.signal.aborted) throw new Error('cancelled');
  }
}

/** The prefetch jobs of a running mirror (admin API): the last few kept for polling. */
export class PrefetchJobs {
  private readonly jobs = new Map<string, PrefetchJob>();
  private next = 1;

  constructor(
    private readonly deps: PrefetchDeps,
    private readonly now: () => number = Date.now,
    private readonly keep = 20,
  ) {}

  start(req: PrefetchRequest): PrefetchJob {
    const id = `${this.now().toString(36)}-${this.next++}`;
    const job = new PrefetchJob(id, req, this.deps, this.now);
    this.jobs.set(id, job);
    for (const [k, j] of this.jobs) {
      if (this.jobs.size <= this.keep) break;
      if (j.finishedAt !== undefined) this.jobs.delete(k);
    }
    return job;
  }

  get(id: string): PrefetchJob | undefined {
    return this.jobs.get(id);
  }

  /** The jobs kept (the running ones and the last finished), oldest first. */
  list(): PrefetchJob[] {
    return [...this.jobs.values()];
  }
}
