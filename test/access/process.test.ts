/**
 * The process around access control (dist/main.js): a bad htpasswd stops start-up with a clear
 * message; SIGHUP reloads the policy without dropping an open keep-alive connection; the cache CLI
 * reaches the admin API with MIRROR_ADMIN_USER / MIRROR_ADMIN_PASSWORD.
 */
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../helpers/images.js';
import { DOCKER_ACCEPT } from '../helpers/mirror.js';
import { freePort } from '../helpers/ports.js';
import { MAIN_JS, spawnMirror, type SpawnedMirror } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { authFiles, authRaw, PASSWORDS, type AuthFiles } from './helpers.js';

const img = makeImage({ layers: [makeLayer([{ path: 'h', content: 'hup' }])] });
const closedPolicy = 'groups: { admin: [alice] }\nrules:\n  - subjects: ["*"]\n    allow: [docker.io/library/*]\n';
let hub: FakeUpstream;
let files: AuthFiles;
let mirror: SpawnedMirror;
let adminPort = 0;

beforeAll(async () => {
  hub = await FakeUpstream.start({ auth: 'none', cdn: false });
  hub.putImage('library/alpine', img, 'latest');
  files = await authFiles(closedPolicy);
  adminPort = await freePort();
  mirror = await spawnMirror({
    upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
    extraConfig: authRaw(files),
    env: { MIRROR_ADMIN_LISTEN: `127.0.0.1:${adminPort}` },
  });
});

afterAll(async () => {
  await mirror?.stop();
  await hub?.close();
});

describe('regmirror with auth on', () => {
  it('refuses to start on an unreadable or unparseable htpasswd, saying which', async () => {
    const bad = join(files.dir, 'broken.htpasswd');
    await writeFile(bad, 'alice:plaintext-password\n');
    for (const [htpasswd, message] of [
      [bad, `${bad}:1: user alice: only bcrypt hashes are accepted`],
      [join(files.dir, 'nope'), 'cannot read the htpasswd file'],
    ] as const) {
      const config = join(files.dir, 'bad-config.yaml');
      await writeFile(config, JSON.stringify({ listen: '127.0.0.1:0', dataDir: join(files.dir, 'data'), admin: { listen: '' }, auth: { enabled: true, htpasswd, policy: files.policy } }));
      const r = spawnSync(process.execPath, [MAIN_JS, '--config', config], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '' } });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain('regmirror: cannot start:');
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('    at ');
    }
  });

  it('reloads the policy on SIGHUP without dropping an open connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const req = http.get(`${mirror.url}/v2/library/alpine/manifests/latest`, { agent, headers: { accept: DOCKER_ACCEPT } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('socket', (s) => sockets.add(s));
        req.on('error', reject);
      });
    try {
      expect(await get()).toBe(401);
      await writeFile(files.policy, `anonymous: { networks: [127.0.0.1/32] }\n${closedPolicy}`);
      process.kill(mirror.pid, 'SIGHUP');
      await waitFor(async () => (await get()) === 200, 5000, 'the reloaded policy to let 127.0.0.1 in');
      expect(sockets.size).toBe(1);
      expect(mirror.lines.some((l) => l.msg === 'SIGHUP: htpasswd and policy reloaded')).toBe(true);
      // A broken file keeps the policy in force.
      await writeFile(files.policy, 'rules: [');
      process.kill(mirror.pid, 'SIGHUP');
      await waitFor(() => mirror.lines.some((l) => l.msg?.startsWith('SIGHUP: access files not reloaded')), 5000, 'the reload error');
      expect(await get()).toBe(200);
    } finally {
      agent.destroy();
      await writeFile(files.policy, closedPolicy);
    }
  });

  it('the cache CLI reaches the admin API with MIRROR_ADMIN_USER / MIRROR_ADMIN_PASSWORD', () => {
    const cli = (env: Record<string, string>) =>
      spawnSync(process.execPath, [MAIN_JS, 'cache', 'pins', '--admin', `http://127.0.0.1:${adminPort}`], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '', ...env } });
    expect(cli({ MIRROR_ADMIN_USER: 'bob', MIRROR_ADMIN_PASSWORD: PASSWORDS.bob }).status).not.toBe(0);
    const ok = cli({ MIRROR_ADMIN_USER: 'alice', MIRROR_ADMIN_PASSWORD: PASSWORDS.alice });
    expect(ok.status, ok.stderr).toBe(0);
  });
});
