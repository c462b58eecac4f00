/** Last observed reachability of each upstream, for /readyz. Fed by the upstream observer. */
import type { ErrorClass, RequestKind, UpstreamObserver } from './types.js';

export class UpstreamHealth {
  private readonly state = new Map<string, 'up' | 'down'>();

  constructor(private readonly names: string[]) {}

  observer(): Pick<UpstreamObserver, 'request'> {
    return {
      request: (upstream: string, _kind: RequestKind, status: number, _s: number, errorClass: ErrorClass | undefined) => {
        const down = status === 0 || status >= 500 || errorClass === 'timeout' || errorClass === 'network';
        this.state.set(upstream, down ? 'down' : 'up');
      },
    };
  }

  /** Records a state learnt otherwise (an availability transition: offline is 'down', back online is 'up'). */
  set(upstream: string, state: 'up' | 'down'): void {
    this.state.set(upstream, state);
  }

  snapshot(): Record<string, 'up' | 'down' | 'unknown'> {
    const out: Record<string, 'up' | 'down' | 'unknown'> = {};
    for (const n of this.names) out[n] = this.state.get(n) ?? 'unknown';
    return out;
  }
}
