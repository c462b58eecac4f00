/**
 * The replica's link to the fleet's Redis, and the coordination mode it implies: `fleet` while Redis
 * answers, `local` while it does not (each replica then coordinates its own downloads only, and
 * fetches may repeat across replicas). Every Redis call of the fleet goes through `call()`, which
 * never waits for a reconnect: a failing call switches to `local` at once and rethrows, so callers
 * fall back instead of stalling a client. Each switch is one log line and one observer call.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/types.js';

export type CoordinationMode = 'fleet' | 'local';

export interface LinkObserver {
  /** The mode changed (also called once at start with the initial mode). */
  mode(mode: CoordinationMode): void;
}

export class RedisLink {
  private mode_: CoordinationMode = 'local';

  constructor(
    readonly redis: Redis,
    private readonly deps: { logger: Logger; observer: LinkObserver; url: string },
  ) {
    deps.observer.mode('local');
    redis.on('ready', () => this.set('fleet', undefined));
    redis.on('close', () => this.set('local', 'connection closed'));
    redis.on('error', (e: Error) => this.set('local', e.message));
    if (redis.status === 'ready') this.set('fleet', undefined);
  }

  get mode(): CoordinationMode {
    return this.mode_;
  }

  /** Whether coordination through Redis is possible now. */
  get up(): boolean {
    return this.mode_ === 'fleet';
  }

  /** Runs a Redis call; a failure marks the link down (one log line) and is rethrown. */
  async call<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
    if (!this.up) throw new FleetUnavailableError('Redis is not reachable');
    try {
      return await fn(this.redis);
    } catch (e) {
      // A reply error (a script bug, WRONGTYPE) says nothing about reachability, nor does one slow
      // reply on a connection that is still up (a busy host): only a lost connection switches.
      if ((e as Error).name !== 'ReplyError' && this.redis.status !== 'ready') this.set('local', (e as Error).message);
      throw e;
    }
  }

  private set(mode: CoordinationMode, reason: string | undefined): void {
    if (mode === this.mode_) return;
    this.mode_ = mode;
    this.deps.observer.mode(mode);
    if (mode === 'local') this.deps.logger.warn({ redis: redact(this.deps.url), reason }, 'fleet coordination lost: Redis unreachable, coordinating downloads locally (fetches may repeat across replicas)');
    else this.deps.logger.info({ redis: redact(this.deps.url) }, 'fleet coordination through Redis restored');
  }

  async close(): Promise<void> {
    this.redis.removeAllListeners();
    this.redis.on('error', () => undefined);
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

export class FleetUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FleetUnavailableError';
  }
}

/** The Redis URL without its password, for logs. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable redis url)';
  }
}
