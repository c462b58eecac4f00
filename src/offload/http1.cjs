'use strict';
/**
 * The download thread's HTTP/1.1 client (thread.cjs): blob GETs, nothing else. Why not undici, which
 * the main thread uses for every other request: receiving a 256 MiB body through undici's Agent cost
 * 510-570 ms of CPU on this machine, and 805-925 ms with the hash; reading the same socket into one
 * reused 1 MiB buffer (net's `onread`) cost 80-180 ms, and 320-390 ms with the hash. On a cold pull
 * that thread is the critical path (bench/RESULTS.md, workload 5). undici allocates a buffer per 64 KiB
 * read and runs each through its wasm parser; here a body costs a read into the shared buffer and a
 * bounds check, and only the response head is parsed.
 *
 * What it does (and the contract thread.cjs relies on):
 * - GET only, no request body; keep-alive connections per origin (at most `connections` each, the
 *   rest wait), idle ones dropped after `keepAliveTimeout` or the server's `Keep-Alive: timeout`.
 * - http: and https: (Node's CAs and SNI, as undici).
 * - Bodies framed by Content-Length, by chunked transfer coding (extensions and trailers dropped),
 *   or by the connection's close; 1xx interim answers skipped; 204 and 304 have none.
 * - Strict where a hostile or broken server could smuggle bytes: no obs-fold, header names are tokens,
 *   Content-Lengths must agree, chunk sizes are hex of at most 15 digits, a head is at most 64 KiB.
 *   A connection that sent more than its answer, or that framed it by close, is not reused.
 * - A request on a reused connection that fails before any byte of its answer is sent again once on a
 *   new connection (the server may have closed the idle connection as we wrote).
 * - Handler callbacks (undici's names): onRequestStart(controller), onResponseStart(controller, status,
 *   headers), onResponseData(controller, chunk), onResponseEnd(controller), onResponseError(controller,
 *   error); exactly one of the last two. **A chunk is a view of the read buffer, valid during the call
 *   only**: keep a copy, not the chunk. onResponseData may still be called after controller.pause()
 *   (the rest of the read that carried the head); pause stops reading the socket, and the body timeout.
 * - Errors carry undici's codes for the same failures, which upstream/client.ts reads:
 *   UND_ERR_CONNECT_TIMEOUT, UND_ERR_HEADERS_TIMEOUT, UND_ERR_BODY_TIMEOUT, UND_ERR_SOCKET (closed
 *   early), UND_ERR_HEADERS_OVERFLOW; HPE_* for a malformed answer; the socket's own (ECONNREFUSED ...).
 */
const net = require('node:net');
const tls = require('node:tls');
const { URL } = require('node:url');

/** Every connection of a client reads into this one buffer: the thread consumes each read before the next. */
const READ_BUFFER = 1024 * 1024;
/** A response head (or a chunked body's trailers) longer than this is refused. */
const MAX_HEAD = 64 * 1024;
/** A chunk-size line (size and extensions) longer than this is refused. */
const MAX_CHUNK_LINE = 4096;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?$/;
const CRLFCRLF = Buffer.from('\r\n\r\n');
/**
 * What a request header value may hold (undici's rule): written as latin1, a code point above U+00FF
 * would lose its high byte, and U+010D U+010A would reach the wire as CR LF (a token from a token
 * realm is any JSON string).
 */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/** A request target is visible ASCII only (URL has percent-encoded the rest). */
const BAD_PATH = /[^\x21-\x7e]/;
/** Headers a bodiless GET never sends: the framing and connection are this client's. */
const REFUSED_HEADERS = new Set(['content-length', 'transfer-encoding', 'expect', 'upgrade', 'te', 'keep-alive', 'trailer']);

function httpError(code, message) {
  return Object.assign(new Error(message), { code });
}

class Http1Client {
  /**
   * @param {{ connectTimeout: number, keepAliveTimeout: number, connections: number, tls?: import('node:tls').ConnectionOptions }} opts
   *   `tls`: extra options for https connections (tests pass a CA); Node's defaults otherwise.
   */
  constructor(opts) {
    this.opts = opts;
    this.readBuffer = Buffer.allocUnsafe(READ_BUFFER);
    /** origin -> { idle: Connection[], open: number, waiting: Exchange[] } */
    this.pools = new Map();
    /** Every open connection, for close(). */
    this.connections = new Set();
    this.closed = false;
  }

