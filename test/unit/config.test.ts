import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, envKey, loadConfig, type Config } from '../../src/config.js';

const DEFAULTS = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8');

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'config-test-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Writes a user config file and returns its path. */
async function userFile(yaml: string): Promise<string> {
  const path = join(dir, `user-${n++}.yaml`);
  await writeFile(path, yaml);
  return path;
}

function load(opts: { file?: string; env?: Record<string, string> } = {}): Config {
  return loadConfig({ defaults: DEFAULTS, ...opts });
}

/** The ConfigError a load throws (its key and message), or fails the test. */
function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

async function errorForFile(yaml: string): Promise<ConfigError> {
  const file = await userFile(yaml);
  return configErrorOf(() => load({ file }));
}

describe('the embedded default config', () => {
  it('loads into the documented defaults', () => {
    const c = load();
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 5000 });
    expect(c.dataDir).toBe('./data');
    expect(c.offline).toBe(false);
    expect(c.defaultRegistry).toBe('docker.io');
    expect(c.log).toEqual({ level: 'info', format: 'json' });
    expect(c.cache).toEqual({ tagTtl: 300, memoryBytes: 64 * 1024 * 1024, negativeTtl: 30, maxBytes: undefined, minFreeBytes: undefined, minFreePercent: undefined, lowWatermark: 0.9, pin: [], evictionInterval: 10 });
    expect(c.admin).toEqual({ listen: { host: '127.0.0.1', port: 5001 }, hosts: [] });
    expect(c.limits).toEqual({ maxManifestBytes: 4 * 1024 * 1024, maxBlobBytes: 64 * 1024 ** 3, maxPageSize: 10000 });
    expect(c.timeouts).toEqual({ connect: 5000, headers: 30000, bodyIdle: 30000, revalidate: 2000, clientIdle: 300000 });
    expect(c.upstreamHealth).toEqual({ offlineMinMs: 5000, offlineMaxMs: 120000 });
    expect(c.tls).toBeUndefined();
    expect(c.downloads).toEqual({ thread: true });
    expect(c.heap).toEqual({ growthPercent: 150, maxSemiSpaceMiB: 8 });
  });

  it('has the five upstreams, docker.io with the library prefix and its aliases', () => {
    const c = load();
    expect(Object.keys(c.upstreams).sort()).toEqual(['docker.io', 'gcr.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    expect(c.upstreams['docker.io']).toEqual({
      name: 'docker.io',
      url: 'https://registry-1.docker.io',
      aliases: ['registry-1.docker.io', 'index.docker.io'],
      libraryPrefix: true,
      tagTtl: 300,
    });
    expect(c.upstreams['ghcr.io']).toEqual({ name: 'ghcr.io', url: 'https://ghcr.io', aliases: [], libraryPrefix: false, tagTtl: 300 });
    expect(c.upstreams['quay.io']!.url).toBe('https://quay.io');
    expect(c.upstreams['registry.k8s.io']!.url).toBe('https://registry.k8s.io');
    expect(c.upstreams['gcr.io']!.url).toBe('https://gcr.io');
    for (const u of Object.values(c.upstreams)) expect(u.username).toBeUndefined();
  });
});

