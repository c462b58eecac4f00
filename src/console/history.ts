/**
 * The console's figures over time: a bounded ring of samples (cumulative hits, misses, bytes saved,
 * and cache bytes), taken every `intervalMs` and kept for `capacity` samples (10 s × 8640 = 24 h).
 * Memory is fixed (a few hundred KiB at most); nothing survives a restart, like the counters the
 * samples come from. The clock is injected; `sample()` is public so tests drive it without timers.
 */

/** What one sample holds: counters over the process's life, and the cache size then. */
export interface Figures {
  hits: number;
  misses: number;
  bytesSaved: number;
  cacheBytes: number;
}

export interface Sample extends Figures {
  /** ms since the epoch. */
  t: number;
}

export interface HistoryOptions {
  /** Reads the current figures (metrics and cache stats). */
  read: () => Promise<Figures>;
  now: () => number;
  /** Samples kept; the oldest goes first. */
  capacity: number;
  intervalMs: number;
}

export class FiguresHistory {
  private readonly ring: Array<Sample | undefined>;
  /** Index of the next write; `count` samples end just before it. */
  private next = 0;
  private count = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: HistoryOptions) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 2) throw new Error('history capacity must be an integer of at least 2');
    this.ring = new Array<Sample | undefined>(opts.capacity);
  }

  get intervalMs(): number {
    return this.opts.intervalMs;
  }

  /** Takes one sample now. A failed read is skipped (the chart shows a gap in time, not a wrong value). */
  async sample(): Promise<void> {
    let f: Figures;
    try {
      f = await this.opts.read();
    } catch {
      return;
    }
    this.ring[this.next] = { t: this.opts.now(), hits: f.hits, misses: f.misses, bytesSaved: f.bytesSaved, cacheBytes: f.cacheBytes };
    this.next = (this.next + 1) % this.ring.length;
    this.count = Math.min(this.count + 1, this.ring.length);
  }

  /** The samples kept, oldest first (copies). */
  samples(): Sample[] {
    const out: Sample[] = [];
    const start = (this.next - this.count + this.ring.length) % this.ring.length;
    for (let i = 0; i < this.count; i++) out.push({ ...this.ring[(start + i) % this.ring.length]! });
    return out;
  }

  /** Samples now and every interval after (the timer does not hold the process open). */
  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
