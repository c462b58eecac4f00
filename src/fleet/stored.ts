/** Small pieces the coordinator and the peer source share. */
import type { BlobStore } from '../storage/store.js';
import type { BlobBody } from '../upstream/types.js';

/** The lease key of a digest. */
export const lease = (digest: string) => `lease:${digest}`;

/** A stored blob as an upstream-like body from `offset`, or undefined when it vanished. */
export async function storeBody(store: Pick<BlobStore, 'open'>, digest: string, size: number, offset: number): Promise<BlobBody | undefined> {
  if (offset >= size) return { start: offset, size, body: (async function* () {})(), cancel: () => undefined };
  const body = await store.open(digest, { start: offset, end: size - 1 });
  if (!body) return undefined;
  return { start: offset, size, body, cancel: () => body.destroy() };
}
