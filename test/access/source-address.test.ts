/**
 * The anonymous-network rule over real sockets: the mirror listens on loopback and a client bound to
 * 127.0.0.2 (node:http's `localAddress`) is refused while one from 127.0.0.1 is let in. The
 * mirror reads the address from the socket, not from anything the client says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { authFiles, authRaw, basic, PASSWORDS } from './helpers.js';

const img = makeImage({ layers: [makeLayer([{ path: 'a', content: 'addr' }])] });
let hub: FakeUpstream;
let mirror: TestMirror;

beforeAll(async () => {
  hub = await FakeUpstream.start({ auth: 'none', cdn: false });
  hub.putImage('library/alpine', img, 'latest');
  const files = await authFiles(`
anonymous: { networks: [127.0.0.1/32] }
rules:
  - subjects: ["*"]
    allow: [docker.io/library/*]
`);
  mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, raw: authRaw(files), listen: true });
});

afterAll(async () => {
  await mirror?.stop();
  await hub?.close();
});

interface Answer {
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}

/** GETs from a socket bound to `localAddress` (no keep-alive); the whole body is read. */
function client(localAddress: string) {
  return (path: string, headers: Record<string, string> = {}) =>
    new Promise<Answer>((resolve, reject) => {
      const req = http.get(`${mirror.url}${path}`, { localAddress, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: { get: (n) => (res.headers[n.toLowerCase()] as string | undefined) ?? null },
            json: async () => JSON.parse(body) as unknown,
          });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
    });
}

describe('anonymous networks over real sockets', () => {
  it('lets 127.0.0.1 in anonymously and challenges 127.0.0.2, which then logs in through the token flow', async () => {
    const local = client('127.0.0.1');
    const other = client('127.0.0.2');
    expect((await local('/v2/library/alpine/manifests/latest', { accept: DOCKER_ACCEPT })).status).toBe(200);
    const refused = await other('/v2/library/alpine/manifests/latest', { accept: DOCKER_ACCEPT });
    expect(refused.status).toBe(401);
    const challenge = refused.headers.get('www-authenticate')!;
    expect(challenge).toBe(`Bearer realm="${mirror.url}/token",service="regmirror",scope="repository:docker.io/library/alpine:pull"`);
    // An anonymous token is refused from there too; credentials get one.
    expect((await other('/token?service=regmirror&scope=repository:docker.io/library/alpine:pull')).status).toBe(401);
    const t = await other('/token?service=regmirror&scope=repository:docker.io/library/alpine:pull', { authorization: basic('bob', PASSWORDS.bob) });
    expect(t.status).toBe(200);
    const { token, expires_in } = (await t.json()) as { token: string; expires_in: number };
    expect(expires_in).toBe(300);
    expect((await other('/v2/library/alpine/manifests/latest', { accept: DOCKER_ACCEPT, authorization: `Bearer ${token}` })).status).toBe(200);
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    expect((await other('/v2/', { 'x-forwarded-for': '127.0.0.1' })).status).toBe(401);
  });
});
