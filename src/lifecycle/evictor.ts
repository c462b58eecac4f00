/**
 * Keeps the cache within its limits: a byte cap (`cache.maxBytes`) and a free-disk floor
 * (`cache.minFreeBytes`, `cache.minFreePercent`). Above either high mark, one pass at a time runs in
 * the background and removes the least recently used *images* as units (and blobs no image
 * references, by their own last use) until the cache is down to the low mark
 * (`cache.lowWatermark` of the cap; as far above the floor). Pinned images, blobs another retained
 * image references and blobs being read stay. Serving never waits for it.
 */
import type { Logger } from '../observability/types.js';
import type { EvictionReason, EvictionResult } from './types.js';
import { blobLastUse, type ImageUnit, type Inventory } from './inventory.js';
import { emptyRemoved, type Remover } from './remover.js';
import { UNSTORED_USE_GRACE_MS, type UsageTracker } from './usage.js';

export interface Limits {
  maxBytes: number | undefined;
  minFreeBytes: number | undefined;
  /** 0–100. */
  minFreePercent: number | undefined;
  /** The low mark as a fraction of the cap (e.g. 0.9). */
  lowWatermark: number;
}

export interface EvictionObserver {
  evicted(reason: EvictionReason, blobs: number, bytes: number): void;
}

export interface EvictorDeps {
  limits: Limits;
  /** Bytes of blobs on disk now. */
  cacheBytes: () => number;
  space: () => Promise<{ free: number; total: number } | undefined>;
  inventory: () => Promise<Inventory>;
  remover: Remover;
  pinned: (img: ImageUnit) => boolean;
  usage: Pick<UsageTracker, 'get' | 'prune'>;
  observer: EvictionObserver;
  logger: Logger;
  /**
   * Runs a pass under a lock shared with other processes over the same cache (the fleet's Redis
   * lock): `work` runs only while held, and not at all (undefined) when another holds it. Absent:
   * passes are serialised within this process only.
   */
  lock?: <T>(work: () => Promise<T>) => Promise<T | undefined>;
}

export class Evictor {
  private running: Promise<EvictionResult | undefined> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private poked = false;

  constructor(private readonly deps: EvictorDeps) {}

  /** The free-disk floor in bytes, when one is set and the disk can be measured. */
  floor(total: number | undefined): number | undefined {
    const { minFreeBytes, minFreePercent } = this.deps.limits;
    const pct = minFreePercent !== undefined && total !== undefined ? (total * minFreePercent) / 100 : undefined;
    if (minFreeBytes === undefined && pct === undefined) return undefined;
    return Math.max(minFreeBytes ?? 0, pct ?? 0);
  }

  /** How many bytes to free, and why, or undefined when within the limits. */
  async needed(): Promise<{ reason: EvictionReason; bytes: number } | undefined> {
    const { maxBytes, lowWatermark, minFreeBytes, minFreePercent } = this.deps.limits;
    const bytes = this.deps.cacheBytes();
    let best: { reason: EvictionReason; bytes: number } | undefined;
    if (maxBytes !== undefined && bytes > maxBytes) best = { reason: 'size', bytes: bytes - Math.floor(maxBytes * lowWatermark) };
    const space = minFreeBytes !== undefined || minFreePercent !== undefined ? await this.deps.space() : undefined;
    const floor = this.floor(space?.total);
    if (space && floor !== undefined && space.free < floor) {
      const want = Math.ceil(floor * (2 - lowWatermark)) - space.free;
      if (!best || want > best.bytes) best = { reason: 'free_disk', bytes: want };
    }
    return best;
  }

  /** One pass now if above a high mark (joins a pass under way); undefined when nothing was needed. */
  run(): Promise<EvictionResult | undefined> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Checks every `intervalMs`, and soon after `poke()` (a blob was added). */
  start(intervalMs: number): void {
    this.timer ??= setInterval(() => void this.run().catch((e: unknown) => this.deps.logger.error({ err: (e as Error).message }, 'eviction failed')), intervalMs);
    this.timer.unref();
  }

  poke(): void {
    if (this.poked || this.timer === undefined) return;
    this.poked = true;
    setImmediate(() => {
      this.poked = false;
      void this.run().catch((e: unknown) => this.deps.logger.error({ err: (e as Error).message }, 'eviction failed'));
    });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  private async pass(): Promise<EvictionResult | undefined> {
    if (!this.deps.lock) return this.unlockedPass();
    if (!(await this.needed())) return undefined;
    return this.deps.lock(() => this.unlockedPass());
  }

  private async unlockedPass(): Promise<EvictionResult | undefined> {
    const need = await this.needed();
    if (!need) return undefined;
    const started = performance.now();
    const inv = await this.deps.inventory();
    type Candidate = { at: number; image?: ImageUnit; blob?: string };
    const candidates: Candidate[] = [];
    for (const img of inv.images) if (!this.deps.pinned(img)) candidates.push({ at: img.lastUsed ?? 0, image: img });
    for (const d of inv.sizes.keys()) if (!inv.refs.has(d)) candidates.push({ at: blobLastUse(this.deps.usage, d) ?? 0, blob: d });
    candidates.sort((a, b) => a.at - b.at);
    const removed = emptyRemoved();
    for (const [i, c] of candidates.entries()) {
      if (removed.bytes >= need.bytes) break;
      // A long pass lets requests in between removals (serving never waits for eviction).
      if (i % 16 === 15) await new Promise<void>((r) => setImmediate(r));
      if (c.image && this.deps.remover.inUse(c.image)) continue;
      const unreferenced = c.image ? await this.deps.remover.removeImage(inv, c.image, removed) : [c.blob!];
      await this.deps.remover.deleteBlobs(inv, unreferenced, removed);
    }
    // A full store passes blobs through without keeping them: their uses go with this inventory.
    this.deps.usage.prune((d) => inv.sizes.has(d), inv.takenAt - UNSTORED_USE_GRACE_MS);
    this.deps.observer.evicted(need.reason, removed.blobs, removed.bytes);
    const result: EvictionResult = { reason: need.reason, images: removed.images, blobs: removed.blobs, bytes: removed.bytes, after: this.deps.cacheBytes() };
    this.deps.logger.info({ ...result, wanted: need.bytes, ms: Math.round(performance.now() - started) }, 'evicted least recently used images');
    return result;
  }
}
