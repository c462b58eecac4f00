/**
 * The "CDN" behind blob redirects (127.0.0.2 by default), as Docker Hub's S3/Cloudflare backends
 * behave: signed URLs that expire, XML errors, and a 400 for any request still carrying the
 * registry's Authorization (clients must drop it across the redirect).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { serveBytes } from './bodies.js';
import type { Content } from './content.js';
import { send, type Ctx } from './protocol.js';
import type { Faults } from './types.js';

/** How long a redirect URL stays valid. */
const URL_TTL_SECONDS = 1200;

export interface CdnDeps {
  content: Content;
  faults: Faults;
  now: () => number;
  /** Called for each request refused because it carried Authorization. */
  onRejectedAuth: () => void;
}

/** The signed URL a blob GET is redirected to (valid for 20 minutes on the `now` clock). */
export function cdnLocation(cdnUrl: string, digest: string, now: number): string {
  return `${cdnUrl}/blobs/sha256/${digest.slice(7)}?expires=${Math.floor(now / 1000) + URL_TTL_SECONDS}`;
}

export class Cdn {
  constructor(private readonly deps: CdnDeps) {}

  async handle(ctx: Ctx): Promise<void> {
    const { content, faults, now } = this.deps;
    if (faults.delayMs) await sleep(faults.delayMs);
    const xml = (status: number, code: string, message: string) =>
      send(ctx, status, { 'content-type': 'application/xml' }, `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
    if (ctx.req.method !== 'GET' && ctx.req.method !== 'HEAD') return xml(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
    // S3 behind Docker Hub's redirects rejects a second auth mechanism; clients must drop the registry token.
    if (ctx.req.headers.authorization !== undefined) {
      this.deps.onRejectedAuth();
      return xml(400, 'InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified');
    }
    const expires = Number(ctx.url.searchParams.get('expires'));
    if (!Number.isFinite(expires) || expires * 1000 < now()) return xml(403, 'AccessDenied', 'Request has expired');
    const m = /^\/blobs\/sha256\/([a-f0-9]{64})$/.exec(ctx.url.pathname);
    const blob = m ? content.cdnBlob(`sha256:${m[1]}`) : undefined;
    if (!blob) return xml(404, 'NoSuchKey', 'The specified key does not exist.');
    return serveBytes(ctx, faults, blob, { etag: `"${blob.digest.slice(7)}"` });
  }
}
