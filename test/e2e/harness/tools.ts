// Process / network primitives shared by the e2e harness. Everything here is bounded in time and
// kills whole process groups, because the daemons we drive (dockerd, containerd, docker-registry)
// fork children that would otherwise outlive a failed test.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { waitFor } from '../../helpers/wait.js';
import { startWatchdog, type WatchdogTarget } from './watchdog.js';

// One freePort and one waitFor for every test: the harness re-exports the test helpers' own.
export { freePort } from '../../helpers/ports.js';
export { waitFor };

// dockerd/containerd live in /usr/sbin, which is not on every PATH.
const EXTRA_BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Absolute path of an executable on PATH (plus the sbin dirs), or undefined. */
export function toolPath(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
  for (const dir of dirs) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function hasTool(name: string): boolean {
  return toolPath(name) !== undefined;
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

export interface RunOptions {
  /** Hard limit; the whole process group gets SIGKILL when it is reached. Default 60 s. */
  timeoutMs?: number;
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  cwd?: string;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

// Process groups still alive; killed synchronously if the test worker exits without cleanup.
const liveGroups = new Set<number>();
process.once('exit', () => {
  for (const pgid of liveGroups) killGroup(pgid, 'SIGKILL');
});

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // group already gone
  }
}

/** Run a command to completion (never throws on a non-zero exit; see runOk). */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    // detached => own process group, so a timeout kills grandchildren too.
    const child = spawn(cmd, [...args], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const pid = child.pid;
    if (pid === undefined) {
      child.once('error', reject);
      return;
    }
    liveGroups.add(pid);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(pid, 'SIGKILL');
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      liveGroups.delete(pid);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      liveGroups.delete(pid);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        durationMs: Date.now() - started,
      });
    });
    child.stdin.on('error', () => undefined); // EPIPE when the tool ignores stdin
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run() but throws (with the command's output) unless it exits 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const why = r.timedOut ? `timed out after ${opts.timeoutMs ?? 60_000} ms` : `exit ${r.code ?? r.signal}`;
    throw new Error(`${cmd} ${args.join(' ')}: ${why}\n--- stdout\n${tail(r.stdout)}\n--- stderr\n${tail(r.stderr)}`);
  }
  return r;
}

export function tail(s: string, max = 4000): string {
  return s.length > max ? `…${s.slice(-max)}` : s;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One GET; resolves with the status (any status counts as "answering"). */
export function httpStatus(url: string, opts: { socketPath?: string; timeoutMs?: number } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', socketPath: opts.socketPath, timeout: opts.timeoutMs ?? 2000 }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error('request timeout')));
    req.once('error', reject);
    req.end();
  });
}

/** Wait until `url` answers with a status accepted by `ok` (default: < 500). */
export async function waitForHttp(
  url: string,
  timeoutMs: number,
  opts: { socketPath?: string; ok?: (status: number) => boolean } = {},
): Promise<void> {
  const ok = opts.ok ?? ((s: number) => s > 0 && s < 500);
  await waitFor(async () => ok(await httpStatus(url, { socketPath: opts.socketPath })), timeoutMs, `HTTP ${url}`, 100);
}

/** Short temp dir: unix socket paths are limited to 108 bytes, so keep prefixes short. */
export function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `${prefix}-`));
}

export interface Daemon {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Combined stdout+stderr, capped to the last few MB. */
  logs(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
  /** SIGTERM the group, then SIGKILL after graceMs. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** Kill the out-of-process janitor; call once the instance is fully cleaned up. */
  dismissWatchdog(): void;
}

const LOG_CAP = 4 * 1024 * 1024;

/** Start a long-running process in its own process group, capturing its output. */
export function spawnDaemon(
  cmd: string,
  args: readonly string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    onStdoutLine?: (line: string) => void;
    /** What the watchdog cleans if this test process dies first (see watchdog.ts). */
    watch?: Omit<WatchdogTarget, 'pgid'>;
  } = {},
): Daemon {
  const child = spawn(cmd, [...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`failed to spawn ${cmd}`);
  const pid = child.pid;
  liveGroups.add(pid);
  const dismissWatchdog = startWatchdog({ pgid: pid, ...opts.watch });
  let buf = '';
  const append = (s: string): void => {
    buf += s;
    if (buf.length > LOG_CAP) buf = buf.slice(-LOG_CAP / 2);
  };
  let partial = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    append(s);
    if (!opts.onStdoutLine) return;
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) opts.onStdoutLine(l);
  });
  child.stderr?.on('data', append);
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
    child.once('error', (e) => {
      running = false;
      append(`\nspawn error: ${String(e)}\n`);
      resolve({ code: null, signal: null });
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    pid,
    child,
    logs: () => buf,
    exited,
    isRunning: () => running,
    dismissWatchdog,
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        if (running) {
          killGroup(pid, 'SIGTERM');
          const t = await Promise.race([exited.then(() => 'exited'), sleep(graceMs).then(() => 'timeout')]);
          if (t === 'timeout') append(`\n[harness] no exit after ${graceMs} ms of SIGTERM; SIGKILL\n`);
        }
        // Kill stragglers left in the group even if the leader exited cleanly.
        killGroup(pid, 'SIGKILL');
        await Promise.race([exited, sleep(2000)]);
        liveGroups.delete(pid);
      })();
      return stopping;
    },
  };
}

