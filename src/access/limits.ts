/**
 * Two per-key limits with an injected clock:
 * - LoginThrottle: after `free` failed logins for a user or an address, each further attempt waits
 *   2^(failures-free) seconds (at most maxDelaySeconds) before it is even checked; a success clears the user.
 * - RateLimiter: a token bucket of `perMinute` upstream fetches per client (user or address).
 * Both forget idle keys so a flood of addresses cannot grow them without bound.
 */
export class LoginThrottle {
  private readonly failures = new Map<string, { n: number; last: number }>();

  constructor(private readonly opts: { free: number; maxDelaySeconds: number; now: () => number }) {}

  /** Seconds to wait before another attempt for any of the keys, or 0. */
  retryAfter(keys: string[]): number {
    let wait = 0;
    for (const k of keys) {
      const f = this.failures.get(k);
      if (!f || f.n < this.opts.free) continue;
      const delay = Math.min(2 ** (f.n - this.opts.free), this.opts.maxDelaySeconds) * 1000;
      const left = f.last + delay - this.opts.now();
      if (left > 0) wait = Math.max(wait, Math.ceil(left / 1000));
    }
    return wait;
  }

  failed(keys: string[]): void {
    const now = this.opts.now();
    this.sweep(now);
    for (const k of keys) {
      const f = this.failures.get(k);
      this.failures.set(k, { n: (f?.n ?? 0) + 1, last: now });
    }
  }

  succeeded(keys: string[]): void {
    for (const k of keys) this.failures.delete(k);
  }

  private sweep(now: number): void {
    if (this.failures.size < 10_000) return;
    for (const [k, f] of this.failures) if (now - f.last > this.opts.maxDelaySeconds * 1000 * 2) this.failures.delete(k);
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly opts: { perMinute: number; now: () => number }) {}

  /** Takes one; returns 0 when allowed, else the seconds until one is available. perMinute 0: no limit. */
  take(key: string): number {
    const { perMinute } = this.opts;
    if (perMinute <= 0) return 0;
    const now = this.opts.now();
    const rate = perMinute / 60_000;
    const b = this.buckets.get(key) ?? { tokens: perMinute, at: now };
    b.tokens = Math.min(perMinute, b.tokens + (now - b.at) * rate);
    b.at = now;
    if (this.buckets.size > 10_000) for (const [k, v] of this.buckets) if (now - v.at > 60_000) this.buckets.delete(k);
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / rate / 1000));
  }
}
