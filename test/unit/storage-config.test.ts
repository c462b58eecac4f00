/** The `storage:` section of the configuration: filesystem by default; S3 and Redis when asked. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, configWithDefaults, type Config } from '../../src/config.js';

const DEFAULTS = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8');
const load = (storage: Record<string, unknown> = {}, env: Record<string, string> = {}): Config => configWithDefaults(DEFAULTS, { storage }, env);
const errorOf = (fn: () => unknown): ConfigError => {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
};

describe('storage configuration', () => {
  it('defaults to the filesystem with no Redis: npm start needs neither S3 nor Redis', () => {
    const { storage } = load();
    expect(storage.type).toBe('fs');
    expect(storage.redis).toEqual({ url: undefined, keyPrefix: 'regmirror:' });
    expect(storage.s3).toMatchObject({ endpoint: undefined, region: 'us-east-1', bucket: '', prefix: '', forcePathStyle: false, accessKeyId: undefined, secretAccessKey: undefined, partSize: 8 * 1024 * 1024 });
  });

  it('takes an S3 bucket on Ceph RGW with static credentials and a Redis URL', () => {
    const { storage } = load({
      type: 's3',
      s3: { endpoint: 'http://rgw.local:7480/', bucket: 'cache', prefix: 'regmirror/', forcePathStyle: true, accessKeyId: 'AK', secretAccessKey: 'SK', partSize: '16MiB' },
      redis: { url: 'redis://:pw@redis:6379/2', keyPrefix: 'site-a:' },
    });
    expect(storage).toEqual({
      type: 's3',
      s3: { endpoint: 'http://rgw.local:7480', region: 'us-east-1', bucket: 'cache', prefix: 'regmirror/', forcePathStyle: true, accessKeyId: 'AK', secretAccessKey: 'SK', partSize: 16 * 1024 * 1024 },
      redis: { url: 'redis://:pw@redis:6379/2', keyPrefix: 'site-a:' },
    });
  });

  it('without keys, S3 uses the SDK default credential chain (AWS)', () => {
    const { storage } = load({ type: 's3', s3: { bucket: 'b', region: 'eu-west-1' } });
    expect(storage.s3).toMatchObject({ endpoint: undefined, region: 'eu-west-1', accessKeyId: undefined, secretAccessKey: undefined });
  });

  it('refuses what cannot work, naming the key', () => {
    expect(errorOf(() => load({ type: 'gcs' })).key).toBe('storage.type');
    expect(errorOf(() => load({ type: 's3' })).key).toBe('storage.s3.bucket');
    expect(errorOf(() => load({ type: 's3', s3: { bucket: 'b', endpoint: 'rgw:7480' } })).key).toBe('storage.s3.endpoint');
    expect(errorOf(() => load({ type: 's3', s3: { bucket: 'b', endpoint: 'http://rgw/path' } })).key).toBe('storage.s3.endpoint');
    expect(errorOf(() => load({ type: 's3', s3: { bucket: 'b', accessKeyId: 'AK' } })).key).toBe('storage.s3.secretAccessKey');
    expect(errorOf(() => load({ type: 's3', s3: { bucket: 'b', partSize: '1MiB' } })).key).toBe('storage.s3.partSize');
    expect(errorOf(() => load({ s3: { prefix: '/abs' } })).key).toBe('storage.s3.prefix');
    expect(errorOf(() => load({ s3: { bukket: 'b' } })).key).toBe('storage.s3.bukket');
    expect(errorOf(() => load({ redis: { url: 'http://redis:6379' } })).key).toBe('storage.redis.url');
    expect(errorOf(() => load({ redis: { keyPrefix: 'a b' } })).key).toBe('storage.redis.keyPrefix');
  });

  it('environment overrides set each key', () => {
    const { storage } = load({}, {
      MIRROR_STORAGE_TYPE: 's3',
      MIRROR_S3_ENDPOINT: 'https://s3.example.com',
      MIRROR_S3_REGION: 'auto',
      MIRROR_S3_BUCKET: 'env-bucket',
      MIRROR_S3_PREFIX: 'p/',
      MIRROR_S3_FORCE_PATH_STYLE: 'true',
      MIRROR_S3_ACCESS_KEY_ID: 'AK',
      MIRROR_S3_SECRET_ACCESS_KEY: 'SK',
      MIRROR_REDIS_URL: 'rediss://redis.example.com:6380',
      MIRROR_REDIS_KEY_PREFIX: 'env:',
    });
    expect(storage).toEqual({
      type: 's3',
      s3: { endpoint: 'https://s3.example.com', region: 'auto', bucket: 'env-bucket', prefix: 'p/', forcePathStyle: true, accessKeyId: 'AK', secretAccessKey: 'SK', partSize: 8 * 1024 * 1024 },
      redis: { url: 'rediss://redis.example.com:6380', keyPrefix: 'env:' },
    });
  });
});
