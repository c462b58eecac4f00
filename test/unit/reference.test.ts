import { describe, expect, it } from 'vitest';
import { errorResponse } from '../../src/http/errors.js';
import { RegistryError } from '../../src/registry/errors.js';
import {
  displayName,
  isDigest,
  looksLikeHost,
  MAX_COMPONENTS,
  MAX_NAME_LENGTH,
  parseDigest,
  routeName,
  validateRepoName,
  validateTag,
  type RoutingTable,
} from '../../src/registry/reference.js';

/** The OCI code a call throws, or undefined when it returns. */
function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof RegistryError) return e.code;
    throw e;
  }
  return undefined;
}

const HEX64 = 'a'.repeat(32) + '0123456789abcdef'.repeat(2);
const HEX128 = HEX64 + HEX64;

describe('repository name grammar', () => {
  it.each([
    'library/alpine',
    'a/b-c/d_e',
    'a__b',
    'a.b',
    'a',
    '0',
    'a--b',
    'a-b.c_d__e',
    'org/team.x/app-1',
  ])('accepts %s', (name) => {
    expect(codeOf(() => validateRepoName(name))).toBeUndefined();
  });

  it.each([
    ['upper case', 'Library/alpine'],
    ['upper case in a later part', 'library/Alpine'],
    ['dot-dot', '..'],
    ['dot-dot component', 'a/../b'],
    ['single dot component', 'a/./b'],
    ['percent-encoded dots', '%2e%2e'],
    ['percent-encoded dots in a path', 'a/%2e%2e/b'],
    ['double slash', 'a//b'],
    ['backslash', 'a\\b'],
    ['leading slash', '/a'],
    ['trailing slash', 'a/'],
    ['empty', ''],
    ['three underscores', 'a___b'],
    ['leading separator', '-a'],
    ['trailing separator', 'a-'],
    ['leading dot', '.a'],
    ['two dots inside', 'a..b'],
    ['mixed separators', 'a._b'],
    ['space', 'a b'],
    ['colon', 'a:b'],
    ['at sign', 'a@b'],
  ])('rejects %s (%s)', (_why, name) => {
    expect(codeOf(() => validateRepoName(name))).toBe('NAME_INVALID');
  });

  it(`limits a name to ${MAX_NAME_LENGTH} characters`, () => {
    expect(MAX_NAME_LENGTH).toBe(255);
    expect(codeOf(() => validateRepoName('a'.repeat(255)))).toBeUndefined();
    expect(codeOf(() => validateRepoName('a'.repeat(256)))).toBe('NAME_INVALID');
    expect(codeOf(() => validateRepoName(`${'a'.repeat(127)}/${'b'.repeat(128)}`))).toBe('NAME_INVALID');
  });

  it(`limits a name to ${MAX_COMPONENTS} components`, () => {
    expect(MAX_COMPONENTS).toBe(16);
    expect(codeOf(() => validateRepoName(Array(16).fill('a').join('/')))).toBeUndefined();
    expect(codeOf(() => validateRepoName(Array(17).fill('a').join('/')))).toBe('NAME_INVALID');
  });

  it('reports NAME_INVALID with the name in the detail', () => {
    try {
      validateRepoName('Bad');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).detail).toEqual({ name: 'Bad' });
    }
  });
});

describe('tag grammar', () => {
  it.each(['latest', 'v1.2.3', '3.19', '_private', 'A-Z_09.x', 'x'.repeat(128), '0', 'a..b', 'a--'])('accepts %s', (tag) => {
    expect(codeOf(() => validateTag(tag))).toBeUndefined();
  });

  it.each([
    ['129 characters', 'x'.repeat(129)],
    ['leading dot', '.hidden'],
    ['leading dash', '-rc1'],
    ['empty', ''],
    ['slash', 'a/b'],
    ['colon', 'a:b'],
    ['plus', '1.0+build'],
    ['space', 'a b'],
    ['at sign', 'a@b'],
  ])('rejects a tag with %s', (_why, tag) => {
    expect(codeOf(() => validateTag(tag))).toBe('TAG_INVALID');
  });
});

