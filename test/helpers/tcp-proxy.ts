/**
 * A TCP proxy on loopback in front of a server (an S3 endpoint, Redis), so a test can take the
 * server away from one client without stopping it for the others: `cut()` drops every connection and
 * refuses new ones until `restore()`. `cutAfterUpBytes` cuts by itself once that many bytes went from
 * clients to the server (an upload under way).
 */
import { connect, createServer, type Socket } from 'node:net';
import { listenOn } from './ports.js';

export interface TcpProxy {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Bytes clients sent through the proxy so far. */
  readonly upBytes: number;
  readonly isCut: boolean;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }, opts: { cutAfterUpBytes?: number } = {}): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let cut = false;
  let upBytes = 0;
  const doCut = () => {
    cut = true;
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  const server = createServer((client) => {
    if (cut) return void client.destroy();
    const upstream = connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (d: Buffer) => {
      upBytes += d.length;
      if (opts.cutAfterUpBytes !== undefined && upBytes >= opts.cutAfterUpBytes && !cut) doCut();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listenOn(server);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get upBytes() {
      return upBytes;
    },
    get isCut() {
      return cut;
    },
    cut: doCut,
    restore() {
      cut = false;
      opts.cutAfterUpBytes = undefined;
    },
    close: () => {
      doCut();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
