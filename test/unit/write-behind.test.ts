import { describe, expect, it } from 'vitest';
import { WriteBehind } from '../../src/transfer/write-behind.js';
import { StoreFullError, type BlobWriter } from '../../src/storage/store.js';

/** A writer that records each write and completes it when told to. */
function slowWriter(failAfter = Infinity) {
  const writes: number[] = [];
  const gates: Array<() => void> = [];
  const w = {
    digest: 'sha256:x',
    written: 0,
    async write(data: Uint8Array | Uint8Array[]) {
      await new Promise<void>((r) => gates.push(r));
      const n = Array.isArray(data) ? data.reduce((a, b) => a + b.length, 0) : data.length;
      if (w.written + n > failAfter) throw new StoreFullError(new Error('ENOSPC'));
      writes.push(n);
      w.written += n;
    },
  };
  const release = async () => {
    while (gates.length) gates.shift()!();
    await new Promise((r) => setImmediate(r));
  };
  return { writer: w as unknown as BlobWriter, writes, release, gates };
}

const chunk = (n: number) => new Uint8Array(n);

describe('WriteBehind', () => {
  it('coalesces chunks queued behind a write in flight into one large write', async () => {
    const { writer, writes, release } = slowWriter();
    const wb = new WriteBehind(writer, 1 << 30, () => undefined);
    for (let i = 0; i < 10; i++) wb.push(chunk(64 * 1024));
    await release(); // the first chunk, alone (it started the flush)
    await release(); // the nine queued behind it, as one write
    await wb.drain();
    expect(writes).toEqual([64 * 1024, 9 * 64 * 1024]);
  });

  it('holds the producer back once the lag passes the bound, and lets it go as writes complete', async () => {
    const { writer, release } = slowWriter();
    const wb = new WriteBehind(writer, 100_000, () => undefined);
    wb.push(chunk(60_000));
    wb.push(chunk(60_000));
    let through = false;
    const waiting = wb.belowLag().then(() => (through = true));
    await new Promise((r) => setImmediate(r));
    expect(through).toBe(false);
    await release();
    await waiting;
    expect(through).toBe(true);
    await release();
    await wb.drain();
  });

  it('a failed write keeps its chunks pending and surfaces the error to the producer', async () => {
    const { writer, release } = slowWriter(100_000);
    const wb = new WriteBehind(writer, 1 << 30, () => undefined);
    wb.push(chunk(80_000));
    await release();
    wb.push(chunk(30_000));
    wb.push(chunk(10_000));
    await release();
    await expect(wb.drain()).rejects.toBeInstanceOf(StoreFullError);
    expect(wb.pending().map((c) => c.length)).toEqual([30_000, 10_000]);
    expect(() => wb.push(chunk(1))).toThrow(StoreFullError);
  });
});
