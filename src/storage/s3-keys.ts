/**
 * The object keys of the S3 blob store, under the configured prefix (several mirrors or fleets can
 * share a bucket with different prefixes):
 *
 *   <prefix>blobs/<alg>/<2 hex>/<hex>    verified blob bytes; written only once the digest matched
 *
 * In-progress blobs are multipart uploads on their final key (S3 shows no object until the upload is
 * completed, which happens after verification) or bytes in the local spool directory; nothing
 * unverified is ever an object.
 */
import { splitDigest } from './paths.js';

export class S3Keys {
  constructor(readonly prefix: string) {}

  get blobsPrefix(): string {
    return `${this.prefix}blobs/`;
  }

  blob(digest: string): string {
    const [alg, hex] = splitDigest(digest);
    return `${this.prefix}blobs/${alg}/${hex.slice(0, 2)}/${hex}`;
  }

  /** The digest of a blob key, or undefined for any other key (a stray object is not a blob). */
  digestOf(key: string): string | undefined {
    if (!key.startsWith(this.blobsPrefix)) return undefined;
    const m = /^([a-z0-9]+)\/([a-f0-9]{2})\/([a-f0-9]{32,128})$/.exec(key.slice(this.blobsPrefix.length));
    if (!m || !m[3]!.startsWith(m[2]!)) return undefined;
    return `${m[1]}:${m[3]}`;
  }
}