/**
 * Poll `check` until true, failing fast (with the daemon's log) if the daemon exits meanwhile.
 */
export async function waitForDaemon(
  d: Daemon,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  let died = false;
  try {
    await waitFor(
      async () => {
        if (!d.isRunning()) {
          died = true;
          return true;
        }
        return check();
      },
      timeoutMs,
      what,
      100,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- daemon log\n${tail(d.logs())}`);
  }
  if (died) throw new Error(`daemon exited before ${what}\n--- daemon log\n${tail(d.logs())}`);
}

const isLiveProcess = (pid: string): boolean => {
  try {
    // Field 3 of /proc/PID/stat is the state; a zombie (Z) is dead, just not reaped yet.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

/** Live pids (not us, not zombies) whose /proc/PID/<file> content satisfies `test`. */
export function findProcesses(file: 'cmdline' | 'cgroup', test: (content: string) => boolean): number[] {
  const pids: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent) || Number(ent) === process.pid) continue;
    try {
      if (test(readFileSync(`/proc/${ent}/${file}`, 'utf8')) && isLiveProcess(ent)) pids.push(Number(ent));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

/** SIGKILL the matching processes and wait (bounded) until they are gone. */
async function sweep(find: () => number[], timeoutMs = 5000): Promise<number[]> {
  const killed = find();
  for (const pid of killed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // raced with its exit
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (find().length > 0 && Date.now() < deadline) await sleep(50);
  return killed;
}

/**
 * SIGKILL every process whose command line mentions `marker` (a unique temp dir of ours).
 * containerd shims setsid themselves, so group kills miss them; their argv carries the
 * daemon's socket path, which lives in our temp dir.
 */
export function killProcessesReferencing(marker: string): Promise<number[]> {
  return sweep(() => findProcesses('cmdline', (c) => c.includes(marker)));
}

/**
 * SIGKILL every process whose cgroup path is under `/<name>/`. We give each daemon instance its
 * own top-level cgroup parent (dockerd --cgroup-parent, containerd namespace), because container
 * processes are reparented, not killed, when their shim dies: this is the last-resort sweep.
 */
export function killProcessesInCgroup(name: string): Promise<number[]> {
  return sweep(() => findProcesses('cgroup', (c) => c.includes(`:/${name}/`)));
}

/** rmdir the (now empty) top-level cgroup `name` in every hierarchy, children first. */
export function removeCgroup(name: string): void {
  const root = '/sys/fs/cgroup';
  const rmTree = (p: string): void => {
    let kids: string[] = [];
    try {
      kids = readdirSync(p, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const k of kids) rmTree(join(p, k));
    try {
      rmdirSync(p);
    } catch {
      // busy or already gone
    }
  };
  let hierarchies: string[] = [];
  try {
    hierarchies = readdirSync(root);
  } catch {
    return;
  }
  // cgroup v2 mounted directly on /sys/fs/cgroup, or v1/hybrid with one dir per controller.
  rmTree(join(root, name));
  for (const h of hierarchies) rmTree(join(root, h, name));
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  let info = '';
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return info
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmount everything under dir, then remove it. Best effort; never throws. */
export async function cleanupDir(dir: string): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) break;
    for (const m of mounts) await run('umount', ['-l', m], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  try {
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // leave it for the OS tmp cleaner rather than fail the suite
  }
}
