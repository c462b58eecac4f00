/**
 * Assumed offline: a decorator of the Upstream port that remembers an upstream is not answering.
 *
 * After a call fails in a way that says the upstream is unreachable or not answering (no connection,
 * a connect/header timeout, a 502/503/504 from its edge), the upstream is marked offline for a period
 * (`offlineMinMs`, doubling after each failed probe up to `offlineMaxMs`). While offline every call
 * fails at once with an UpstreamError of kind 'unreachable' (`assumedOffline`, `retryAfter` = the
 * seconds to the next probe), so the registry serves stale answers, and uncached requests get their
 * 503, without waiting for a timeout. When the period ends, one probe (GET /v2/) asks whether the
 * upstream is back; the first success closes the period. At most one probe runs at a time, and
 * client requests never probe. Slow answers are not failures: only a failed call opens a period.
 *
 * Transitions are reported once each (observer, one log line); `snapshot()` is for /readyz.
 *
 * Not answering is noticed before it fails, too: while a call has been waiting longer than the
 * revalidation budget and nothing at all has come back from the upstream since it started, the
 * budget offered to the registry (`revalidateBudgetMs`) is 0, so further stale-able requests get the
 * cached copy at once instead of each waiting out the budget. Calls still go out (a slow upstream
 * answers them, in the background); only a failure opens an offline period.
 */
import { UpstreamError } from './errors.js';
import type { BlobBody, BlobHead, BlobSink, ManifestHead, ManifestResult, TagsPage, Upstream } from './types.js';

/** Asks the upstream whether it answers at all; resolves when it answered like a registry (any status below 500). */
export interface Probe {
  ping(): Promise<void>;
}

export type AvailabilityState = 'online' | 'offline';

export interface AvailabilitySnapshot {
  state: AvailabilityState;
  /** While offline: seconds until the next probe (what clients are told in Retry-After). */
  retryAfter?: number;
  /** While offline: the current period, in ms (it doubles after each failed probe). */
  periodMs?: number;
  /** A probe is under way. */
  probing: boolean;
  /** Why the upstream was marked offline (the failure's message). */
  reason?: string;
}

/** What the decorator reports. Implementations must not throw. */
export interface AvailabilityObserver {
  transition(upstream: string, to: AvailabilityState): void;
  probe(upstream: string, ok: boolean): void;
}

export interface AvailabilityLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** Timers, injectable for tests. */
export interface AvailabilityTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface AvailabilityOptions {
  /** The first offline period; 0 switches assumed-offline off (every call goes to upstream). */
  offlineMinMs: number;
  /** The longest offline period (the period doubles after each failed probe up to this). */
  offlineMaxMs: number;
  now: () => number;
  logger: AvailabilityLogger;
  observer?: AvailabilityObserver;
  timers?: AvailabilityTimers;
  /** Offered as the Upstream's `revalidateBudgetMs` (0 while the upstream is not answering anything). */
  revalidateBudgetMs?: number;
  /** A monotonic clock for how long calls wait (default performance.now). */
  elapsed?: () => number;
}

const realTimers: AvailabilityTimers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A failure that says the upstream is not answering (as opposed to an answer about one request). */
export function signalsOutage(e: unknown): boolean {
  if (!(e instanceof UpstreamError) || e.assumedOffline) return false;
  if (e.kind === 'unreachable' || e.kind === 'timeout') return true;
  return e.kind === 'status' && (e.status === 502 || e.status === 503 || e.status === 504);
}

export class AvailabilityGuard implements Upstream {
  readonly name: string;
  private state: AvailabilityState = 'online';
  private periodMs = 0;
  /** When the current period ends (the next probe starts), on `now`. */
  private until = 0;
  private reason = '';
  private probing = false;
  private timer: unknown;
  private closed = false;
  private readonly timers: AvailabilityTimers;
  private readonly elapsed: () => number;
  /** Calls under way: id -> when each started (insertion order: the first is the oldest). */
  private readonly pending = new Map<number, number>();
  private seq = 0;
  /** When the upstream last answered anything (a response, whatever its status). */
  private lastAnswer = -Infinity;

  constructor(
    private readonly inner: Upstream & Probe,
    private readonly opts: AvailabilityOptions,
  ) {
    this.name = inner.name;
    this.timers = opts.timers ?? realTimers;
    this.elapsed = opts.elapsed ?? (() => performance.now());
  }

