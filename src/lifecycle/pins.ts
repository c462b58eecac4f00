/**
 * Pinned images: never evicted. Patterns name references: `docker.io/library/postgres:14.5` (a
 * tag), `docker.io/library/postgres@sha256:…` (an image), `docker.io/library/postgres` (every image of
 * the repository), with `*` for any run of characters within one path part and `**` for any run
 * across parts (`ghcr.io/acme/**`). Pins come from the config (`cache.pin`, fixed) and from the
 * admin API (saved in the metadata store).
 */
import type { MetaStore } from '../storage/meta-store.js';

const VALID = /^[a-z0-9.:[\]-]+(\/[A-Za-z0-9._*-]+)*(\/\*\*)?([:@][A-Za-z0-9._*:+=-]+)?$/;

export function validatePin(pattern: string): string | undefined {
  if (pattern.length === 0 || pattern.length > 512) return 'a pin pattern is 1 to 512 characters';
  const parts = pattern.split(/[/:@]/);
  if (!VALID.test(pattern) || !/^[a-z0-9]/.test(pattern) || parts.some((p) => p === '.' || p === '..')) return `not a reference pattern: ${pattern.slice(0, 100)}`;
  return undefined;
}

function toRegExp(pattern: string): RegExp {
  const esc = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  // `**` is any run of characters; a lone `*` any run within one path part.
  const re = esc.split('**').map((part) => part.replace(/\*/g, '[^/:@]*')).join('.*');
  return new RegExp(`^${re}$`);
}

/** Whether a pattern names this image: by one of its tags, its digest, or its repository. */
export function pinMatches(pattern: string, image: { upstream: string; repo: string; digest: string; tags: string[] }): boolean {
  const re = toRegExp(pattern);
  const name = `${image.upstream}/${image.repo}`;
  if (re.test(name) || re.test(`${name}@${image.digest}`)) return true;
  return image.tags.some((t) => re.test(`${name}:${t}`));
}

export class PinSet {
  private saved: string[] = [];

  constructor(private readonly fixed: readonly string[], private readonly meta: Pick<MetaStore, 'getState' | 'putState'>) {}

  async load(): Promise<void> {
    const v = await this.meta.getState('pins');
    this.saved = Array.isArray(v) ? v.filter((p): p is string => typeof p === 'string' && validatePin(p) === undefined) : [];
  }

  /**
   * Reads the saved pins again: with records shared by several replicas (Redis), another replica may
   * have pinned or unpinned since. Before each eviction pass and each listing; when the store cannot
   * be read, the pins known stay (a pass must not take a pinned image for want of a read).
   */
  async refresh(): Promise<void> {
    await this.load().catch(() => undefined);
  }

  all(): string[] {
    return [...new Set([...this.fixed, ...this.saved])];
  }

  matches(image: { upstream: string; repo: string; digest: string; tags: string[] }): boolean {
    return this.all().some((p) => pinMatches(p, image));
  }

  async add(pattern: string): Promise<string[]> {
    // From what is saved now, not what this replica read last: another's pins must not be written over.
    await this.load();
    if (!this.saved.includes(pattern)) {
      // Kept only once stored: a failed save (the store unreachable) leaves the pins as they were.
      const next = [...this.saved, pattern];
      await this.meta.putState('pins', next);
      this.saved = next;
    }
    return this.all();
  }

  /** Removes a pin made through the admin API; pins from the config stay (they are the config's). */
  async remove(pattern: string): Promise<string[]> {
    await this.load();
    if (this.saved.includes(pattern)) {
      const next = this.saved.filter((p) => p !== pattern);
      await this.meta.putState('pins', next);
      this.saved = next;
    }
    return this.all();
  }
}
