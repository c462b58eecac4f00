/**
 * The admin API's air-gap routes (mounted by admin/app.ts):
 *   POST   /admin/import[?repository=NAME]  body: an OCI layout tar; answers the ImportResult as JSON,
 *                                           or 400 with the first bad entry (nothing imported)
 *   POST   /admin/prefetch                  {"images": [...], "platforms": ["linux/amd64"] | "all"}:
 *                                           starts a job; 202 with its progress (PrefetchSnapshot)
 *   GET    /admin/prefetch/:id              its progress
 *   DELETE /admin/prefetch/:id              cancels it; its progress
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Hono } from 'hono';
import { BundleError } from './layout.js';
import type { PrefetchJobs } from './prefetch.js';
import type { Airgap } from './service.js';
import { tarEntries } from './source.js';

const invalid = (message: string) => ({ errors: [{ code: 'INVALID', message }] });

export function mountAirgapRoutes(app: Hono, airgap: Airgap, prefetch?: PrefetchJobs): void {
  app.post('/admin/import', async (c) => {
    const body = c.req.raw.body;
    if (!body) return c.json(invalid('the body must be the bundle (an OCI layout tar)'), 400);
    const repository = c.req.query('repository');
    try {
      const result = await airgap.import(tarEntries(Readable.fromWeb(body as WebReadableStream<Uint8Array>)), repository ? { repository } : {});
      return c.json(result);
    } catch (e) {
      if (e instanceof BundleError) return c.json({ errors: [{ code: 'BUNDLE_INVALID', message: e.message }] }, 400);
      throw e;
    }
  });
  if (!prefetch) return;
  app.post('/admin/prefetch', async (c) => {
    const text = await c.req.text();
    if (text.length > 1024 * 1024) return c.json(invalid('request body too large'), 400);
    let body: { images?: unknown; platforms?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      return c.json(invalid('the body must be JSON: {"images": [...], "platforms": [...] | "all"}'), 400);
    }
    const images = body?.images;
    if (!Array.isArray(images) || images.length === 0 || images.length > 1000 || !images.every((i) => typeof i === 'string' && i !== '' && i.length < 600)) {
      return c.json(invalid('"images" must be a list of 1 to 1000 image references'), 400);
    }
    const p = body.platforms;
    if (p !== undefined && p !== 'all' && !(Array.isArray(p) && p.every((x) => typeof x === 'string' && /^[a-z0-9]+\/[a-z0-9_-]+(\/[a-z0-9]+)?$/.test(x)))) {
      return c.json(invalid('"platforms" must be "all" or a list of OS/ARCH[/VARIANT]'), 400);
    }
    const job = prefetch.start({ images: images as string[], ...(Array.isArray(p) ? { platforms: p as string[] } : {}) });
    return c.json(job.snapshot(), 202);
  });
  app.get('/admin/prefetch/:id', (c) => {
    const job = prefetch.get(c.req.param('id'));
    return job ? c.json(job.snapshot()) : c.json({ errors: [{ code: 'NOT_FOUND', message: 'no such prefetch job' }] }, 404);
  });
  app.delete('/admin/prefetch/:id', async (c) => {
    const job = prefetch.get(c.req.param('id'));
    if (!job) return c.json({ errors: [{ code: 'NOT_FOUND', message: 'no such prefetch job' }] }, 404);
    job.cancel();
    await job.done;
    return c.json(job.snapshot());
  });
}
