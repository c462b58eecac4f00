/**
 * Filesystem BlobStore: temp file, hash while writing, fsync, rename. Only verified, complete files
 * ever appear under blobs/; an existing final file means the work is already done.
 */
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { BufferPool } from '../util/buffer-pool.js';
import { FileBody, type ReadPlan } from './file-body.js';
import { StorePaths, splitDigest } from './paths.js';
import { DigestMismatchError, StoreFullError, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange, type ExternalAppend, type StatOptions } from './store.js';

/**
 * Read sizes for served blobs. Big reads mean fewer syscalls and event-loop turns per byte (one
 * client streams fastest with 1 MiB reads); each open stream holds two reads in memory (FileBody), so
 * the size shrinks as streams multiply and their memory stays near 2 × READ_BUDGET (at most twice
 * that: the pool's buffers are the sizes rounded up to powers of two) up to READ_BUDGET / MIN_READ
 * (64) streams. Past that every stream holds one read (its read and its write take turns; the other
 * streams keep the disk and the sockets busy), so memory grows by 64 KiB a stream: at the 500-client
 * load's peak (~250 streams) ~16 MiB of buffers instead of ~30 (readPlan). That cut the load's peak
 * by ~11 MiB for new streams alone (six interleaved 30-s rounds: 180-203 MiB against 191-208) and by
 * ~11 more for every stream (four rounds: 181-188 against 181-202), as many requests served. Reads
 * of 16 KiB instead (two per stream) cut it by ~12 MiB but the requests served by ~10 % (three 30-s
 * runs each), so the floor stays at 64 KiB.
 */
const MAX_READ = 1024 * 1024;
const MIN_READ = 64 * 1024;
const READ_BUDGET = 4 * 1024 * 1024;

/** Told when a blob appears in or leaves the store (for size accounting). Must not throw. */
export interface StoreEvents {
  added(digest: string, size: number): void;
  removed(digest: string, size: number): void;
}

export class FsBlobStore implements BlobStore {
  readonly paths: StorePaths;
  /** Read streams open now: sizes the reads of the next one, and of all of them when crowded. */
  private openStreams = 0;
  /** Open read streams per digest (eviction leaves these blobs alone). */
  private readonly reading = new Map<string, number>();
  /**
   * `buffers`: where served blobs' read buffers come from and go back to (the composition root
   * shares one with the downloads' readers); a pool of its own by default. Its buffers are powers of
   * two: a stream reads its share into one of the next size up. Rounding the share down to a power
   * of two instead cost 20 warm clients 10-15 % of their throughput (bench workload 2, three rounds:
   * 199 KiB reads became 128 KiB).
   */
  constructor(
    root: string,
    private readonly events?: StoreEvents,
    private readonly buffers: BufferPool = new BufferPool(),
  ) {
    this.paths = new StorePaths(root);
  }

  async init(): Promise<void> {
    await mkdir(this.paths.blobsDir, { recursive: true });
    await mkdir(this.paths.reposDir, { recursive: true });
    // Anything in tmp/ is a download or write a crash (or kill -9) interrupted: never complete, never served.
    await rm(this.paths.tmpDir, { recursive: true, force: true });
    await mkdir(this.paths.tmpDir, { recursive: true });
  }

  /**
   * A stream's reads: the share it got at its open, two buffers; while more than READ_BUDGET /
   * MIN_READ streams are open (asked before every read), the floor's 64 KiB in one buffer. The load
   * changes while a stream runs (under the 500 clients, 0 to 300 streams within a second), and a
   * stream opened in a quiet spell kept its two 256 or 512 KiB buffers through the busy one after:
   * heaptrack put 36 MiB of that load's peak in the answers' buffers, where the floor allows ~16.
   * Only when crowded: re-planned all the time, 20 warm clients (bench workload 2) shrank the first
   * streams' 1 MiB buffers as the others opened, and the buffers given up in that ramp were garbage
   * enough to raise their peak RSS from 120 to 167 MiB.
   */
  private readPlan(share: number): ReadPlan {
    const crowded = () => this.openStreams > READ_BUDGET / MIN_READ;
    return { chunk: () => (crowded() ? MIN_READ : share), reads: () => (crowded() ? 1 : 2) };
  }

