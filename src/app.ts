/**
 * createApp: the HTTP application. Mounts the /v2/ routes, /metrics, /healthz and /readyz, request
 * metrics and logs, and the one error handler that turns every error into an OCI envelope.
 */
import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import type { Registry as PromRegistry } from 'prom-client';
import type { AccessControl } from './access/service.js';
import { mountAccess } from './http/access.js';
import { DEFAULT_RETRY_AFTER, errorResponse } from './http/errors.js';
import { mountRoutes, type Env } from './http/routes.js';
import type { Metrics } from './metrics.js';
import { RegistryError } from './registry/errors.js';
import type { Logger } from './observability/types.js';
import type { Registry } from './registry/service.js';

export interface Readiness {
  /** Storage is writable (required for ready). */
  storage(): Promise<boolean>;
  /** Upstream reachability as last observed (reported, not required). */
  upstreams(): Record<string, 'up' | 'down' | 'unknown'>;
  /** Per upstream: online, or assumed offline with the seconds to the next probe (upstream/availability.ts). */
  availability?(): Record<string, { state: 'online' | 'offline'; retryAfter?: number; periodMs?: number; probing: boolean; reason?: string }>;
}

export interface AppDeps {
  registry: Registry;
  metrics: Metrics;
  promRegistry: PromRegistry;
  logger: Logger;
  readiness: Readiness;
  /** Access control (auth on): who may pull what; `realm` is the token endpoint's URL in challenges (empty: derived). */
  access?: { control: AccessControl; realm: string };
  /** nginx's internal location over the blob directory (config `serve.accelRedirect`); undefined: the mirror streams every blob. */
  accelRedirect?: string;
}

export function createApp(deps: AppDeps): Hono<Env> {
  const { metrics, logger } = deps;
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const started = performance.now();
    const id = sanitizeId(c.req.header('x-request-id')) ?? randomUUID();
    c.set('route', 'other');
    const frame: Record<string, string> = c.req.path.startsWith('/v2') ? { 'x-request-id': id, 'docker-distribution-api-version': 'registry/2.0' } : { 'x-request-id': id };
    // A head written by the route itself (http/send.ts) takes the frame in; any other answer gets it below.
    c.set('frame', frame);
    await next();
    const out = c.env?.outgoing;
    if (out && typeof out.setHeader === 'function') {
      // The adapter writes a returned Response after this: these join its headers then.
      if (!out.headersSent) for (const k in frame) out.setHeader(k, frame[k]!);
    } else {
      // app.request (tests, no Node). c.header() on a finished response rebuilds it (a buffered body
      // becomes a web stream), which is why Node answers never take this path.
      for (const k in frame) c.header(k, frame[k]);
    }
    const route = c.get('route');
    const seconds = (performance.now() - started) / 1000;
    const status = c.res.status === 200 && c.res.headers.get('x-hono-already-sent') ? (c.env?.outgoing?.statusCode ?? 200) : c.res.status;
    metrics.httpRequests.inc({ route, method: c.req.method, status: String(status) });
    metrics.httpDuration.observe({ route, method: c.req.method }, seconds);
    // Not written at this level (the default is info; `warn` under load): no closure, no listener.
    if (logger.isLevelEnabled?.('info') === false) return;
    const log = () =>
      logger.info(
        {
          reqId: id,
          method: c.req.method,
          route,
          // Audit (access control on): who pulled, from where, what they asked for. Never credentials.
          user: c.get('user'),
          client: c.get('client'),
          repo: c.get('repo'),
          reference: c.get('reference'),
          digest: c.get('digest'),
          status,
          cache: c.get('cache'),
          bytes: c.get('bytes'),
          ms: Math.round((performance.now() - started) * 10) / 10,
        },
        'request',
      );
    // A body written already (sendBytes) is known in full now; a stream's bytes only when it closes.
    if (out && !out.writableEnded && typeof out.once === 'function') out.once('close', log);
    else log();
  });

  app.onError((err, c) => {
    if (!(err instanceof RegistryError)) logger.error({ err: { message: err.message, stack: err.stack } }, 'unexpected error');
    const r = errorResponse(err);
    return new Response(c.req.method === 'HEAD' ? null : r.body, { status: r.status, headers: { ...r.headers, 'docker-distribution-api-version': 'registry/2.0' } });
  });

  app.notFound((c) => {
    const r = errorResponse(new RegistryError('ROUTE_UNKNOWN', 'not found', { detail: { path: c.req.path.slice(0, 300) } }));
    return c.body(r.body, 404, r.headers);
  });

  app.get('/healthz', (c) => {
    c.set('route', 'health');
    return c.json({ status: 'ok' });
  });

  app.get('/readyz', async (c) => {
    c.set('route', 'health');
    const storage = await deps.readiness.storage().catch(() => false);
    const body = {
      status: storage ? 'ready' : 'not ready',
      storage: storage ? 'writable' : 'unwritable',
      upstreams: deps.readiness.upstreams(),
      ...(deps.readiness.availability ? { availability: deps.readiness.availability() } : {}),
    };
    // Every 503 the mirror answers carries Retry-After (an orchestrator or client may honour it).
    return c.json(body, storage ? 200 : 503, storage ? {} : { 'retry-after': String(DEFAULT_RETRY_AFTER) });
  });

  app.get('/metrics', async (c) => {
    c.set('route', 'metrics');
    return c.body(await deps.promRegistry.metrics(), 200, { 'content-type': deps.promRegistry.contentType });
  });

  const gate = deps.access
    ? mountAccess(app, deps.access.control, {
        realm: deps.access.realm,
        resolve: (name) => {
          try {
            const ref = deps.registry.route(name, undefined);
            return `${ref.upstream}/${ref.repo}`;
          } catch {
            return undefined;
          }
        },
      })
    : undefined;
  mountRoutes(app, deps.registry, (source, n) => metrics.servedBytes.inc({ source }, n), gate, deps.accelRedirect);
  return app;
}

function sanitizeId(v: string | undefined): string | undefined {
  return v && /^[A-Za-z0-9._-]{1,128}$/.test(v) ? v : undefined;
}
