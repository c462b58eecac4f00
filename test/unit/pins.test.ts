import { describe, expect, it } from 'vitest';
import { PinSet } from '../../src/lifecycle/pins.js';

/** One metadata store's state, as replicas sharing Redis records see it. */
function sharedState() {
  const state = new Map<string, unknown>();
  let down = false;
  return {
    setDown: (v: boolean) => void (down = v),
    getState: (name: string) => (down ? Promise.reject(new Error('redis away')) : Promise.resolve(state.get(name))),
    putState: (name: string, value: unknown) => {
      if (down) return Promise.reject(new Error('redis away'));
      state.set(name, value);
      return Promise.resolve();
    },
  };
}

const image = (repo: string) => ({ upstream: 'docker.io', repo, digest: `sha256:${'a'.repeat(64)}`, tags: ['1'] });

describe('pins shared by replicas', () => {
  it("a pin made on one replica is not written over by another's, and counts there once refreshed (as before each eviction pass)", async () => {
    const meta = sharedState();
    const a = new PinSet(['docker.io/library/fixed'], meta);
    const b = new PinSet([], meta);
    await a.load();
    await b.load();
    await a.add('docker.io/library/postgres');
    // b pins something else: from what is saved now, so a's pin stays.
    expect(await b.add('docker.io/library/redis')).toEqual(['docker.io/library/postgres', 'docker.io/library/redis']);
    await a.refresh();
    expect(a.all()).toEqual(['docker.io/library/fixed', 'docker.io/library/postgres', 'docker.io/library/redis']);
    expect(a.matches(image('library/redis'))).toBe(true);
    // An unpin on a removes it for b too.
    await a.remove('docker.io/library/postgres');
    await b.refresh();
    expect(b.matches(image('library/postgres'))).toBe(false);
    expect(b.all()).toEqual(['docker.io/library/redis']);
  });

  it('a refresh that cannot read the store keeps the pins known', async () => {
    const meta = sharedState();
    const a = new PinSet([], meta);
    await a.add('docker.io/library/postgres');
    meta.setDown(true);
    await a.refresh();
    expect(a.matches(image('library/postgres'))).toBe(true);
  });
});
