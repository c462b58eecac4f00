/**
 * Ports for tests: listen on an ephemeral port, or find one that was free a moment ago for a
 * process that binds it itself (a spawned mirror, a daemon).
 */
import type { Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';

/**
 * Starts `server` listening on `host:port` (port 0: one the kernel picks) and resolves with the
 * port bound; rejects on a listen error (EADDRINUSE when re-listening on a taken port).
 */
export function listenOn(server: Server | HttpServer, host = '127.0.0.1', port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * A port that was free a moment ago on `host`. Another process may take it before the caller
 * binds it (a small race): callers that spawn a server should retry on EADDRINUSE.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const probe = createServer();
  probe.unref();
  const port = await listenOn(probe, host, 0);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
