import { describe, expect, it } from 'vitest';
import { parseChallenge } from '../../src/upstream/challenge.js';

describe('parseChallenge', () => {
  it("parses Docker Hub's exact header", () => {
    const h = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"';
    expect(parseChallenge(h)).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    });
  });

  it('keeps commas, equals signs and colons inside quoted values', () => {
    const h = 'Bearer realm="https://ghcr.io/token?a=1,b=2",service="ghcr.io",scope="repository:owner/repo:pull,push"';
    expect(parseChallenge(h)!.params).toEqual({
      realm: 'https://ghcr.io/token?a=1,b=2',
      service: 'ghcr.io',
      scope: 'repository:owner/repo:pull,push',
    });
  });

  it('parses an insufficient_scope error challenge with several scopes', () => {
    const h = 'Bearer realm="https://r/token",service="s",scope="repository:a:pull repository:b:pull",error="insufficient_scope"';
    expect(parseChallenge(h)!.params).toEqual({
      realm: 'https://r/token',
      service: 's',
      scope: 'repository:a:pull repository:b:pull',
      error: 'insufficient_scope',
    });
  });

  it('unescapes quoted-pair escapes', () => {
    expect(parseChallenge('Bearer realm="a \\"quoted\\" realm",service="x\\\\y"')!.params).toEqual({ realm: 'a "quoted" realm', service: 'x\\y' });
  });

  it('accepts unquoted values and spaces around separators', () => {
    expect(parseChallenge('Bearer realm=https://r/token , service = svc,scope="s"')!.params).toEqual({ realm: 'https://r/token', service: 'svc', scope: 's' });
  });

  it('parses Basic, case-insensitively, and lower-cases parameter names', () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic', params: { realm: 'Registry Realm' } });
    expect(parseChallenge('BASIC Realm="x"')).toEqual({ scheme: 'basic', params: { realm: 'x' } });
    expect(parseChallenge('bearer REALM="https://r",Service="s"')).toEqual({ scheme: 'bearer', params: { realm: 'https://r', service: 's' } });
  });

  it('a scheme without parameters, and other schemes', () => {
    expect(parseChallenge('Basic')).toEqual({ scheme: 'basic', params: {} });
    expect(parseChallenge('Negotiate')!.scheme).toBe('other');
    expect(parseChallenge('Digest realm="x", nonce="y"')!.scheme).toBe('other');
  });

  it('no header or an empty one is undefined', () => {
    expect(parseChallenge(undefined)).toBeUndefined();
    expect(parseChallenge('')).toBeUndefined();
    expect(parseChallenge('   ')).toBeUndefined();
  });
});
