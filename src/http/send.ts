/**
 * Writing a streamed body. Under @hono/node-server the stream is piped straight into Node's
 * ServerResponse (no web-stream conversion on the hot path, and an error mid-body destroys the
 * connection, so a client never takes a cut body for a whole one). Elsewhere (app.request in tests)
 * it becomes a web ReadableStream.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';

/** The Node request and response, when running under @hono/node-server (absent under app.request). */
export interface StreamSink {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

/** Sends status, headers and the stream; `onBytes` learns the body bytes actually handed to the socket. */
export function sendStream(env: StreamSink | undefined, status: number, headers: Record<string, string>, stream: Readable, onBytes: (n: number) => void): Response {
  let sent = 0;
  stream.on('data', (c: Buffer) => {
    sent += c.length;
  });
  stream.once('close', () => onBytes(sent));
  const out = env?.outgoing;
  if (out && typeof out.writeHead === 'function') {
    out.writeHead(status, headers);
    pipeline(stream, out).catch(() => {
      // pipeline destroyed both ends: the client sees an aborted transfer, the reader released its hold.
    });
    return RESPONSE_ALREADY_SENT;
  }
  const body = Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>;
  return new Response(body, { status, headers });
}
