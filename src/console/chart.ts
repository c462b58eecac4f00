/**
 * The geometry of the console's small charts: SVG path data (`d`) in a fixed viewBox, computed on
 * the server so the page (server-rendered) and the live updates (the client sets `d`) share one
 * drawing. At most `BUCKETS` points per chart, whatever the history holds.
 */
import type { Sample } from './history.js';

export const CHART_W = 300;
export const CHART_H = 60;
const BUCKETS = 120;

export interface Chart {
  /** SVG path data; empty when there is nothing to draw yet. */
  d: string;
  /** The value at the top of the chart (for the axis label). */
  max: number;
  /** The latest value, if any. */
  last: number | undefined;
  /** The time span drawn (ms since the epoch). */
  from: number | undefined;
  to: number | undefined;
}

export interface Charts {
  /** Hits over hits + misses within each interval (0..1); gaps where nothing was asked. */
  hitRatio: Chart;
  /** Bytes served from the cache, cumulative. */
  bytesSaved: Chart;
  /** Bytes on disk, against the cap when there is one. */
  cacheBytes: Chart;
}

/** The last sample of each of at most BUCKETS equal time slices: the points the charts draw. */
function downsample(samples: Sample[]): Sample[] {
  if (samples.length <= BUCKETS) return samples;
  const from = samples[0]!.t;
  const span = Math.max(1, samples[samples.length - 1]!.t - from);
  const out: Sample[] = [];
  let bucket = -1;
  for (const s of samples) {
    const b = Math.min(BUCKETS - 1, Math.floor(((s.t - from) / span) * BUCKETS));
    if (b === bucket) out[out.length - 1] = s;
    else out.push(s);
    bucket = b;
  }
  return out;
}

const fmt = (n: number) => (Math.round(n * 10) / 10).toString();

/** Path data through the points (x in ms, y in value units); undefined values break the line. */
function path(points: Array<{ t: number; v: number | undefined }>, max: number): string {
  if (points.length === 0) return '';
  const from = points[0]!.t;
  const span = points[points.length - 1]!.t - from;
  const x = (t: number) => (span > 0 ? ((t - from) / span) * CHART_W : 0);
  const y = (v: number) => CHART_H - (max > 0 ? Math.min(1, Math.max(0, v / max)) : 0) * (CHART_H - 2) - 1;
  const parts: string[] = [];
  let pen = false;
  const drawn = points.filter((p) => p.v !== undefined);
  // One point (or all at one time): a flat line across, so the value is visible at all.
  if (span === 0 || drawn.length === 1) {
    const v = drawn[drawn.length - 1]?.v;
    return v === undefined ? '' : `M0 ${fmt(y(v))}H${CHART_W}`;
  }
  for (const p of points) {
    if (p.v === undefined) {
      pen = false;
      continue;
    }
    parts.push(`${pen ? 'L' : 'M'}${fmt(x(p.t))} ${fmt(y(p.v))}`);
    pen = true;
  }
  return parts.join('');
}

function chart(points: Array<{ t: number; v: number | undefined }>, max: number): Chart {
  const values = points.map((p) => p.v).filter((v): v is number => v !== undefined);
  return { d: path(points, max), max, last: values[values.length - 1], from: points[0]?.t, to: points[points.length - 1]?.t };
}

/** The three charts from the history (oldest first), the current figures appended as the last point. */
export function charts(samples: Sample[], limitBytes: number | undefined): Charts {
  const pts = downsample(samples);
  const ratio: Array<{ t: number; v: number | undefined }> = pts.map((s, i) => {
    const prev = i > 0 ? pts[i - 1]! : undefined;
    const hits = s.hits - (prev?.hits ?? 0);
    const asked = hits + s.misses - (prev?.misses ?? 0);
    return { t: s.t, v: asked > 0 ? hits / asked : undefined };
  });
  const saved = pts.map((s) => ({ t: s.t, v: s.bytesSaved }));
  const used = pts.map((s) => ({ t: s.t, v: s.cacheBytes }));
  const top = (vs: Array<{ v: number | undefined }>) => Math.max(0, ...vs.map((p) => p.v ?? 0));
  return {
    hitRatio: chart(ratio, 1),
    bytesSaved: chart(saved, top(saved)),
    cacheBytes: chart(used, Math.max(limitBytes ?? 0, top(used))),
  };
}
