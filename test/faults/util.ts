/**
 * Small tools the fault suites share: raw HTTP clients that report exactly what arrived (bytes,
 * errors, aborts) rather than normalising it, a raw-socket request for inputs HTTP clients refuse
 * to send, file-tree snapshots, and the fault suites' fixture. (Digests: helpers/digest.ts;
 * waiting for events: helpers/wait.ts.)
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import type { SpawnedMirror } from '../helpers/spawn.js';

/** Codes an answer may carry: the distribution spec's list plus the mirror's own. */
export const OCI_CODES = new Set([
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'UNAVAILABLE',
  'UNKNOWN',
  'RANGE_INVALID',
  'PAGINATION_NUMBER_INVALID',
  'TAG_INVALID',
]);

export interface RawResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The response ended normally ('end' after all bytes). */
  complete: boolean;
  /** Set when the request or response errored/aborted. */
  error: string | undefined;
  /** ms from request to the outcome. */
  ms: number;
}

export interface RawGetOptions {
  headers?: Record<string, string>;
  method?: string;
  /** Hard deadline for the whole exchange (the result then carries error 'timeout'). Default 30 s. */
  timeoutMs?: number;
  /** Destroy the socket once this many body bytes arrived (a client hanging up mid-stream). */
  hangUpAfterBytes?: number;
  /** Called with each chunk as it arrives. */
  onData?: (chunk: Buffer, total: number) => void;
}

/** One request over node:http without an agent: never throws, reports what happened. */
export function rawGet(url: string, opts: RawGetOptions = {}): Promise<RawResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    let status = 0;
    let headers: http.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (complete: boolean, error: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, headers, body: Buffer.concat(chunks), complete, error, ms: performance.now() - started });
    };
    const req = http.request(url, { method: opts.method ?? 'GET', agent: false, headers: opts.headers ?? {} }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        total += c.length;
        opts.onData?.(c, total);
        if (opts.hangUpAfterBytes !== undefined && total >= opts.hangUpAfterBytes) {
          req.destroy();
          finish(false, 'hung up by the client');
        }
      });
      res.on('end', () => finish(!res.aborted, res.aborted ? 'aborted' : undefined));
      res.on('aborted', () => finish(false, 'aborted'));
      res.on('error', (e) => finish(false, e.message || String(e)));
      res.on('close', () => finish(res.complete, res.complete ? undefined : 'closed before the end'));
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish(false, 'timeout');
    }, opts.timeoutMs ?? 30_000);
    req.on('error', (e) => finish(false, (e as NodeJS.ErrnoException).code ?? e.message));
    req.end();
  });
}

/** Parses an OCI error envelope and checks it; returns the first error's code. */
export function expectOciError(res: { status: number; body: Buffer | string; headers?: http.IncomingHttpHeaders }, statuses: number[], codes?: string[]): { code: string; message: string } {
  expect(statuses, `status ${res.status}, body ${String(res.body).slice(0, 300)}`).toContain(res.status);
  let parsed: { errors?: Array<{ code?: unknown; message?: unknown }> };
  try {
    parsed = JSON.parse(String(res.body));
  } catch {
    throw new Error(`not a JSON error envelope (status ${res.status}): ${String(res.body).slice(0, 300)}`);
  }
  const e = parsed.errors?.[0];
  expect(Array.isArray(parsed.errors), 'errors is an array').toBe(true);
  expect(typeof e?.code).toBe('string');
  expect(typeof e?.message).toBe('string');
  expect(OCI_CODES.has(e!.code as string), `code ${String(e?.code)}`).toBe(true);
  if (codes) expect(codes).toContain(e!.code);
  return { code: e!.code as string, message: e!.message as string };
}

/** Sends `request` bytes as-is over TCP; resolves with everything received until close or `timeoutMs`. */
export function rawSocket(port: number, request: string | Buffer, timeoutMs = 5000): Promise<{ text: string; status: number; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const sock = connect({ host: '127.0.0.1', port });
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ text, status: m ? Number(m[1]) : 0, closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      // One response is enough: stop once headers and a Content-Length body are in.
      const t = Buffer.concat(chunks).toString('latin1');
      const h = t.indexOf('\r\n\r\n');
      if (h >= 0) {
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(t.slice(0, h));
        if (cl && Buffer.byteLength(t.slice(h + 4), 'latin1') >= Number(cl[1])) finish(false);
      }
    });
    sock.on('error', () => finish(true));
    sock.on('close', () => finish(true));
  });
}

/** The body of a raw response text (after the blank line). */
export const rawBody = (text: string) => {
  const i = text.indexOf('\r\n\r\n');
  if (i < 0) return '';
  const body = text.slice(i + 4);
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(text.slice(0, i))) return body;
  // De-chunk (bounded: each step consumes at least the size line).
  let out = '';
  let rest = body;
  for (let n = 0; n < 10_000; n++) {
    const nl = rest.indexOf('\r\n');
    if (nl < 0) break;
    const size = parseInt(rest.slice(0, nl), 16);
    if (!Number.isFinite(size) || size <= 0) break;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 2 + size + 2);
  }
  return out;
};

/** Where the filesystem store keeps a verified blob. */
export const blobFile = (dataDir: string, digest: string) => join(dataDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

/** Every path (files and dirs) below `dir`, relative, sorted; [] when it does not exist. Bounded. */
export function tree(dir: string, limit = 100_000): string[] {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    let entries: string[];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries) {
      if (out.length >= limit) return;
      const p = join(d, e);
      out.push(relative(dir, p));
      try {
        if (statSync(p).isDirectory()) walk(p);
      } catch {
        /* vanished */
      }
    }
  };
  walk(dir);
  return out.sort();
}

/** Entries of tmp/ under the data dir (in-progress downloads). */
export const tmpEntries = (dataDir: string) => (existsSync(join(dataDir, 'tmp')) ? readdirSync(join(dataDir, 'tmp')) : []);

/** The Accept header docker sends for manifests (one definition, in the test helpers). */
export { DOCKER_ACCEPT } from '../helpers/mirror.js';

/** A fault suite's fixture: one fake upstream per file, the test's spawned mirror (if any). */
export interface FaultFixture {
  readonly hub: FakeUpstream;
  /** Set by a test; stopped after it. */
  mirror: SpawnedMirror | undefined;
}

/**
 * Starts the file's fake upstream before its tests and closes it after; after each test stops the
 * test's mirror and clears the upstream's faults, rate limit and counters, so tests stay independent.
 */
export function faultFixture(startHub: () => Promise<FakeUpstream>): FaultFixture {
  let hub: FakeUpstream | undefined;
  const fx: FaultFixture = {
    get hub(): FakeUpstream {
      if (!hub) throw new Error('the fake upstream starts in beforeAll');
      return hub;
    },
    mirror: undefined,
  };
  beforeAll(async () => {
    hub = await startHub();
  });
  afterAll(async () => {
    await hub?.close();
  });
  afterEach(async () => {
    await fx.mirror?.stop();
    fx.mirror = undefined;
    if (!hub) return;
    await hub.resetFaults();
    hub.rateLimit = undefined;
    hub.resetCounters();
  });
  return fx;
}
