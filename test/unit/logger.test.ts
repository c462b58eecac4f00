import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, hideSecrets } from '../../src/logger.js';

function capture(): { out: Writable; lines: () => Record<string, unknown>[] } {
  let text = '';
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  return { out, lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('the process logger hides secrets', () => {
  it('writes authorization, password and token as [redacted], at the top and one level down, in any case', () => {
    const { out, lines } = capture();
    const log = createLogger({ log: { level: 'info', format: 'json' } }, out);
    const upstream = { url: 'https://r.example', password: 'hunter2', Token: 'tok-1' };
    const err = Object.assign(new Error('refused'), { authorization: 'Bearer abc' });
    log.info({ Authorization: 'Basic dXNlcjpwYXNz', upstream, err, user: 'alice' }, 'login');
    log.error({ token: 'tok-2', n: 1 }, 'second');
    const [first, second] = lines();
    expect(first).toMatchObject({ msg: 'login', Authorization: '[redacted]', user: 'alice', upstream: { url: 'https://r.example', password: '[redacted]', Token: '[redacted]' } });
    expect(first!.err).toMatchObject({ message: 'refused', authorization: '[redacted]' });
    expect(second).toMatchObject({ msg: 'second', token: '[redacted]', n: 1 });
    const text = JSON.stringify(lines());
    for (const secret of ['dXNlcjpwYXNz', 'hunter2', 'tok-1', 'Bearer abc', 'tok-2']) expect(text).not.toContain(secret);
    // What was logged is left as it was.
    expect(upstream.password).toBe('hunter2');
    expect(err.authorization).toBe('Bearer abc');
  });

  it('passes a record without a secret through as it is (the access log allocates no copy)', () => {
    const record = { reqId: 'r1', method: 'GET', route: 'blob', status: 200, bytes: 10, nested: { repo: 'library/alpine' } };
    expect(hideSecrets(record)).toBe(record);
    const withSecret = { a: 1, nested: { password: 'p' } };
    const shown = hideSecrets(withSecret);
    expect(shown).not.toBe(withSecret);
    expect(shown).toEqual({ a: 1, nested: { password: '[redacted]' } });
    expect(withSecret.nested.password).toBe('p');
  });
});
