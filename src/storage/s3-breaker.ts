/**
 * Fails S3 calls fast while the endpoint does not answer. Without it every blob request against a
 * blackholed endpoint would wait the connect timeout times the SDK's attempts before passing through;
 * with it, after a call got no HTTP answer at all (refused, reset, timed out), calls for the next
 * `openMs` fail at once (the store turns that into StoreUnavailableError, so bytes pass through), and
 * the first call after that tries the endpoint again. Any HTTP answer, even an error, closes it.
 */
import type { S3Client } from '@aws-sdk/client-s3';

export class S3EndpointUnreachableError extends Error {
  constructor(until: number) {
    super(`S3 endpoint did not answer; not tried again until ${new Date(until).toISOString()}`);
    this.name = 'S3EndpointUnreachableError';
  }
}

/** Adds the breaker to the client's middleware stack (once per client). */
export function addOutageBreaker(client: S3Client, openMs: number, now: () => number = Date.now): void {
  let openUntil = 0;
  client.middlewareStack.add(
    (next) => async (args) => {
      if (now() < openUntil) throw new S3EndpointUnreachableError(openUntil);
      try {
        return await next(args);
      } catch (e) {
        // No HTTP status: the request never got an answer (after the SDK's own retries).
        if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === undefined && !(e instanceof S3EndpointUnreachableError)) openUntil = now() + openMs;
        throw e;
      }
    },
    { step: 'initialize', name: 'regmirrorOutageBreaker' },
  );
}