  async stat(digest: string, opts?: StatOptions): Promise<BlobInfo | undefined> {
    try {
      const s = await stat(this.paths.blob(digest));
      return opts?.mtime ? { digest, size: s.size, mtimeMs: s.mtimeMs } : { digest, size: s.size };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(this.paths.blob(digest), 'r');
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    let start = 0;
    let end = -1;
    try {
      if (range) ({ start, end } = range);
      else end = (await handle.stat()).size - 1;
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
    const share = Math.max(MIN_READ, Math.min(MAX_READ, Math.floor(READ_BUDGET / (this.openStreams + 1))));
    const stream = new FileBody(handle, start, end, this.readPlan(share), this.buffers);
    this.openStreams++;
    this.reading.set(digest, (this.reading.get(digest) ?? 0) + 1);
    stream.once('close', () => {
      this.openStreams--;
      const n = (this.reading.get(digest) ?? 1) - 1;
      if (n <= 0) this.reading.delete(digest);
      else this.reading.set(digest, n);
    });
    return stream;
  }

  async read(digest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.paths.blob(digest));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async createWriter(digest: string): Promise<BlobWriter> {
    const [alg] = splitDigest(digest);
    // Before the temp file: an algorithm Node cannot hash must not leave a file and a handle behind.
    const hash = createHash(alg);
    const tmp = this.paths.tmp('blob');
    let handle: FileHandle;
    try {
      handle = await open(tmp, 'w+');
    } catch (e) {
      throw wrapWriteError(e);
    }
    return new FsBlobWriter(digest, hash, handle, tmp, this.paths.blob(digest), this.events);
  }

  async put(digest: string, bytes: Uint8Array): Promise<void> {
    const w = await this.createWriter(digest);
    try {
      await w.write(bytes);
      await w.commit(bytes.length);
    } catch (e) {
      await w.abort();
      throw e;
    } finally {
      await w.close();
    }
  }

  async delete(digest: string): Promise<void> {
    const info = await this.stat(digest);
    if (!info) return;
    try {
      await unlink(this.paths.blob(digest));
    } catch (e) {
      if (isNotFound(e)) return;
      throw e;
    }
    this.events?.removed(digest, info.size);
  }

  busy(digest: string): boolean {
    return this.reading.has(digest);
  }

  fileOf(digest: string): string {
    return relative(this.paths.blobsDir, this.paths.blob(digest));
  }

  async space(): Promise<{ free: number; total: number } | undefined> {
    try {
      const s = await statfs(this.paths.blobsDir);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    } catch {
      return undefined;
    }
  }

  async sweepTemp(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let n = 0;
    for (const name of await readdirOrEmpty(this.paths.tmpDir)) {
      const p = join(this.paths.tmpDir, name);
      const s = await stat(p).catch(() => undefined);
      if (!s || s.mtimeMs > cutoff) continue;
      await rm(p, { recursive: true, force: true });
      n++;
    }
    return n;
  }

  async *list(): AsyncIterable<BlobInfo> {
    for (const alg of await readdirOrEmpty(this.paths.blobsDir)) {
      for (const prefix of await readdirOrEmpty(join(this.paths.blobsDir, alg))) {
        for (const hex of await readdirOrEmpty(join(this.paths.blobsDir, alg, prefix))) {
          const digest = `${alg}:${hex}`;
          const info = await this.stat(digest).catch(() => undefined);
          if (info) yield info;
        }
      }
    }
  }
}

class FsBlobWriter implements BlobWriter {
  written = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private closed = false;
  /** Set once another thread appends to the file: its digest, once it said (null: hash the file). */
  private externalHex: string | null | undefined;

  constructor(
    readonly digest: string,
    private readonly hash: Hash,
    private readonly handle: FileHandle,
    private readonly tmpPath: string,
    private readonly finalPath: string,
    private readonly events: StoreEvents | undefined,
  ) {}

  async write(data: Uint8Array | Uint8Array[]): Promise<void> {
    if (this.state !== 'open') throw new Error('write after commit or abort');
    if (this.externalHex !== undefined) throw new Error('write after handing the file to another thread');
    const chunks = Array.isArray(data) ? data : [data];
    const total = chunks.reduce((n, c) => n + c.length, 0);
    try {
      // One writev for many chunks: no copy into a joined buffer, one trip to the thread pool.
      const { bytesWritten } = await this.handle.writev(chunks, this.written);
      if (bytesWritten < total) await this.writeRest(chunks, bytesWritten);
    } catch (e) {
      throw wrapWriteError(e);
    }
    for (const c of chunks) this.hash.update(c);
    this.written += total;
  }

  /** Finishes a short writev, chunk by chunk. */
  private async writeRest(chunks: Uint8Array[], done: number): Promise<void> {
    let skip = done;
    let pos = this.written + done;
    for (const c of chunks) {
      let off = Math.min(skip, c.length);
      skip -= off;
      while (off < c.length) {
        const { bytesWritten } = await this.handle.write(c, off, c.length - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
    }
  }

  external(): ExternalAppend | undefined {
    if (this.state !== 'open' || this.written !== 0 || this.externalHex !== undefined) return undefined;
    this.externalHex = null;
    return {
      fd: this.handle.fd,
      algorithm: this.digest.slice(0, this.digest.indexOf(':')),
      appended: (position) => {
        this.written = position;
      },
      finished: (hex) => {
        this.externalHex = hex ?? null;
      },
      writeError: (e) => wrapWriteError(e),
    };
  }

  async readAt(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.written - position, into ? into.length : Infinity));
    const buf = into ?? Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.handle.read(buf, got, n - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === buf.length ? buf : buf.subarray(0, got);
  }

  async commit(expectedSize?: number, onVerified?: () => void): Promise<void> {
    if (this.state !== 'open') throw new Error(`commit after ${this.state}`);
    const hex = this.externalHex === undefined ? this.hash.digest('hex') : (this.externalHex ?? (await this.hashFile()));
    const actual = `${this.digest.slice(0, this.digest.indexOf(':'))}:${hex}`;
    if (actual !== this.digest || (expectedSize !== undefined && expectedSize !== this.written)) {
      await this.abort();
      throw new DigestMismatchError(this.digest, actual, this.written);
    }
    onVerified?.();
    try {
      await this.handle.sync();
      await mkdir(dirname(this.finalPath), { recursive: true });
      const existed = await stat(this.finalPath).then(() => true, () => false);
      await rename(this.tmpPath, this.finalPath);
      if (!existed) this.events?.added(this.digest, this.written);
    } catch (e) {
      await this.abort();
      throw wrapWriteError(e);
    }
    this.state = 'committed';
  }

  /** The digest of the file's bytes [0, written), read back (when another thread's hash is not to be trusted). */
  private async hashFile(): Promise<string> {
    for (let pos = 0; pos < this.written; ) {
      const part = await this.readAt(pos, 1024 * 1024);
      if (part.length === 0) break;
      this.hash.update(part);
      pos += part.length;
    }
    return this.hash.digest('hex');
  }

  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    await unlink(this.tmpPath).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.state === 'open') await this.abort();
    await this.handle.close().catch(() => undefined);
  }
}

function wrapWriteError(e: unknown): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new StoreFullError(e);
  return e as Error;
}

export function isNotFound(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A directory's entries; none when it does not exist. */
export async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (isNotFound(e)) return [];
    throw e;
  }
}
