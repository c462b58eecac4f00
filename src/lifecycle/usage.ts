/**
 * When images and blobs were last used (pulled: served or fetched), kept in memory and saved as a
 * whole every few seconds when something changed: a use costs one Map write, never a disk write or
 * an fsync, and the order survives restarts (file atimes are not reliable: noatime, relatime).
 * A crash loses at most the uses since the last save.
 *
 * Keys: `m <upstream>/<repo>@<digest>` for a manifest of a repository (a tag's root or a child pulled
 * by digest), `b <digest>` for a blob.
 */
import type { MetaStore, UsageSnapshot } from '../storage/meta-store.js';

export interface UsageRecorder {
  manifest(upstream: string, repo: string, digest: string): void;
  blob(digest: string): void;
}

export const manifestKey = (upstream: string, repo: string, digest: string) => `m ${upstream}/${repo}@${digest}`;
export const blobKey = (digest: string) => `b ${digest}`;
/** The digest a key names: what must be stored for the key to mean anything. */
const digestOfKey = (key: string) => key.slice(key.startsWith('m ') ? key.lastIndexOf('@') + 1 : 2);

/**
 * How long a use of content that is not stored is kept. A download by digest records its use when
 * it starts, before its blob is stored, and a GC keeps that download's records while its use is
 * this recent; the same hour as GC's grace for temp files.
 */
export const UNSTORED_USE_GRACE_MS = 60 * 60 * 1000;

export class UsageTracker implements UsageRecorder {
  private entries = new Map<string, number>();
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly meta: Pick<MetaStore, 'getState' | 'putState'>, private readonly now: () => number) {}

  /** Loads the last saved figures; uses recorded meanwhile win. */
  async load(): Promise<void> {
    const s = (await this.meta.getState('usage')) as UsageSnapshot | undefined;
    if (!s || typeof s.entries !== 'object' || s.entries === null) return;
    const loaded = new Map<string, number>();
    for (const [k, v] of Object.entries(s.entries)) if (typeof v === 'number' && Number.isFinite(v)) loaded.set(k, v);
    for (const [k, v] of this.entries) loaded.set(k, Math.max(v, loaded.get(k) ?? 0));
    this.entries = loaded;
  }

  manifest(upstream: string, repo: string, digest: string): void {
    this.touch(manifestKey(upstream, repo, digest));
  }

  blob(digest: string): void {
    this.touch(blobKey(digest));
  }

  get(key: string): number | undefined {
    return this.entries.get(key);
  }

  /** The oldest last use recorded, or undefined when none (O(n): for a gauge, not per request). */
  oldest(): number | undefined {
    let min: number | undefined;
    for (const v of this.entries.values()) if (min === undefined || v < min) min = v;
    return min;
  }

  /**
   * Forgets the uses older than `before` of content that is not stored (`stored(digest)` false): a
   * blob passed through a full store, content removed behind the mirror's back. Called with an
   * inventory (GC, an eviction pass), so the figures hold what the cache holds and no more, however
   * long the mirror runs. Returns how many were forgotten.
   */
  prune(stored: (digest: string) => boolean, before: number): number {
    let n = 0;
    for (const [k, at] of this.entries) {
      if (at >= before || stored(digestOfKey(k))) continue;
      this.entries.delete(k);
      n++;
    }
    if (n > 0) this.dirty = true;
    return n;
  }

  /** Forgets keys (evicted or purged content). */
  drop(keys: Iterable<string>): void {
    for (const k of keys) if (this.entries.delete(k)) this.dirty = true;
  }

  /** Saves every `intervalMs` while something changed (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    this.timer ??= setInterval(() => void this.save().catch(() => undefined), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.save();
  }

  /** Writes the figures if they changed since the last save (one write at a time; a failed one is tried again by the next). */
  save(): Promise<void> {
    // After the last save whatever its outcome: one failure (a full disk) must not fail every save after it.
    this.saving = this.saving.catch(() => undefined).then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      try {
        await this.meta.putState('usage', { savedAt: this.now(), entries: Object.fromEntries(this.entries) } satisfies UsageSnapshot);
      } catch (e) {
        this.dirty = true;
        throw e;
      }
    });
    return this.saving;
  }

  private touch(key: string): void {
    this.entries.set(key, this.now());
    this.dirty = true;
  }
}
