/**
 * The client side of the peer endpoint (peer-endpoint.ts): reads a blob another replica is
 * downloading, from an offset, as an upstream-like body the transfer engine copies and verifies.
 */
import { request, type Dispatcher } from 'undici';
import type { BlobBody } from '../upstream/types.js';
import { PEER_PATH, SECRET_HEADER } from './peer-endpoint.js';

/** What a peer answered. */
export type PeerAnswer =
  | { kind: 'body'; body: BlobBody }
  /** It has no download of the digest and no stored copy (finished and forgot, or never started). */
  | { kind: 'absent' }
  /** Refused our secret: a misconfigured fleet; the caller stops asking peers. */
  | { kind: 'refused'; status: number };

export interface PeerClientOptions {
  dispatcher: Dispatcher;
  secret: string;
  /** Milliseconds to wait for the peer's headers (it answers once the owner's upstream did). */
  headersTimeoutMs: number;
  /** Milliseconds without a byte before the body counts as cut (then resumed at the next offset). */
  bodyIdleMs: number;
}

export class PeerClient {
  constructor(private readonly opts: PeerClientOptions) {}

  /** GET the blob from `baseUrl` at `offset`. Throws on network errors and 5xx (the caller retries). */
  async fetch(baseUrl: string, digest: string, offset: number): Promise<PeerAnswer> {
    const res = await request(`${baseUrl.replace(/\/+$/, '')}${PEER_PATH}${digest}`, {
      method: 'GET',
      dispatcher: this.opts.dispatcher,
      headers: { [SECRET_HEADER]: this.opts.secret, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
      headersTimeout: this.opts.headersTimeoutMs,
      bodyTimeout: this.opts.bodyIdleMs,
    });
    const { statusCode: status, headers, body } = res;
    if (status === 404) {
      body.resume();
      return { kind: 'absent' };
    }
    if (status === 401 || status === 403) {
      body.resume();
      return { kind: 'refused', status };
    }
    if (status !== 200 && status !== 206) {
      body.resume();
      throw new Error(`peer ${baseUrl} answered ${status}`);
    }
    let start = 0;
    let size: number | undefined;
    const cr = header(headers['content-range']);
    const m = cr ? /^bytes (\d+)-(?:\d+|\*)\/(\d+|\*)$/.exec(cr) : null;
    if (status === 206 && m) {
      start = Number(m[1]);
      size = m[2] === '*' ? undefined : Number(m[2]);
    } else if (status === 200) {
      const len = header(headers['content-length']);
      size = len !== undefined ? Number(len) : undefined;
    } else {
      body.resume();
      throw new Error(`peer ${baseUrl} sent 206 without a usable Content-Range`);
    }
    // A peer that does not know the size yet (an upstream without length) says it in its own header.
    const total = header(headers['x-blob-size']);
    if (size === undefined && total !== undefined && /^\d+$/.test(total)) size = Number(total);
    return { kind: 'body', body: { start, size, body, cancel: () => body.destroy() } };
  }
}

const header = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
