/**
 * `regmirror cache` in-process: parsing, help, output and exit codes against a fake CacheAdmin (the
 * stopped-mirror path) and a fake admin API behind an injected fetch (the running-mirror path).
 */
import { describe, expect, it } from 'vitest';
import { DIGEST_A, DIGEST_B, FakeCacheAdmin, runCli } from './harness.js';

const COMMANDS = ['ls', 'du', 'rm', 'pin', 'unpin', 'pins', 'gc', 'evict', 'revalidate'];

describe('regmirror cache: usage and help', () => {
  it('--help lists every command and exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: regmirror cache <command> \[options\]/);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    expect(r.stdout).toContain('--admin URL');
    expect(r.stdout).toContain('--json');
    expect(r.opened).toEqual([]);
    expect(r.fetched).toEqual([]);
  });

  it.each(COMMANDS)('%s --help describes the command without touching the cache', async (c) => {
    const admin = new FakeCacheAdmin();
    const r = await runCli([c, '--help'], { admin });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^usage: regmirror cache ${c}[ \\n]`));
    expect(r.stdout).toContain('--data-dir DIR');
    expect(admin.calls).toEqual([]);
    expect(r.opened).toEqual([]);
    expect(r.fetched).toEqual([]);
  });

  it('help COMMAND is the same as COMMAND --help', async () => {
    expect((await runCli(['help', 'rm'])).stdout).toBe((await runCli(['rm', '--help'])).stdout);
    expect((await runCli(['rm', '--help'])).stdout).toContain('--yes');
  });

  it('no command: a one-line error and the usage, exit 2', async () => {
    const r = await runCli([]);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe('regmirror cache: missing command');
    expect(r.stderr).toContain('usage: regmirror cache <command>');
  });

  it.each([
    [['frobnicate'], 'regmirror cache: unknown command "frobnicate"', 'usage: regmirror cache <command>'],
    [['ls', '--frob'], 'regmirror cache ls: unknown option --frob', 'usage: regmirror cache ls [REPOSITORY]'],
    [['ls', '--all'], 'regmirror cache ls: option --all does not apply to ls', 'usage: regmirror cache ls'],
    [['ls', 'a', 'b'], 'regmirror cache ls: unexpected argument "b"', 'usage: regmirror cache ls'],
    [['pin'], 'regmirror cache pin: missing argument: PATTERN', 'usage: regmirror cache pin PATTERN'],
    [['rm'], 'regmirror cache rm: missing REF (or --all)', 'usage: regmirror cache rm REF | --all'],
    [['rm', 'alpine', '--all'], 'regmirror cache rm: give REF or --all, not both', 'usage: regmirror cache rm'],
    [['rm', 'Alpine:1'], 'regmirror cache rm: Alpine:1: invalid repository name "library/Alpine"', 'usage: regmirror cache rm'],
    [['revalidate', 'alpine'], 'regmirror cache revalidate: alpine: give a tag (REPOSITORY:TAG)', 'usage: regmirror cache revalidate REF:TAG'],
    [['du', '--admin'], 'regmirror cache du: option --admin needs a value (URL)', 'usage: regmirror cache du'],
    [['du', '--admin', 'ftp://x'], 'regmirror cache du: --admin ftp://x: must be an http(s) URL', 'usage: regmirror cache du'],
    [['du', '--admin=http://x:1', '--data-dir', '/d'], 'regmirror cache du: --admin works on a running mirror', 'usage: regmirror cache du'],
    [['du', '--json=yes'], 'regmirror cache du: option --json takes no value', 'usage: regmirror cache du'],
  ])('%j is bad usage (exit 2) and opens nothing', async (argv, firstLine, usage) => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(argv, { admin });
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n');
    expect(lines[0]!.startsWith(firstLine)).toBe(true);
    expect(lines[1]!.startsWith(usage)).toBe(true);
    expect(r.stdout).toBe('');
    expect(admin.calls).toEqual([]);
    expect(r.opened).toEqual([]);
  });
});

describe('regmirror cache: commands on a data directory', () => {
  const dd = ['--data-dir', '/srv/cache'];

  it('ls lists repositories by name with human sizes and times', async () => {
    const r = await runCli(['ls', ...dd]);
    expect(r.code).toBe(0);
    expect(r.opened.map((c) => c.dataDir)).toEqual(['/srv/cache']);
    expect(r.stdout).toBe(
      [
        'REPOSITORY                IMAGES  TAGS       SIZE  LAST PULLED  PINNED',
        'docker.io/library/alpine       2     2    7.5 MiB  3 min ago',
        'ghcr.io/acme/app               1     1  200.0 MiB  never        yes',
        '',
      ].join('\n'),
    );
  });

  it('ls REPOSITORY lists its images; a short Docker Hub name and a tag narrow it', async () => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['ls', 'docker.io/library/alpine', ...dd], { admin });
    expect(r.code).toBe(0);
    expect(admin.calls).toEqual([['images', { upstream: 'docker.io', repo: 'library/alpine' }]]);
    expect(r.stdout).toBe(
      [
        'TAGS         DIGEST               PLATFORMS                        SIZE  LAST PULLED  PINNED',
        '3.19,latest  sha256:a1a1a1a1a1a1  linux/amd64,linux/arm64/v8    7.0 MiB  3 min ago',
        '<none>       sha256:b2b2b2b2b2b2  -                           512.0 KiB  never        yes',
        '',
      ].join('\n'),
    );
    const narrowed = await runCli(['ls', 'alpine:3.19', ...dd]);
    expect(narrowed.stdout.trim().split('\n')).toHaveLength(2);
    expect(narrowed.stdout).toContain('sha256:a1a1a1a1a1a1');
    const byDigest = await runCli(['ls', `alpine@${DIGEST_B}`, ...dd]);
    expect(byDigest.stdout).toContain('sha256:b2b2b2b2b2b2');
    expect(byDigest.stdout).not.toContain('sha256:a1a1a1a1a1a1');
    const none = await runCli(['ls', 'busybox', ...dd]);
    expect(none).toMatchObject({ code: 0, stdout: 'no images of docker.io/library/busybox cached\n' });
  });

  it('--json prints the raw JSON (anywhere on the line)', async () => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['--json', 'ls', ...dd], { admin });
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(JSON.stringify(admin.repos)));
    const du = await runCli(['du', ...dd, '--json'], { admin });
    expect(JSON.parse(du.stdout)).toEqual(JSON.parse(JSON.stringify(admin.summaryValue)));
  });

  it('du: bytes against the cap, free disk against the floor, counts, hit ratio, savings, oldest use', async () => {
    const r = await runCli(['du', ...dd]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'cache        1.5 GiB of 10.0 GiB (15.0%)',
        'free disk    50.0 GiB (floor 5.0 GiB)',
        'images       12 in 2 repositories',
        'blobs        340',
        'hit ratio    87.5%',
        'bytes saved  3.4 GiB',
        'oldest use   3 days ago (2026-11-26T12:00:00.000Z)',
        'pins         ghcr.io/acme/**',
        '',
      ].join('\n'),
    );
  });

  it('du without limits or figures says so', async () => {
    const admin = new FakeCacheAdmin();
    admin.summaryValue = { ...admin.summaryValue, limitBytes: undefined, freeBytes: undefined, minFreeBytes: undefined, hitRatio: undefined, bytesSaved: 0, oldestUse: undefined, pins: [] };
    const r = await runCli(['du', ...dd], { admin });
    expect(r.stdout).toContain('cache        1.5 GiB (no byte cap)\n');
    expect(r.stdout).toContain('free disk    -\n');
    expect(r.stdout).toContain('hit ratio    -\n');
    expect(r.stdout).toContain('oldest use   never\n');
    expect(r.stdout).toContain('pins         none\n');
  });

  it.each([
    ['docker.io/library/alpine', { upstream: 'docker.io', repo: 'library/alpine' }, 'from docker.io/library/alpine'],
    ['docker.io/library/alpine:3.19', { upstream: 'docker.io', repo: 'library/alpine', tag: '3.19' }, 'from docker.io/library/alpine:3.19'],
    ['alpine:3.19', { upstream: 'docker.io', repo: 'library/alpine', tag: '3.19' }, 'from docker.io/library/alpine:3.19'],
    [`ghcr.io/acme/app@${DIGEST_A}`, { upstream: 'ghcr.io', repo: 'acme/app', digest: DIGEST_A }, `from ghcr.io/acme/app@${DIGEST_A}`],
  ])('rm %s', async (ref, target, suffix) => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['rm', ref, ...dd], { admin });
    expect(r.code).toBe(0);
    expect(admin.calls).toEqual([['purge', target]]);
    expect(r.stdout).toBe(`removed 1 tag, 1 image, 4 blobs (3.0 MiB) ${suffix}\n`);
  });

  it('rm of something not cached says nothing was removed', async () => {
    const admin = new FakeCacheAdmin();
    admin.purgeResult = { tags: 0, images: 0, blobs: 0, bytes: 0 };
    const r = await runCli(['rm', 'busybox', ...dd], { admin });
    expect(r).toMatchObject({ code: 0, stdout: 'nothing removed: docker.io/library/busybox is not cached\n' });
  });

  it('rm --all refuses without --yes when stdin is not a terminal', async () => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['rm', '--all', ...dd], { admin, stdinTTY: false });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('regmirror cache rm: refusing to remove everything without --yes (stdin is not a terminal)\n');
    expect(admin.calls).toEqual([]);
  });

  it('rm --all on a terminal asks, and removes only on yes', async () => {
    const no = new FakeCacheAdmin();
    const refused = await runCli(['rm', '--all', ...dd], { admin: no, stdinTTY: true, answers: [''] });
    expect(refused.code).toBe(1);
    expect(refused.prompts).toEqual(['Remove everything from the cache (12 images in 2 repositories, 1.5 GiB)? [y/N] ']);
    expect(refused.stderr).toBe('aborted; nothing removed\n');
    expect(no.calls.map((c) => c[0])).toEqual(['summary']);

    const yes = new FakeCacheAdmin();
    const done = await runCli(['rm', '--all', ...dd], { admin: yes, stdinTTY: true, answers: ['y'] });
    expect(done.code).toBe(0);
    expect(yes.calls).toEqual([['summary'], ['purge', { all: true }]]);
    expect(done.stdout).toBe('removed 1 tag, 1 image, 4 blobs (3.0 MiB) (everything)\n');
  });

  it('rm --all --yes removes without asking', async () => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['rm', '--all', '-y', ...dd], { admin, stdinTTY: true });
    expect(r.code).toBe(0);
    expect(r.prompts).toEqual([]);
    expect(admin.calls).toEqual([['purge', { all: true }]]);
  });

  it('pin, pins and unpin (plain references written canonically, patterns as given)', async () => {
    const admin = new FakeCacheAdmin();
    const p = await runCli(['pin', 'postgres:14.5', ...dd], { admin });
    expect(p.code).toBe(0);
    expect(admin.calls).toEqual([['pin', 'docker.io/library/postgres:14.5']]);
    expect(p.stdout).toBe('pinned docker.io/library/postgres:14.5\npins:\n  ghcr.io/acme/**\n  docker.io/library/postgres:14.5\n');
    const l = await runCli(['pins', ...dd], { admin });
    expect(l.stdout).toBe('ghcr.io/acme/**\ndocker.io/library/postgres:14.5\n');
    const j = await runCli(['pins', '--json', ...dd], { admin });
    expect(JSON.parse(j.stdout)).toEqual({ pins: ['ghcr.io/acme/**', 'docker.io/library/postgres:14.5'] });
    const u = await runCli(['unpin', 'ghcr.io/acme/**', ...dd], { admin });
    expect(u.code).toBe(0);
    expect(u.stdout).toBe('unpinned ghcr.io/acme/**\npins:\n  docker.io/library/postgres:14.5\n');
  });

  it('unpin of a pin that stays (from the config file) fails', async () => {
    const admin = new FakeCacheAdmin();
    admin.unpin = async (p) => {
      admin.calls.push(['unpin', p]);
      return [...admin.pinned];
    };
    const r = await runCli(['unpin', 'ghcr.io/acme/**', ...dd], { admin });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ghcr.io/acme/** is still pinned');
    // --json: the same exit status, the JSON alone on stdout.
    const j = await runCli(['unpin', 'ghcr.io/acme/**', '--json', ...dd], { admin });
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual({ pins: [...admin.pinned] });
    expect(j.stderr).toContain('ghcr.io/acme/** is still pinned');
  });

  it('gc and evict print one line each; plain when stderr is not a terminal', async () => {
    const admin = new FakeCacheAdmin();
    const gc = await runCli(['gc', ...dd], { admin });
    expect(gc).toMatchObject({ code: 0, stderr: '', stdout: 'removed 2 unreferenced blobs (1.5 KiB), 5 stale records, 1 temp file\n' });
    const ev = await runCli(['evict', ...dd], { admin });
    expect(ev).toMatchObject({ code: 0, stderr: '', stdout: 'evicted 3 images, 20 blobs (300.0 MiB) for the byte cap; cache now 1.1 GiB\n' });
    admin.evictResult = undefined;
    const none = await runCli(['evict', ...dd], { admin });
    expect(none.stdout).toBe('nothing to evict: the cache is within its limits\n');
    const json = await runCli(['evict', '--json', ...dd], { admin });
    expect(JSON.parse(json.stdout)).toEqual({ evicted: null });
  });

  it('gc on a terminal shows a status line on stderr and erases it', async () => {
    const r = await runCli(['gc', ...dd], { stderrTTY: true, stdoutTTY: true });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('collecting garbage…');
    expect(r.stderr.endsWith('\r\x1b[K')).toBe(true);
    expect(r.stdout).toBe('removed 2 unreferenced blobs (1.5 KiB), 5 stale records, 1 temp file\n');
  });

  it('revalidate REF:TAG', async () => {
    const admin = new FakeCacheAdmin();
    const r = await runCli(['revalidate', 'alpine:3.19', ...dd], { admin });
    expect(r).toMatchObject({ code: 0, stdout: 'docker.io/library/alpine:3.19 will be revalidated with upstream on its next pull\n' });
    expect(admin.calls).toEqual([['revalidate', 'docker.io', 'library/alpine', '3.19']]);
    admin.revalidates = false;
    const missing = await runCli(['revalidate', 'alpine:3.20', ...dd], { admin });
    expect(missing).toMatchObject({ code: 1, stdout: '', stderr: 'regmirror cache revalidate: docker.io/library/alpine:3.20 is not cached\n' });
  });

  it('a failure of the cache is one line and exit 1', async () => {
    const admin = new FakeCacheAdmin();
    admin.fail = new Error('disk on fire');
    const r = await runCli(['du', ...dd], { admin });
    expect(r).toMatchObject({ code: 1, stdout: '', stderr: 'regmirror cache du: disk on fire\n' });
  });
});

describe('regmirror cache: choosing the target', () => {
  it('--config FILE uses that config\'s dataDir; --data-dir overrides it', async () => {
    expect((await runCli(['du', '--config', 'mirror.yaml'])).opened.map((c) => c.dataDir)).toEqual(['/from/mirror.yaml']);
    expect((await runCli(['du', '-c', 'mirror.yaml', '--data-dir=/x'])).opened.map((c) => c.dataDir)).toEqual(['/x']);
  });

  it('neither: tries the default admin URL, then the configured dataDir', async () => {
    const r = await runCli(['du']);
    expect(r.code).toBe(0);
    expect(r.fetched).toEqual(['GET http://127.0.0.1:5001/admin/cache']);
    expect(r.opened.map((c) => c.dataDir)).toEqual(['/default/data']);
  });

  it('neither: MIRROR_ADMIN_URL, else the config\'s admin.listen, is the URL tried', async () => {
    const env = await runCli(['du'], { env: { MIRROR_ADMIN_URL: 'http://10.0.0.1:9' } });
    expect(env.fetched).toEqual(['GET http://10.0.0.1:9/admin/cache']);
    const cfg = await runCli(['du'], { config: { admin: { listen: { host: '0.0.0.0', port: 6001 }, hosts: [] } } });
    expect(cfg.fetched).toEqual(['GET http://127.0.0.1:6001/admin/cache']);
    const cfgObj = await runCli(['du'], { config: { admin: { listen: { host: '::1', port: 6002 }, hosts: [] } } });
    expect(cfgObj.fetched).toEqual(['GET http://[::1]:6002/admin/cache']);
  });
});

describe('regmirror cache: through the admin API', () => {
  /** A fake admin API: records each request and answers from `routes`. */
  function fakeApi(routes: Record<string, (body: unknown) => { status?: number; json: unknown }>) {
    const seen: Array<{ method: string; path: string; body: unknown }> = [];
    const fetch = async (input: string, init?: RequestInit) => {
      const url = new URL(input);
      const method = init?.method ?? 'GET';
      const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
      seen.push({ method, path: url.pathname + url.search, body });
      const route = routes[`${method} ${url.pathname}`];
      if (!route) return Response.json({ errors: [{ code: 'NOT_FOUND', message: `no route ${method} ${url.pathname}` }] }, { status: 404 });
      const { status = 200, json } = route(body);
      return Response.json(json, { status });
    };
    return { seen, fetch };
  }

  const admin = new FakeCacheAdmin();
  const api = fakeApi({
    'GET /admin/cache': () => ({ json: admin.summaryValue }),
    'GET /admin/repositories': () => ({ json: admin.repos }),
    'GET /admin/images': () => ({ json: admin.imageList }),
    'POST /admin/purge': (b: any) =>
      b.repository === 'docker.io/library/nope' ? { status: 404, json: { errors: [{ code: 'NAME_UNKNOWN', message: 'repository docker.io/library/nope is not cached' }] } } : { json: admin.purgeResult },
    'POST /admin/revalidate': () => ({ json: { revalidated: true } }),
    'GET /admin/pins': () => ({ json: { pins: ['a/**'] } }),
    'POST /admin/pins': (b: any) => ({ json: { pins: ['a/**', b.pattern] } }),
    'DELETE /admin/pins': () => ({ json: { pins: [] } }),
    'POST /admin/evict': () => ({ json: { evicted: null } }),
    'POST /admin/gc': () => ({ json: { blobs: 0, bytes: 0, records: 0, tempFiles: 0 } }),
  });
  const A = ['--admin', 'http://127.0.0.1:5999/'];

  it('sends each command as the API documents it', async () => {
    api.seen.length = 0;
    const runs = [
      await runCli(['du', ...A], { fetch: api.fetch }),
      await runCli(['ls', ...A], { fetch: api.fetch }),
      await runCli(['ls', 'ghcr.io/acme/app', ...A], { fetch: api.fetch }),
      await runCli(['rm', 'alpine:3.19', ...A], { fetch: api.fetch }),
      await runCli(['rm', `alpine@${DIGEST_A}`, ...A], { fetch: api.fetch }),
      await runCli(['rm', 'alpine', ...A], { fetch: api.fetch }),
      await runCli(['rm', '--all', '--yes', ...A], { fetch: api.fetch }),
      await runCli(['revalidate', 'alpine:edge', ...A], { fetch: api.fetch }),
      await runCli(['pins', ...A], { fetch: api.fetch }),
      await runCli(['pin', 'ghcr.io/acme/**', ...A], { fetch: api.fetch }),
      await runCli(['unpin', 'a/**', ...A], { fetch: api.fetch }),
      await runCli(['evict', ...A], { fetch: api.fetch }),
      await runCli(['gc', ...A], { fetch: api.fetch }),
    ];
    expect(runs.map((r) => [r.code, r.stderr])).toEqual(runs.map(() => [0, '']));
    expect(runs.every((r) => r.opened.length === 0)).toBe(true);
    expect(api.seen).toEqual([
      { method: 'GET', path: '/admin/cache', body: undefined },
      { method: 'GET', path: '/admin/repositories', body: undefined },
      { method: 'GET', path: '/admin/images?repository=ghcr.io%2Facme%2Fapp', body: undefined },
      { method: 'POST', path: '/admin/purge', body: { repository: 'docker.io/library/alpine', tag: '3.19' } },
      { method: 'POST', path: '/admin/purge', body: { repository: 'docker.io/library/alpine', digest: DIGEST_A } },
      { method: 'POST', path: '/admin/purge', body: { repository: 'docker.io/library/alpine' } },
      { method: 'POST', path: '/admin/purge', body: { all: true } },
      { method: 'POST', path: '/admin/revalidate', body: { repository: 'docker.io/library/alpine', tag: 'edge' } },
      { method: 'GET', path: '/admin/pins', body: undefined },
      { method: 'POST', path: '/admin/pins', body: { pattern: 'ghcr.io/acme/**' } },
      { method: 'DELETE', path: '/admin/pins', body: { pattern: 'a/**' } },
      { method: 'POST', path: '/admin/evict', body: undefined },
      { method: 'POST', path: '/admin/gc', body: undefined },
    ]);
    expect(runs[11]!.stdout).toBe('nothing to evict: the cache is within its limits\n');
  });

  it("the API's error envelope is the message, exit 1", async () => {
    const r = await runCli(['rm', 'nope', ...A], { fetch: api.fetch });
    expect(r).toMatchObject({ code: 1, stdout: '', stderr: 'regmirror cache rm: repository docker.io/library/nope is not cached\n' });
  });

  it('an admin URL that does not answer is a failure naming it', async () => {
    const r = await runCli(['du', '--admin', 'http://127.0.0.1:5999']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('regmirror cache du: cannot reach the admin API at http://127.0.0.1:5999: ECONNREFUSED (connect ECONNREFUSED 127.0.0.1:5001)\n');
    expect(r.opened).toEqual([]);
  });

  it('neither flag: a default admin URL that answers is used, the data dir left alone', async () => {
    const r = await runCli(['pins'], { fetch: api.fetch });
    expect(r).toMatchObject({ code: 0, stdout: 'a/**\n' });
    expect(r.fetched).toEqual(['GET http://127.0.0.1:5001/admin/cache', 'GET http://127.0.0.1:5001/admin/pins']);
    expect(r.opened).toEqual([]);
  });
});

describe('regmirror cache: neither target answering', () => {
  it('says both what was tried and why the data directory failed', async () => {
    const r = await runCli(['du'], { deps: { openCacheAdmin: async () => Promise.reject(new Error('data directory ./data does not exist')) } });
    expect(r).toMatchObject({
      code: 1,
      stderr: 'regmirror cache du: no admin API answers at http://127.0.0.1:5001, and the configured data directory cannot be used: data directory ./data does not exist\n',
    });
  });
});
