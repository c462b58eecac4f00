/** Small pieces the coordinator and the peer source share. */
import { StoreFullError, type BlobStore } from '../storage/store.js';
import type { BlobBody } from '../upstream/types.js';

/** The lease key of a digest. */
export const lease = (digest: string) => `lease:${digest}`;

/**
 * A stored blob as an upstream-like body from `offset`; undefined when it is not stored, vanished, or
 * the store cannot be read now (S3 away: the StoreFullError family). A download looking whether
 * another replica stored the blob must then go on to upstream or a peer, not fail: serving goes on
 * while the shared store is away, uncached.
 */
export async function storedBody(store: Pick<BlobStore, 'stat' | 'open'>, digest: string, offset: number): Promise<BlobBody | undefined> {
  try {
    const info = await store.stat(digest);
    if (!info) return undefined;
    if (offset >= info.size) return { start: offset, size: info.size, body: (async function* () {})(), cancel: () => undefined };
    const body = await store.open(digest, { start: offset, end: info.size - 1 });
    if (!body) return undefined;
    return { start: offset, size: info.size, body, cancel: () => body.destroy() };
  } catch (e) {
    if (e instanceof StoreFullError) return undefined;
    throw e;
  }
}
