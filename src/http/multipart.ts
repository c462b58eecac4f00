/**
 * A `multipart/byteranges` body (RFC 9110 §14.6): one part per range, each with its Content-Type
 * and Content-Range, parts opened one after another as the client reads. Its length is known up
 * front (the framing is fixed), so the response carries Content-Length.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ByteRange } from '../registry/range.js';

export interface MultipartBody {
  contentType: string;
  length: number;
  stream: Readable;
}

export function multipartByteranges(
  ranges: ByteRange[],
  size: number,
  partType: string,
  /** The first range's body, already open (it is destroyed if the client leaves before it is read). */
  first: Readable | Buffer,
  open: (r: ByteRange) => Promise<Readable | Buffer>,
): MultipartBody {
  const boundary = randomBytes(12).toString('hex');
  const head = (r: ByteRange, i: number) =>
    Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${partType}\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = ranges.reduce((n, r, i) => n + head(r, i).length + (r.end - r.start + 1), tail.length);
  async function* parts(): AsyncGenerator<Buffer> {
    for (const [i, r] of ranges.entries()) {
      yield head(r, i);
      const body = i === 0 ? first : await open(r);
      if (Buffer.isBuffer(body)) yield body;
      else for await (const chunk of body) yield chunk as Buffer;
    }
    yield tail;
  }
  const stream = Readable.from(parts(), { objectMode: false });
  if (!Buffer.isBuffer(first)) stream.once('close', () => first.destroy());
  return { contentType: `multipart/byteranges; boundary=${boundary}`, length, stream };
}