describe('a user config file', () => {
  it('merges over the defaults, mapping by mapping', async () => {
    const file = await userFile(['listen: "127.0.0.1:8080"', 'dataDir: /var/lib/mirror', 'cache:', '  tagTtl: 60', 'log:', '  format: pretty'].join('\n'));
    const c = load({ file });
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.dataDir).toBe('/var/lib/mirror');
    expect(c.cache).toMatchObject({ tagTtl: 60, memoryBytes: 64 * 1024 * 1024, negativeTtl: 30 }); // memoryBytes kept from the defaults
    expect(c.log).toEqual({ level: 'info', format: 'pretty' }); // level kept from the defaults
    expect(Object.keys(c.upstreams)).toHaveLength(5); // not given: the defaults' list stays
    expect(c.upstreams['ghcr.io']!.tagTtl).toBe(60); // the global TTL is every upstream's default
  });

  it('an empty file changes nothing', async () => {
    expect(load({ file: await userFile('') })).toEqual(load());
    expect(load({ file: await userFile('# only a comment\n') })).toEqual(load());
  });

  it('`upstreams` replaces the default list whole', async () => {
    const file = await userFile(
      [
        'defaultRegistry: ghcr.io',
        'upstreams:',
        '  ghcr.io:',
        '    url: https://ghcr.example.com/',
        '    username: bot',
        '    password: s3cret',
        '    tagTtl: 10',
        '  localhost:5000:',
        '    url: http://localhost:5000',
      ].join('\n'),
    );
    const c = load({ file });
    expect(Object.keys(c.upstreams).sort()).toEqual(['ghcr.io', 'localhost:5000']);
    expect(c.defaultRegistry).toBe('ghcr.io');
    expect(c.upstreams['ghcr.io']).toEqual({
      name: 'ghcr.io',
      url: 'https://ghcr.example.com', // trailing slash dropped
      aliases: [],
      libraryPrefix: false,
      tagTtl: 10,
      username: 'bot',
      password: 's3cret',
    });
    expect(c.upstreams['localhost:5000']!.url).toBe('http://localhost:5000');
  });

  it('replacing upstreams without the default registry is an error naming defaultRegistry', async () => {
    const e = await errorForFile('upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n');
    expect(e.key).toBe('defaultRegistry');
    expect(e.message).toContain('defaultRegistry');
  });

  it('a missing file is an error naming --config', () => {
    const e = configErrorOf(() => load({ file: join(dir, 'does-not-exist.yaml') }));
    expect(e.key).toBe('--config');
    expect(e.message).toContain('does-not-exist.yaml');
  });

  it('invalid YAML and a non-mapping top level are errors naming the file', async () => {
    const bad = await userFile('listen: [unclosed\n');
    expect(configErrorOf(() => load({ file: bad })).key).toBe(bad);
    const list = await userFile('- a\n- b\n');
    const e = configErrorOf(() => load({ file: list }));
    expect(e.key).toBe(list);
    expect(e.message).toMatch(/mapping/);
  });
});

