/** Every request the fake receives, recorded with the status it was answered, and counted by filter. */
import type { IncomingMessage } from 'node:http';
import { routeKind } from './protocol.js';
import type { CountFilter, RecordedRequest, RequestKind } from './types.js';

export class Recorder {
  /** In arrival order; the array is cleared in place by `clear()`. */
  readonly requests: RecordedRequest[] = [];

  /** Records `req` as it arrives (status 0 until headers go out) and returns the record. */
  record(req: IncomingMessage, url: URL, server: 'registry' | 'cdn'): RecordedRequest {
    const kind: RequestKind = server === 'cdn' ? 'cdn' : routeKind(url.pathname);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search.replace(/^\?/, ''),
      host: req.headers.host ?? '',
      headers: { ...req.headers },
      status: 0,
      server: kind === 'token' ? 'token' : server,
      kind,
    };
    this.requests.push(rec);
    return rec;
  }

  count(filter: CountFilter = {}): number {
    return this.requests.filter(
      (r) =>
        (filter.method === undefined || r.method === filter.method.toUpperCase()) &&
        (filter.kind === undefined || r.kind === filter.kind) &&
        (filter.server === undefined || r.server === filter.server) &&
        (filter.status === undefined || r.status === filter.status) &&
        (filter.path === undefined || (typeof filter.path === 'string' ? r.path === filter.path : filter.path.test(r.path))),
    ).length;
  }

  clear(): void {
    this.requests.length = 0;
  }
}
