/**
 * The operator console on the admin listener (behind the admin authentication when it is on):
 *   GET /ui                       the page (server-rendered; ?repository=NAME lists that repository's images)
 *   GET /ui/console.js|css        the client (compiled at build time) and the stylesheet
 *   GET /ui/fragments/cache       the repositories and images sections alone (the client's refresh after an action)
 * and the JSON it reads, beside the existing admin API (pins, purge, images… are the existing routes):
 *   GET /admin/live               figures, downloads in flight, prefetch jobs, upstreams, charts (LiveSnapshot)
 *   GET /admin/live/events        the same as server-sent events (`live`), one every liveIntervalMs
 *   GET /admin/downloads          downloads in flight: [{digest, origin, received, size}]
 *   GET /admin/upstreams          [{name, url, health, availability, retryAfter, rateLimitRemaining, rateLimitLimit}]
 *   GET /admin/history            {intervalMs, samples: [{t, hits, misses, bytesSaved, cacheBytes}]}
 *   GET /admin/prefetch           the prefetch jobs kept, newest first
 * Every console response says what the browser may run: scripts and styles from this origin only.
 */
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { RepositoryParser } from '../admin/app.js';
import { liveSnapshot } from './live.js';
import { cacheLists, page } from './page.js';
import { CONSOLE_CSS } from './style.js';
import type { ConsoleDeps } from './types.js';

export const CONSOLE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

function secure(c: Context): void {
  c.header('content-security-policy', CONSOLE_CSP);
  c.header('x-content-type-options', 'nosniff');
  c.header('referrer-policy', 'no-referrer');
  c.header('x-frame-options', 'DENY');
  c.header('cache-control', 'no-store');
}

export function mountConsole(app: Hono, deps: ConsoleDeps, parseRepository: RepositoryParser): void {
  const lists = async (repository: string | undefined) => {
    const filter = repository ? parseRepository(repository) : undefined;
    const [summary, repos, images] = await Promise.all([deps.admin.summary(), deps.admin.repositories(), deps.admin.images(filter)]);
    return { summary, repos, images };
  };
  const repositoryOf = (c: Context) => c.req.query('repository') || undefined;

  app.get('/', (c) => c.redirect('/ui', 302));
  app.get('/ui/', (c) => c.redirect('/ui', 301));
  app.get('/ui', async (c) => {
    const repository = repositoryOf(c);
    const [live, l] = await Promise.all([liveSnapshot(deps), lists(repository)]);
    secure(c);
    return c.html(page({ live, ...l, repository, version: deps.version }).value);
  });
  app.get('/ui/fragments/cache', async (c) => {
    const repository = repositoryOf(c);
    const l = await lists(repository);
    secure(c);
    return c.html(cacheLists(l.summary, l.repos, l.images, repository, deps.now()).value);
  });
  app.get('/ui/console.css', (c) => {
    secure(c);
    c.header('cache-control', 'no-cache');
    return c.body(CONSOLE_CSS, 200, { 'content-type': 'text/css; charset=utf-8' });
  });
  app.get('/ui/console.js', async (c) => {
    const js = await deps.clientScript();
    secure(c);
    if (js === undefined) return c.text('// the console client was not built: run `npm run build`\n', 404);
    c.header('cache-control', 'no-cache');
    return c.body(js, 200, { 'content-type': 'text/javascript; charset=utf-8' });
  });

  app.get('/admin/live', async (c) => c.json(await liveSnapshot(deps)));
  app.get('/admin/live/events', (c) =>
    streamSSE(c, async (stream) => {
      let id = 0;
      // `retry`: how soon the browser reconnects after a dropped stream (a restart, a proxy's timeout).
      // The loop ends when the browser goes away (the stream is aborted, or a write fails).
      while (!stream.aborted && !stream.closed) {
        try {
          await stream.writeSSE({ event: 'live', data: JSON.stringify(await liveSnapshot(deps)), id: String(++id), retry: 3000 });
        } catch {
          return;
        }
        await stream.sleep(deps.liveIntervalMs);
      }
    }),
  );
  app.get('/admin/downloads', (c) => c.json(deps.downloads()));
  app.get('/admin/upstreams', async (c) => c.json(await deps.upstreams()));
  app.get('/admin/history', (c) => c.json({ intervalMs: deps.history.intervalMs, samples: deps.history.samples() }));
  app.get('/admin/prefetch', (c) => c.json(deps.prefetch().reverse()));
}
