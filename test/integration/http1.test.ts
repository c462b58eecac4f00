/**
 * The download thread's HTTP/1.1 client (src/offload/http1.cjs) against real loopback servers: a
 * scripted TCP server for the exact bytes of framing, malformed and hostile answers, and Node's TLS
 * server for https. What the handler receives, and what the server saw (connections, requests).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDir, hasTool, makeTempDir, run } from '../e2e/harness/tools.js';
import { sha256Hex } from '../helpers/digest.js';
import { listenOn } from '../helpers/ports.js';
import { requireTools } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';

interface Controller {
  pause(): void;
  resume(): void;
  abort(e: Error): void;
}
interface Handler {
  onRequestStart?(c: Controller): void;
  onResponseStart?(c: Controller, status: number, headers: Record<string, string | string[]>): void;
  onResponseData?(c: Controller, chunk: Buffer): void;
  onResponseEnd?(c: Controller): void;
  onResponseError?(c: Controller, e: Error & { code?: string }): void;
}
interface ClientOptions {
  connectTimeout: number;
  keepAliveTimeout: number;
  connections: number;
  tls?: { ca: Buffer };
}
interface Client {
  dispatch(opts: { origin: string; path: string; method?: string; headers?: Record<string, string>; headersTimeout?: number; bodyTimeout?: number }, h: Handler): void;
  close(): void;
}
const { Http1Client, READ_BUFFER } = createRequire(import.meta.url)('../../src/offload/http1.cjs') as {
  Http1Client: new (o: ClientOptions) => Client;
  READ_BUFFER: number;
};

interface Answer {
  status?: number;
  headers?: Record<string, string | string[]>;
  body: Buffer;
  error?: Error & { code?: string };
  ends: number;
  chunks: number;
}

/** One GET; resolves once the handler heard the end or the error. `on` adds to the handler. */
function get(client: Client, origin: string, path = '/blob', opts: { headers?: Record<string, string>; headersTimeout?: number; bodyTimeout?: number } = {}, on: Handler = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const a: Answer = { body: Buffer.alloc(0), ends: 0, chunks: 0 };
    const finish = () => {
      a.body = Buffer.concat(parts);
      // Let a second end or error show up before the test looks.
      setImmediate(() => resolve(a));
    };
    client.dispatch(
      { origin, path, headers: opts.headers ?? {}, headersTimeout: opts.headersTimeout ?? 5000, bodyTimeout: opts.bodyTimeout ?? 5000 },
      {
        onRequestStart(c) {
          on.onRequestStart?.(c);
        },
        onResponseStart(c, status, headers) {
          a.status = status;
          a.headers = headers;
          on.onResponseStart?.(c, status, headers);
        },
        onResponseData(c, chunk) {
          // The chunk is a view of the client's read buffer: kept only as a copy.
          parts.push(Buffer.from(chunk));
          a.chunks++;
          on.onResponseData?.(c, chunk);
        },
        onResponseEnd() {
          a.ends++;
          if (a.ends === 1 && a.error === undefined) finish();
        },
        onResponseError(_c, e) {
          a.error = e;
          if (a.ends === 0) finish();
        },
      },
    );
  });
}

/** A TCP server answering each request (a GET head) with whatever `answer` writes. */
interface Scripted {
  origin: string;
  connections: Socket[];
  /** Request heads in arrival order, with the connection each came on. */
  requests: { head: string; conn: number }[];
  close(): Promise<void>;
}
async function scripted(answer: (socket: Socket, req: { head: string; conn: number; nth: number }) => void): Promise<Scripted> {
  const s: Scripted = { origin: '', connections: [], requests: [], close: async () => undefined };
  const server = createServer((socket) => {
    const conn = s.connections.push(socket) - 1;
    socket.on('error', () => undefined);
    let buf = '';
    let nth = 0;
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      for (let at = buf.indexOf('\r\n\r\n'); at >= 0; at = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, at);
        buf = buf.slice(at + 4);
        s.requests.push({ head, conn });
        answer(socket, { head, conn, nth: nth++ });
      }
    });
  });
  const port = await listenOn(server);
  s.origin = `http://127.0.0.1:${port}`;
  s.close = () =>
    new Promise<void>((resolve) => {
      for (const c of s.connections) c.destroy();
      server.close(() => resolve());
    });
  return s;
}

