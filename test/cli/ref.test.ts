import { describe, expect, it } from 'vitest';
import { formatCacheRef, normalizePinPattern, parseCacheRef, RefError } from '../../src/cli/ref.js';

const D = `sha256:${'ab'.repeat(32)}`;

describe('cache CLI references', () => {
  it.each([
    ['docker.io/library/alpine', { upstream: 'docker.io', repo: 'library/alpine' }],
    ['docker.io/library/alpine:3.19', { upstream: 'docker.io', repo: 'library/alpine', tag: '3.19' }],
    [`docker.io/library/alpine@${D}`, { upstream: 'docker.io', repo: 'library/alpine', digest: D }],
    ['alpine', { upstream: 'docker.io', repo: 'library/alpine' }],
    ['alpine:3.19', { upstream: 'docker.io', repo: 'library/alpine', tag: '3.19' }],
    ['docker.io/alpine:latest', { upstream: 'docker.io', repo: 'library/alpine', tag: 'latest' }],
    ['index.docker.io/acme/app', { upstream: 'docker.io', repo: 'acme/app' }],
    ['acme/app:v1', { upstream: 'docker.io', repo: 'acme/app', tag: 'v1' }],
    ['ghcr.io/acme/tools/app:1.0', { upstream: 'ghcr.io', repo: 'acme/tools/app', tag: '1.0' }],
    ['GHCR.IO/acme/app', { upstream: 'ghcr.io', repo: 'acme/app' }],
    ['localhost:5000/app:dev', { upstream: 'localhost:5000', repo: 'app', tag: 'dev' }],
    ['registry.k8s.io/pause', { upstream: 'registry.k8s.io', repo: 'pause' }],
  ])('%s', (input, want) => {
    expect(parseCacheRef(input)).toEqual(want);
  });

  it.each([
    ['', /empty/],
    ['Alpine', /invalid repository name/],
    ['alpine:', /invalid tag/],
    ['alpine:-x', /invalid tag/],
    ['alpine@sha256:xyz', /invalid digest/],
    ['alpine@md5:abc', /invalid digest/],
    [`alpine:3.19@${D}`, /tag or a digest, not both/],
    ['ghcr.io/acme//app', /invalid repository name/],
  ])('refuses %j', (input, message) => {
    expect(() => parseCacheRef(input)).toThrow(RefError);
    expect(() => parseCacheRef(input)).toThrow(message);
  });

  it('writes references back canonically', () => {
    expect(formatCacheRef(parseCacheRef('alpine:3.19'))).toBe('docker.io/library/alpine:3.19');
    expect(formatCacheRef(parseCacheRef(`alpine@${D}`))).toBe(`docker.io/library/alpine@${D}`);
    expect(formatCacheRef(parseCacheRef('ghcr.io/acme/app'))).toBe('ghcr.io/acme/app');
  });

  it('normalizes pin references but passes wildcard patterns through', () => {
    expect(normalizePinPattern('postgres:14.5')).toBe('docker.io/library/postgres:14.5');
    expect(normalizePinPattern('ghcr.io/acme/**')).toBe('ghcr.io/acme/**');
    expect(normalizePinPattern('docker.io/library/*')).toBe('docker.io/library/*');
    expect(() => normalizePinPattern(' ')).toThrow(/empty pattern/);
  });
});