describe('environment overrides', () => {
  it('MIRROR_LISTEN, MIRROR_DATA_DIR, MIRROR_OFFLINE, MIRROR_TAG_TTL', () => {
    const c = load({ env: { MIRROR_LISTEN: '127.0.0.1:6000', MIRROR_DATA_DIR: '/data', MIRROR_OFFLINE: 'true', MIRROR_TAG_TTL: '42' } });
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 6000 });
    expect(c.dataDir).toBe('/data');
    expect(c.offline).toBe(true);
    expect(c.cache.tagTtl).toBe(42);
    for (const u of Object.values(c.upstreams)) expect(u.tagTtl).toBe(42);
  });

  it('override the user file too', async () => {
    const file = await userFile('listen: "127.0.0.1:8080"\noffline: true\n');
    const c = load({ file, env: { MIRROR_LISTEN: '9000', MIRROR_OFFLINE: '0' } });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(c.offline).toBe(false);
  });

  it('listen accepts host:port, a bare port and [ipv6]:port', () => {
    expect(load({ env: { MIRROR_LISTEN: '5001' } }).listen).toEqual({ host: '0.0.0.0', port: 5001 });
    expect(load({ env: { MIRROR_LISTEN: '[::1]:5002' } }).listen).toEqual({ host: '::1', port: 5002 });
    expect(load({ env: { MIRROR_LISTEN: ':5003' } }).listen).toEqual({ host: '0.0.0.0', port: 5003 });
    expect(load({ env: { MIRROR_LISTEN: 'mirror-1.internal.example:5004' } }).listen).toEqual({ host: 'mirror-1.internal.example', port: 5004 });
    expect(load({ env: { MIRROR_LISTEN: 'localhost:5005' } }).listen).toEqual({ host: 'localhost', port: 5005 });
  });

  it('MIRROR_OFFLINE takes true/false/1/0', () => {
    expect(load({ env: { MIRROR_OFFLINE: '1' } }).offline).toBe(true);
    expect(load({ env: { MIRROR_OFFLINE: 'false' } }).offline).toBe(false);
  });

  it('MIRROR_DOWNLOADS_THREAD switches the download thread (empty: the file or the default)', () => {
    expect(load({ env: { MIRROR_DOWNLOADS_THREAD: 'false' } }).downloads).toEqual({ thread: false });
    expect(load({ env: { MIRROR_DOWNLOADS_THREAD: '' } }).downloads).toEqual({ thread: true });
  });

  it('MIRROR_HEAP_GROWTH_PERCENT sets the old generation headroom (0: V8 decides; empty: the file or the default)', () => {
    expect(load({ env: { MIRROR_HEAP_GROWTH_PERCENT: '100' } }).heap.growthPercent).toBe(100);
    expect(load({ env: { MIRROR_HEAP_GROWTH_PERCENT: '' } }).heap.growthPercent).toBe(150);
    expect(load({ env: { MIRROR_HEAP_GROWTH_PERCENT: '0' } }).heap.growthPercent).toBe(0);
  });

  it('MIRROR_HEAP_MAX_SEMI_SPACE_MIB caps the young generation (0: V8 decides; empty: the file or the default)', () => {
    expect(load({ env: { MIRROR_HEAP_MAX_SEMI_SPACE_MIB: '4' } }).heap).toEqual({ growthPercent: 150, maxSemiSpaceMiB: 4 });
    expect(load({ env: { MIRROR_HEAP_MAX_SEMI_SPACE_MIB: '' } }).heap.maxSemiSpaceMiB).toBe(8);
    expect(load({ env: { MIRROR_HEAP_MAX_SEMI_SPACE_MIB: '0' } }).heap.maxSemiSpaceMiB).toBe(0);
  });

  it('MIRROR_UPSTREAM_<KEY>_URL/_USERNAME/_PASSWORD/_TAG_TTL set one upstream', () => {
    expect(envKey('docker.io')).toBe('DOCKER_IO');
    expect(envKey('registry.k8s.io')).toBe('REGISTRY_K8S_IO');
    expect(envKey('localhost:5000')).toBe('LOCALHOST_5000');
    const c = load({
      env: {
        MIRROR_UPSTREAM_DOCKER_IO_URL: 'http://127.0.0.1:9999/',
        MIRROR_UPSTREAM_DOCKER_IO_USERNAME: 'me',
        MIRROR_UPSTREAM_DOCKER_IO_PASSWORD: 'pw',
        MIRROR_UPSTREAM_DOCKER_IO_TAG_TTL: '7',
        MIRROR_UPSTREAM_REGISTRY_K8S_IO_URL: 'https://k8s.example.com',
      },
    });
    const hub = c.upstreams['docker.io']!;
    expect(hub.url).toBe('http://127.0.0.1:9999');
    expect(hub.username).toBe('me');
    expect(hub.password).toBe('pw');
    expect(hub.tagTtl).toBe(7);
    expect(hub.libraryPrefix).toBe(true); // untouched fields keep the defaults
    expect(hub.aliases).toEqual(['registry-1.docker.io', 'index.docker.io']);
    expect(c.upstreams['registry.k8s.io']!.url).toBe('https://k8s.example.com');
    expect(c.upstreams['ghcr.io']!.tagTtl).toBe(300);
    expect(c.upstreams['ghcr.io']!.username).toBeUndefined();
  });

  it('variables cannot add an upstream: one for an upstream that is not configured is refused, naming it', () => {
    const e = configErrorOf(() => load({ env: { MIRROR_UPSTREAM_EXAMPLE_COM_URL: 'https://example.com' } }));
    expect(e.key).toBe('MIRROR_UPSTREAM_EXAMPLE_COM_URL');
  });
});

