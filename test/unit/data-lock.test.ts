import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DataDirBusyError, lockDataDir, type LockDeps } from '../../src/storage/data-lock.js';

/** A process by pid, in `place` (host and pid namespace); the pids in `live` are alive there. */
const as = (pid: number, live: number[] = [], place = 'host-a/pid:[1]', now = Date.now): LockDeps => ({ pid, place, alive: (p) => live.includes(p), now, beatMs: 10_000 });

describe('the data directory lock', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'data-lock-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const lockText = () => readFile(join(dir, 'state', 'lock'), 'utf8');

  it('names its holder, refuses a second live process with who holds it, and is free again after release', async () => {
    const held = await lockDataDir(dir, 'import', as(100));
    expect(await lockText()).toMatch(/^100 import [0-9a-f]{16} host-a\/pid:\[1\]\n$/);
    const refused = await lockDataDir(dir, 'serve', as(200, [100])).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DataDirBusyError);
    expect((refused as DataDirBusyError).pid).toBe(100);
    expect((refused as Error).message).toBe(`regmirror import (pid 100) is using ${dir}: wait for it to finish (or remove ${join(dir, 'state', 'lock')} if no such process is a regmirror)`);
    // The holder's lock is untouched by the refusal.
    expect(await lockText()).toMatch(/^100 import /);
    await held.release();
    expect(await readdir(join(dir, 'state'))).toEqual([]);
    const next = await lockDataDir(dir, 'serve', as(200, [100]));
    expect(await lockText()).toMatch(/^200 serve /);
    await next.release();
  });

  it('tells an offline tool to use the admin API of the mirror that serves the directory', async () => {
    await lockDataDir(dir, 'serve', as(100));
    await expect(lockDataDir(dir, 'cache', as(200, [100]))).rejects.toThrow(`a mirror (pid 100) is serving ${dir}: use its admin API (--admin URL) instead of the data directory`);
  });

  it("takes over a dead process's lock, and one it cannot read", async () => {
    await lockDataDir(dir, 'serve', as(100)); // never released: the process was killed
    const after = await lockDataDir(dir, 'serve', as(200, []));
    expect(await lockText()).toMatch(/^200 serve /);
    await after.release();
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'lock'), 'garbage');
    await (await lockDataDir(dir, 'cache', as(300))).release();
    expect(await readdir(join(dir, 'state'))).toEqual([]);
  });

  it('in one process the newest holder owns it: an older holder releasing leaves it held', async () => {
    const first = await lockDataDir(dir, 'serve', as(100));
    const second = await lockDataDir(dir, 'serve', as(100));
    await first.release();
    expect(await lockText()).toMatch(/^100 serve /);
    await expect(lockDataDir(dir, 'import', as(200, [100]))).rejects.toBeInstanceOf(DataDirBusyError);
    await second.release();
    expect(await readdir(join(dir, 'state'))).toEqual([]);
  });

  it('a holder in another container or host (same pid, other namespace) is not taken for this process: refused while it beats, taken over once it stopped', async () => {
    // The server in its container is pid 1; so is `docker run … regmirror cache gc` on the same volume.
    const server = await lockDataDir(dir, 'serve', as(1, [], 'host-a/pid:[4026532001]'));
    expect(await lockText()).toMatch(/^1 serve [0-9a-f]{16} host-a\/pid:\[4026532001\]\n$/);
    const cli = lockDataDir(dir, 'cache', as(1, [1], 'host-a/pid:[4026532099]'));
    await expect(cli).rejects.toThrow(`a mirror (pid 1 on host-a) is serving ${dir}: use its admin API (--admin URL) instead of the data directory`);
    // Its holder stopped beating (killed with its container): three beats later the lock is stale.
    const later = () => Date.now() + 31_000;
    const next = await lockDataDir(dir, 'serve', as(1, [], 'host-a/pid:[4026532123]', later));
    expect(await lockText()).toMatch(/ host-a\/pid:\[4026532123\]\n$/);
    await server.release(); // the old holder's release leaves the new lock alone
    expect(await lockText()).toMatch(/ host-a\/pid:\[4026532123\]\n$/);
    await next.release();
  });

  it('a holder beats: the lock it holds stays fresh, and a server waits out one that may be a crashed holder\'s', async () => {
    const deps = { ...as(100, [], 'host-b/pid:[1]'), beatMs: 40 };
    const held = await lockDataDir(dir, 'import', deps);
    const { stat, utimes } = await import('node:fs/promises');
    const old = new Date(Date.now() - 60_000);
    await utimes(join(dir, 'state', 'lock'), old, old);
    await vi.waitFor(async () => expect(Date.now() - (await stat(join(dir, 'state', 'lock'))).mtimeMs).toBeLessThan(1000), { timeout: 2000 });
    await held.release();
    // A crashed holder's lock from elsewhere, just written (fresh), beating no more: refused at once,
    // and a server waiting for it gets it once it went stale.
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'state', 'lock'), '7 serve 00112233aabbccdd host-c/pid:[1]\n');
    await expect(lockDataDir(dir, 'serve', { ...as(8, [], 'host-d/pid:[1]'), beatMs: 40 })).rejects.toBeInstanceOf(DataDirBusyError);
    const waited = await lockDataDir(dir, 'serve', { ...as(8, [], 'host-d/pid:[1]'), beatMs: 40 }, { waitMs: 2000 });
    expect(await lockText()).toMatch(/^8 serve /);
    await waited.release();
  });

  it('of many processes taking it at once, exactly one gets it', async () => {
    const pids = Array.from({ length: 12 }, (_, i) => 1000 + i);
    const results = await Promise.allSettled(pids.map((pid) => lockDataDir(dir, 'import', as(pid, pids))));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(DataDirBusyError);
    // No drafts left beside the lock.
    expect(await readdir(join(dir, 'state'))).toEqual(['lock']);
  });
});
