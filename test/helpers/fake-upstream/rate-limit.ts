/**
 * Docker Hub's anonymous pull limit: manifest GETs count as pulls, HEADs are free, and both report
 * `RateLimit-Limit` / `RateLimit-Remaining`; at zero a GET gets 429 TOOMANYREQUESTS.
 */

export interface PullLimit {
  limit: number;
  remaining: number;
}

const RATE_WINDOW = 'w=21600';
export const PULL_LIMIT_MESSAGE =
  'You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit';

/**
 * Charges one manifest request against `rl` (mutated: a GET takes one from `remaining`). Returns the
 * headers the answer carries, and `refused` when it must be a 429 instead. No limit: no headers.
 */
export function chargePull(rl: PullLimit | undefined, head: boolean): { refused: boolean; headers: Record<string, string | number> } {
  if (!rl) return { refused: false, headers: {} };
  if (!head && rl.remaining <= 0) {
    return {
      refused: true,
      headers: { 'ratelimit-limit': `${rl.limit};${RATE_WINDOW}`, 'ratelimit-remaining': `0;${RATE_WINDOW}`, 'retry-after': 60 },
    };
  }
  if (!head) rl.remaining--;
  return {
    refused: false,
    headers: { 'ratelimit-limit': `${rl.limit};${RATE_WINDOW}`, 'ratelimit-remaining': `${rl.remaining};${RATE_WINDOW}`, 'docker-ratelimit-source': '127.0.0.1' },
  };
}
