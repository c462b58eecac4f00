/**
 * A real Redis for tests: Debian's `redis-server` on 127.0.0.1, a free port, no persistence, in a temp
 * directory. Starts in about 0.1 s, so a suite may start its own; `stop()` and `start()` again (same
 * port) let a test take Redis away mid-run and bring it back.
 *
 * Every server started here is SIGKILLed when the test worker exits, so a failing test leaks none.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Whether the process is running now. */
  readonly running: boolean;
  /** Stops the process (SIGTERM, SIGKILL after 3 s); resolves once it is gone. The port stays ours to restart on. */
  stop(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  start(): Promise<void>;
  /** Stops it and removes its directory. Idempotent. */
  close(): Promise<void>;
}

/** Whether Debian's redis-server is installed (`.ci/run` installs it). */
export function redisServerAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).status === 0;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.setTimeout(500);
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-redis-'));
  const port = await freePort();
  let proc: ChildProcess | undefined;
  let output = '';

  const start = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) return;
    output = '';
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    live.add(p);
    p.once('exit', () => live.delete(p));
    proc = p;
    await waitFor(
      async () => {
        if (p.exitCode !== null) throw new Error(`redis-server exited (${p.exitCode}): ${output}`);
        return answersPing(port);
      },
      10_000,
      () => `redis-server on port ${port} to answer PING; output: ${output}`,
    );
  };

  const stop = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return !!proc && proc.exitCode === null && proc.signalCode === null;
    },
    stop,
    start,
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
