/**
 * One call per key at a time: callers arriving while a call for their key is under way share its
 * result (or its error) instead of starting another. Nothing is cached once the call settles.
 */
export class SingleFlight<T> {
  private readonly pending = new Map<string, Promise<T>>();

  /** Whether a call for the key is under way. */
  has(key: string): boolean {
    return this.pending.has(key);
  }

  run(key: string, fn: () => Promise<T>): Promise<T> {
    let p = this.pending.get(key);
    if (!p) {
      p = fn().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }
}
