/**
 * The Node HTTP(S) server around the app. Requests that never reach the app (a path Node's URL
 * handling refuses, a header with CR/LF, an oversized request line) still get an OCI error envelope,
 * never a bare status.
 */
import { STATUS_CODES, createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { RegistryError } from '../registry/errors.js';
import { errorResponse } from './errors.js';
import type { StreamSink } from './send.js';

export interface ServerOptions {
  fetch: (request: Request, env: StreamSink) => Response | Promise<Response>;
  tls?: { cert: Buffer; key: Buffer };
  /**
   * A connection with nothing read or written for this long is destroyed (config
   * `timeouts.clientIdle`; 0 or unset: never). Node counts any socket activity, so a client reading
   * a long body slowly is not cut; one that stopped reading is, and its answer's resources go.
   */
  idleTimeoutMs?: number;
}

/** The most request headers may take, all together; more is a 431. */
const MAX_HEADER_BYTES = 64 * 1024;

export function createMirrorServer(opts: ServerOptions): Server {
  const listener = getRequestListener(opts.fetch as Parameters<typeof getRequestListener>[0], {
    // Hono's adapter refuses some request targets (a backslash, a bad Host) before the app sees them.
    errorHandler: (err: unknown) => {
      const r = errorResponse(new RegistryError('NAME_INVALID', `invalid request: ${(err as Error)?.message ?? 'malformed'}`));
      return new Response(r.body, { status: r.status, headers: { ...r.headers, 'docker-distribution-api-version': 'registry/2.0' } });
    },
  });
  // The listener handles its own errors (errorHandler above); Node only needs it called.
  const handle = (req: IncomingMessage, res: ServerResponse) => void listener(req, res);
  // Headers up to 64 KiB, not Node's 16 KiB: containers-storage asks for up to 1024 ranges in one
  // Range header (22 KiB with a large layer's offsets), and distribution (Go) takes up to 1 MiB.
  const limits = { maxHeaderSize: MAX_HEADER_BYTES };
  const server = opts.tls ? createHttpsServer({ ...limits, cert: opts.tls.cert, key: opts.tls.key }, handle) : createHttpServer(limits, handle);
  // With no 'timeout' listener on the server, request or response, Node destroys the socket.
  server.timeout = opts.idleTimeoutMs ?? 0;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Node's parser refused the request (CR/LF in a header, a request line too long, ...).
    if (!socket.writable) return socket.destroy();
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 'HEADERS_TOO_LARGE' : err.code === 'HPE_URI_TOO_LONG' ? 'URI_TOO_LONG' : 'REQUEST_INVALID';
    const r = errorResponse(new RegistryError(code, `malformed HTTP request (${err.code ?? 'parse error'})`));
    const head = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.end(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'Bad Request'}\r\n${head}content-length: ${Buffer.byteLength(r.body)}\r\nconnection: close\r\n\r\n${r.body}`);
  });
  return server;
}