  /** The configured budget, or 0 while a call has waited longer than it with no answer from upstream since. */
  get revalidateBudgetMs(): number | undefined {
    const budget = this.opts.revalidateBudgetMs;
    return budget !== undefined && this.unanswered(budget) ? 0 : budget;
  }

  /** The oldest call under way has waited more than `ms`, and nothing came back since it started. */
  private unanswered(ms: number): boolean {
    const oldest = this.pending.values().next();
    if (oldest.done) return false;
    return this.elapsed() - oldest.value > ms && this.lastAnswer < oldest.value;
  }

  getManifest(repo: string, reference: string, accept: string[]): Promise<ManifestResult> {
    return this.guard(() => this.inner.getManifest(repo, reference, accept));
  }

  headManifest(repo: string, reference: string, accept: string[]): Promise<ManifestHead> {
    return this.guard(() => this.inner.headManifest(repo, reference, accept));
  }

  headBlob(repo: string, digest: string): Promise<BlobHead> {
    return this.guard(() => this.inner.headBlob(repo, digest));
  }

  getBlob(repo: string, digest: string, offset: number, sink?: BlobSink): Promise<BlobBody> {
    return this.guard(() => this.inner.getBlob(repo, digest, offset, sink));
  }

  getTags(repo: string, page?: string): Promise<TagsPage> {
    return this.guard(() => this.inner.getTags(repo, page));
  }

  getReferrers(repo: string, digest: string): Promise<unknown> {
    return this.guard(() => this.inner.getReferrers(repo, digest));
  }

  get offline(): boolean {
    return this.state === 'offline';
  }

  snapshot(): AvailabilitySnapshot {
    if (this.state === 'online') return { state: 'online', probing: false };
    return { state: 'offline', retryAfter: this.retryAfter(), periodMs: this.periodMs, probing: this.probing, reason: this.reason };
  }

  /** Stops the probe timer (the mirror is closing). */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async guard<T>(call: () => Promise<T>): Promise<T> {
    if (this.state === 'offline') {
      throw new UpstreamError('unreachable', this.name, `upstream ${this.name} is assumed offline (${this.reason}); next check in ${this.retryAfter()} s`, {
        retryAfter: this.retryAfter(),
        assumedOffline: true,
      });
    }
    const id = this.seq++;
    this.pending.set(id, this.elapsed());
    try {
      const result = await call();
      this.lastAnswer = this.elapsed();
      return result;
    } catch (e) {
      const noAnswer = e instanceof UpstreamError && (e.kind === 'unreachable' || e.kind === 'timeout');
      if (!noAnswer) this.lastAnswer = this.elapsed();
      if (this.opts.offlineMinMs > 0 && signalsOutage(e)) this.goOffline((e as Error).message);
      throw e;
    } finally {
      this.pending.delete(id);
    }
  }

  /** Seconds to the next probe, at least 1 (a probe under way may take a while yet). */
  private retryAfter(): number {
    return Math.max(1, Math.ceil((this.until - this.opts.now()) / 1000));
  }

  private goOffline(reason: string): void {
    if (this.state === 'offline' || this.closed) return;
    this.state = 'offline';
    this.reason = reason.slice(0, 300);
    this.periodMs = this.opts.offlineMinMs;
    this.opts.logger.warn({ upstream: this.name, periodMs: this.periodMs, reason: this.reason }, 'upstream assumed offline; serving from the cache until a probe succeeds');
    this.opts.observer?.transition(this.name, 'offline');
    this.schedule();
  }

  private schedule(): void {
    this.until = this.opts.now() + this.periodMs;
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      void this.probe();
    }, this.periodMs);
  }

  /** The one probe: success closes the period, failure opens a longer one. */
  private async probe(): Promise<void> {
    if (this.probing || this.closed || this.state !== 'offline') return;
    this.probing = true;
    let ok = false;
    let why = '';
    try {
      await this.inner.ping();
      ok = true;
    } catch (e) {
      why = e instanceof Error ? e.message : String(e);
    } finally {
      this.probing = false;
    }
    this.opts.observer?.probe(this.name, ok);
    if (this.closed) return;
    if (ok) {
      this.state = 'online';
      this.periodMs = 0;
      this.reason = '';
      this.opts.logger.info({ upstream: this.name }, 'upstream back online');
      this.opts.observer?.transition(this.name, 'online');
      return;
    }
    this.reason = why.slice(0, 300) || this.reason;
    this.periodMs = Math.min(this.periodMs * 2, Math.max(this.opts.offlineMaxMs, this.opts.offlineMinMs));
    this.schedule();
  }
}
