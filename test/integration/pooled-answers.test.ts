/**
 * Read buffers reused between answers, through a real node:http server: a buffer goes back to the
 * pool when the response's write called back, and the next answer reads into it at once. Whether
 * that is safe rests on Node's ServerResponse calling back only once the socket no longer needs the
 * bytes: with pipelined requests (answers queued behind one another), HEAD (the body is dropped),
 * slow readers (writes wait for the kernel) and clients that hang up mid-body. The pool scribbles
 * over every buffer given back, so a buffer given back too early shows as a wrong body.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileBody } from '../../src/storage/file-body.js';
import { pseudoRandomBytes } from '../helpers/images.js';
import { ScribblingPool } from '../helpers/scribbling-pool.js';

const KiB = 1024;
const blob = pseudoRandomBytes(3 * 1024 * KiB + 77, 'pooled-answers');
const want = createHash('sha256').update(blob).digest('hex');
/** Small: buffers go round between answers all the time. */
const pool = new ScribblingPool(1024 * KiB);
const CHUNKS = [4 * KiB, 16 * KiB, 64 * KiB, 100_000, 1024 * KiB];

let dir: string;
let file: string;
let server: Server;
let port: number;
let answered = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pooled-answers-'));
  file = join(dir, 'blob');
  await writeFile(file, blob);
  server = createServer((_req, res) => {
    const chunk = CHUNKS[answered++ % CHUNKS.length]!;
    void open(file, 'r').then((handle) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blob.length) });
      void new FileBody(handle, 0, blob.length - 1, chunk, pool).writeInto(res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

interface Client {
  requests: number;
  method: 'GET' | 'HEAD';
  /** Pause the socket briefly after every read. */
  slow?: boolean;
  /** Hang up after this many bytes. */
  cutAfter?: number;
}

/** Sends `requests` pipelined requests on one connection and returns what came back, whole. */
function exchange(c: Client, seed: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    let total = 0;
    let n = seed;
    s.on('data', (d: Buffer) => {
      parts.push(d);
      total += d.length;
      if (c.cutAfter !== undefined && total > c.cutAfter) return void s.destroy();
      if (c.slow) {
        s.pause();
        setTimeout(() => s.resume(), n++ % 3);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve(Buffer.concat(parts)));
    let text = '';
    for (let i = 0; i < c.requests; i++) text += `${c.method} /blob HTTP/1.1\r\nhost: x\r\n${i === c.requests - 1 ? 'connection: close\r\n' : ''}\r\n`;
    s.write(text);
  });
}

/** The bodies of pipelined answers: for each, whether it is the blob, whole. */
function bodies(raw: Buffer, method: 'GET' | 'HEAD'): boolean[] {
  const out: boolean[] = [];
  let at = 0;
  for (;;) {
    const end = raw.indexOf('\r\n\r\n', at);
    if (end < 0) return out;
    const head = raw.subarray(at, end).toString('latin1');
    const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
    at = end + 4;
    if (method === 'HEAD') {
      out.push(length === blob.length);
      continue;
    }
    const body = raw.subarray(at, at + length);
    at += length;
    out.push(body.length === blob.length && createHash('sha256').update(body).digest('hex') === want);
  }
}

describe('read buffers shared by answers through a real HTTP server', () => {
  it('pipelined, HEAD, slow and cut-off clients at once: every whole answer is the blob, no buffer given back twice', async () => {
    const kinds: Client[] = [
      { requests: 3, method: 'GET', slow: true },
      { requests: 2, method: 'HEAD' },
      { requests: 1, method: 'GET', slow: true, cutAfter: 700 * KiB },
      { requests: 1, method: 'GET' },
      { requests: 2, method: 'GET' },
      { requests: 1, method: 'GET', cutAfter: 1500 * KiB },
    ];
    let whole = 0;
    for (let round = 0; round < 2; round++) {
      const clients = Array.from({ length: 18 }, (_, i) => kinds[i % kinds.length]!);
      const raws = await Promise.all(clients.map((c, i) => exchange(c, round * 100 + i)));
      for (const [i, c] of clients.entries()) {
        if (c.cutAfter !== undefined) continue;
        const got = bodies(raws[i]!, c.method);
        expect(got, `client ${i} (${c.method} x${c.requests}${c.slow ? ', slow' : ''})`).toEqual(Array(c.requests).fill(true));
        if (c.method === 'GET') whole += c.requests;
      }
    }
    expect(whole).toBe(2 * 3 * (3 + 1 + 2));
    expect(pool.given.length).toBeGreaterThan(50);
    expect(pool.doubles).toBe(0);
  });
});
