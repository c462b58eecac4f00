/**
 * Bundles for the air-gap tests: OCI layout tars written with tar-stream (so hostile names, links
 * and cut archives can be made at will), read back into entries, and run through import.
 */
import { Readable, Writable } from 'node:stream';
import { pack, type Header } from 'tar-stream';
import { tarEntries } from '../../src/airgap/source.js';
import { allBlobs, descriptorOf, MT, type Blob, type Image } from '../helpers/images.js';
import { waitFor } from '../helpers/wait.js';

export interface RawEntry {
  name: string;
  content?: Buffer | string;
  type?: Header['type'];
  linkname?: string;
}

/** A tar of the entries, as given (no normalisation). */
export async function tarOf(entries: RawEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c) => void chunks.push(c as Buffer));
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const e of entries) {
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    await new Promise<void>((resolve, reject) =>
      p.entry({ name: e.name, type: e.type ?? 'file', ...(e.linkname ? { linkname: e.linkname } : {}), mode: 0o644 }, content ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** The entries of an OCI layout: refs (name → root manifest or index) and every blob of `things`. */
export function layoutEntries(refs: Record<string, Blob>, things: Array<Image | Blob>, opts: { omit?: string[]; corrupt?: string } = {}): RawEntry[] {
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: Object.entries(refs).map(([ref, b]) => ({ ...descriptorOf(b), annotations: { 'org.opencontainers.image.ref.name': ref } })),
  };
  const blobs = allBlobs(...things, ...Object.values(refs)).filter((b) => !opts.omit?.includes(b.digest));
  return [
    { name: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { name: 'index.json', content: JSON.stringify(index) },
    { name: 'blobs/', type: 'directory' },
    { name: 'blobs/sha256/', type: 'directory' },
    ...blobs.map((b) => {
      let content = b.bytes;
      if (b.digest === opts.corrupt) {
        content = Buffer.from(b.bytes);
        content[0] = content[0]! ^ 0xff;
      }
      return { name: `blobs/sha256/${b.digest.slice(7)}`, content };
    }),
  ];
}

export const entriesOf = (tar: Buffer) => tarEntries(Readable.from([tar]));

/** A Writable collecting what is written. */
export function collector(): { stream: Writable; bytes(): Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

/** The files of a tar: name → bytes (in order). */
export async function filesOf(tar: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const e of entriesOf(tar)) {
    const chunks: Buffer[] = [];
    for await (const c of e.body) chunks.push(c);
    if (!e.isDir) {
      if (out.has(e.name)) throw new Error(`${e.name} twice in the tar`);
      out.set(e.name, Buffer.concat(chunks));
    }
  }
  return out;
}

/** Waits until every digest is in the mirror's store (a pulled blob is renamed into it just after its last byte is served). */
export async function waitStored(m: { blobs: { stat(d: string): Promise<unknown> } }, digests: string[]): Promise<void> {
  await waitFor(async () => (await Promise.all(digests.map((d) => m.blobs.stat(d)))).every((x) => x !== undefined), 5000, 'the pulled blobs in the store');
}
