/**
 * The admin API, on its own listener (default 127.0.0.1:5001): JSON over the cache lifecycle
 * (CacheAdmin). Documented in README "Cache administration". With auth on it wants a member of
 * `auth.adminGroup` (requireAdmin); without, only local names reach it (localHostsOnly).
 */
import { isIP } from 'node:net';
import { Hono, type Context } from 'hono';
import { mountAirgapRoutes } from '../airgap/admin-routes.js';
import type { Airgap } from '../airgap/service.js';
import type { PrefetchJobs } from '../airgap/prefetch.js';
import { AdminError } from '../lifecycle/admin.js';
import type { CacheAdmin, PurgeTarget } from '../lifecycle/types.js';
import type { Logger } from '../observability/types.js';

/** `docker.io/library/alpine` → its upstream and repository; the upstream must be configured. */
export type RepositoryParser = (name: string) => { upstream: string; repo: string };

export function createAdminApp(admin: CacheAdmin, parseRepository: RepositoryParser, logger: Logger, airgap?: Airgap, prefetch?: PrefetchJobs): Hono {
  const app = new Hono();

  app.onError((err, c) => {
    const status = err instanceof AdminError ? (err.kind === 'not_found' ? 404 : 400) : err instanceof SyntaxError ? 400 : 500;
    if (status === 500) logger.error({ err: err.message }, 'admin API error');
    const code = status === 404 ? 'NOT_FOUND' : status === 400 ? 'INVALID' : 'UNKNOWN';
    return c.json({ errors: [{ code, message: status === 500 ? 'internal error' : err.message }] }, status);
  });
  // A browser holding the admin's Basic credentials (the console) must not be made to purge by
  // another site's form or script: changes are taken only from this origin or from non-browser
  // clients (no Origin, no Sec-Fetch-Site). Reads stay open to both (they change nothing).
  app.use('*', async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const site = c.req.header('sec-fetch-site');
    const origin = c.req.header('origin');
    let foreign = site !== undefined && site !== 'same-origin' && site !== 'none';
    if (origin !== undefined) {
      try {
        foreign ||= new URL(origin).host !== c.req.header('host');
      } catch {
        foreign = true;
      }
    }
    if (foreign) return c.json({ errors: [{ code: 'DENIED', message: 'changes to the cache are accepted from the console\'s own origin only' }] }, 403);
    return next();
  });
  app.notFound((c) => c.json({ errors: [{ code: 'NOT_FOUND', message: `no admin endpoint ${c.req.method} ${c.req.path.slice(0, 200)}` }] }, 404));

  app.get('/admin/cache', async (c) => c.json(await admin.summary()));
  app.get('/admin/repositories', async (c) => c.json(await admin.repositories()));
  app.get('/admin/images', async (c) => {
    const name = c.req.query('repository');
    return c.json(await admin.images(name ? parseRepository(name) : undefined));
  });
  app.post('/admin/purge', async (c) => {
    const body = await jsonBody(c);
    let target: PurgeTarget;
    if (body.all === true) target = { all: true };
    else {
      const ref = parseRepository(requiredString(body, 'repository'));
      const tag = optionalString(body, 'tag');
      const digest = optionalString(body, 'digest');
      target = { ...ref, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
    }
    return c.json(await admin.purge(target));
  });
  app.post('/admin/revalidate', async (c) => {
    const body = await jsonBody(c);
    const ref = parseRepository(requiredString(body, 'repository'));
    return c.json({ revalidated: await admin.revalidate(ref.upstream, ref.repo, requiredString(body, 'tag')) });
  });
  app.get('/admin/pins', async (c) => c.json({ pins: await admin.pins() }));
  app.post('/admin/pins', async (c) => c.json({ pins: await admin.pin(requiredString(await jsonBody(c), 'pattern')) }));
  app.delete('/admin/pins', async (c) => c.json({ pins: await admin.unpin(requiredString(await jsonBody(c), 'pattern')) }));
  app.post('/admin/evict', async (c) => c.json((await admin.evict()) ?? { evicted: null }));
  app.post('/admin/gc', async (c) => c.json(await admin.gc()));
  // Bundles and prefetch jobs (src/airgap/admin-routes.ts): POST /admin/import, /admin/prefetch.
  if (airgap) mountAirgapRoutes(app, airgap, prefetch);
  return app;
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.length > 64 * 1024) throw new AdminError('invalid', 'request body too large');
  const v: unknown = text.trim() === '' ? {} : JSON.parse(text);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AdminError('invalid', 'the body must be a JSON object');
  return v as Record<string, unknown>;
}

function requiredString(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '') throw new AdminError('invalid', `"${key}" is required (a string)`);
  return v;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const v = body[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new AdminError('invalid', `"${key}" must be a non-empty string`);
  return v;
}

/** Checks a request's Authorization header (HTTP Basic) for the admin role; the address is the socket's. */
export type AdminCheck = (authorization: string | undefined, address: string | undefined) => Promise<'ok' | 'unauthorized' | 'forbidden' | { retryAfter: number }>;

/**
 * The admin API behind a check (access control on): 401 with a Basic challenge without valid
 * credentials, 403 for a user outside the admin group, 429 after too many failed logins.
 */
export function requireAdmin(inner: Hono, check: AdminCheck): Hono {
  const app = new Hono<{ Bindings: { incoming?: { socket?: { remoteAddress?: string } } } }>();
  app.all('*', async (c) => {
    const r = await check(c.req.header('authorization'), c.env?.incoming?.socket?.remoteAddress);
    if (r === 'ok') return inner.fetch(c.req.raw, c.env);
    if (r === 'forbidden') return c.json({ errors: [{ code: 'DENIED', message: 'the admin API needs the admin role' }] }, 403);
    if (r === 'unauthorized') return c.json({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, 401, { 'www-authenticate': 'Basic realm="regmirror-admin"' });
    return c.json({ errors: [{ code: 'TOOMANYREQUESTS', message: 'too many failed logins: try again later' }] }, 429, { 'retry-after': String(r.retryAfter) });
  });
  return app as unknown as Hono;
}

/**
 * Without access control the admin API trusts whoever reaches its listener, meant to be loopback.
 * A web page can still reach it through DNS rebinding (its own name made to resolve to 127.0.0.1):
 * the browser then sends that name as Host and as Origin, so the same-origin check above passes, and
 * the page could purge the cache or read it. Such requests name the listener by a DNS name; local
 * clients use an address, `localhost`, this machine's name or a name the operator lists (`admin.hosts`),
 * which is all this lets through.
 */
export function localHostsOnly(inner: Hono, hostNames: string[]): Hono {
  const names = new Set(['localhost', ...hostNames.map((h) => h.toLowerCase())]);
  const app = new Hono();
  app.all('*', (c) => {
    // The URL's host is the Host header's under Node (the adapter builds the URL from it).
    const host = new URL(c.req.url).hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
    if (isIP(host) !== 0 || names.has(host) || host.endsWith('.localhost')) return inner.fetch(c.req.raw, c.env);
    return c.json({ errors: [{ code: 'DENIED', message: 'the admin API answers requests to an IP address, localhost, this host\'s name, the admin.listen host or a name in admin.hosts' }] }, 421);
  });
  return app;
}
