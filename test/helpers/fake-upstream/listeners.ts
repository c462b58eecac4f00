/**
 * The fake's listening sockets: refused connections on demand (`goDown`), back on the same ports
 * (`goUp`), and shutdown. Transitions run one after another in call order.
 */
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { listenOn } from '../ports.js';

export interface Bound {
  server: Server;
  host: string;
  port: number;
}

export class Listeners {
  private listening = true;
  private transition: Promise<void> = Promise.resolve();

  /** `bound`: servers already listening on their host:port. */
  constructor(private readonly bound: Bound[]) {}

  get up(): boolean {
    return this.listening;
  }

  /** Closes every listener and drops open connections: new connections are refused. */
  goDown(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (!this.listening) return;
      this.listening = false;
      await Promise.all(this.bound.map((b) => closeServer(b.server)));
      // Let in-process clients read the FINs of their pooled keep-alive sockets, so their next request
      // dials (and is refused) instead of failing with "other side closed" on a dead socket.
      await sleep(20);
    });
    return this.transition;
  }

  /** Listens again on the same host:port pairs. */
  goUp(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (this.listening) return;
      for (const b of this.bound) await listenOn(b.server, b.host, b.port);
      this.listening = true;
    });
    return this.transition;
  }

  async close(): Promise<void> {
    await this.transition;
    this.listening = false;
    await Promise.all(this.bound.map((b) => closeServer(b.server)));
  }
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
