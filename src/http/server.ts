/**
 * The Node HTTP(S) server around the app. Requests that never reach the app (a path Node's URL
 * handling refuses, a header with CR/LF, an oversized request line) still get an OCI error envelope,
 * never a bare status.
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { RegistryError } from '../registry/errors.js';
import { errorResponse } from './errors.js';
import type { StreamSink } from './send.js';

export interface ServerOptions {
  fetch: (request: Request, env: StreamSink) => Response | Promise<Response>;
  tls?: { cert: Buffer; key: Buffer };
}

export function createMirrorServer(opts: ServerOptions): Server {
  const listener = getRequestListener(opts.fetch as Parameters<typeof getRequestListener>[0], {
    // Hono's adapter refuses some request targets (a backslash, a bad Host) before the app sees them.
    errorHandler: (err: unknown) => {
      const r = errorResponse(new RegistryError('NAME_INVALID', `invalid request: ${(err as Error)?.message ?? 'malformed'}`, { status: 400 }));
      return new Response(r.body, { status: r.status, headers: { ...r.headers, 'docker-distribution-api-version': 'registry/2.0' } });
    },
  });
  const server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, listener) : createHttpServer(listener);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Node's parser refused the request (CR/LF in a header, a request line too long, ...).
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_URI_TOO_LONG' ? 414 : 400;
    const body = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: `malformed HTTP request (${err.code ?? 'parse error'})` }] });
    socket.end(
      `HTTP/1.1 ${status} Bad Request\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  return server as Server;
}
