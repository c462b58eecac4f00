import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UpstreamError } from '../../src/upstream/errors.js';
import { listenOn } from '../helpers/ports.js';
import { UpstreamAuth, type AuthDeps } from '../../src/upstream/auth.js';
import { parseChallenge, type Challenge } from '../../src/upstream/challenge.js';

interface TokenRequest {
  path: string;
  scope: string | null;
  service: string | null;
  authorization: string | undefined;
}

/** A tiny token realm: records every request, answers with the scripted handler. */
let server: Server;
let realm: string;
let requests: TokenRequest[];
let handler: (req: IncomingMessage, res: ServerResponse, n: number) => void;

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};
/** Issues `tok-<n>` valid for `expiresIn` seconds (null: no expires_in), after `delayMs` (so concurrent callers overlap). */
const issue = (expiresIn: number | null = 300, delayMs = 30) => (_req: IncomingMessage, res: ServerResponse, n: number) => {
  setTimeout(() => json(res, 200, { token: `tok-${n}`, ...(expiresIn !== null ? { expires_in: expiresIn } : {}) }), delayMs);
};

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    requests.push({ path: url.pathname, scope: url.searchParams.get('scope'), service: url.searchParams.get('service'), authorization: req.headers.authorization });
    handler(req, res, requests.length);
  });
  realm = `http://127.0.0.1:${await listenOn(server)}/token`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('UpstreamAuth', () => {
  let agent: Agent;
  let now: number;
  let fetches: boolean[];

  const make = (extra: Partial<AuthDeps> = {}) =>
    new UpstreamAuth({
      dispatcher: agent,
      now: () => now,
      onTokenFetch: (ok) => fetches.push(ok),
      headersTimeout: 5000,
      bodyTimeout: 5000,
      upstream: 'test',
      userAgent: 'regmirror/test',
      ...extra,
    });
  const bearer = (): Challenge => parseChallenge(`Bearer realm="${realm}",service="registry.test",scope="repository:library/alpine:pull"`)!;
  const A = 'repository:library/alpine:pull';
  const B = 'repository:library/busybox:pull';

  beforeEach(() => {
    agent = new Agent();
    now = 1_700_000_000_000;
    requests = [];
    fetches = [];
    handler = issue();
  });
  afterEach(() => agent.close());

  it('knows no header before the first challenge, and asks nobody', async () => {
    const auth = make();
    expect(await auth.headerFor(A)).toBeUndefined();
    expect(requests).toHaveLength(0);
  });

  it('answers a Bearer challenge with a token for the scope, asking the realm with service and scope', async () => {
    const auth = make();
    expect(await auth.answer(bearer(), A)).toBe('Bearer tok-1');
    expect(requests).toEqual([{ path: '/token', scope: A, service: 'registry.test', authorization: undefined }]);
    expect(fetches).toEqual([true]);
  });

  it('caches the token per scope: headerFor the same scope does not ask again', async () => {
    const auth = make();
    await auth.answer(bearer(), A);
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(requests).toHaveLength(1);
  });

  it('renews a token once the clock passes its renewal point (expiry minus a margin)', async () => {
    const auth = make();
    await auth.answer(bearer(), A); // expires_in 300 s: renewed 15 s early
    now += 284_000;
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(requests).toHaveLength(1);
    now += 1_000;
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
    expect(requests).toHaveLength(2);
    expect(requests[1]!.scope).toBe(A);
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
    expect(requests).toHaveLength(2);
  });

  it('a token without expires_in lives 60 s (renewed at 45 s)', async () => {
    handler = issue(null);
    const auth = make();
    await auth.answer(bearer(), A);
    now += 44_999;
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    now += 1;
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
  });

  it('a short-lived token is renewed at three quarters of its life', async () => {
    handler = issue(20);
    const auth = make();
    await auth.answer(bearer(), A);
    now += 14_999;
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    now += 1;
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
  });

  it('separate scopes get separate tokens, fetched without a new challenge', async () => {
    const auth = make();
    expect(await auth.answer(bearer(), A)).toBe('Bearer tok-1');
    expect(await auth.headerFor(B)).toBe('Bearer tok-2');
    expect(requests.map((r) => r.scope)).toEqual([A, B]);
    expect(requests[1]!.service).toBe('registry.test');
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(await auth.headerFor(B)).toBe('Bearer tok-2');
    expect(requests).toHaveLength(2);
  });

  it('keeps a bounded number of tokens: asking for many repositories evicts the least recently used, fetched again when asked', async () => {
    const auth = make({ maxTokenUnits: 3 });
    handler = issue(300, 0);
    expect(await auth.answer(bearer(), A)).toBe('Bearer tok-1');
    expect(await auth.headerFor(B)).toBe('Bearer tok-2');
    const C = 'repository:library/c:pull';
    expect(await auth.headerFor(C)).toBe('Bearer tok-3');
    // A, B and C fill the cache; A used last of them keeps its token when D arrives, B goes.
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(await auth.headerFor('repository:library/d:pull')).toBe('Bearer tok-4');
    expect(requests).toHaveLength(4);
    expect(await auth.headerFor(A)).toBe('Bearer tok-1');
    expect(await auth.headerFor(C)).toBe('Bearer tok-3');
    expect(requests).toHaveLength(4);
    expect(await auth.headerFor(B)).toBe('Bearer tok-5');
    expect(requests.map((r) => r.scope)).toEqual([A, B, C, 'repository:library/d:pull', B]);
  });

  it('a large token counts for the KiB it takes: a 3 KiB token fills a cache of 3 units alone', async () => {
    const auth = make({ maxTokenUnits: 4 });
    handler = (_req, res, n) => json(res, 200, { token: n === 1 ? 'x'.repeat(3 * 1024) : `tok-${n}`, expires_in: 300 });
    expect(await auth.answer(bearer(), A)).toBe(`Bearer ${'x'.repeat(3 * 1024)}`);
    expect(await auth.headerFor(B)).toBe('Bearer tok-2');
    // A (4 units: 3 KiB and its scope) and B (1) exceed 4: A, the older, went.
    expect(await auth.headerFor(A)).toBe('Bearer tok-3');
    expect(requests.map((r) => r.scope)).toEqual([A, B, A]);
  });

  it('concurrent answers for one scope cause ONE token request', async () => {
    const auth = make();
    const headers = await Promise.all(Array.from({ length: 10 }, () => auth.answer(bearer(), A)));
    expect(new Set(headers)).toEqual(new Set(['Bearer tok-1']));
    expect(requests).toHaveLength(1);
  });

  it('concurrent headerFor calls for one new scope cause ONE token request', async () => {
    const auth = make();
    await auth.answer(bearer(), A);
    const headers = await Promise.all([...Array.from({ length: 10 }, () => auth.headerFor(B)), auth.answer(bearer(), B)]);
    expect(new Set(headers)).toEqual(new Set(['Bearer tok-2']));
    expect(requests.map((r) => r.scope)).toEqual([A, B]);
  });

  it('concurrent renewals of an expired token cause ONE token request', async () => {
    const auth = make();
    await auth.answer(bearer(), A);
    now += 3_600_000;
    const headers = await Promise.all(Array.from({ length: 10 }, () => auth.headerFor(A)));
    expect(new Set(headers)).toEqual(new Set(['Bearer tok-2']));
    expect(requests).toHaveLength(2);
  });

  it('a 401 for a request that carried the cached token drops it and fetches another', async () => {
    const auth = make();
    await auth.answer(bearer(), A);
    expect(await auth.answer(bearer(), A, 'Bearer tok-1')).toBe('Bearer tok-2');
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
  });

  it('a late 401 for a request sent before the token existed reuses the cached token', async () => {
    const auth = make();
    await auth.answer(bearer(), A);
    expect(await auth.answer(bearer(), A, undefined)).toBe('Bearer tok-1');
    expect(requests).toHaveLength(1);
  });

  it('sends the configured credentials to the realm as HTTP Basic', async () => {
    const auth = make({ credentials: { username: 'mirror', password: 'p:ss wörd' } });
    await auth.answer(bearer(), A);
    const sent = requests[0]!.authorization!;
    expect(sent).toMatch(/^Basic /);
    expect(Buffer.from(sent.slice('Basic '.length), 'base64').toString('utf8')).toBe('mirror:p:ss wörd');
  });

  it('takes access_token when token is absent (OAuth2 style answers)', async () => {
    handler = (_req, res) => json(res, 200, { access_token: 'oauth-tok', expires_in: 300 });
    expect(await make().answer(bearer(), A)).toBe('Bearer oauth-tok');
  });

  it('a 401 from the realm is an upstream 401, and the next attempt asks again', async () => {
    handler = (_req, res) => json(res, 401, { details: 'incorrect username or password' });
    const auth = make({ credentials: { username: 'u', password: 'wrong' } });
    const err = await auth.answer(bearer(), A).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ kind: 'status', status: 401, upstream: 'test' });
    expect(fetches).toEqual([false]);
    // The failure is not cached: the next request tries the realm again.
    handler = issue();
    expect(await auth.headerFor(A)).toBe('Bearer tok-2');
    expect(requests).toHaveLength(2);
  });

  it('a 403 and a 429 from the realm are upstream statuses (unavailable only for the 429)', async () => {
    handler = (_req, res) => json(res, 403, {});
    await expect(make().answer(bearer(), A)).rejects.toMatchObject({ kind: 'status', status: 403, unavailable: false });
    handler = (_req, res) => json(res, 429, {});
    await expect(make().answer(bearer(), A)).rejects.toMatchObject({ kind: 'status', status: 429, unavailable: true });
  });

  it('a broken token answer is a protocol failure, never a bogus token', async () => {
    handler = (_req, res) => json(res, 200, { nothing: 'here' });
    await expect(make().answer(bearer(), A)).rejects.toMatchObject({ kind: 'protocol' });
    handler = (_req, res) => {
      res.writeHead(200);
      res.end('<html>not json</html>');
    };
    await expect(make().answer(bearer(), A)).rejects.toMatchObject({ kind: 'protocol' });
    handler = (_req, res) => json(res, 500, {});
    await expect(make().answer(bearer(), A)).rejects.toMatchObject({ kind: 'status', status: 500, unavailable: true });
  });

  it('sends the mirror\'s User-Agent to the realm', async () => {
    let agentSeen: string | undefined;
    handler = (req, res) => {
      agentSeen = req.headers['user-agent'];
      json(res, 200, { token: 't', expires_in: 300 });
    };
    await make().answer(bearer(), A);
    expect(agentSeen).toBe('regmirror/test');
  });

  it('an unreachable realm is an unreachable upstream', async () => {
    const closed = createServer();
    const port = await listenOn(closed);
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const c = parseChallenge(`Bearer realm="http://127.0.0.1:${port}/token",service="s"`);
    await expect(make().answer(c, A)).rejects.toMatchObject({ kind: 'unreachable', unavailable: true });
    expect(fetches).toEqual([false]);
  });

  it('a realm that is not http(s) is refused without a request', async () => {
    await expect(make().answer(parseChallenge('Bearer realm="file:///etc/passwd"'), A)).rejects.toMatchObject({ kind: 'protocol' });
    expect(requests).toHaveLength(0);
  });

  it('answers a Basic challenge with the credentials, and uses them from then on without asking a realm', async () => {
    const auth = make({ credentials: { username: 'u', password: 'p' } });
    const expected = `Basic ${Buffer.from('u:p').toString('base64')}`;
    expect(await auth.answer(parseChallenge('Basic realm="Registry"'), A)).toBe(expected);
    expect(await auth.headerFor(B)).toBe(expected);
    expect(requests).toHaveLength(0);
  });

  it('has nothing to answer without credentials for Basic, without a challenge, or without a realm', async () => {
    const auth = make();
    expect(await auth.answer(parseChallenge('Basic realm="Registry"'), A)).toBeUndefined();
    expect(await make().answer(undefined, A)).toBeUndefined();
    expect(await make().answer(parseChallenge('Bearer service="x"'), A)).toBeUndefined();
    expect(await make().answer(parseChallenge('Negotiate'), A)).toBeUndefined();
    expect(requests).toHaveLength(0);
  });
});
