/**
 * POSIX ustar archives, byte for byte what tar(1) and every container runtime read: fixed mtimes
 * and owners so the same entries always give the same bytes (and so the same layer digests).
 */

export interface TarEntry {
  path: string;
  content?: Buffer | string;
  mode?: number;
  type?: 'file' | 'dir' | 'symlink';
  linkTarget?: string;
}

/** Fixed mtime (2020-01-01T00:00:00Z) so layer digests never depend on when the test ran. */
export const MTIME = 1_577_836_800;
const BLOCK = 512;

/** Writes `value` as zero-padded octal filling `width - 1` digits plus a NUL, as ustar expects. */
function writeOctal(header: Buffer, offset: number, width: number, value: number): void {
  const digits = value.toString(8).padStart(width - 1, '0');
  if (digits.length > width - 1) throw new Error(`tar: value ${value} does not fit in ${width} bytes`);
  header.write(digits, offset, width - 1, 'ascii');
  header[offset + width - 1] = 0;
}

function writeString(header: Buffer, offset: number, width: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > width) throw new Error(`tar: "${value}" is longer than ${width} bytes`);
  bytes.copy(header, offset);
}

/** ustar keeps names in two fields: `prefix` (155) + '/' + `name` (100). Split at a '/' that fits both. */
function splitName(path: string): { name: string; prefix: string } {
  if (Buffer.byteLength(path) <= 100) return { name: path, prefix: '' };
  // A trailing '/' (directories) must stay in `name`, so never split on it.
  for (let i = path.length - 2; i > 0; i--) {
    if (path[i] !== '/') continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100) return { name, prefix };
  }
  throw new Error(`tar: path too long for ustar: ${path}`);
}

function tarHeader(entry: Required<Pick<TarEntry, 'path' | 'type'>> & { mode: number; size: number; linkTarget: string }): Buffer {
  const h = Buffer.alloc(BLOCK, 0);
  const { name, prefix } = splitName(entry.path);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, entry.mode);
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, entry.size);
  writeOctal(h, 136, 12, MTIME);
  h.fill(0x20, 148, 156); // checksum field counts as eight spaces while summing
  h.write(entry.type === 'dir' ? '5' : entry.type === 'symlink' ? '2' : '0', 156, 1, 'ascii');
  writeString(h, 157, 100, entry.linkTarget);
  h.write('ustar\u000000', 257, 8, 'ascii'); // magic "ustar\0" + version "00"
  writeString(h, 265, 32, 'root');
  writeString(h, 297, 32, 'root');
  writeOctal(h, 329, 8, 0); // devmajor
  writeOctal(h, 337, 8, 0); // devminor
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  // Checksum: six octal digits, NUL, space (the historical layout every tar accepts).
  h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'ascii');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** Layer paths are relative to the rootfs: no leading '/' or './', directories end in '/'. */
export function normalisePath(path: string, type: TarEntry['type']): string {
  let p = path.replace(/^(\.\/|\/)+/, '');
  if (p === '') throw new Error(`tar: empty path from "${path}"`);
  if (type === 'dir' && !p.endsWith('/')) p += '/';
  if (type !== 'dir') p = p.replace(/\/+$/, '');
  return p;
}

/** A POSIX ustar archive of `files`, in the order given, ending with two zero blocks. */
export function makeTar(files: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const type = f.type ?? 'file';
    const path = normalisePath(f.path, type);
    const data = type === 'file' ? (typeof f.content === 'string' ? Buffer.from(f.content, 'utf8') : (f.content ?? Buffer.alloc(0))) : Buffer.alloc(0);
    if (type === 'symlink' && !f.linkTarget) throw new Error(`tar: symlink ${path} needs linkTarget`);
    const mode = f.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644);
    parts.push(tarHeader({ path, type, mode, size: data.length, linkTarget: f.linkTarget ?? '' }));
    if (data.length > 0) {
      parts.push(data);
      const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
      if (pad) parts.push(Buffer.alloc(pad, 0));
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2, 0));
  return Buffer.concat(parts);
}
