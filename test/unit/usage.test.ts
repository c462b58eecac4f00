import { describe, expect, it } from 'vitest';
import { blobKey, manifestKey, UsageTracker } from '../../src/lifecycle/usage.js';

/** A state store whose next `failures` writes fail, recording what was written. */
function stateStore(failures = 0) {
  const writes: unknown[] = [];
  let left = failures;
  return {
    writes,
    getState: () => Promise.resolve(undefined),
    putState: (_name: string, value: unknown) => {
      if (left-- > 0) return Promise.reject(new Error('ENOSPC: no space left on device'));
      writes.push(value);
      return Promise.resolve();
    },
  };
}

describe('UsageTracker', () => {
  it('a failed save does not stop later saves: the next one writes what changed', async () => {
    const meta = stateStore(1);
    const usage = new UsageTracker(meta, () => 1000);
    usage.blob('sha256:aa');
    await expect(usage.save()).rejects.toThrow(/ENOSPC/);
    await usage.save();
    expect(meta.writes).toHaveLength(1);
    expect(meta.writes[0]).toMatchObject({ entries: { 'b sha256:aa': 1000 } });
    usage.blob('sha256:bb');
    await usage.save();
    expect(meta.writes).toHaveLength(2);
  });

  it('prune forgets old uses of content not stored, keeps stored content and recent uses', () => {
    let now = 1000;
    const usage = new UsageTracker(stateStore(), () => now);
    usage.blob('sha256:gone');
    usage.blob('sha256:kept');
    usage.manifest('docker.io', 'library/a', 'sha256:oldm');
    now = 5000;
    usage.blob('sha256:young');
    expect(usage.prune((d) => d === 'sha256:kept', 2000)).toBe(2);
    expect(usage.get(blobKey('sha256:gone'))).toBeUndefined();
    expect(usage.get(manifestKey('docker.io', 'library/a', 'sha256:oldm'))).toBeUndefined();
    expect(usage.get(blobKey('sha256:kept'))).toBe(1000);
    expect(usage.get(blobKey('sha256:young'))).toBe(5000);
  });
});
