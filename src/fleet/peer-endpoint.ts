/**
 * The internal peer endpoint: `GET /fleet/v1/blobs/<digest>` streams a blob this replica is
 * downloading (live, as the bytes arrive, from any offset with `Range: bytes=N-`) or holds in the
 * store, to another replica whose client asked for it. It runs on its own listener (fleet.listen),
 * never the registry's: the load balancer does not route to it, access control and rate limits of
 * clients do not apply to replicas, and it can be firewalled to the fleet's network. Every request
 * carries the fleet's shared secret (compared in constant time); anything else gets 401.
 *
 * Answers: 200/206 with the bytes (Content-Range when ranged; X-Blob-Size while the size is not yet
 * known); 404 when this replica has neither a download of the digest nor the blob; 401; 416 for a
 * range past the end. A download that fails mid-stream aborts the response (the peer resumes or
 * takes over).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Logger } from '../observability/types.js';
import type { BlobStore } from '../storage/store.js';
import type { Download } from '../transfer/inflight.js';

export const PEER_PATH = '/fleet/v1/blobs/';
export const SECRET_HEADER = 'x-fleet-secret';

export interface PeerEndpointDeps {
  secret: string;
  /** The download of the digest under way (or lingering) on this replica, if any. */
  download(digest: string): Download | undefined;
  store: Pick<BlobStore, 'stat' | 'open'>;
  logger: Logger;
  /** Counts peer reads served, by where the bytes came from. */
  served?(from: 'download' | 'store'): void;
}

/** Constant-time comparison of two secrets (of any length: their hashes are compared). */
export function sameSecret(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function peerHandler(deps: PeerEndpointDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void serve(deps, req, res).catch((e: unknown) => {
      deps.logger.warn({ err: (e as Error).message, url: req.url }, 'peer read failed');
      if (!res.headersSent) send(res, 500, 'internal error');
      else res.destroy();
    });
  };
}

async function serve(deps: PeerEndpointDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const secret = req.headers[SECRET_HEADER];
  if (!sameSecret(Array.isArray(secret) ? secret[0] : secret, deps.secret)) return send(res, 401, 'unauthorized');
  if (req.method !== 'GET') return send(res, 405, 'method not allowed');
  const path = (req.url ?? '').split('?')[0]!;
  if (!path.startsWith(PEER_PATH)) return send(res, 404, 'not found');
  const digest = path.slice(PEER_PATH.length);
  // The digests the registry accepts (registry/reference.ts): sha256 and sha512.
  if (!/^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(digest)) return send(res, 400, 'bad digest');
  const rangeHeader = req.headers.range;
  let start = 0;
  if (rangeHeader !== undefined) {
    const m = /^bytes=(\d+)-$/.exec(rangeHeader);
    if (!m) return send(res, 400, 'only Range: bytes=N- is served');
    start = Number(m[1]);
  }

  let body: Readable | undefined;
  let size: number | undefined;
  let from: 'download' | 'store' = 'download';
  const dl = deps.download(digest);
  if (dl && dl.state !== 'failed') {
    // As a client's request: a pass-through waits for this peer's reader, and is not abandoned before it.
    const unclaim = dl.claim();
    try {
      await dl.ready;
      size = dl.size;
      if (size !== undefined && start > 0 && start >= size) return send(res, 416, 'range past the end');
      body = await dl.open(start);
    } catch {
      body = undefined; // it failed before its first byte: maybe the store has it after all
    } finally {
      unclaim();
    }
  }
  if (!body) {
    const info = await deps.store.stat(digest);
    if (!info) return send(res, 404, 'no download of this blob here');
    size = info.size;
    if (start > 0 && start >= size) return send(res, 416, 'range past the end');
    from = 'store';
    body = await deps.store.open(digest, size > 0 ? { start, end: size - 1 } : undefined);
    if (!body) return send(res, 404, 'no download of this blob here');
  }
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
  if (size !== undefined) {
    headers['content-length'] = String(size - start);
    if (start > 0) headers['content-range'] = `bytes ${start}-${size - 1}/${size}`;
  } else if (start > 0) {
    headers['content-range'] = `bytes ${start}-*/*`;
  }
  if (size === undefined) headers['x-blob-size'] = 'unknown';
  res.writeHead(start > 0 ? 206 : 200, headers);
  deps.served?.(from);
  await pipeline(body, res).catch(() => {
    // The download failed (the reader was destroyed) or the peer left: the response is cut short,
    // never completed with wrong bytes.
    res.destroy();
  });
}

function send(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(`${message}\n`);
}
