/**
 * Waiting for events in tests: poll a condition until it holds, with a deadline and a message that
 * says what never happened. Use this instead of sleeping for a guessed time.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** `T` without its falsy members: what `waitFor` resolves with. */
export type Truthy<T> = Exclude<T, null | undefined | false | 0 | 0n | ''>;

/**
 * Polls `check` every `intervalMs` until it returns a truthy value, and resolves with that value.
 * A `check` that throws counts as "not yet" (its last error goes into the timeout message).
 * After `timeoutMs` it rejects with "timed out after N ms waiting for <what>"; `what` may be a
 * function, evaluated then, to describe the state that was seen.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  timeoutMs = 5000,
  what: string | (() => string) = 'the condition',
  intervalMs = 25,
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as Truthy<T>;
      lastErr = undefined;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const described = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}${lastErr ? `: ${String(lastErr)}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** A promise with its resolve at hand: a gate a test opens, or an event a test waits for. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
