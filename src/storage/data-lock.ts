/**
 * One writer per data directory. The server and the offline tools that write to a data directory
 * (`regmirror import`, `prefetch --data-dir`, `cache --data-dir`) each hold `state/lock` while it is
 * open: opening the stores sweeps `tmp/`, so a second writer would delete the first one's downloads
 * and staged blobs, and the server's memory caches would not see what another process wrote.
 * Read-only users (`regmirror export`) take no lock.
 *
 * The lock names its holder: pid, role, and where that pid means something (host name and pid
 * namespace: a server in a container is pid 1, and so is a `docker run` of the CLI on the same
 * volume). A holder in this host and namespace is asked directly whether it lives (signal 0); a
 * dead one's lock is taken over. A holder elsewhere cannot be asked: it touches the lock every
 * BEAT_MS, and its lock is taken over once STALE_BEATS beats went by without one. One process may
 * take the lock again (a restart in the same process, as tests do): the newest holder owns it, and
 * an older holder's release leaves it alone. Taking over is not atomic against a second process
 * doing the same at the same moment; both starting after the holder died, within milliseconds of
 * each other, is the only way to lose it.
 */
import { randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { link, mkdir, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** What the holder does with the directory, for the message another process prints. */
export type LockRole = 'serve' | 'import' | 'prefetch' | 'cache';

/** How often a holder touches its lock. */
export const BEAT_MS = 10_000;
/** Beats missed before a holder elsewhere (another host or container) counts as gone. */
const STALE_BEATS = 3;

/** Another live process holds the data directory. */
export class DataDirBusyError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    readonly role: string,
    /** Where the holder runs, when not here (another host or container); its lock goes stale if it stops beating. */
    readonly elsewhere?: string,
  ) {
    const who = elsewhere ? `pid ${pid} on ${elsewhere}` : `pid ${pid}`;
    super(
      role === 'serve'
        ? `a mirror (${who}) is serving ${dir}: use its admin API (--admin URL) instead of the data directory`
        : `regmirror ${role} (${who}) is using ${dir}: wait for it to finish${elsewhere ? '' : ` (or remove ${lockPath(dir)} if no such process is a regmirror)`}`,
    );
  }
}

export interface DataLock {
  /** Stops the beat and removes the lock if this holder still owns it. Never throws. */
  release(): Promise<void>;
}

export interface LockDeps {
  pid: number;
  /** Where `pid` means this process: the host name and the pid namespace. */
  place: string;
  /** Whether a process of this place lives (signal 0). */
  alive(pid: number): boolean;
  now(): number;
  beatMs: number;
}

/** This process's deps (what the server and the CLI use). */
export function processLockDeps(): LockDeps {
  let ns = '';
  try {
    ns = readlinkSync('/proc/self/ns/pid');
  } catch {
    /* no procfs: the host name alone */
  }
  return {
    pid: process.pid,
    place: `${hostname()}/${ns}`.replace(/\s/g, '_'),
    alive: (pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch (e) {
        // EPERM: it lives, as another user.
        return (e as NodeJS.ErrnoException).code === 'EPERM';
      }
    },
    now: Date.now,
    beatMs: BEAT_MS,
  };
}

const lockPath = (dir: string): string => join(dir, 'state', 'lock');

interface Holder {
  pid: number;
  role: string;
  token: string;
  /** Absent in a lock written before places were recorded: taken as this place. */
  place: string | undefined;
}

function parse(text: string): Holder | undefined {
  const [pid, role, token, place] = text.trim().split(' ');
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0 || !role || !token) return undefined;
  return { pid: n, role, token, place };
}

export interface LockOptions {
  /** Keep trying this long while the holder is elsewhere and may be gone (its lock going stale): the server after a crash in a new container. */
  waitMs?: number;
}

/** Takes the data directory's lock for `role`; throws DataDirBusyError while another live process holds it. */
export async function lockDataDir(dir: string, role: LockRole, deps: LockDeps = processLockDeps(), opts: LockOptions = {}): Promise<DataLock> {
  const deadline = deps.now() + (opts.waitMs ?? 0);
  for (;;) {
    try {
      return await tryLock(dir, role, deps);
    } catch (e) {
      if (!(e instanceof DataDirBusyError) || e.elsewhere === undefined || deps.now() >= deadline) throw e;
      await sleep(Math.min(1000, deps.beatMs));
    }
  }
}

async function tryLock(dir: string, role: LockRole, deps: LockDeps): Promise<DataLock> {
  const path = lockPath(dir);
  await mkdir(join(dir, 'state'), { recursive: true });
  const token = randomBytes(8).toString('hex');
  // Written whole beside the lock, then linked into place: link() fails if the lock exists, and a
  // reader never sees a half-written lock.
  const draft = `${path}.${token}`;
  await writeFile(draft, `${deps.pid} ${role} ${token} ${deps.place}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(draft, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
      }
      const [text, info] = await Promise.all([readFile(path, 'utf8').catch(() => ''), stat(path).catch(() => undefined)]);
      const holder = parse(text);
      if (holder) {
        const here = holder.place === undefined || holder.place === deps.place;
        if (here && holder.pid !== deps.pid && deps.alive(holder.pid)) throw new DataDirBusyError(dir, holder.pid, holder.role);
        // Elsewhere: alive while it beats.
        if (!here && info && deps.now() - info.mtimeMs < STALE_BEATS * deps.beatMs) throw new DataDirBusyError(dir, holder.pid, holder.role, holder.place!.split('/')[0]);
      }
      // Ours from before, a dead process's, a silent one's elsewhere, or unreadable: take it over.
      await unlink(path).catch(() => undefined);
    }
  } finally {
    await unlink(draft).catch(() => undefined);
  }
  const beat = setInterval(() => {
    const t = new Date(deps.now());
    void utimes(path, t, t).catch(() => undefined);
  }, deps.beatMs);
  beat.unref();
  return {
    release: async () => {
      clearInterval(beat);
      const holder = parse(await readFile(path, 'utf8').catch(() => ''));
      if (holder?.token === token) await unlink(path).catch(() => undefined);
    },
  };
}
