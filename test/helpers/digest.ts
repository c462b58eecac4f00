/**
 * Content digests for tests: the one place test code hashes bytes into `sha256:<hex>`.
 * Accepts what tests hold (Buffer, Uint8Array, ArrayBuffer from `Response.arrayBuffer()`, strings
 * as UTF-8) and streams (undici bodies, Node readables), so no test re-implements the hashing.
 */
import { createHash } from 'node:crypto';

/** Bytes as tests hold them; a string is hashed as its UTF-8 encoding. */
export type Bytes = Uint8Array | ArrayBuffer | string;

export type DigestAlgorithm = 'sha256' | 'sha512';

function view(bytes: Bytes): Uint8Array | string {
  return typeof bytes === 'string' || ArrayBuffer.isView(bytes) ? bytes : new Uint8Array(bytes);
}

/** Lower-case hex sha256 of `bytes`. */
export function sha256Hex(bytes: Bytes): string {
  return createHash('sha256').update(view(bytes)).digest('hex');
}

/** The OCI digest `<alg>:<hex>` of `bytes` (sha256 unless asked otherwise). */
export function digestOf(bytes: Bytes, alg: DigestAlgorithm = 'sha256'): string {
  return `${alg}:${createHash(alg).update(view(bytes)).digest('hex')}`;
}

/**
 * The digest of everything a stream yields, hashed chunk by chunk (so a gigabyte body costs no
 * memory). Consumes the stream; a stream that errors rejects.
 */
export async function digestOfStream(chunks: AsyncIterable<Uint8Array | string>, alg: DigestAlgorithm = 'sha256'): Promise<string> {
  const h = createHash(alg);
  for await (const c of chunks) h.update(c);
  return `${alg}:${h.digest('hex')}`;
}