describe('validation names the bad key', () => {
  it.each([
    ['MIRROR_TAG_TTL', 'abc', 'cache.tagTtl'],
    ['MIRROR_TAG_TTL', '-1', 'cache.tagTtl'],
    ['MIRROR_TAG_TTL', '', 'cache.tagTtl'],
    ['MIRROR_LISTEN', 'nonsense', 'listen'],
    ['MIRROR_LISTEN', '0.0.0.0:70000', 'listen'],
    ['MIRROR_LISTEN', '0.0.0.0:', 'listen'],
    ['MIRROR_LISTEN', 'bad host:5000', 'listen'],
    ['MIRROR_LISTEN', '999.1.1.1:5000', 'listen'],
    ['MIRROR_LISTEN', '[fe80::1%eth0]:5000', 'listen'],
    ['MIRROR_LISTEN', '[::g]:5000', 'listen'],
    ['MIRROR_LISTEN', '-host:5000', 'listen'],
    ['MIRROR_ADMIN_LISTEN', 'local host:5001', 'admin.listen'],
    ['MIRROR_FLEET_LISTEN', 'peer_1:5002', 'fleet.listen'],
    ['MIRROR_OFFLINE', 'yes', 'offline'],
    ['MIRROR_DOWNLOADS_THREAD', 'off', 'downloads.thread'],
    ['MIRROR_HEAP_GROWTH_PERCENT', 'lots', 'heap.growthPercent'],
    ['MIRROR_HEAP_GROWTH_PERCENT', '-1', 'heap.growthPercent'],
    ['MIRROR_HEAP_GROWTH_PERCENT', '2.5', 'heap.growthPercent'],
    ['MIRROR_HEAP_GROWTH_PERCENT', '5000', 'heap.growthPercent'],
    ['MIRROR_HEAP_MAX_SEMI_SPACE_MIB', 'big', 'heap.maxSemiSpaceMiB'],
    ['MIRROR_HEAP_MAX_SEMI_SPACE_MIB', '-2', 'heap.maxSemiSpaceMiB'],
    ['MIRROR_HEAP_MAX_SEMI_SPACE_MIB', '1.5', 'heap.maxSemiSpaceMiB'],
    ['MIRROR_DATA_DIR', '', 'dataDir'],
    ['MIRROR_LOG_LEVEL', 'verbose', 'log.level'],
    ['MIRROR_LOG_FORMAT', 'xml', 'log.format'],
    ['MIRROR_DEFAULT_REGISTRY', 'example.com', 'defaultRegistry'],
    ['MIRROR_UPSTREAM_DOCKER_IO_URL', 'ftp://example.com', 'upstreams.docker.io.url'],
    ['MIRROR_UPSTREAM_DOCKER_IO_URL', 'not a url', 'upstreams.docker.io.url'],
    ['MIRROR_UPSTREAM_DOCKER_IO_TAG_TTL', 'soon', 'upstreams.docker.io.tagTtl'],
    ['MIRROR_UPSTREAM_DOCKER_IO_USERNAME', 'me', 'upstreams.docker.io.password'],
  ])('%s=%j → %s', (variable, value, key) => {
    const e = configErrorOf(() => load({ env: { [variable]: value } }));
    expect(e.key).toBe(key);
    expect(e.message).toContain(`config: ${key}:`);
  });

  it('a MIRROR_UPSTREAM_ variable for no configured upstream, or no field of one, is refused naming it; an empty one is unset', () => {
    for (const variable of ['MIRROR_UPSTREAM_NOPE_IO_URL', 'MIRROR_UPSTREAM_DOCKERHUB_PASSWORD', 'MIRROR_UPSTREAM_DOCKER_IO_TOKEN']) {
      const e = configErrorOf(() => load({ env: { [variable]: 'x' } }));
      expect(e.key).toBe(variable);
      expect(e.message).toMatch(/sets no field of a configured upstream .*keys: DOCKER_IO, /);
    }
    expect(load({ env: { MIRROR_UPSTREAM_NOPE_IO_URL: '' } }).upstreams['docker.io']).toBeDefined();
  });

  it('auth.tokenTtl is at least 60 s (the docker client keeps a shorter token for 60 s anyway)', async () => {
    expect((await errorForFile('auth:\n  tokenTtl: 30\n')).key).toBe('auth.tokenTtl');
  });

  it('an unknown top-level key is named', async () => {
    const e = await errorForFile('foo: 1\n');
    expect(e.key).toBe('foo');
    expect(e.message).toMatch(/^config: foo: unknown key/);
  });

  it('unknown nested keys are named with their path', async () => {
    expect((await errorForFile('cache:\n  tagTTL: 5\n')).key).toBe('cache.tagTTL');
    expect((await errorForFile('upstreams:\n  docker.io:\n    url: https://x\n    token: t\n')).key).toBe('upstreams.docker.io.token');
  });

  it('timeouts.clientIdle: 0 switches the client idle timeout off', async () => {
    expect(load({ file: await userFile('timeouts:\n  clientIdle: 0\n') }).timeouts.clientIdle).toBe(0);
    expect(load({ file: await userFile('timeouts:\n  clientIdle: 60000\n') }).timeouts).toEqual({ connect: 5000, headers: 30000, bodyIdle: 30000, revalidate: 2000, clientIdle: 60000 });
  });

  it('limits.maxBlobBytes: a size or bytes, at least 1 MiB', async () => {
    expect(load({ file: await userFile('limits:\n  maxBlobBytes: 500MB\n') }).limits.maxBlobBytes).toBe(500_000_000);
    expect(load({ file: await userFile('limits:\n  maxBlobBytes: 2GiB\n') }).limits).toEqual({ maxManifestBytes: 4 * 1024 * 1024, maxBlobBytes: 2 * 1024 ** 3, maxPageSize: 10000 });
    expect(load({ file: await userFile('limits:\n  maxBlobBytes: 1048576\n') }).limits.maxBlobBytes).toBe(1048576);
    for (const bad of ['1000', 'lots', '-1GiB', '""']) expect((await errorForFile(`limits:\n  maxBlobBytes: ${bad}\n`)).key).toBe('limits.maxBlobBytes');
  });

  it('wrong types in the file are named', async () => {
    expect((await errorForFile('cache: 5\n')).key).toBe('cache');
    expect((await errorForFile('cache:\n  tagTtl: forever\n')).key).toBe('cache.tagTtl');
    expect((await errorForFile('offline: maybe\n')).key).toBe('offline');
    expect((await errorForFile('limits:\n  maxManifestBytes: 10\n')).key).toBe('limits.maxManifestBytes');
    expect((await errorForFile('timeouts:\n  connect: 0\n')).key).toBe('timeouts.connect');
    expect((await errorForFile('timeouts:\n  revalidate: 0\n')).key).toBe('timeouts.revalidate');
    expect((await errorForFile('timeouts:\n  clientIdle: -1\n')).key).toBe('timeouts.clientIdle');
    expect((await errorForFile('timeouts:\n  clientIdle: soon\n')).key).toBe('timeouts.clientIdle');
    // Longer than a Node timer takes (2^31 - 1 ms): it would fire at once, so it is refused.
    expect((await errorForFile('timeouts:\n  revalidate: 3000000000\n')).key).toBe('timeouts.revalidate');
    expect((await errorForFile('timeouts:\n  bodyIdle: 2147483648\n')).key).toBe('timeouts.bodyIdle');
    expect(load({ file: await userFile('timeouts:\n  clientIdle: 2147483647\n') }).timeouts.clientIdle).toBe(2147483647);
    expect((await errorForFile('upstreamHealth:\n  offlineMinMs: 10000\n  offlineMaxMs: 5000\n')).key).toBe('upstreamHealth.offlineMaxMs');
    expect((await errorForFile('upstreamHealth:\n  offlineMs: 1\n')).key).toBe('upstreamHealth.offlineMs');
    expect((await errorForFile('upstreams:\n  docker.io:\n    url: https://x\n    aliases: host\n')).key).toBe('upstreams.docker.io.aliases');
    expect((await errorForFile('upstreams: {}\n')).key).toBe('upstreams');
    expect((await errorForFile('upstreams:\n  Docker_IO:\n    url: https://x\n')).key).toBe('upstreams.Docker_IO');
    expect((await errorForFile('tls:\n  cert: /c.pem\n')).key).toBe('tls.key');
  });

  it('a YAML number for listen is read as a port', async () => {
    // default.yaml documents `listen` as host:port and parseListen accepts a bare port, but YAML
    // parses `listen: 8080` as a number, which should not be refused as "not a string".
    const c = load({ file: await userFile('listen: 8080\n') });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 8080 });
  });
});

