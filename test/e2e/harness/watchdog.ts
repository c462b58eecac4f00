// Out-of-process janitor for each daemon we start. Vitest ends its workers without running
// process 'exit' handlers (observed: a failed test left dockerd, its containerd and
// docker-registry running with a bind mount in /tmp), so cleanup cannot live only in this
// process. The watchdog is a tiny detached `node -e` process that polls our pid; once we are
// gone it stops the daemon's process group, sweeps processes that escaped the group (argv
// mentions `dir`, or cgroup under `/<cgroup>/`), lazily unmounts under `dir`, removes `dir` and
// the cgroup dirs. A normal stop() kills the watchdog after doing the same work itself.
import { spawn } from 'node:child_process';

const SCRIPT = String.raw`
const fs = require('fs');
const { spawnSync } = require('child_process');
const cfg = JSON.parse(process.argv[1]);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; } };
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const pids = (file, test) => fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && +p !== process.pid).filter((p) => {
  try { return test(fs.readFileSync('/proc/' + p + '/' + file, 'utf8')); } catch { return false; }
});
const kill = (pid, sig) => { try { process.kill(pid, sig); } catch {} };
function cleanup() {
  kill(-cfg.pgid, 'SIGTERM');
  for (let t = 0; t < cfg.graceMs && alive(-cfg.pgid); t += 100) sleep(100);
  kill(-cfg.pgid, 'SIGKILL');
  for (let round = 0; round < 3; round++) {
    if (cfg.dir) for (const p of pids('cmdline', (c) => c.includes(cfg.dir))) kill(+p, 'SIGKILL');
    if (cfg.cgroup) for (const p of pids('cgroup', (c) => c.includes(':/' + cfg.cgroup + '/'))) kill(+p, 'SIGKILL');
    sleep(300);
  }
  if (cfg.dir) {
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] || '')
      .filter((m) => m === cfg.dir || m.startsWith(cfg.dir + '/')).sort((a, b) => b.length - a.length);
    for (const m of mounts) spawnSync('umount', ['-l', m], { timeout: 10000 });
    try { fs.rmSync(cfg.dir, { recursive: true, force: true }); } catch {}
  }
  if (cfg.cgroup) {
    const rmTree = (p) => {
      let kids = [];
      try { kids = fs.readdirSync(p, { withFileTypes: true }).filter((e) => e.isDirectory()); } catch { return; }
      for (const k of kids) rmTree(p + '/' + k.name);
      try { fs.rmdirSync(p); } catch {}
    };
    let hs = [];
    try { hs = fs.readdirSync('/sys/fs/cgroup'); } catch {}
    rmTree('/sys/fs/cgroup/' + cfg.cgroup);
    for (const h of hs) rmTree('/sys/fs/cgroup/' + h + '/' + cfg.cgroup);
  }
}
const timer = setInterval(() => {
  if (alive(cfg.parent)) return;
  clearInterval(timer);
  cleanup();
  process.exit(0);
}, 500);
`;

export interface WatchdogTarget {
  /** Process group of the daemon (its leader's pid; we spawn daemons detached). */
  pgid: number;
  /** Unique temp dir of the instance: marker for stray processes, unmounted and removed. */
  dir?: string;
  /** Top-level cgroup name holding the instance's containers. */
  cgroup?: string;
  graceMs?: number;
}

/** Start a janitor; call the returned function to dismiss it after a normal cleanup. */
export function startWatchdog(target: WatchdogTarget): () => void {
  const cfg = { parent: process.pid, graceMs: 10_000, ...target };
  const child = spawn(process.execPath, ['-e', SCRIPT, JSON.stringify(cfg)], { detached: true, stdio: 'ignore' });
  child.on('error', () => undefined); // best effort: the in-process stop() still cleans up
  child.unref();
  return () => {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
}
