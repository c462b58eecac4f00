/**
 * Leases in Redis: a key held by one owner until it lets go or stops renewing (expiry). The value
 * names the holder (`{id, url}`: replica id and where its peer endpoint answers). Taking is
 * `SET NX PX`; renewing and releasing compare the value first (Lua, atomic), so a replica never
 * extends or deletes a lease that expired and went to another. Used for one download per digest
 * per fleet and for the fleet's eviction lock.
 */
import type { RedisLink } from './link.js';

export interface Holder {
  /** The replica's id (config fleet.replicaId). */
  id: string;
  /** Base URL of its peer endpoint. */
  url: string;
}

/** Extends the lease when we hold it, or takes it again when it is gone (Redis restarted empty). */
const RENEW = `local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class Leases {
  private readonly value: string;

  constructor(
    private readonly link: RedisLink,
    readonly self: Holder,
    /** Key prefix, e.g. `regmirror:fleet:`. */
    private readonly prefix: string,
    readonly ttlMs: number,
  ) {
    this.value = JSON.stringify(self);
  }

  /** Whether Redis is reachable now (a failed call while it is: a slow reply, worth another try). */
  get up(): boolean {
    return this.link.up;
  }

  private key(name: string): string {
    return `${this.prefix}${name}`;
  }

  /** Takes the lease if free; true when it is ours now. Throws when Redis is unreachable. */
  async acquire(name: string): Promise<boolean> {
    const r = await this.link.call((c) => c.set(this.key(name), this.value, 'PX', this.ttlMs, 'NX'));
    return r === 'OK';
  }

  /** Who holds the lease, or undefined when nobody does. Throws when Redis is unreachable. */
  async holder(name: string): Promise<Holder | undefined> {
    const v = await this.link.call((c) => c.get(this.key(name)));
    if (v === null) return undefined;
    try {
      const h = JSON.parse(v) as Partial<Holder>;
      if (typeof h.id === 'string' && typeof h.url === 'string') return { id: h.id, url: h.url };
    } catch {
      /* not ours: treated as held by nobody we can reach */
    }
    return { id: '?', url: '' };
  }

  /** Extends our lease (or takes it back if it vanished); false when another replica holds it now. */
  async renew(name: string): Promise<boolean> {
    const r = await this.link.call((c) => c.eval(RENEW, 1, this.key(name), this.value, String(this.ttlMs)));
    return r === 1;
  }

  /** Lets go of our lease (a lease another replica took meanwhile is left alone). Never throws. */
  async release(name: string): Promise<void> {
    if (!this.link.up) return;
    await this.link.call((c) => c.eval(RELEASE, 1, this.key(name), this.value)).catch(() => undefined);
  }

  /**
   * Holds the lease while `work` runs, renewing it every third of the TTL. Resolves to undefined
   * without running `work` when another replica holds it.
   */
  async whileHeld<T>(name: string, work: () => Promise<T>, onLost?: () => void): Promise<T | undefined> {
    if (!(await this.acquire(name))) return undefined;
    const stop = this.keepRenewed(name, onLost);
    try {
      return await work();
    } finally {
      stop();
      await this.release(name);
    }
  }

  /**
   * Renews the lease every third of the TTL until the returned function is called. `onLost` hears,
   * once, that another replica holds it now (ours expired: Redis was away longer than the TTL, or
   * restarted without its data): that replica may be doing the same work. A renewal that fails for
   * Redis being away is tried again at the next tick.
   */
  keepRenewed(name: string, onLost?: () => void): () => void {
    let lost = false;
    const timer = setInterval(() => {
      void this.renew(name).then(
        (held) => {
          if (held || lost) return;
          lost = true;
          onLost?.();
        },
        () => undefined,
      );
    }, Math.max(50, Math.floor(this.ttlMs / 3)));
    timer.unref();
    return () => clearInterval(timer);
  }
}
