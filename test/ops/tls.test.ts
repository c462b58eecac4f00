/**
 * HTTPS with a configured certificate and key (what a non-localhost docker mirror needs without
 * insecure-registries): the real server process with a self-signed certificate, verified by undici
 * and by skopeo with the CA in a cert dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDir, freePort, hasTool, makeTempDir, run, waitFor } from '../e2e/harness/tools.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeLayer } from '../helpers/images.js';
import { MAIN_JS } from '../helpers/spawn.js';
import { requireTools } from '../helpers/tools.js';

const SKIP = requireTools('serving HTTPS', { openssl: hasTool('openssl') });

describe.skipIf(SKIP !== undefined)('serving HTTPS', () => {
  let dir = '';
  let hub: FakeUpstream;
  let proc: ChildProcess | undefined;
  let url = '';
  let ca: Buffer;
  const img = makeImage({ layers: [makeLayer([{ path: 'tls', content: 'over tls' }])] });

  beforeAll(async () => {
    dir = makeTempDir('mirror-tls');
    const gen = await run('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=regmirror-test',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ]);
    expect(gen.code, gen.stderr).toBe(0);
    ca = readFileSync(join(dir, 'cert.pem'));
    hub = await FakeUpstream.start();
    hub.putImage('library/secure', img, 'v1');
    const port = await freePort();
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        `listen: "127.0.0.1:${port}"`,
        `dataDir: ${JSON.stringify(join(dir, 'data'))}`,
        'log: { level: warn }',
        'tls:',
        `  cert: ${JSON.stringify(join(dir, 'cert.pem'))}`,
        `  key: ${JSON.stringify(join(dir, 'key.pem'))}`,
        'upstreams:',
        '  docker.io:',
        `    url: ${hub.url}`,
        '    libraryPrefix: true',
        '',
      ].join('\n'),
    );
    proc = spawn(process.execPath, [MAIN_JS, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    url = `https://127.0.0.1:${port}`;
    const agent = new Agent({ connect: { ca } });
    await waitFor(async () => {
      try {
        const r = await request(`${url}/healthz`, { dispatcher: agent });
        await r.body.dump();
        return r.statusCode === 200;
      } catch {
        return false;
      }
    }, 20_000, 'the TLS mirror to answer /healthz');
  }, 60_000);

  afterAll(async () => {
    proc?.kill('SIGKILL');
    await hub?.close();
    if (dir) await cleanupDir(dir);
  });

  it('answers over HTTPS with the configured certificate, and a verifying client pulls through it', async () => {
    const agent = new Agent({ connect: { ca } });
    const r = await request(`${url}/v2/`, { dispatcher: agent });
    expect(r.statusCode).toBe(200);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
    await r.body.dump();
    // A client that does not trust the certificate is refused: the mirror really is verified TLS.
    await expect(request(`${url}/v2/`)).rejects.toThrow();
    if (hasTool('skopeo')) {
      const certDir = join(dir, 'certs');
      mkdirSync(certDir, { recursive: true });
      writeFileSync(join(certDir, 'ca.crt'), ca);
      const host = url.replace('https://', '');
      const ok = await run('skopeo', ['--insecure-policy', 'inspect', '--cert-dir', certDir, `docker://${host}/library/secure:v1`], { timeoutMs: 30_000 });
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout).Digest).toBe(img.manifest.digest);
      const refused = await run('skopeo', ['--insecure-policy', 'inspect', `docker://${host}/library/secure:v1`], { timeoutMs: 30_000 });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/certificate|x509/i);
    } else {
      console.warn('[ops] skopeo absent: TLS checked with undici only');
    }
  }, 60_000);
});
