import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataDirBusyError, lockDataDir, type LockDeps } from '../../src/storage/data-lock.js';

/** Processes by pid: the ones in `live` are alive. */
const as = (pid: number, live: number[] = []): LockDeps => ({ pid, alive: (p) => live.includes(p) });

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
    expect(await lockText()).toMatch(/^100 import [0-9a-f]{16}\n$/);
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

  it('of many processes taking it at once, exactly one gets it', async () => {
    const pids = Array.from({ length: 12 }, (_, i) => 1000 + i);
    const results = await Promise.allSettled(pids.map((pid) => lockDataDir(dir, 'import', as(pid, pids))));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(DataDirBusyError);
    // No drafts left beside the lock.
    expect(await readdir(join(dir, 'state'))).toEqual(['lock']);
  });
});
