/**
 * The HTTP side of access control (src/access/): a middleware on /v2 that identifies the caller
 * (Basic, Bearer or anonymous by address) and runs the rest of the request on its behalf (for the
 * per-client upstream limit), the /token endpoint of the registry token flow, and the gate the
 * routes call once they know the repository. Refusals are RegistryErrors answered in app.ts:
 * 401 with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge, 403, or 429.
 */
import type { Context, Hono, Next } from 'hono';
import type { AccessControl, Identity } from '../access/service.js';
import { RegistryError } from '../registry/errors.js';
import type { RepoRef } from '../registry/service.js';
import { ChallengeError } from './errors.js';
import type { Env } from './routes.js';

/** What the routes ask once they have parsed the request. Each throws when the caller may not go on. */
export interface AccessGate {
  /** The base endpoint and the catalog. */
  enter(c: Context<Env>): void;
  /** Any route naming a repository (manifests, blobs, tags/list, referrers): checked before the registry is asked. */
  repository(c: Context<Env>, ref: RepoRef): void;
  /** Of these `<upstream>/<repo>` names, those the caller may see. */
  visible(c: Context<Env>, repositories: string[]): Set<string>;
}

export interface AccessMountOptions {
  /** A client-visible name → `<upstream>/<repo>`, undefined when it is not valid. */
  resolve(name: string): string | undefined;
  /** The token endpoint's URL in challenges; empty: this listener's origin + /token. */
  realm: string;
}

export function mountAccess(app: Hono<Env>, access: AccessControl, opts: AccessMountOptions): AccessGate {
  const realm = (c: Context<Env>) => opts.realm || `${new URL(c.req.url).origin}/token`;
  const challenge = (c: Context<Env>, scope?: string, error?: string) =>
    `Bearer realm="${realm(c)}",service="${access.service}"${scope ? `,scope="${scope}"` : ''}${error ? `,error="${error}"` : ''}`;
  const address = (c: Context<Env>) => access.clientAddress(c.env?.incoming?.socket?.remoteAddress, c.req.header('x-forwarded-for'));

  const identify = async (c: Context<Env>, next: Next) => {
    const client = address(c);
    c.set('client', client);
    const id = await access.authenticate(c.req.header('authorization'), client);
    if ('status' in id) {
      if (id.status === 429) throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins: try again later', { retryAfter: id.retryAfter });
      throw new ChallengeError(challenge(c, undefined, 'invalid_token'), 'authentication required');
    }
    c.set('identity', id);
    if (id.user !== undefined) c.set('user', id.user);
    // AsyncLocalStorage costs every promise of the request on Node 20: only when there is a limit to apply.
    if (access.limiting) await access.callers.run(id.user !== undefined ? `user:${id.user}` : `addr:${client}`, next);
    else await next();
  };
  app.use('/v2', identify);
  app.use('/v2/*', identify);

  app.get('/token', async (c) => {
    c.set('route', 'token');
    const client = address(c);
    c.set('client', client);
    const scopes = c.req.queries('scope') ?? [];
    const answer = await access.token(c.req.header('authorization'), client, scopes, (name) => opts.resolve(name));
    return c.json(answer.body, answer.status as 200, answer.headers);
  });

  const identity = (c: Context<Env>): Identity => {
    const id = c.get('identity');
    if (!id) throw new ChallengeError(challenge(c), 'authentication required');
    return id;
  };
  return {
    enter: (c) => {
      if (!access.mayEnter(identity(c))) throw new ChallengeError(challenge(c), 'authentication required');
    },
    repository: (c, ref) => {
      const name = `${ref.upstream}/${ref.repo}`;
      const id = identity(c);
      const decision = access.mayPull(id, name);
      if (decision === 'ok') return;
      const scope = `repository:${name}:pull`;
      // The same answer whether or not the repository exists or is cached: nothing is learnt from it.
      if (decision === 'denied') throw new RegistryError('DENIED', 'requested access to the resource is denied');
      throw new ChallengeError(challenge(c, scope, id.kind === 'bearer' ? 'insufficient_scope' : undefined), 'authentication required');
    },
    visible: (c, repositories) => access.visible(identity(c), repositories),
  };
}
