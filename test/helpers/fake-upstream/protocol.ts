/**
 * The wire, as every handler of the fake speaks it: one request in flight (`Ctx`), the distribution
 * API's route and name grammar, Accept and Basic parsing, and how answers are written (recording
 * the status sent) — plain bodies, JSON, the OCI error envelope, Go's 404 page.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RecordedRequest, RequestKind } from './types.js';

/** One request in flight: what every handler needs to answer it and record the outcome. */
export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  rec: RecordedRequest;
  head: boolean;
}

export const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
// The distribution spec's repository name grammar.
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
export const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
// Greedy name: the reference part (tag, digest, 'list') never contains '/'.
export const ROUTE_RE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^/]+)$/;

/** What a registry request path asks for (the recorder's `kind`). */
export function routeKind(path: string): RequestKind {
  if (path === '/token') return 'token';
  if (path === '/v2/' || path === '/v2') return 'base';
  const m = ROUTE_RE.exec(path);
  if (!m) return 'other';
  return ({ manifests: 'manifest', blobs: 'blob', tags: 'tags', referrers: 'referrers' } as const)[m[2] as 'manifests' | 'blobs' | 'tags' | 'referrers'];
}

/** Media types named in Accept headers (several headers and q-params allowed); empty when absent. */
export function acceptedTypes(req: IncomingMessage): string[] {
  const raw = req.headers.accept;
  if (!raw) return [];
  return (Array.isArray(raw) ? raw.join(',') : raw)
    .split(',')
    .map((s) => s.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);
}

export function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? undefined : { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

/** Writes status + headers (recording the status) and the body; HEAD keeps Content-Length but no body. */
export function send(ctx: Ctx, status: number, headers: Record<string, string | number>, body?: Buffer | string): void {
  if (ctx.res.destroyed) return;
  const buf = body === undefined ? Buffer.alloc(0) : typeof body === 'string' ? Buffer.from(body) : body;
  ctx.rec.status = status;
  ctx.res.writeHead(status, { 'content-length': buf.length, ...headers });
  ctx.res.end(ctx.head ? undefined : buf);
}

export function json(ctx: Ctx, status: number, value: unknown, headers: Record<string, string | number> = {}): void {
  send(ctx, status, { 'content-type': 'application/json', ...headers }, JSON.stringify(value));
}

/** The OCI error envelope. */
export function ociError(ctx: Ctx, status: number, code: string, message: string, detail: unknown = null, headers: Record<string, string | number> = {}): void {
  json(ctx, status, { errors: [{ code, message, detail }] }, headers);
}

/** What Go's mux (and so distribution) sends for an unknown route. */
export function notFoundPage(ctx: Ctx): void {
  send(ctx, 404, { 'content-type': 'text/plain; charset=utf-8' }, '404 page not found\n');
}

/** Resolves on 'drain', or when the response dies (so a vanished client never leaves us waiting). */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** The request body as UTF-8; throws past `max` bytes. */
export async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new Error('request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
