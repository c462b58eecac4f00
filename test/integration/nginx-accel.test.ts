/**
 * nginx in front (config `serve.accelRedirect`, deploy/nginx/regmirror.conf): a real nginx, started
 * once for the file from the shipped config, proxies to a listening mirror. A cache hit is checked by
 * the mirror (membership, the hit metric) and sent by nginx from the blob directory (sendfile, Range
 * by nginx); misses stream through; nothing but a validated digest ever names a file.
 */
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { configWithDefaults, ConfigError, loadConfig } from '../../src/config.js';
import { StorePaths } from '../../src/storage/paths.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { startMirror, type TestMirror } from '../helpers/mirror.js';
import { ACCEL_PREFIX, NGINX_CONF, startNginxFront, type NginxFront } from '../helpers/nginx.js';
import { waitFor } from '../helpers/wait.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One GET with node:http (fetch would normalise the path; these requests must reach nginx as written). */
function get(url: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

describe('nginx in front: X-Accel-Redirect for cache hits (deploy/nginx/regmirror.conf)', () => {
  let hub: FakeUpstream;
  let mirror: TestMirror;
  let nginx: NginxFront;
  const layer = makeRandomLayer(700_000, 'accel-layer');
  const other = makeRandomLayer(1_200_000, 'accel-miss');
  const img = makeImage({ layers: [layer, other], format: 'docker' });
  const path = (repo: string, digest: string) => `/v2/${repo}/blobs/${digest}`;
  const cdnFetches = (digest: string) => hub.count({ kind: 'cdn', path: new RegExp(digest.slice(7)) });

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    hub.putImage('library/app', img, 'v1');
    hub.putImage('library/empty', makeImage({ layers: [makeRandomLayer(3000, 'unrelated')], format: 'docker' }), 'v1');
    mirror = await startMirror({ upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } }, listen: true, raw: { serve: { accelRedirect: ACCEL_PREFIX } } });
    nginx = await startNginxFront({ mirrorHost: mirror.url.replace('http://', ''), blobsDir: join(mirror.dataDir, 'blobs') });
  }, 30_000);
  afterAll(async () => {
    await nginx?.stop();
    await mirror?.stop();
    await hub?.close();
  });

  it('a miss streams through nginx as it arrives; the next GET is a hit nginx sends from the file, with the registry headers', async () => {
    const r1 = await get(nginx.url, path('library/app', layer.digest));
    expect(r1.status).toBe(200);
    expect(r1.headers['x-mirror-cache']).toBe('miss');
    expect(digestOf(r1.body)).toBe(layer.digest);
    await waitFor(() => existsSync(new StorePaths(mirror.dataDir).blob(layer.digest)), 5000, 'the blob stored');

    const hitsBefore = await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'hit' });
    const servedBefore = await mirror.metric('mirror_served_bytes_total', { source: 'cache' });
    const r2 = await get(nginx.url, path('library/app', layer.digest), { 'x-request-id': 'accel-hit-1' });
    expect(r2.status).toBe(200);
    expect(r2.body.length).toBe(layer.size);
    expect(digestOf(r2.body)).toBe(layer.digest);
    expect(r2.headers['content-length']).toBe(String(layer.size));
    expect(r2.headers['content-type']).toBe('application/octet-stream');
    expect(r2.headers['docker-content-digest']).toBe(layer.digest);
    expect(r2.headers.etag).toBe(`"${layer.digest}"`);
    expect(r2.headers['x-mirror-cache']).toBe('hit');
    expect(r2.headers['docker-distribution-api-version']).toBe('registry/2.0');
    expect(r2.headers['x-request-id']).toBe('accel-hit-1'); // the id the mirror logged it under
    // nginx acted on the redirect: the client never sees it.
    expect(r2.headers['x-accel-redirect']).toBeUndefined();
    // The mirror did its part: counted the hit and the bytes nginx sent for it.
    expect(await mirror.metric('mirror_cache_requests_total', { kind: 'blob', result: 'hit' })).toBe(hitsBefore + 1);
    expect(await mirror.metric('mirror_served_bytes_total', { source: 'cache' })).toBe(servedBefore + layer.size);
    expect(cdnFetches(layer.digest)).toBe(1);

    // What nginx got from the mirror for that hit: no body, a redirect built from the digest alone.
    const direct = await get(mirror.url, path('library/app', layer.digest), { 'x-regmirror-accel': 'on' });
    expect(direct.status).toBe(200);
    expect(direct.body.length).toBe(0);
    expect(direct.headers['x-accel-redirect']).toBe(`${ACCEL_PREFIX}/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`);
    // Without nginx's header (a client talking to the mirror directly) the mirror streams the bytes itself.
    const plain = await get(mirror.url, path('library/app', layer.digest));
    expect(plain.headers['x-accel-redirect']).toBeUndefined();
    expect(digestOf(plain.body)).toBe(layer.digest);
  });

  it('a Range on a hit is answered by nginx from the file', async () => {
    const r = await get(nginx.url, path('library/app', layer.digest), { range: 'bytes=1000-1999' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 1000-1999/${layer.size}`);
    expect(r.headers['content-length']).toBe('1000');
    expect(r.body.equals(layer.bytes.subarray(1000, 2000))).toBe(true);
    expect(r.headers['docker-content-digest']).toBe(layer.digest);
    const tail = await get(nginx.url, path('library/app', layer.digest), { range: 'bytes=-10' });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(layer.bytes.subarray(layer.size - 10))).toBe(true);
    expect(cdnFetches(layer.digest)).toBe(1);
  });

  it('a cached blob under a repository that does not hold it is 404 (membership checked by the mirror, upstream asked)', async () => {
    const before = hub.count({ kind: 'blob', method: 'HEAD', path: /library\/empty\// });
    const r = await get(nginx.url, path('library/empty', layer.digest));
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body.toString('utf8')).errors[0].code).toBe('BLOB_UNKNOWN');
    expect(r.headers['docker-content-digest']).toBeUndefined();
    expect(hub.count({ kind: 'blob', method: 'HEAD', path: /library\/empty\// })).toBe(before + 1);
    expect(cdnFetches(layer.digest)).toBe(1);
  });

  it('unknown, malformed and path-escaping digests never lead nginx to a file', async () => {
    const unknown = `sha256:${'ab'.repeat(32)}`;
    const u = await get(nginx.url, path('library/app', unknown));
    expect(u.status).toBe(404);
    expect(JSON.parse(u.body.toString('utf8')).errors[0].code).toBe('BLOB_UNKNOWN');
    const hostile = [
      path('library/app', `sha256:${layer.digest.slice(7).toUpperCase()}`),
      path('library/app', 'sha256:..%2f..%2f..%2fetc%2fpasswd'),
      path('library/app', 'sha256:%2e%2e'),
      `/v2/library/app/blobs/sha256:../../../../etc/passwd`,
      `/v2/library/app/blobs/${layer.digest}/../../../../../etc/passwd`,
      `/v2/library/app/blobs/${layer.digest}%2f..%2f..%2fetc%2fpasswd`,
      path('library/app', `sha256:${layer.digest.slice(7, 40)}`),
      path('library/app', `md5:${'0'.repeat(32)}`),
      // The internal location itself, asked for directly, with and without escapes.
      `${ACCEL_PREFIX}/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`,
      `${ACCEL_PREFIX}/../../../../etc/passwd`,
      `${ACCEL_PREFIX}/%2e%2e/%2e%2e/etc/passwd`,
    ];
    for (const p of hostile) {
      const r = await get(nginx.url, p, { 'x-regmirror-accel': 'on' });
      expect([400, 404], `${p} -> ${r.status}`).toContain(r.status);
      expect(r.body.includes('root:'), p).toBe(false);
      expect(r.body.length, p).toBeLessThan(layer.size);
      expect(r.headers['docker-content-digest'], p).toBeUndefined();
    }
    // Nothing of these went upstream as a blob fetch.
    expect(hub.count({ kind: 'cdn', path: /passwd|\.\./ })).toBe(0);
  });

  it('a miss through nginx reaches the client before the download ends (no buffering), one upstream fetch for two clients', async () => {
    hub.faults.trickle = { bytesPerTick: 64 * 1024, tickMs: 40 };
    try {
      const file = new StorePaths(mirror.dataDir).blob(other.digest);
      const firstBytes = new Promise<{ stored: boolean; res: Promise<Answer> }>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const req = request(`${nginx.url}${path('library/app', other.digest)}`, (res) => {
          let first = true;
          const done = new Promise<Answer>((res2, rej2) => {
            res.once('end', () => res2({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
            res.once('error', rej2);
          });
          res.on('data', (c: Buffer) => {
            chunks.push(c);
            if (first) {
              first = false;
              resolve({ stored: existsSync(file), res: done });
            }
          });
        });
        req.once('error', reject);
        req.end();
      });
      const { stored, res } = await firstBytes;
      // The first bytes came through nginx while the blob was still downloading.
      expect(stored).toBe(false);
      const second = await get(nginx.url, path('library/app', other.digest));
      const first = await res;
      expect(first.status).toBe(200);
      expect(first.headers['x-mirror-cache']).toBe('miss');
      expect(digestOf(first.body)).toBe(other.digest);
      expect(second.status).toBe(200);
      expect(digestOf(second.body)).toBe(other.digest);
      expect(cdnFetches(other.digest)).toBe(1);
    } finally {
      hub.faults.trickle = undefined;
    }
  });

  it('HEAD through nginx is answered by the mirror with the size', async () => {
    const r = await get(nginx.url, path('library/app', layer.digest), {}, 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(layer.size));
    expect(r.headers['docker-content-digest']).toBe(layer.digest);
  });
});

const DEFAULT_CONFIG_TEXT = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8');

describe('config serve.accelRedirect', () => {
  const load = (accelRedirect: unknown) => configWithDefaults(DEFAULT_CONFIG_TEXT, { serve: { accelRedirect } });
  it('is off by default and takes an absolute path prefix', () => {
    expect(configWithDefaults(DEFAULT_CONFIG_TEXT, {}).serve.accelRedirect).toBeUndefined();
    expect(load('').serve.accelRedirect).toBeUndefined();
    expect(load('/_regmirror/blobs').serve.accelRedirect).toBe('/_regmirror/blobs');
  });
  it('refuses what could not be a clean nginx location prefix, naming the key', () => {
    for (const bad of ['_regmirror', '/a/', '/a/../b', '/a/./b', '/a b', '/a%2e', 'http://x/y', '/a?b', 5, true]) {
      let err: unknown;
      try {
        load(bad);
      } catch (e) {
        err = e;
      }
      expect(err, String(bad)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe('serve.accelRedirect');
    }
  });
});

describe('the nginx examples agree with deploy/nginx/regmirror.conf and the mirror', () => {
  const conf = readFileSync(NGINX_CONF, 'utf8');
  const deploy = (p: string) => readFileSync(new URL(`../../deploy/${p}`, import.meta.url), 'utf8');
  type J = any;

  it('the internal location is the prefix the examples give the mirror, and it is internal', () => {
    expect(conf).toMatch(new RegExp(`location ${ACCEL_PREFIX}/ \\{\\s*internal;`));
    expect(conf).toMatch(/proxy_buffering off;/);
    expect(conf).toMatch(/proxy_set_header X-Regmirror-Accel on;/);
  });

  it('Kubernetes: the ConfigMap holds the file unchanged; the sidecar Deployment sets the prefix and mounts the blobs read-only', () => {
    const cm: J = parseYaml(deploy('kubernetes/nginx/configmap.yaml'));
    expect(cm.data['regmirror.conf']).toBe(conf);
    const dep: J = parseYaml(deploy('kubernetes/nginx/deployment.yaml'));
    const pod = dep.spec.template.spec;
    const [mirrorCtr, nginxCtr] = [pod.containers.find((c: J) => c.name === 'regmirror'), pod.containers.find((c: J) => c.name === 'nginx')];
    expect(mirrorCtr.env.find((e: J) => e.name === 'MIRROR_SERVE_ACCEL_REDIRECT').value).toBe(ACCEL_PREFIX);
    expect(mirrorCtr.ports[0].containerPort).toBe(5000);
    expect(pod.hostAliases[0]).toEqual({ ip: '127.0.0.1', hostnames: ['regmirror'] });
    expect(nginxCtr.ports.find((p: J) => p.name === 'http').containerPort).toBe(8080);
    expect(nginxCtr.volumeMounts.find((m: J) => m.name === 'data')).toEqual({ name: 'data', mountPath: '/var/lib/regmirror', readOnly: true });
    expect(pod.volumes.find((v: J) => v.name === 'nginx-conf').configMap.name).toBe(cm.metadata.name);
    // The base Service targets the port named http: nginx, in this variant.
    expect(deploy('kubernetes/service.yaml')).toMatch(/targetPort: http/);
  });

  it('compose: nginx mounts this file and the data volume read-only; the mirror service is `regmirror` with the prefix', () => {
    const c: J = parseYaml(deploy('docker-compose.nginx.yml'));
    expect(c.services.regmirror.environment.MIRROR_SERVE_ACCEL_REDIRECT).toBe(ACCEL_PREFIX);
    expect(c.services.nginx.volumes).toEqual(['./nginx/regmirror.conf:/etc/nginx/conf.d/default.conf:ro', 'mirror-data:/var/lib/regmirror:ro']);
    expect(c.services.regmirror.volumes).toEqual(['mirror-data:/var/lib/regmirror']);
    expect(c.services.nginx.ports).toEqual(['5000:8080']);
    // The environment variable is a config override the mirror knows.
    expect(loadConfig({ defaults: DEFAULT_CONFIG_TEXT, env: { MIRROR_SERVE_ACCEL_REDIRECT: ACCEL_PREFIX } }).serve.accelRedirect).toBe(ACCEL_PREFIX);
  });
});
