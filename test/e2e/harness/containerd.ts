// A private containerd (own root/state/socket; CRI disabled) driven with `ctr`, pulling through a
// mirror configured by a hosts.toml in a --hosts-dir. containerd adds `?ns=<registry host>` to
// every request it sends to a mirror host (e.g. `?ns=docker.io`).
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  cleanupDir,
  killProcessesInCgroup,
  killProcessesReferencing,
  makeTempDir,
  removeCgroup,
  run,
  spawnDaemon,
  toolPath,
  waitForDaemon,
  type RunOptions,
  type RunResult,
} from './tools.js';

/**
 * Default `server` of generated hosts.toml files: a closed loopback port. When the mirror fails,
 * containerd falls back to `server`; pointing it at registry-1.docker.io would send a DNS query
 * off the machine and fail slowly. The `ns` query parameter is still sent (it depends on the
 * image's registry, not on `server`). Pass `server: 'https://registry-1.docker.io'` to mimic
 * a production file exactly.
 */
export const DEAD_END_SERVER = 'http://127.0.0.1:1';

export interface HostsTomlOptions {
  server?: string;
  capabilities?: string[];
  skipVerify?: boolean;
}

/** Write HOSTS_DIR/<registry>/hosts.toml pointing `registry` at `mirrorUrl`; returns the file path. */
export function writeHostsToml(hostsDir: string, registry: string, mirrorUrl: string, opts: HostsTomlOptions = {}): string {
  const caps = (opts.capabilities ?? ['pull', 'resolve']).map((c) => JSON.stringify(c)).join(', ');
  const lines = [
    `server = ${JSON.stringify(opts.server ?? DEAD_END_SERVER)}`,
    '',
    `[host.${JSON.stringify(mirrorUrl.replace(/\/+$/, ''))}]`,
    `  capabilities = [${caps}]`,
  ];
  if (opts.skipVerify) lines.push('  skip_verify = true');
  const dir = join(hostsDir, registry);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'hosts.toml');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** Registry host of a fully qualified ref: "docker.io/library/x:1" -> "docker.io". */
export function refRegistry(ref: string): string {
  const first = ref.split('/')[0] ?? '';
  return ref.includes('/') && /[.:]|^localhost$/.test(first) ? first : 'docker.io';
}

export interface CtrPullOptions {
  /** Defaults to <containerd dir>/hosts. */
  hostsDir?: string;
  /** Mirror base URL, e.g. http://127.0.0.1:PORT (a scheme-less host gets http:// when plainHttp). */
  mirrorUrl: string;
  /** Default true: the mirror speaks plain HTTP. */
  plainHttp?: boolean;
  /** hosts.toml `server` (fallback when the mirror fails); default DEAD_END_SERVER. */
  server?: string;
  platform?: string;
  allPlatforms?: boolean;
  timeoutMs?: number;
}

