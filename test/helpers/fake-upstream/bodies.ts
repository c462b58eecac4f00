/**
 * Blob bodies, registry and CDN alike: single ranges the way S3 answers them, then the bytes with
 * the body faults applied (hold, truncate, stall, trickle, corrupt); and huge manifest bodies streamed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Blob } from '../images.js';
import { drained, send, type Ctx } from './protocol.js';
import type { Faults } from './types.js';

/** 200 or 206 (single range; multi-range or malformed is ignored like S3 does) or 416, then the body with faults applied. */
export async function serveBytes(ctx: Ctx, faults: Faults, blob: Blob, extra: Record<string, string>): Promise<void> {
  const total = blob.size;
  let start = 0;
  let end = total - 1;
  let status = 200;
  const range = /^bytes=(\d*)-(\d*)$/.exec((ctx.req.headers.range ?? '').trim());
  if (range && (range[1] !== '' || range[2] !== '')) {
    if (range[1] === '') {
      start = Math.max(0, total - Number(range[2]));
    } else {
      start = Number(range[1]);
      if (range[2] !== '') end = Math.min(Number(range[2]), total - 1);
    }
    if (start >= total || end < start || (range[1] === '' && Number(range[2]) === 0)) {
      return send(ctx, 416, { 'content-range': `bytes */${total}`, 'content-type': 'text/plain' });
    }
    status = 206;
  }
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-length': end - start + 1,
    'accept-ranges': 'bytes',
    ...extra,
  };
  if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${total}`;
  if (ctx.head) return send(ctx, status, headers);
  // Chunked: no length until the end (an upstream streaming from a source of unknown size).
  if (faults.chunkedBlobs) delete headers['content-length'];
  if (faults.endlessBlobs) return sendEndless(ctx, faults.endlessBlobs, blob.bytes, headers);

  let body = blob.bytes.subarray(start, end + 1);
  const mid = Math.floor(total / 2);
  if (faults.corruptBlob && mid >= start && mid <= end) {
    body = Buffer.from(body);
    body[mid - start] = body[mid - start]! ^ 0xff;
  }
  ctx.rec.status = status;
  ctx.res.writeHead(status, headers);
  await sendBody(ctx, faults, body);
}

async function sendBody(ctx: Ctx, f: Faults, body: Buffer): Promise<void> {
  const { res } = ctx;
  let limit = body.length;
  let ending: 'end' | 'drop' | 'stall' = 'end';
  if (f.truncateBlobAfter !== undefined && f.truncateBlobAfter < limit && (f.truncateBlobTimes === undefined || f.truncateBlobTimes > 0)) {
    limit = f.truncateBlobAfter;
    ending = 'drop';
    if (f.truncateBlobTimes !== undefined) f.truncateBlobTimes--;
  }
  if (f.stallBlobAfter !== undefined && f.stallBlobAfter < limit) {
    limit = f.stallBlobAfter;
    ending = 'stall';
  }
  const trickle = f.trickle;
  const step = trickle ? Math.max(1, trickle.bytesPerTick) : 64 * 1024;
  const hold = f.holdBlobBody;
  for (let off = 0; off < limit; ) {
    if (res.destroyed) return;
    if (hold && off === hold.after) {
      // Headers go out with the first write: at 0 they are sent now, so the client has its answer.
      if (off === 0) res.flushHeaders();
      await hold.until;
      if (res.destroyed) return;
    }
    const next = Math.min(off + step, limit, hold && off < hold.after ? hold.after : Infinity);
    const ok = res.write(body.subarray(off, next));
    off = next;
    if (trickle) await sleep(trickle.tickMs);
    else if (!ok) await drained(res);
  }
  if (res.destroyed) return;
  if (ending === 'end') return void res.end();
  res.flushHeaders();
  if (ending === 'drop') {
    // end() flushes what was written, then FIN: the client sees the body stop short of Content-Length.
    const socket = res.socket;
    socket?.end();
    setTimeout(() => socket?.destroy(), 1000).unref();
  }
  // 'stall': leave the response open; close()/goDown() drop the connection.
}

async function sendEndless(ctx: Ctx, e: NonNullable<Faults['endlessBlobs']>, bytes: Buffer, headers: Record<string, string | number>): Promise<void> {
  const { res } = ctx;
  delete headers['content-length'];
  delete headers['content-range'];
  ctx.rec.status = 200;
  res.writeHead(200, headers);
  res.on('close', () => {
    if (!res.writableEnded) e.hungUp = true;
  });
  while (!res.destroyed && e.sent < e.maxBytes) {
    const ok = res.write(bytes);
    e.sent += bytes.length;
    if (!ok) await drained(res);
  }
  if (!res.destroyed) res.end();
}

/** A manifest-shaped body of exactly `size` bytes, streamed so even gigabytes cost no memory. */
export async function sendHuge(ctx: Ctx, size: number, headers: Record<string, string | number>): Promise<void> {
  const { res } = ctx;
  ctx.rec.status = 200;
  res.writeHead(200, { ...headers, 'content-length': size });
  const prefix = Buffer.from('{"schemaVersion":2,"pad":"');
  const suffix = Buffer.from('"}');
  const chunk = Buffer.alloc(64 * 1024, 'a');
  let left = size;
  const write = async (buf: Buffer) => {
    if (res.destroyed) return;
    if (!res.write(buf)) await drained(res);
  };
  if (size >= prefix.length + suffix.length) {
    await write(prefix);
    left -= prefix.length + suffix.length;
    while (left > 0 && !res.destroyed) {
      const n = Math.min(left, chunk.length);
      await write(chunk.subarray(0, n));
      left -= n;
    }
    await write(suffix);
  } else {
    await write(Buffer.alloc(size, ' '));
  }
  if (!res.destroyed) res.end();
}
