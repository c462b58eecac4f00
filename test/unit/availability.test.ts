/**
 * AvailabilityGuard (upstream/availability.ts) with an injected clock and timers: which failures open
 * an offline period, how it grows, one probe at a time, and what calls see meanwhile.
 */
import { describe, expect, it } from 'vitest';
import { AvailabilityGuard, signalsOutage, type AvailabilityTimers } from '../../src/upstream/availability.js';
import { UpstreamError } from '../../src/upstream/errors.js';
import { ERROR_TABLE, errorResponse } from '../../src/http/errors.js';
import { RegistryError, type ErrorCode } from '../../src/registry/errors.js';
import { toRegistryError } from '../../src/registry/upstream-errors.js';
import type { Upstream } from '../../src/upstream/types.js';

/** Timers that fire only when the test says so. */
class ManualTimers implements AvailabilityTimers {
  pending: Array<{ fn: () => void; ms: number }> = [];
  setTimeout(fn: () => void, ms: number): unknown {
    const t = { fn, ms };
    this.pending.push(t);
    return t;
  }
  clearTimeout(h: unknown): void {
    this.pending = this.pending.filter((t) => t !== h);
  }
  /** Fires every due timer; returns the delays fired. */
  fire(): number[] {
    const due = this.pending;
    this.pending = [];
    for (const t of due) t.fn();
    return due.map((t) => t.ms);
  }
}

const fail = (kind: UpstreamError['kind'], status?: number) => new UpstreamError(kind, 'hub', `failed ${kind} ${status ?? ''}`, status !== undefined ? { status } : {});