  /** Starts a GET; its outcome reaches `handler`. Throws (before any callback) on a request it cannot send. */
  dispatch(opts, handler) {
    if ((opts.method ?? 'GET') !== 'GET') throw new TypeError('only GET is supported');
    const url = new URL(opts.origin);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`unsupported protocol ${url.protocol}`);
    if (typeof opts.path !== 'string' || !opts.path.startsWith('/') || BAD_PATH.test(opts.path)) throw new TypeError('invalid request path');
    let head = `GET ${opts.path} HTTP/1.1\r\nhost: ${url.host}\r\n`;
    for (const [name, value] of Object.entries(opts.headers ?? {})) {
      if (value === undefined) continue;
      if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name.slice(0, 100))}`);
      const lower = name.toLowerCase();
      if (lower === 'host' || lower === 'connection') continue;
      if (REFUSED_HEADERS.has(lower)) throw new TypeError(`header ${name} is not sent on a GET by this client`);
      for (const v of Array.isArray(value) ? value : [value]) {
        const s = String(v);
        if (BAD_VALUE.test(s)) throw new TypeError(`invalid value for header ${name}`);
        head += `${name}: ${s}\r\n`;
      }
    }
    const ex = new Exchange(this, url, `${head}\r\n`, opts, handler);
    handler.onRequestStart?.(ex.controller, {});
    if (ex.phase !== 'done') this.assign(ex);
  }

  /** Closes every connection; requests under way fail. */
  close() {
    this.closed = true;
    const err = httpError('UND_ERR_CLOSED', 'the client was closed');
    for (const pool of this.pools.values()) for (const ex of pool.waiting.splice(0)) ex.fail(err);
    for (const c of [...this.connections]) c.destroy(err);
  }

  pool(key) {
    let p = this.pools.get(key);
    if (!p) {
      p = { idle: [], open: 0, waiting: [] };
      this.pools.set(key, p);
    }
    return p;
  }

  /**
   * Gives `ex` an idle connection of its origin, a new one, or a place in the queue. A resent request
   * skips the idle ones: a server closing idle connections closes them all at once.
   */
  assign(ex) {
    if (this.closed) return ex.fail(httpError('UND_ERR_CLOSED', 'the client was closed'));
    const p = this.pool(ex.url.origin);
    while (p.idle.length > 0 && !ex.retried) {
      const c = p.idle.pop();
      if (c.usable()) return c.send(ex);
    }
    if (p.open < Math.max(1, this.opts.connections)) {
      p.open++;
      const c = new Connection(this, ex.url);
      this.connections.add(c);
      return c.send(ex);
    }
    p.waiting.push(ex);
  }

  /** A connection free again: the next waiting request, or the idle list. */
  release(conn) {
    const p = this.pool(conn.key);
    const next = p.waiting.shift();
    if (next) return conn.send(next);
    p.idle.push(conn);
    conn.idle();
  }

  /** A connection gone: out of the idle list, and its place to a waiting request. */
  forget(conn) {
    this.connections.delete(conn);
    const p = this.pool(conn.key);
    p.open--;
    const i = p.idle.indexOf(conn);
    if (i >= 0) p.idle.splice(i, 1);
    const next = p.waiting.shift();
    if (next) this.assign(next);
    if (p.open === 0 && p.waiting.length === 0) this.pools.delete(conn.key);
  }

  unqueue(ex) {
    const p = this.pools.get(ex.url.origin);
    const i = p ? p.waiting.indexOf(ex) : -1;
    if (i >= 0) p.waiting.splice(i, 1);
  }
}

class Connection {
  constructor(client, url) {
    this.client = client;
    this.key = url.origin;
    /** Requests this connection sent before the current one. */
    this.served = 0;
    this.ex = undefined;
    this.idleTimer = undefined;
    this.idleMs = client.opts.keepAliveTimeout;
    this.gone = false;
    this.connected = false;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const onread = { buffer: client.readBuffer, callback: (n, buf) => this.onRead(buf, n) };
    this.socket =
      url.protocol === 'https:'
        ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...client.opts.tls, onread })
        : net.connect({ host, port, onread });
    this.connectTimer = setTimeout(() => this.destroy(httpError('UND_ERR_CONNECT_TIMEOUT', `connect timeout (${client.opts.connectTimeout} ms)`)), client.opts.connectTimeout);
    this.socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      clearTimeout(this.connectTimer);
      this.connected = true;
      this.socket.setNoDelay(true);
      this.socket.setKeepAlive(true, 60_000);
    });
    this.socket.on('error', (e) => this.destroy(e));
    this.socket.on('end', () => {
      if (this.ex) this.ex.onEnd();
      this.destroy();
    });
    this.socket.on('close', () => this.destroy(httpError('UND_ERR_SOCKET', 'other side closed')));
  }

  usable() {
    return !this.gone && !this.socket.destroyed && this.socket.readyState === 'open';
  }

  send(ex) {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.ex = ex;
    // An idle connection is reading (idle()); attach pauses it for a handler that paused already.
    ex.attach(this);
    this.socket.write(ex.requestHead, 'latin1');
  }

  /** The current exchange is over; `reusable`: its answer ended exactly where the connection's bytes did. */
  done(reusable) {
    this.ex = undefined;
    this.served++;
    if (!reusable || !this.usable()) return this.destroy();
    this.client.release(this);
  }

  idle() {
    // Reading while idle: a close by the server is seen now, not when the next request is written.
    if (this.socket.isPaused()) this.socket.resume();
    this.idleTimer = setTimeout(() => this.destroy(), this.idleMs);
    this.idleTimer.unref?.();
  }

  onRead(buf, n) {
    if (this.ex) this.ex.feed(buf, n);
    // Bytes nobody asked for: the connection is out of step with its answers.
    else if (n > 0) this.destroy();
  }

  destroy(err) {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    this.socket.destroy();
    const ex = this.ex;
    this.ex = undefined;
    this.client.forget(this);
    if (ex) ex.connectionLost(err ?? httpError('UND_ERR_SOCKET', 'other side closed'), this.served > 0);
  }
}

/** What a handler holds: pause, resume, abort, and whether the exchange is paused or over. */
class Controller {
  constructor(ex) {
    this.ex = ex;
  }

  pause() {
    const ex = this.ex;
    ex.paused = true;
    if (ex.phase === 'body') clearTimeout(ex.timer);
    ex.conn?.socket.pause();
  }

  resume() {
    const ex = this.ex;
    if (!ex.paused || ex.phase === 'done') return;
    ex.paused = false;
    ex.conn?.socket.resume();
    if (ex.phase === 'body') ex.arm(ex.opts.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'body timeout');
  }

  abort(reason) {
    this.ex.fail(reason instanceof Error ? reason : httpError('UND_ERR_ABORTED', 'request aborted'));
  }

  get paused() {
    return this.ex.paused;
  }

  get aborted() {
    return this.ex.phase === 'done';
  }
}

class Exchange {
  constructor(client, url, requestHead, opts, handler) {
    this.client = client;
    this.url = url;
    this.requestHead = requestHead;
    this.opts = opts;
    this.handler = handler;
    /** queued | head | body | done */
    this.phase = 'queued';
    this.conn = undefined;
    this.retried = false;
    this.answered = false; // a byte of the answer arrived
    this.paused = false;
    this.headParts = [];
    this.headBytes = 0;
    this.timer = undefined;
    this.controller = new Controller(this);
  }

  attach(conn) {
    this.conn = conn;
    this.phase = 'head';
    if (this.paused) conn.socket.pause();
    this.arm(this.opts.headersTimeout, 'UND_ERR_HEADERS_TIMEOUT', 'headers timeout');
  }

  /** The timeout of the phase; a paused body has none (the head's runs whatever the handler does). */
  arm(ms, code, message) {
    clearTimeout(this.timer);
    if (!ms || ms <= 0 || (this.paused && this.phase === 'body')) return;
    this.timer = setTimeout(() => this.fail(httpError(code, `${message} (${ms} ms)`)), ms);
  }

  /** The `n` bytes at the start of `buf` (the shared read buffer) arrived. */
  feed(buf, n) {
    if (n <= 0) return;
    this.answered = true;
    let i = 0;
    while (i < n && this.phase !== 'done') {
      i = this.phase === 'head' ? this.feedHead(buf, i, n) : this.feedBody(buf, i, n);
    }
    // More than the answer: never reuse this connection.
    if (i < n) this.leftover = true;
  }

  feedHead(buf, start, end) {
    const part = Buffer.from(buf.subarray(start, Math.min(end, start + MAX_HEAD + 4)));
    const prev = this.headBytes;
    this.headParts.push(part);
    this.headBytes += part.length;
    const all = this.headParts.length === 1 ? part : Buffer.concat(this.headParts, this.headBytes);
    const at = all.indexOf(CRLFCRLF, Math.max(0, prev - 3));
    if (at < 0) {
      if (this.headBytes > MAX_HEAD) this.fail(httpError('UND_ERR_HEADERS_OVERFLOW', `response head longer than ${MAX_HEAD} bytes`));
      else this.headParts = [all];
      return end;
    }
    if (at > MAX_HEAD) {
      this.fail(httpError('UND_ERR_HEADERS_OVERFLOW', `response head longer than ${MAX_HEAD} bytes`));
      return end;
    }
    this.headParts = [];
    this.headBytes = 0;
    const consumed = start + (at + 4 - prev);
    this.onHead(all.toString('latin1', 0, at));
    return consumed;
  }

  onHead(text) {
    const lines = text.split('\r\n');
    const m = STATUS_LINE.exec(lines[0]);
    if (!m) return this.fail(httpError('HPE_INVALID_STATUS', `invalid status line ${JSON.stringify(lines[0].slice(0, 100))}`));
    const status = Number(m[2]);
    // No prototype: a header named __proto__ or constructor is data like any other.
    const headers = Object.create(null);
    for (let k = 1; k < lines.length; k++) {
      const line = lines[k];
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      if (!TOKEN.test(name)) return this.fail(httpError('HPE_INVALID_HEADER_TOKEN', 'invalid header line in the response'));
      const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
      if (value.includes('\0') || value.includes('\n') || value.includes('\r')) return this.fail(httpError('HPE_INVALID_HEADER_TOKEN', `invalid value of response header ${name}`));
      const key = name.toLowerCase();
      const had = headers[key];
      headers[key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
    }
    if (status < 200) {
      if (status === 101) return this.fail(httpError('HPE_INVALID_STATUS', 'unexpected 101 Switching Protocols'));
      return; // interim: the real head follows
    }
    const list = (v) => (v === undefined ? [] : (Array.isArray(v) ? v : [v]).join(',').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
    const connection = list(headers.connection);
    this.reusable = m[1] === '1' && !connection.includes('close');
    const keepAlive = /(?:^|[,\s])timeout=(\d+)/i.exec(String(headers['keep-alive'] ?? ''));
    if (keepAlive && this.conn) this.conn.idleMs = Math.min(this.client.opts.keepAliveTimeout, Math.max(0, Number(keepAlive[1]) * 1000 - 1000));
    const codings = list(headers['transfer-encoding']);
    if (status === 204 || status === 304) this.framing = 'none';
    else if (codings.length > 0) {
      if (headers['content-length'] !== undefined) this.reusable = false;
      this.framing = codings[codings.length - 1] === 'chunked' ? 'chunked' : 'close';
      this.chunkState = 'size';
      this.line = '';
    } else if (headers['content-length'] !== undefined) {
      const values = list(headers['content-length']);
      if (values.length === 0 || !values.every((v) => /^\d{1,15}$/.test(v) && v === values[0])) return this.fail(httpError('HPE_UNEXPECTED_CONTENT_LENGTH', 'invalid or conflicting Content-Length'));
      this.framing = 'length';
      this.remaining = Number(values[0]);
    } else this.framing = 'close';
    if (this.framing === 'close') this.reusable = false;
    this.phase = 'body';
    this.arm(this.opts.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'body timeout');
    this.handler.onResponseStart?.(this.controller, status, headers, m[0]);
    if (this.phase === 'body' && (this.framing === 'none' || (this.framing === 'length' && this.remaining === 0))) this.complete();
  }

  feedBody(buf, start, end) {
    switch (this.framing) {
      case 'length': {
        const n = Math.min(this.remaining, end - start);
        this.remaining -= n;
        this.data(buf.subarray(start, start + n));
        if (this.remaining === 0 && this.phase === 'body') this.complete();
        return start + n;
      }
      case 'close':
        this.data(buf.subarray(start, end));
        return end;
      case 'chunked':
        return this.feedChunked(buf, start, end);
      default:
        return start;
    }
  }

  feedChunked(buf, start, end) {
    let i = start;
    while (i < end && this.phase === 'body') {
      switch (this.chunkState) {
        case 'size':
        case 'trailer': {
          // Searched within this read only: past `end` the shared buffer holds older reads.
          const lf = buf.subarray(i, end).indexOf(10);
          const stop = lf < 0 ? end : i + lf;
          this.line += buf.toString('latin1', i, stop);
          const limit = this.chunkState === 'size' ? MAX_CHUNK_LINE : MAX_HEAD;
          if (this.line.length > limit + 1) {
            this.fail(httpError('HPE_INVALID_CHUNK_SIZE', 'chunk-size line too long'));
            return end;
          }
          if (stop === end) return end;
          i = stop + 1;
          if (!this.line.endsWith('\r')) {
            this.fail(httpError('HPE_STRICT', 'bare LF in a chunked body'));
            return end;
          }
          const line = this.line.slice(0, -1);
          this.line = '';
          if (this.chunkState === 'trailer') {
            this.trailerBytes = (this.trailerBytes ?? 0) + line.length + 2;
            if (this.trailerBytes > MAX_HEAD) {
              this.fail(httpError('UND_ERR_HEADERS_OVERFLOW', 'trailers too long'));
              return end;
            }
            if (line === '') {
              this.complete();
              return i;
            }
            continue;
          }
          const m = CHUNK_SIZE.exec(line);
          if (!m) {
            this.fail(httpError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size'));
            return end;
          }
          this.remaining = parseInt(m[1], 16);
          this.chunkState = this.remaining === 0 ? 'trailer' : 'data';
          break;
        }
        case 'data': {
          const n = Math.min(this.remaining, end - i);
          this.remaining -= n;
          this.data(buf.subarray(i, i + n));
          i += n;
          if (this.remaining === 0) this.chunkState = 'cr';
          break;
        }
        case 'cr':
        case 'lf': {
          const want = this.chunkState === 'cr' ? 13 : 10;
          if (buf[i] !== want) {
            this.fail(httpError('HPE_STRICT', 'a chunk does not end with CRLF'));
            return end;
          }
          i++;
          this.chunkState = this.chunkState === 'cr' ? 'lf' : 'size';
          break;
        }
      }
    }
    return i;
  }

  data(chunk) {
    if (chunk.length === 0) return;
    if (!this.paused) this.arm(this.opts.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'body timeout');
    this.handler.onResponseData?.(this.controller, chunk);
  }

  /** The socket's end: the end of a body framed by close, an early end of any other. */
  onEnd() {
    if (this.phase === 'body' && this.framing === 'close') this.complete();
  }

  complete() {
    this.phase = 'done';
    clearTimeout(this.timer);
    const conn = this.conn;
    this.conn = undefined;
    const reusable = this.reusable && !this.leftover;
    try {
      this.handler.onResponseEnd?.(this.controller, {});
    } finally {
      // `leftover` is known only once the read that ended the answer is consumed: release after it.
      if (conn) void Promise.resolve().then(() => conn.done(reusable && !this.leftover));
    }
  }

  /** The connection died under this exchange. */
  connectionLost(err, reused) {
    if (this.phase === 'done') return;
    this.conn = undefined;
    clearTimeout(this.timer);
    // Nothing of the answer came back on a connection that had served before: the server may have
    // closed it as we wrote. A GET can go again, once, on a new connection.
    if (reused && !this.answered && !this.retried) {
      this.retried = true;
      this.phase = 'queued';
      return this.client.assign(this);
    }
    this.fail(err);
  }

  fail(err) {
    if (this.phase === 'done') return;
    const wasQueued = this.phase === 'queued';
    this.phase = 'done';
    clearTimeout(this.timer);
    if (wasQueued) this.client.unqueue(this);
    const conn = this.conn;
    this.conn = undefined;
    if (conn) {
      conn.ex = undefined;
      conn.destroy();
    }
    this.handler.onResponseError?.(this.controller, err);
  }
}

module.exports = { Http1Client, READ_BUFFER, MAX_HEAD };