const ok = (body: Buffer | string, extra = '') => Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n`), Buffer.from(body)]);

const servers: Scripted[] = [];
const clients: Client[] = [];
const client = (o: Partial<ClientOptions> = {}) => {
  const c = new Http1Client({ connectTimeout: 2000, keepAliveTimeout: 30_000, connections: 8, ...o });
  clients.push(c);
  return c;
};
const serve = async (answer: Parameters<typeof scripted>[0]) => {
  const s = await scripted(answer);
  servers.push(s);
  return s;
};
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('the download thread HTTP/1.1 client', () => {
  it('receives a Content-Length body intact in views of one read buffer, sends the headers, and reuses the connection', async () => {
    const body = randomBytes(8 * 1024 * 1024 + 123);
    const s = await serve((socket) => socket.write(ok(body, 'x-one: a\r\nX-Two: b\r\nx-two: c\r\n')));
    const c = client();
    const views = new Set<ArrayBuffer>();
    const a = await get(c, s.origin, '/v2/x/blobs/sha256:ab?x=1', { headers: { authorization: 'Bearer t', range: 'bytes=0-' } }, { onResponseData: (_c, chunk) => views.add(chunk.buffer as ArrayBuffer) });
    expect(a.error).toBeUndefined();
    expect(a.status).toBe(200);
    expect(a.ends).toBe(1);
    expect(sha256Hex(a.body)).toBe(sha256Hex(body));
    expect(a.headers).toMatchObject({ 'x-one': 'a', 'x-two': ['b', 'c'], 'content-length': String(body.length) });
    // Every chunk is a view of the same buffer, read into at most READ_BUFFER at a time.
    expect(views.size).toBe(1);
    expect(a.chunks).toBeGreaterThanOrEqual(Math.ceil(body.length / READ_BUFFER));
    expect(s.requests[0]!.head).toMatch(/^GET \/v2\/x\/blobs\/sha256:ab\?x=1 HTTP\/1\.1\r\n/);
    expect(s.requests[0]!.head).toContain(`\r\nhost: ${new URL(s.origin).host}\r\n`);
    expect(s.requests[0]!.head).toContain('\r\nauthorization: Bearer t\r\n');
    expect(s.requests[0]!.head.endsWith('\r\nrange: bytes=0-')).toBe(true);
    const b = await get(c, s.origin);
    expect(sha256Hex(b.body)).toBe(sha256Hex(body));
    expect(s.connections).toHaveLength(1);
    expect(s.requests.map((r) => r.conn)).toEqual([0, 0]);
  });

  it('decodes a chunked body however its pieces arrive, with extensions and trailers, and reuses the connection', async () => {
    const data = randomBytes(300_000);
    const pieces = [data.subarray(0, 1), data.subarray(1, 70_000), data.subarray(70_000)];
    const wire = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'),
      ...pieces.flatMap((p, i) => [Buffer.from(`${p.length.toString(16)}${i === 1 ? ';ext=1' : ''}\r\n`), p, Buffer.from('\r\n')]),
      Buffer.from('0\r\nx-trailer: t\r\n\r\n'),
    ]);
    // The same bytes in pieces cut everywhere that matters: inside a size line, between CR and LF, inside the trailers.
    const cuts = [3, 45, 46, 47, 48, 49, 50, 60_000, wire.length - 20, wire.length - 5, wire.length - 1];
    const s = await serve((socket, req) => {
      if (req.nth === 0) return void socket.write(wire);
      void (async () => {
        let from = 0;
        for (const cut of [...cuts, wire.length]) {
          socket.write(wire.subarray(from, cut));
          from = cut;
          await new Promise((r) => setImmediate(r));
        }
      })();
    });
    const c = client();
    const whole = await get(c, s.origin);
    const cut = await get(c, s.origin);
    for (const a of [whole, cut]) {
      expect(a.error).toBeUndefined();
      expect(a.ends).toBe(1);
      expect(a.body.equals(data)).toBe(true);
    }
    expect(s.connections).toHaveLength(1);
  });

  it('ends a body without framing at the close, and does not reuse that connection', async () => {
    const s = await serve((socket) => socket.end('HTTP/1.1 200 OK\r\n\r\nuntil the end'));
    const c = client();
    const a = await get(c, s.origin);
    expect(a.error).toBeUndefined();
    expect(a.body.toString()).toBe('until the end');
    await get(c, s.origin);
    expect(s.connections).toHaveLength(2);
  });

  it('skips interim 1xx answers; 204 and 304 have no body and keep the connection', async () => {
    const s = await serve((socket, req) => {
      if (req.nth === 0) socket.write('HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n' + 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi');
      else if (req.nth === 1) socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      else socket.write('HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n');
    });
    const c = client();
    const a = await get(c, s.origin);
    expect([a.status, a.body.toString(), a.headers?.link]).toEqual([200, 'hi', undefined]);
    expect((await get(c, s.origin)).status).toBe(204);
    const n = await get(c, s.origin);
    expect([n.status, n.body.length, n.ends]).toEqual([304, 0, 1]);
    expect(s.connections).toHaveLength(1);
  });

  it('sends a GET again on a new connection when a reused one closes before answering, once', async () => {
    const s = await serve((socket, req) => {
      if (req.conn === 0 && req.nth === 1) return void socket.destroy();
      socket.write(ok('fine'));
    });
    const c = client();
    expect((await get(c, s.origin)).body.toString()).toBe('fine');
    const a = await get(c, s.origin);
    expect(a.error).toBeUndefined();
    expect(a.body.toString()).toBe('fine');
    expect(s.requests.map((r) => r.conn)).toEqual([0, 0, 1]);
  });

  it('sends it again on a new connection, not on another idle one the server closed at the same time', async () => {
    // Two connections go idle; the server then drops every request on either (as at its keep-alive timeout).
    const s = await serve((socket, req) => {
      if (req.conn < 2 && req.nth > 0) return void socket.destroy();
      setTimeout(() => socket.write(ok('fine')), 20);
    });
    const c = client();
    await Promise.all([get(c, s.origin), get(c, s.origin)]);
    expect(s.connections).toHaveLength(2);
    const a = await get(c, s.origin);
    expect(a.error).toBeUndefined();
    expect(a.body.toString()).toBe('fine');
    expect(s.requests.map((r) => r.conn).slice(2)).toEqual([expect.any(Number), 2]);
  });

  it('keeps the head timeout and the pause of a request paused before it had a connection', async () => {
    const silent = await serve(() => undefined);
    const c = client();
    const timedOut = await get(c, silent.origin, '/x', { headersTimeout: 150 }, { onRequestStart: (controller) => controller.pause() });
    expect(timedOut.error?.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    let server: Socket | undefined;
    const s = await serve((socket) => {
      server = socket;
      socket.write(ok(randomBytes(8 * 1024 * 1024)));
    });
    let ctl: Controller | undefined;
    const pending = get(c, s.origin, '/blob', {}, { onRequestStart: (controller) => (ctl = controller, controller.pause()) });
    // Paused from the start: the server's writes back up before the head has even been read.
    await waitFor(() => server !== undefined && server.writableLength > 0, 5000, 'the server to be held up');
    ctl!.resume();
    const a = await pending;
    expect([a.error, a.status, a.body.length]).toEqual([undefined, 200, 8 * 1024 * 1024]);
  });

  it('keeps response headers named like object properties as data', async () => {
    const s = await serve((socket) => socket.write('HTTP/1.1 200 OK\r\n__proto__: a\r\nconstructor: b\r\ncontent-length: 0\r\n\r\n'));
    const a = await get(client(), s.origin);
    expect(a.error).toBeUndefined();
    expect([a.headers?.['__proto__'], a.headers?.constructor]).toEqual(['a', 'b']);
  });

  it('does not send it again once part of the answer came, or on a new connection', async () => {
    const s = await serve((socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'));
    const c = client();
    const a = await get(c, s.origin);
    expect(a.error?.code).toBe('UND_ERR_SOCKET');
    expect(a.body.toString()).toBe('abc');
    expect(a.ends).toBe(0);
    const refused = await serve((socket) => socket.destroy());
    const b = await get(c, refused.origin);
    expect(b.error?.code).toBe('UND_ERR_SOCKET');
    expect(s.requests).toHaveLength(1);
    expect(refused.requests).toHaveLength(1);
  });

  it('refuses malformed and hostile answers with a clear error', async () => {
    const answers: Record<string, string> = {
      status: 'HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n',
      notHttp: 'SSH-2.0-OpenSSH\r\n\r\n',
      conflicting: 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!',
      negative: 'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
      fold: 'HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n',
      badName: 'HTTP/1.1 200 OK\r\nx a: 1\r\ncontent-length: 0\r\n\r\n',
      chunkSize: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
      hugeChunk: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1000000000000000\r\n',
      chunkEnd: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY',
      bareLf: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n',
      upgrade: 'HTTP/1.1 101 Switching Protocols\r\n\r\n',
    };
    const s = await serve((socket, req) => socket.write(answers[req.head.split(' ')[1]!.slice(1)]!));
    const c = client();
    const codes: Record<string, string | undefined> = {};
    for (const k of Object.keys(answers)) codes[k] = (await get(c, s.origin, `/${k}`)).error?.code;
    expect(codes).toEqual({
      status: 'HPE_INVALID_STATUS',
      notHttp: 'HPE_INVALID_STATUS',
      conflicting: 'HPE_UNEXPECTED_CONTENT_LENGTH',
      negative: 'HPE_UNEXPECTED_CONTENT_LENGTH',
      fold: 'HPE_INVALID_HEADER_TOKEN',
      badName: 'HPE_INVALID_HEADER_TOKEN',
      chunkSize: 'HPE_INVALID_CHUNK_SIZE',
      hugeChunk: 'HPE_INVALID_CHUNK_SIZE',
      chunkEnd: 'HPE_STRICT',
      bareLf: 'HPE_STRICT',
      upgrade: 'HPE_INVALID_STATUS',
    });
    // A failed answer's connection is never reused.
    expect(s.connections).toHaveLength(Object.keys(answers).length);
  });

  it('refuses a head longer than 64 KiB, and one that never ends, without holding it all', async () => {
    const s = await serve((socket, req) => {
      if (req.nth > 0 || req.conn > 0) return void socket.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70_000)}\r\ncontent-length: 0\r\n\r\n`);
      socket.write('HTTP/1.1 200 OK\r\n');
      const line = `x-pad: ${'b'.repeat(1000)}\r\n`;
      for (let i = 0; i < 200; i++) socket.write(line);
    });
    const c = client();
    expect((await get(c, s.origin)).error?.code).toBe('UND_ERR_HEADERS_OVERFLOW');
    expect((await get(c, s.origin)).error?.code).toBe('UND_ERR_HEADERS_OVERFLOW');
  });

  it('does not reuse a connection that sent more than its answer, or framed it both ways', async () => {
    const s = await serve((socket, req) => {
      if (req.nth === 0 && req.conn === 0) socket.write(Buffer.concat([ok('one'), Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nspare')]));
      else if (req.conn === 1) socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\ntwo\r\n0\r\n\r\n');
      else socket.write(ok('three'));
    });
    const c = client();
    expect((await get(c, s.origin)).body.toString()).toBe('one');
    expect((await get(c, s.origin)).body.toString()).toBe('two');
    expect((await get(c, s.origin)).body.toString()).toBe('three');
    expect(s.requests.map((r) => r.conn)).toEqual([0, 1, 2]);
  });

  it('times out a head that does not come and a body that stops, with undici’s codes', async () => {
    const s = await serve((socket, req) => {
      if (req.head.includes('/body')) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc');
    });
    const c = client();
    expect((await get(c, s.origin, '/head', { headersTimeout: 150 })).error?.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    const b = await get(c, s.origin, '/body', { bodyTimeout: 150 });
    expect(b.error?.code).toBe('UND_ERR_BODY_TIMEOUT');
    expect(b.body.toString()).toBe('abc');
  });

  it('pauses: stops reading the socket and the body timeout until resumed; then the whole body arrives', async () => {
    const body = randomBytes(16 * 1024 * 1024);
    let server: Socket | undefined;
    const s = await serve((socket) => {
      server = socket;
      socket.write(ok(body));
    });
    const c = client();
    let ctl: Controller | undefined;
    const pending = get(c, s.origin, '/blob', { bodyTimeout: 300 }, { onResponseStart: (controller) => (ctl = controller, controller.pause()) });
    // The server's writes back up: the client reads nothing more.
    await waitFor(() => server !== undefined && server.writableLength > 0 && ctl !== undefined, 5000, 'the server to be held up');
    const held = server!.writableLength;
    await new Promise((r) => setTimeout(r, 500)); // longer than the body timeout
    expect(server!.writableLength).toBe(held);
    ctl!.resume();
    const a = await pending;
    expect(a.error).toBeUndefined();
    expect(sha256Hex(a.body)).toBe(sha256Hex(body));
  });

  it('aborts with the reason given, and closes that connection', async () => {
    const s = await serve((socket) => socket.write(ok(randomBytes(4 * 1024 * 1024))));
    const c = client();
    const a = await get(c, s.origin, '/blob', {}, { onResponseData: (controller) => controller.abort(Object.assign(new Error('enough'), { code: 'MINE' })) });
    expect(a.error?.code).toBe('MINE');
    expect(a.chunks).toBe(1);
    await waitFor(() => s.connections[0]!.destroyed || s.connections[0]!.readableEnded, 5000, 'the server to see the close');
  });

  it('keeps to its connection limit per origin; the others wait their turn', async () => {
    const s = await serve((socket) => setTimeout(() => socket.write(ok('x'.repeat(1000))), 20));
    const c = client({ connections: 2 });
    const all = await Promise.all(Array.from({ length: 6 }, () => get(c, s.origin)));
    expect(all.every((a) => a.body.length === 1000 && a.error === undefined)).toBe(true);
    expect(s.connections).toHaveLength(2);
    expect(s.requests).toHaveLength(6);
  });

  it('refuses a request it could not send safely, before anything is sent', async () => {
    const c = client();
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x', headers: { 'x-a': 'one\r\nx-b: two' } }, {})).toThrow(/invalid value for header x-a/);
    // Written as latin1, U+010D U+010A would reach the wire as CR LF (a token realm's token is any JSON string).
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x', headers: { authorization: 'Bearer a\u010d\u010aGET /smuggled HTTP/1.1' } }, {})).toThrow(/invalid value for header authorization/);
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x', headers: { 'transfer-encoding': 'chunked' } }, {})).toThrow(/not sent on a GET/);
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x\u010a', headers: {} }, {})).toThrow(/invalid request path/);
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x y', headers: {} }, {})).toThrow(/invalid request path/);
    expect(() => c.dispatch({ origin: 'http://127.0.0.1:1', path: '/x', method: 'POST' }, {})).toThrow(/only GET/);
    expect(() => c.dispatch({ origin: 'ftp://127.0.0.1:1', path: '/x' }, {})).toThrow(/unsupported protocol/);
  });

  it('reports a refused connection with the socket’s code', async () => {
    const gone = await serve(() => undefined);
    const origin = gone.origin;
    await gone.close();
    servers.splice(servers.indexOf(gone), 1);
    expect((await get(client(), origin)).error?.code).toBe('ECONNREFUSED');
  });
});

const TLS_SKIP = requireTools('the download thread HTTP/1.1 client over TLS', { openssl: hasTool('openssl') });
describe.skipIf(TLS_SKIP !== undefined)('the download thread HTTP/1.1 client over TLS', () => {
  let dir = '';
  let cert: Buffer;
  let key: Buffer;
  beforeAll(async () => {
    dir = makeTempDir('http1-tls');
    const gen = await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')]);
    expect(gen.code, gen.stderr).toBe(0);
    cert = readFileSync(join(dir, 'cert.pem'));
    key = readFileSync(join(dir, 'key.pem'));
  });
  afterAll(async () => {
    await cleanupDir(dir);
  });

  it('verifies the server with the CA it is given, sends the host name as SNI, and refuses a server it cannot verify', async () => {
    const body = randomBytes(3 * 1024 * 1024);
    const names: (string | false | null)[] = [];
    const server = createTlsServer({ cert, key }, (socket: TLSSocket) => {
      names.push(socket.servername);
      socket.on('error', () => undefined);
      socket.once('data', () => socket.write(ok(body)));
    });
    const port = await listenOn(server);
    try {
      const a = await get(client({ tls: { ca: cert } }), `https://localhost:${port}`);
      expect(a.error).toBeUndefined();
      expect(sha256Hex(a.body)).toBe(sha256Hex(body));
      expect(names).toEqual(['localhost']);
      const refused = await get(client(), `https://localhost:${port}`);
      expect(refused.error?.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    } finally {
      // The clients' idle connections first: close() waits for every connection to end.
      for (const c of clients.splice(0)) c.close();
      await new Promise((r) => server.close(r));
    }
  });
});
