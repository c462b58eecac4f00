/**
 * Writing a body. Under @hono/node-server a stream is piped straight into Node's ServerResponse (no
 * web-stream conversion on the hot path, and an error mid-body destroys the connection, so a client
 * never takes a cut body for a whole one), and bytes in memory go out in one writeHead + end. Elsewhere
 * (app.request in tests) both become a web Response.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context } from 'hono';
import type { Env } from './routes.js';

/** The Node request and response, when running under @hono/node-server (absent under app.request). */
export interface StreamSink {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

/**
 * The headers every answer carries (request id, API version: the `frame` the app's middleware sets),
 * added to a head written here. Written in one writeHead with the rest: a header set earlier with
 * setHeader sends Node down its slow path, validating every header of the object again (5 % of a
 * cached manifest's CPU). Under app.request the middleware adds them to the Response instead.
 */
function framed(c: Context<Env>, headers: Record<string, string>): Record<string, string> {
  const frame = c.get('frame');
  return frame ? Object.assign(headers, frame) : headers;
}

/**
 * A body that writes itself into the response reusing its buffers (storage's FileBody, a stored
 * file; transfer's DownloadReader, a download under way: both match this shape without importing
 * it). It ends `out`, or destroys it on a
 * failure, and resolves with the bytes `out` took; it releases its own resources.
 */
export interface WritesItself {
  writeInto(out: Writable): Promise<number>;
}

const writesItself = (s: Readable): s is Readable & WritesItself => typeof (s as Partial<WritesItself>).writeInto === 'function';

/** Sends status, headers and the stream; `onBytes` learns the body bytes actually handed to the socket. */
export function sendStream(c: Context<Env>, status: number, headers: Record<string, string>, stream: Readable, onBytes: (n: number) => void): Response {
  const out = c.env?.outgoing;
  if (out && typeof out.writeHead === 'function' && writesItself(stream)) {
    out.writeHead(status, framed(c, headers));
    void stream.writeInto(out).then(onBytes);
    return RESPONSE_ALREADY_SENT;
  }
  let sent = 0;
  stream.on('data', (chunk: Buffer) => {
    sent += chunk.length;
  });
  stream.once('close', () => onBytes(sent));
  if (out && typeof out.writeHead === 'function') {
    out.writeHead(status, framed(c, headers));
    pipeline(stream, out).catch(() => {
      // pipeline destroyed both ends: the client sees an aborted transfer, the reader released its hold.
    });
    return RESPONSE_ALREADY_SENT;
  }
  const body = Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>;
  return new Response(body, { status, headers });
}

/**
 * Sends status, headers and a body held in memory (a manifest, a small blob; null for a 304). Under
 * Node it skips the web Response the adapter would build and take apart again: a fifth of a cached
 * manifest's CPU in the bench profile. GET only: Hono answers HEAD through the GET route and wraps
 * what it returns in a new Response, which the adapter would then try to write a second time.
 */
export function sendBytes(c: Context<Env>, status: number, headers: Record<string, string>, body: Uint8Array | null): Response {
  const out = c.env?.outgoing;
  if (out && typeof out.writeHead === 'function') {
    out.writeHead(status, framed(c, headers));
    out.end(body ?? undefined);
    return RESPONSE_ALREADY_SENT;
  }
  return new Response(body, { status, headers });
}
