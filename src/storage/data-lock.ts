/**
 * One writer per data directory. The server and the offline tools that write to a data directory
 * (`regmirror import`, `prefetch --data-dir`, `cache --data-dir`) each hold `state/lock` while it is
 * open: opening the stores sweeps `tmp/`, so a second writer would delete the first one's downloads
 * and staged blobs, and the server's memory caches would not see what another process wrote.
 * Read-only users (`regmirror export`) take no lock.
 *
 * The lock names its holder (pid and role). A lock whose process is gone is a crash's leftover and
 * is taken over. One process may take it again (a restart in the same process, as tests do): the
 * newest holder owns it, and an older holder's release leaves it alone. Taking over a dead holder's
 * lock is not atomic against a second process doing the same at the same moment; both started
 * after the crash, within a few milliseconds of each other, is the only way to lose it.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What the holder does with the directory, for the message another process prints. */
export type LockRole = 'serve' | 'import' | 'prefetch' | 'cache';

/** Another live process holds the data directory. */
export class DataDirBusyError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    readonly role: string,
  ) {
    super(
      role === 'serve'
        ? `a mirror (pid ${pid}) is serving ${dir}: use its admin API (--admin URL) instead of the data directory`
        : `regmirror ${role} (pid ${pid}) is using ${dir}: wait for it to finish (or remove ${lockPath(dir)} if no such process is a regmirror)`,
    );
  }
}

export interface DataLock {
  /** Removes the lock if this holder still owns it. Never throws. */
  release(): Promise<void>;
}

export interface LockDeps {
  pid: number;
  /** Whether a process lives (signal 0). */
  alive(pid: number): boolean;
}

const processDeps: LockDeps = {
  pid: process.pid,
  alive: (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      // EPERM: it lives, as another user.
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
};

const lockPath = (dir: string): string => join(dir, 'state', 'lock');

interface Holder {
  pid: number;
  role: string;
  token: string;
}

function parse(text: string): Holder | undefined {
  const [pid, role, token] = text.trim().split(' ');
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0 || !role || !token) return undefined;
  return { pid: n, role, token };
}

/** Takes the data directory's lock for `role`; throws DataDirBusyError while another live process holds it. */
export async function lockDataDir(dir: string, role: LockRole, deps: LockDeps = processDeps): Promise<DataLock> {
  const path = lockPath(dir);
  await mkdir(join(dir, 'state'), { recursive: true });
  const token = randomBytes(8).toString('hex');
  // Written whole beside the lock, then linked into place: link() fails if the lock exists, and a
  // reader never sees a half-written lock.
  const draft = `${path}.${token}`;
  await writeFile(draft, `${deps.pid} ${role} ${token}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(draft, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
      }
      const holder = parse(await readFile(path, 'utf8').catch(() => ''));
      if (holder && holder.pid !== deps.pid && deps.alive(holder.pid)) throw new DataDirBusyError(dir, holder.pid, holder.role);
      // Ours from before, a dead process's, or unreadable (not written by this code): take it over.
      await unlink(path).catch(() => undefined);
    }
  } finally {
    await unlink(draft).catch(() => undefined);
  }
  return {
    release: async () => {
      const holder = parse(await readFile(path, 'utf8').catch(() => ''));
      if (holder?.token === token) await unlink(path).catch(() => undefined);
    },
  };
}
