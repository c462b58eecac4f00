/**
 * The live view: one snapshot of what changes by the second (figures, downloads, prefetch jobs,
 * upstreams, the charts), sent as JSON by GET /admin/live and as server-sent events by
 * /admin/live/events. Cheap by design: no inventory walk (that is the images list's job).
 */
import { charts } from './chart.js';
import type { ConsoleDeps, LiveSnapshot } from './types.js';

export async function liveSnapshot(deps: ConsoleDeps): Promise<LiveSnapshot> {
  const [f, upstreams] = await Promise.all([deps.figures(), deps.upstreams()]);
  const at = deps.now();
  // The history plus the current figures as the newest point: the charts end at now.
  const samples = [...deps.history.samples().filter((s) => s.t < at), { t: at, hits: f.hits, misses: f.misses, bytesSaved: f.bytesSaved, cacheBytes: f.cacheBytes }];
  return {
    at,
    figures: { ...f, hitRatio: f.hits + f.misses > 0 ? f.hits / (f.hits + f.misses) : undefined },
    downloads: deps.downloads().sort((a, b) => a.origin.localeCompare(b.origin) || a.digest.localeCompare(b.digest)),
    prefetch: deps.prefetch().reverse(),
    upstreams,
    charts: charts(samples, f.limitBytes),
  };
}