function fakeUpstream() {
  const state = { next: undefined as UpstreamError | undefined, calls: 0, pings: 0, pingResult: undefined as UpstreamError | undefined, pingsRunning: 0, maxPingsRunning: 0 };
  let release: (() => void) | undefined;
  const upstream: Upstream & { ping(): Promise<void> } = {
    name: 'hub',
    headManifest: async () => {
      state.calls++;
      if (state.next) throw state.next;
      return { mediaType: 'x', digest: 'sha256:1', size: 1 };
    },
    getManifest: () => Promise.reject(new Error('unused')),
    headBlob: () => Promise.reject(new Error('unused')),
    getBlob: () => Promise.reject(new Error('unused')),
    getTags: () => Promise.reject(new Error('unused')),
    getReferrers: () => Promise.reject(new Error('unused')),
    ping: async () => {
      state.pings++;
      state.pingsRunning++;
      state.maxPingsRunning = Math.max(state.maxPingsRunning, state.pingsRunning);
      await new Promise<void>((r) => (release = r));
      state.pingsRunning--;
      if (state.pingResult) throw state.pingResult;
    },
  };
  return { upstream, state, finishPing: () => release?.() };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('AvailabilityGuard', () => {
  it('failures that say "not answering" open a period; answers about one request do not', () => {
    for (const e of [fail('unreachable'), fail('timeout'), fail('status', 502), fail('status', 503), fail('status', 504)]) expect(signalsOutage(e)).toBe(true);
    for (const e of [fail('status', 404), fail('status', 429), fail('status', 500), fail('status', 401), fail('protocol'), fail('digest_mismatch'), new Error('x')]) expect(signalsOutage(e)).toBe(false);
  });

  it('while offline calls fail at once with Retry-After; the period doubles per failed probe up to the max; one probe at a time; success closes it', async () => {
    const clock = { now: 1_000_000 };
    const timers = new ManualTimers();
    const transitions: string[] = [];
    const logs: string[] = [];
    const { upstream, state, finishPing } = fakeUpstream();
    const guard = new AvailabilityGuard(upstream, {
      offlineMinMs: 5000,
      offlineMaxMs: 15_000,
      now: () => clock.now,
      timers,
      logger: { info: (_o, m) => logs.push(m ?? ''), warn: (_o, m) => logs.push(m ?? '') },
      observer: { transition: (_n, to) => transitions.push(to), probe: (_n, ok) => transitions.push(ok ? 'probe ok' : 'probe failed') },
    });

    // A 404 is an answer: still online.
    state.next = fail('status', 404);
    await expect(guard.headManifest('r', 't', [])).rejects.toThrow();
    expect(guard.snapshot().state).toBe('online');

    state.next = fail('timeout');
    await expect(guard.headManifest('r', 't', [])).rejects.toMatchObject({ kind: 'timeout' });
    expect(guard.snapshot()).toMatchObject({ state: 'offline', retryAfter: 5, periodMs: 5000 });
    expect(state.calls).toBe(2);

    // Offline: no call reaches upstream; the error says when to come back.
    clock.now += 2000;
    const e = await guard.headManifest('r', 't', []).catch((x: unknown) => x as UpstreamError);
    expect(e).toMatchObject({ kind: 'unreachable', assumedOffline: true, retryAfter: 3 });
    expect(state.calls).toBe(2);

    // Probes: failed ones double the period (5 s, 10 s, 15 s cap); never two at once.
    state.pingResult = fail('unreachable');
    const periods: number[] = [];
    for (let i = 0; i < 3; i++) {
      periods.push(...timers.fire());
      await flush();
      expect(guard.snapshot().probing).toBe(true);
      finishPing();
      await flush();
    }
    periods.push(...timers.pending.map((t) => t.ms));
    expect(periods).toEqual([5000, 10_000, 15_000, 15_000]);
    expect(state.maxPingsRunning).toBe(1);

    state.pingResult = undefined;
    timers.fire();
    await flush();
    finishPing();
    await flush();
    expect(guard.snapshot()).toEqual({ state: 'online', probing: false });
    expect(transitions).toEqual(['offline', 'probe failed', 'probe failed', 'probe failed', 'probe ok', 'online']);
    expect(logs).toHaveLength(2); // one line per transition, none per request
    state.next = undefined;
    await expect(guard.headManifest('r', 't', [])).resolves.toMatchObject({ digest: 'sha256:1' });
    expect(timers.pending).toEqual([]);

    // A new outage starts again from the shortest period.
    state.next = fail('status', 503);
    await expect(guard.headManifest('r', 't', [])).rejects.toThrow();
    expect(guard.snapshot()).toMatchObject({ state: 'offline', periodMs: 5000 });
    guard.close();
    expect(timers.pending).toEqual([]);
  });

  it('a call waiting past the budget with no answer since makes the offered budget 0; any answer restores it', async () => {
    const clock = { t: 0 };
    let release: ((v: { mediaType: string; digest: string; size: number }) => void) | undefined;
    const { upstream } = fakeUpstream();
    upstream.headManifest = () => new Promise((r) => (release = r));
    const guard = new AvailabilityGuard(upstream, { offlineMinMs: 5000, offlineMaxMs: 5000, now: () => 0, elapsed: () => clock.t, timers: new ManualTimers(), logger: { info() {}, warn() {} }, revalidateBudgetMs: 2000 });
    expect(guard.revalidateBudgetMs).toBe(2000);
    const hanging = guard.headManifest('r', 't', []);
    clock.t = 1500;
    expect(guard.revalidateBudgetMs).toBe(2000); // slow, not yet past the budget
    clock.t = 2500;
    expect(guard.revalidateBudgetMs).toBe(0); // nothing back for longer than the budget
    expect(guard.snapshot().state).toBe('online'); // not offline: only a failure does that
    release!({ mediaType: 'x', digest: 'sha256:1', size: 1 });
    await hanging;
    expect(guard.revalidateBudgetMs).toBe(2000);
  });

  it('offlineMinMs 0 never marks offline', async () => {
    const { upstream, state } = fakeUpstream();
    const guard = new AvailabilityGuard(upstream, { offlineMinMs: 0, offlineMaxMs: 0, now: () => 0, timers: new ManualTimers(), logger: { info() {}, warn() {} } });
    state.next = fail('unreachable');
    for (let i = 0; i < 3; i++) await expect(guard.headManifest('r', 't', [])).rejects.toMatchObject({ assumedOffline: false });
    expect(state.calls).toBe(3);
    expect(guard.snapshot().state).toBe('online');
  });

  it('every 503 and 429 the mirror answers carries Retry-After; an assumed-offline failure says when the next probe is', () => {
    for (const [code, entry] of Object.entries(ERROR_TABLE)) {
      if (entry.status !== 503 && entry.status !== 429) continue;
      expect(errorResponse(new RegistryError(code as ErrorCode, 'x')).headers['retry-after'], code).toMatch(/^\d+$/);
    }
    const offline = new UpstreamError('unreachable', 'hub', 'assumed offline', { retryAfter: 7, assumedOffline: true });
    const r = errorResponse(toRegistryError(offline, 'manifest'));
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('7');
  });
});