export interface Containerd {
  /** grpc unix socket */
  address: string;
  dir: string;
  /** containerd namespace used by every ctr call (unique per instance). */
  namespace: string;
  /** overlayfs when the kernel allows it here, else native. */
  snapshotter: string;
  /** Run `ctr --address SOCK --namespace NS ARGS...`. Never throws on exit code. */
  ctr(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Write the hosts.toml for the ref's registry, then `ctr images pull --hosts-dir`. Throws on failure. */
  ctrPull(ref: string, opts: CtrPullOptions): Promise<RunResult>;
  /**
   * `ctr run --rm` a pulled image with a unique container id; FIFOs and runc state stay in our
   * dir (the ctr defaults are /run/containerd/{fifo,runc}). Never throws on exit code.
   */
  ctrRun(ref: string, command: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Remove the image and synchronously garbage-collect its content, so the next pull refetches. */
  removeImage(ref: string): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

export interface StartContainerdOptions {
  snapshotter?: 'overlayfs' | 'native';
  timeoutMs?: number;
}

function configToml(dir: string, address: string): string {
  // CRI is not needed for ctr and would try to set up CNI; the "opt" plugin would otherwise
  // create /opt/containerd on the host; debug/metrics endpoints stay off.
  return `version = 2
root = ${JSON.stringify(join(dir, 'root'))}
state = ${JSON.stringify(join(dir, 'state'))}
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = ${JSON.stringify(address)}

[ttrpc]
  address = ${JSON.stringify(`${address}.ttrpc`)}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${JSON.stringify(join(dir, 'opt'))}
`;
}

export async function startContainerd(opts: StartContainerdOptions = {}): Promise<Containerd> {
  const containerdBin = toolPath('containerd');
  const ctrBin = toolPath('ctr');
  if (!containerdBin || !ctrBin) throw new Error('containerd/ctr not installed (apt-get install containerd)');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const dir = makeTempDir('ctd');
  const address = join(dir, 'c.sock');
  const configPath = join(dir, 'config.toml');
  // A per-instance namespace (e.g. "ctd-AbC123") also makes the task cgroups /<namespace>/<id>
  // unique, so stop() can sweep orphans and remove them.
  const namespace = basename(dir);
  writeFileSync(configPath, configToml(dir, address));
  const d = spawnDaemon(containerdBin, ['--config', configPath], { watch: { dir, cgroup: namespace, graceMs: 5000 } });

  const ctr = (args: readonly string[], o: RunOptions = {}): Promise<RunResult> =>
    run(ctrBin, ['--address', address, '--namespace', namespace, ...args], { timeoutMs: 60_000, ...o });

  const stop = async (): Promise<void> => {
    if (d.isRunning()) {
      // Kill tasks first: a SIGKILLed shim would orphan (not kill) its container processes.
      const ls = await ctr(['containers', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => undefined);
      const ids = ls?.stdout.split(/\s+/).filter(Boolean) ?? [];
      for (const id of ids) {
        await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 10_000 }).catch(() => undefined);
        await ctr(['tasks', 'delete', '-f', id], { timeoutMs: 10_000 }).catch(() => undefined);
        await ctr(['containers', 'delete', id], { timeoutMs: 10_000 }).catch(() => undefined);
      }
    }
    await d.stop(5000);
    await killProcessesReferencing(dir); // shims (own session) of any task started via ctr run
    await killProcessesInCgroup(namespace); // ctr puts tasks in cgroup /<namespace>/<id>
    removeCgroup(namespace);
    await cleanupDir(dir);
    d.dismissWatchdog();
  };

  let runSeq = 0;
  let snapshotter: string = opts.snapshotter ?? 'overlayfs';
  try {
    await waitForDaemon(d, async () => (await ctr(['version'], { timeoutMs: 5000 })).code === 0, timeoutMs, 'containerd socket');
    if (!opts.snapshotter) {
      const plugins = (await ctr(['plugins', 'ls'], { timeoutMs: 10_000 })).stdout;
      if (!/io\.containerd\.snapshotter\.v1\s+overlayfs\s+\S+\s+ok/.test(plugins)) snapshotter = 'native';
    }
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    address,
    dir,
    namespace,
    snapshotter,
    ctr,
    async ctrPull(ref, o) {
      const plainHttp = o.plainHttp ?? true;
      const hostsDir = o.hostsDir ?? join(dir, 'hosts');
      const mirror = /^[a-z]+:\/\//.test(o.mirrorUrl) ? o.mirrorUrl : `${plainHttp ? 'http' : 'https'}://${o.mirrorUrl}`;
      writeHostsToml(hostsDir, refRegistry(ref), mirror, { server: o.server });
      const args = ['images', 'pull', '--hosts-dir', hostsDir, '--snapshotter', snapshotter];
      if (plainHttp) args.push('--plain-http');
      if (o.platform) args.push('--platform', o.platform);
      if (o.allPlatforms) args.push('--all-platforms');
      const r = await ctr([...args, ref], { timeoutMs: o.timeoutMs ?? 120_000 });
      if (r.code !== 0) {
        throw new Error(`ctr images pull ${ref} failed (exit ${r.code}${r.timedOut ? ', timed out' : ''}):\n${r.stderr}\n${r.stdout.slice(-2000)}`);
      }
      return r;
    },
    ctrRun(ref, command, o = {}) {
      const id = `h${process.pid}-${++runSeq}`;
      const args = ['run', '--rm', '--snapshotter', snapshotter, '--fifo-dir', join(dir, 'fifo'), '--runc-root', join(dir, 'runc')];
      return ctr([...args, ref, id, ...command], { timeoutMs: 60_000, ...o });
    },
    async removeImage(ref) {
      // --sync runs the GC before returning, which deletes the now-unreferenced blobs and snapshots.
      const r = await ctr(['images', 'rm', '--sync', ref], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`ctr images rm ${ref} failed: ${r.stderr}`);
    },
    logs: () => d.logs(),
    stop,
  };
}