describe('digest grammar', () => {
  it('accepts sha256 and sha512 and splits algorithm from hex', () => {
    expect(parseDigest(`sha256:${HEX64}`)).toEqual({ algorithm: 'sha256', hex: HEX64 });
    expect(parseDigest(`sha512:${HEX128}`)).toEqual({ algorithm: 'sha512', hex: HEX128 });
  });

  it('an unknown algorithm is UNSUPPORTED (400 at the edge), not DIGEST_INVALID', () => {
    try {
      parseDigest('md5:d41d8cd98f00b204e9800998ecf8427e');
      expect.unreachable();
    } catch (e) {
      expect((e as RegistryError).code).toBe('DIGEST_UNSUPPORTED');
      const r = errorResponse(e);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).errors[0].code).toBe('UNSUPPORTED');
    }
    expect(codeOf(() => parseDigest(`sha384:${'a'.repeat(96)}`))).toBe('DIGEST_UNSUPPORTED');
    expect(codeOf(() => parseDigest(`multihash+base58:${HEX64}`))).toBe('DIGEST_UNSUPPORTED');
  });

  it.each([
    ['non-hex characters', `sha256:${'g'.repeat(64)}`],
    ['63 hex digits', `sha256:${HEX64.slice(1)}`],
    ['65 hex digits', `sha256:${HEX64}0`],
    ['upper-case hex', `sha256:${HEX64.toUpperCase()}`],
    ['a sha256-length sha512', `sha512:${HEX64}`],
    ['no algorithm', HEX64],
    ['empty algorithm', `:${HEX64}`],
    ['empty hex', 'sha256:'],
    ['empty', ''],
    ['path characters', `sha256:../${HEX64}`],
    ['upper-case algorithm', `SHA256:${HEX64}`],
  ])('rejects %s as DIGEST_INVALID', (_why, d) => {
    expect(codeOf(() => parseDigest(d))).toBe('DIGEST_INVALID');
  });

  it('isDigest checks the shape only', () => {
    expect(isDigest(`sha256:${HEX64}`)).toBe(true);
    expect(isDigest('md5:abc')).toBe(true);
    expect(isDigest('latest')).toBe(false);
    expect(isDigest('sha256:')).toBe(false);
  });
});

