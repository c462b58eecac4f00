import { describe, expect, it } from 'vitest';
import type { Inventory } from '../../src/lifecycle/inventory.js';
import { emptyRemoved, Remover } from '../../src/lifecycle/remover.js';
import type { MetaStore } from '../../src/storage/meta-store.js';

describe('Remover.hold', () => {
  it('a held blob is never deleted, however unreferenced, until every hold on it is released', async () => {
    const deleted: string[] = [];
    const remover = new Remover({
      meta: {} as MetaStore,
      blobs: { busy: () => false, delete: (d) => (deleted.push(d), Promise.resolve()) },
      usage: { get: () => undefined, drop: () => undefined },
    });
    const inv = (): Inventory => ({ takenAt: 1, images: [], sizes: new Map([['sha256:a', 10], ['sha256:b', 20]]), refs: new Map(), byRepo: new Map(), repos: [] });
    const first = remover.hold(['sha256:a']);
    const second = remover.hold(['sha256:a']);
    await remover.deleteBlobs(inv(), ['sha256:a', 'sha256:b'], emptyRemoved());
    expect(deleted).toEqual(['sha256:b']);
    first();
    first(); // a release twice counts once
    await remover.deleteBlobs(inv(), ['sha256:a'], emptyRemoved());
    expect(deleted).toEqual(['sha256:b']);
    second();
    await remover.deleteBlobs(inv(), ['sha256:a'], emptyRemoved());
    expect(deleted).toEqual(['sha256:b', 'sha256:a']);
  });
});
