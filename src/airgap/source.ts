/**
 * The entries of a bundle, from a tar stream (tar-stream's extractor) or an OCI layout directory,
 * as one shape the importer reads in order. Each entry's body must be consumed (or drained) before
 * the next is asked for. Links of any kind are refused here: a bundle holds files and directories.
 */
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { BundleError } from './layout.js';

export interface BundleEntry {
  /** The name as the bundle gives it (checked by classifyEntry). */
  name: string;
  isDir: boolean;
  size: number;
  body: AsyncIterable<Buffer>;
}

/** The entries of a tar stream. Truncation and malformed headers become BundleErrors naming the entry. */
export async function* tarEntries(input: Readable): AsyncGenerator<BundleEntry> {
  // The input's errors are taken from now on: while tar-stream loads, one is held for the extractor
  // (an error with no listener would end the process instead of becoming a BundleError).
  const held: { ex?: ReturnType<typeof import('tar-stream').extract>; early?: Error } = {};
  input.on('error', (e) => (held.ex ? held.ex.destroy(e) : (held.early ??= e)));
  // Loaded on first use: a mirror that never imports a bundle never holds the tar code.
  const { extract } = await import('tar-stream');
  const ex = extract();
  held.ex = ex;
  if (held.early) ex.destroy(held.early);
  input.pipe(ex);
  let current: string | undefined;
  // tar-stream reads past zero blocks for ever (the end-of-archive marker is two of them): a stream of
  // zeros (/dev/zero) or endless padding would never end. The bytes the input delivered may run
  // ahead of the entries seen so far (their headers and bodies) by the chunk just read, what the
  // extractor buffers, headers of long names and a record of padding; by MAX_BETWEEN_ENTRIES more,
  // the bundle is refused.
  let delivered = 0;
  let accounted = 0;
  const watch = (chunk: Buffer) => {
    delivered += chunk.length;
    if (delivered - chunk.length - accounted > MAX_BETWEEN_ENTRIES) {
      ex.destroy(new BundleError(`more than ${MAX_BETWEEN_ENTRIES} bytes without a tar entry${current ? ` after ${current.slice(0, 200)}` : ''}: not a tar archive, or one padded without end`));
    }
  };
  input.on('data', watch);
  try {
    for await (const entry of ex) {
      const h = entry.header;
      accounted += ENTRY_ALLOWANCE + Math.ceil((h.size ?? 0) / 512) * 512;
      current = h.name;
      const type = h.type ?? 'file';
      if (type === 'symlink' || type === 'link') throw new BundleError(`entry ${JSON.stringify(h.name.slice(0, 200))}: links are not allowed in a bundle`);
      if (type !== 'file' && type !== 'contiguous-file' && type !== 'directory') {
        throw new BundleError(`entry ${JSON.stringify(h.name.slice(0, 200))}: unsupported entry type ${type}`);
      }
      yield { name: h.name, isDir: type === 'directory', size: h.size ?? 0, body: entry as AsyncIterable<Buffer> };
      // Whatever the reader left unread is skipped (tar-stream needs the body consumed to go on).
      entry.resume();
    }
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`the bundle is not a complete tar archive${current ? ` (at entry ${current.slice(0, 200)})` : ''}: ${(e as Error).message}`);
  } finally {
    input.off('data', watch);
    input.unpipe(ex);
    if (!ex.destroyed) ex.destroy();
  }
}

/** Bytes a tar stream may carry beyond its entries' headers and bodies (padding, buffering). */
const MAX_BETWEEN_ENTRIES = 1024 * 1024;
/** An entry's header, with room for the extended headers of a long name. */
const ENTRY_ALLOWANCE = 4 * 1024;

async function* empty(): AsyncGenerator<Buffer> {}

/** The entries of an OCI layout directory (oci-layout, index.json, blobs/…); symlinks are refused. */
export async function* dirEntries(root: string): AsyncGenerator<BundleEntry> {
  async function* walk(rel: string): AsyncGenerator<BundleEntry> {
    const names = (await readdir(join(root, rel))).sort();
    for (const n of names) {
      const r = rel === '' ? n : `${rel}/${n}`;
      const st = await lstat(join(root, r));
      if (st.isSymbolicLink()) throw new BundleError(`entry ${r}: links are not allowed in a bundle`);
      if (st.isDirectory()) {
        yield { name: r, isDir: true, size: 0, body: empty() };
        yield* walk(r);
      } else if (st.isFile()) {
        yield { name: r, isDir: false, size: st.size, body: createReadStream(join(root, r)) as AsyncIterable<Buffer> };
      } else throw new BundleError(`entry ${r}: not a regular file`);
    }
  }
  yield* walk('');
}