describe('upstream routing', () => {
  const hosts: Record<string, string> = {
    'docker.io': 'docker.io',
    'registry-1.docker.io': 'docker.io',
    'index.docker.io': 'docker.io',
    'ghcr.io': 'ghcr.io',
    'localhost:5000': 'localhost:5000',
  };
  const table: RoutingTable = {
    defaultUpstream: 'docker.io',
    resolve: (h) => hosts[h],
    addsLibraryPrefix: (u) => u === 'docker.io',
  };

  it('a one-part name goes to the default upstream under library/', () => {
    expect(routeName('alpine', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('alpine', '', table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
  });

  it('a multi-part name without a host goes to the default upstream unchanged', () => {
    expect(routeName('library/alpine', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('bitnami/redis', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'bitnami/redis' });
    expect(routeName('a/b.c', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'a/b.c' });
  });

  it('a host as the first part names the registry', () => {
    expect(routeName('ghcr.io/owner/repo', undefined, table)).toEqual({ upstream: 'ghcr.io', repo: 'owner/repo' });
    expect(routeName('ghcr.io/owner/sub/repo', undefined, table)).toEqual({ upstream: 'ghcr.io', repo: 'owner/sub/repo' });
    // A one-part name on an upstream without the library convention stays one part.
    expect(routeName('ghcr.io/repo', undefined, table)).toEqual({ upstream: 'ghcr.io', repo: 'repo' });
  });

  it('docker.io and its aliases as the first part still get library/', () => {
    expect(routeName('docker.io/alpine', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('registry-1.docker.io/alpine', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('docker.io/library/alpine', undefined, table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
  });

  it('host detection: a port or localhost makes a host, and the host is matched lower-cased', () => {
    expect(routeName('localhost:5000/x', undefined, table)).toEqual({ upstream: 'localhost:5000', repo: 'x' });
    expect(routeName('GHCR.IO/owner/repo', undefined, table)).toEqual({ upstream: 'ghcr.io', repo: 'owner/repo' });
    expect(looksLikeHost('localhost')).toBe(true);
    expect(looksLikeHost('localhost:5000')).toBe(true);
    expect(looksLikeHost('registry:5000')).toBe(true);
    expect(looksLikeHost('[::1]:5000')).toBe(true);
    expect(looksLikeHost('ghcr.io')).toBe(true);
    expect(looksLikeHost('library')).toBe(false);
    expect(looksLikeHost('owner')).toBe(false);
  });

  it('ns= names the registry, and the whole path is the upstream name', () => {
    expect(routeName('alpine', 'docker.io', table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('library/alpine', 'docker.io', table)).toEqual({ upstream: 'docker.io', repo: 'library/alpine' });
    expect(routeName('owner/repo', 'ghcr.io', table)).toEqual({ upstream: 'ghcr.io', repo: 'owner/repo' });
    expect(routeName('owner/repo', 'GHCR.IO', table)).toEqual({ upstream: 'ghcr.io', repo: 'owner/repo' });
    expect(routeName('x', 'localhost:5000', table)).toEqual({ upstream: 'localhost:5000', repo: 'x' });
  });

  it('an unknown registry is NAME_UNKNOWN, never a guess', () => {
    expect(codeOf(() => routeName('quay.io/org/app', undefined, table))).toBe('NAME_UNKNOWN');
    expect(codeOf(() => routeName('org/app', 'quay.io', table))).toBe('NAME_UNKNOWN');
    expect(codeOf(() => routeName('localhost/x', undefined, table))).toBe('NAME_UNKNOWN');
    // A dotted first part is a registry host (as in Docker), not a repository component.
    expect(codeOf(() => routeName('a.b/c', undefined, table))).toBe('NAME_UNKNOWN');
    try {
      routeName('org/app', 'quay.io', table);
    } catch (e) {
      expect((e as RegistryError).detail).toEqual({ registry: 'quay.io' });
    }
  });

  it('an ns= value that is not a host is NAME_INVALID', () => {
    expect(codeOf(() => routeName('alpine', 'not a host', table))).toBe('NAME_INVALID');
    expect(codeOf(() => routeName('alpine', 'library', table))).toBe('NAME_INVALID');
    expect(codeOf(() => routeName('alpine', '../etc', table))).toBe('NAME_INVALID');
  });

  it.each([
    'Alpine',
    'ghcr.io/Owner/repo',
    '..',
    'a/../b',
    'ghcr.io/../x',
    '%2e%2e/x',
    'a//b',
    'a\\b',
    '/alpine',
    'alpine/',
    'ghcr.io/',
    'ghcr.io//x',
    '',
    'a/./b',
    'a b',
  ])('rejects %j as NAME_INVALID before routing', (name) => {
    expect(codeOf(() => routeName(name, undefined, table))).toBe('NAME_INVALID');
  });

  it('limits length and components after the host is removed and library/ added', () => {
    expect(codeOf(() => routeName('a'.repeat(256), undefined, table))).toBe('NAME_INVALID');
    expect(routeName(`ghcr.io/${'a'.repeat(255)}`, undefined, table)).toEqual({ upstream: 'ghcr.io', repo: 'a'.repeat(255) });
    // library/ + 250 characters is 258: too long for the upstream, so refused here.
    expect(codeOf(() => routeName('a'.repeat(250), undefined, table))).toBe('NAME_INVALID');
    expect(codeOf(() => routeName('x'.repeat(600), undefined, table))).toBe('NAME_INVALID');
    const sixteen = Array(16).fill('a').join('/');
    expect(routeName(`ghcr.io/${sixteen}`, undefined, table)).toEqual({ upstream: 'ghcr.io', repo: sixteen });
    expect(codeOf(() => routeName(`ghcr.io/${sixteen}/a`, undefined, table))).toBe('NAME_INVALID');
  });

  it('displayName shows the default upstream bare and others host-prefixed', () => {
    expect(displayName({ upstream: 'docker.io', repo: 'library/alpine' }, 'docker.io')).toBe('library/alpine');
    expect(displayName({ upstream: 'ghcr.io', repo: 'owner/repo' }, 'docker.io')).toBe('ghcr.io/owner/repo');
    // What displayName produces routes back to the same repository.
    for (const ref of [{ upstream: 'docker.io', repo: 'library/alpine' }, { upstream: 'ghcr.io', repo: 'owner/repo' }]) {
      expect(routeName(displayName(ref, 'docker.io'), undefined, table)).toEqual(ref);
    }
  });
});
