/** Shared pieces of the access-control tests: users, a policy, files, and requests from a chosen address. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import type { TestMirror } from '../helpers/mirror.js';

export const PASSWORDS = { alice: 'alice-secret-pw', bob: 'bob-secret-pw', carol: 'carol-secret-pw' } as const;

/** htpasswd -B lines (cost 4: fast tests; `$2y$` as Apache writes them). */
export function htpasswdText(): string {
  return Object.entries(PASSWORDS)
    .map(([u, p]) => `${u}:$2y$${bcrypt.hashSync(p, 4).slice(4)}`)
    .join('\n');
}

export const POLICY = `
groups:
  admin: [alice]
  devs: [alice, bob]
anonymous:
  networks: [127.0.0.0/8, "::1"]
trustedProxies: [10.9.9.9]
rules:
  - subjects: [anonymous, authenticated]
    allow: [docker.io/library/*]
  - subjects: [group:devs]
    allow: [docker.io/acme/**]
    deny: [docker.io/acme/secret*]
`;

export interface AuthFiles {
  dir: string;
  htpasswd: string;
  policy: string;
  key: string;
  keyBytes: Buffer;
}

export async function authFiles(policy = POLICY): Promise<AuthFiles> {
  const dir = await mkdtemp(join(tmpdir(), 'mirror-auth-'));
  const files = { dir, htpasswd: join(dir, 'users.htpasswd'), policy: join(dir, 'policy.yaml'), key: join(dir, 'token.key'), keyBytes: Buffer.alloc(32, 7) };
  await writeFile(files.htpasswd, htpasswdText());
  await writeFile(files.policy, policy);
  await writeFile(files.key, files.keyBytes);
  return files;
}

export function authRaw(files: AuthFiles, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { auth: { enabled: true, htpasswd: files.htpasswd, policy: files.policy, tokenKeyFile: files.key, ...extra } };
}

export const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** An in-process request as if from `addr` (the socket's remote address). */
export function from(mirror: TestMirror, addr: string, path: string, init: RequestInit = {}): Promise<Response> {
  return Promise.resolve(mirror.app.request(path, init, { incoming: { url: path, socket: { remoteAddress: addr } } }));
}

export async function tokenFor(mirror: TestMirror, addr: string, auth: string | undefined, ...scopes: string[]): Promise<string> {
  const q = new URLSearchParams({ service: 'regmirror' });
  for (const s of scopes) q.append('scope', s);
  const r = await from(mirror, addr, `/token?${q}`, auth ? { headers: { authorization: auth } } : {});
  if (r.status !== 200) throw new Error(`token: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { token: string }).token;
}
