/**
 * Human-readable output of `regmirror cache`: sizes in binary units with one decimal, times as
 * "3 min ago" (with the ISO time where there is room), and left-aligned tables.
 */

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`; `-` for undefined. */
export function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  if (Math.abs(n) < 1024) return `${Math.round(n)} B`;
  let v = n / 1024;
  let i = 0;
  // Round first, so 1023.96 KiB reads 1.0 MiB and not 1024.0 KiB.
  while (Math.abs(Math.round(v * 10) / 10) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${UNITS[i]}`;
}

/** `just now`, `45 s ago`, `3 min ago`, `5 h ago`, `2 days ago`; `never` for undefined. */
export function formatAgo(at: number | undefined, now: number): string {
  if (at === undefined || !Number.isFinite(at)) return 'never';
  const s = Math.round((now - at) / 1000);
  if (s < 0) return 'in the future';
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ago`;
  const d = Math.floor(h / 24);
  return `${d} days ago`;
}

/** `3 min ago (2026-11-29T23:45:00.000Z)`, or `never`. */
export function formatTime(at: number | undefined, now: number): string {
  if (at === undefined || !Number.isFinite(at)) return 'never';
  return `${formatAgo(at, now)} (${new Date(at).toISOString()})`;
}

/** `87.5%`, or `-` before any request. */
export function formatPercent(ratio: number | undefined): string {
  if (ratio === undefined || !Number.isFinite(ratio)) return '-';
  return `${(ratio * 100).toFixed(1)}%`;
}

/** `sha256:0123456789ab` (the algorithm and 12 hex digits, as docker shows image ids). */
export function shortDigest(digest: string): string {
  const i = digest.indexOf(':');
  return i < 0 ? digest.slice(0, 12) : `${digest.slice(0, i)}:${digest.slice(i + 1, i + 13)}`;
}

/**
 * Columns padded to the widest cell (two spaces between), the last one unpadded; no trailing spaces.
 * `right` names the columns aligned right (numbers and sizes).
 */
export function formatTable(header: string[], rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => {
        const last = c === r.length - 1;
        if (right.has(c)) return cell.padStart(widths[c]!);
        return last ? cell : cell.padEnd(widths[c]!);
      })
      .join('  ')
      .trimEnd();
  return `${all.map(line).join('\n')}\n`;
}