describe('cache limits, pins and the admin listener', () => {
  const load = (yaml: string, env: Record<string, string> = {}) => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-lifecycle-'));
    const file = join(dir, 'c.yaml');
    writeFileSync(file, yaml);
    try {
      return loadConfig({ defaults: readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8'), file, env });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('reads sizes with units, percentages, pins and the admin address', () => {
    const c = load('cache:\n  maxBytes: 10GiB\n  minFreeBytes: 500MB\n  minFreePercent: 5\n  pin: ["docker.io/library/postgres:14.5", "ghcr.io/acme/**"]\nadmin:\n  listen: "127.0.0.1:9001"\n');
    expect(c.cache).toMatchObject({ maxBytes: 10 * 1024 ** 3, minFreeBytes: 500e6, minFreePercent: 5, pin: ['docker.io/library/postgres:14.5', 'ghcr.io/acme/**'] });
    expect(c.admin.listen).toEqual({ host: '127.0.0.1', port: 9001 });
    expect(load('', { MIRROR_CACHE_MAX_BYTES: '2GiB', MIRROR_ADMIN_LISTEN: '' }).cache.maxBytes).toBe(2 * 1024 ** 3);
    expect(load('', { MIRROR_ADMIN_LISTEN: '' }).admin.listen).toBeUndefined();
    // A percentage reads as one, with or without its sign (a size such as 5b is refused, below).
    expect(load('cache:\n  minFreePercent: "10%"\n').cache.minFreePercent).toBe(10);
  });

  it.each([
    ['cache:\n  maxBytes: lots\n', 'cache.maxBytes'],
    ['cache:\n  minFreePercent: 120\n', 'cache.minFreePercent'],
    ['cache:\n  minFreePercent: 5b\n', 'cache.minFreePercent'],
    ['cache:\n  lowWatermark: 0.1\n', 'cache.lowWatermark'],
    ['cache:\n  pin: ["docker.io/ok:1", "../../etc"]\n', 'cache.pin[1]'],
    ['cache:\n  pin: "docker.io/x"\n', 'cache.pin'],
    ['admin:\n  listen: "nope"\n', 'admin.listen'],
  ])('refuses %j naming %s', (yaml, key) => {
    expect(() => load(yaml)).toThrow(new RegExp(`config: ${key.replace(/[.[\]]/g, '\\$&')}:`));
  });
});

describe('one source for defaults', () => {
  it('a key the embedded default sets cannot be removed by a file: the message names it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-missing-'));
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'cache:\n  tagTtl: null\n');
    try {
      expect(() => loadConfig({ defaults: DEFAULTS, file })).toThrow(/config: cache\.tagTtl: missing/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
