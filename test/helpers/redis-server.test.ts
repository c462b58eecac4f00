import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { startRedis, type RedisServer } from './redis-server.js';

describe('test helper: a real redis-server', () => {
  let server: RedisServer | undefined;
  afterAll(() => server?.close());

  it('starts, keeps nothing across a stop, and comes back on the same port', async () => {
    server = await startRedis();
    const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await client.connect();
    await client.set('k', 'v');
    expect(await client.get('k')).toBe('v');
    client.disconnect();

    await server.stop();
    expect(server.running).toBe(false);
    await server.start();
    expect(server.running).toBe(true);
    const again = new Redis(server.url, { maxRetriesPerRequest: 0 });
    expect(await again.get('k')).toBeNull();
    again.disconnect();
  });
});
