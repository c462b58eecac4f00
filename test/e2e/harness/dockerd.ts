// A private dockerd (own data-root, exec-root, socket, daemon.json) that pulls docker.io images
// through `registry-mirrors`. It runs on a private containerd from startContainerd() (passed with
// --containerd): dockerd's self-managed containerd works too, but its generated config lets the
// "opt" plugin create /opt/containerd on the host. Docker sends mirror requests
// WITHOUT `?ns=` and pings GET /v2/ first. On a mirror failure it falls back to
// registry-1.docker.io; we point HTTP(S)_PROXY at a closed loopback port so that fallback fails
// fast on the machine instead of resolving a public name.
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  cleanupDir,
  httpStatus,
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
import { startContainerd, type Containerd } from './containerd.js';

export interface StartDockerdOptions {
  /** registry-mirrors, e.g. ["http://127.0.0.1:PORT"]. Can be changed later with setMirrors(). */
  mirrors?: string[];
  /** Default: the host:port of every mirror (127.0.0.0/8 is insecure by default anyway). */
  insecureRegistries?: string[];
  /** vfs works everywhere (no overlay-on-overlay issues); slow for big images, fine for tests. */
  storageDriver?: string;
  /** Extra daemon.json keys. */
  daemonJson?: Record<string, unknown>;
  timeoutMs?: number;
}

export interface Dockerd {
  /** unix socket path */
  socket: string;
  /** The private containerd dockerd runs on (containers live in its namespace "moby"). */
  containerd: Containerd;
  /** DOCKER_HOST value */
  host: string;
  dir: string;
  /** Run the docker CLI against this daemon (isolated DOCKER_CONFIG). Never throws on exit code. */
  docker(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Rewrite daemon.json and SIGHUP: dockerd live-reloads registry-mirrors / insecure-registries. */
  setMirrors(mirrors: string[], insecureRegistries?: string[]): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

const hostOf = (u: string): string => u.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');

export async function startDockerd(opts: StartDockerdOptions = {}): Promise<Dockerd> {
  const dockerdBin = toolPath('dockerd');
  const dockerBin = toolPath('docker');
  if (!dockerdBin || !dockerBin) throw new Error('dockerd/docker not installed (apt-get install docker.io)');
  if (!toolPath('containerd')) throw new Error('dockerd needs the containerd binary (apt-get install containerd)');
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const ctd = await startContainerd({ timeoutMs });
  const dir = makeTempDir('dkd');
  const socket = join(dir, 'd.sock');
  const configFile = join(dir, 'daemon.json');
  const pidfile = join(dir, 'docker.pid');
  // Absolute, per-instance cgroup parent (a relative one nests under dockerd's own cgroup):
  // lets stop() find and kill orphaned container processes, then remove the cgroups.
  const cgroupParent = basename(dir);

  const writeConfig = (mirrors: string[], insecure?: string[]): void => {
    const cfg = {
      // Otherwise dockerd creates /etc/docker/key.json on the host.
      'deprecated-key-path': join(dir, 'key.json'),
      'registry-mirrors': mirrors,
      'insecure-registries': insecure ?? [...new Set(mirrors.map(hostOf))],
      ...opts.daemonJson,
    };
    writeFileSync(configFile, JSON.stringify(cfg, null, 2));
  };
  const mirrors = opts.mirrors ?? [];
  writeConfig(mirrors, opts.insecureRegistries);

  const args = [
    '--config-file', configFile,
    '--data-root', join(dir, 'data'),
    '--exec-root', join(dir, 'exec'),
    '--pidfile', pidfile,
    '-H', `unix://${socket}`,
    // No bridge, no iptables, no sysctl changes: containers run with --network none.
    '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-forward=false', '--ip-masq=false',
    '--userland-proxy=false',
    `--storage-driver=${opts.storageDriver ?? 'vfs'}`,
    `--cgroup-parent=/${cgroupParent}`,
    '--containerd', ctd.address,
  ];
  const noProxy = ['localhost', '127.0.0.0/8', '::1', ...mirrors.map((m) => hostOf(m).replace(/:\d+$/, ''))];
  const d = spawnDaemon(dockerdBin, args, {
    watch: { dir, cgroup: cgroupParent, graceMs: 15_000 },
    env: {
      HTTP_PROXY: 'http://127.0.0.1:1',
      HTTPS_PROXY: 'http://127.0.0.1:1',
      NO_PROXY: noProxy.join(','),
      http_proxy: undefined,
      https_proxy: undefined,
      no_proxy: undefined,
    },
  });

  const cliEnv: NodeJS.ProcessEnv = {
    DOCKER_HOST: `unix://${socket}`,
    DOCKER_CONFIG: join(dir, 'cli'),
    DOCKER_CLI_HINTS: 'false',
    DOCKER_CONTEXT: undefined,
    DOCKER_TLS_VERIFY: undefined,
    DOCKER_CERT_PATH: undefined,
    DOCKER_CONTENT_TRUST: undefined,
    DOCKER_API_VERSION: undefined,
  };
  const docker = (a: readonly string[], o: RunOptions = {}): Promise<RunResult> =>
    run(dockerBin, a, { timeoutMs: 120_000, ...o, env: { ...cliEnv, ...o.env } });

  const stop = async (): Promise<void> => {
    if (d.isRunning()) {
      // Containers keep dockerd's shutdown waiting; remove them first (best effort).
      const ps = await docker(['ps', '-aq'], { timeoutMs: 10_000 }).catch(() => undefined);
      const ids = ps?.stdout.split(/\s+/).filter(Boolean) ?? [];
      if (ids.length) await docker(['rm', '-f', ...ids], { timeoutMs: 30_000 }).catch(() => undefined);
    }
    await d.stop(20_000);
    await killProcessesReferencing(dir);
    // Also kills the shims of dockerd's containers (their argv names containerd's socket).
    await ctd.stop();
    await killProcessesInCgroup(cgroupParent); // container processes orphaned if rm -f did not get through
    removeCgroup(cgroupParent);
    await cleanupDir(dir); // also lazily unmounts the data-root self bind-mount
    d.dismissWatchdog();
  };

  try {
    await waitForDaemon(
      d,
      async () => (await httpStatus('http://localhost/_ping', { socketPath: socket })) === 200,
      timeoutMs,
      'dockerd /_ping',
    );
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    socket,
    containerd: ctd,
    host: `unix://${socket}`,
    dir,
    docker,
    async setMirrors(m, insecure) {
      writeConfig(m, insecure);
      const before = (d.logs().match(/Reloaded configuration/g) ?? []).length;
      process.kill(d.pid, 'SIGHUP');
      await waitForDaemon(d, () => (d.logs().match(/Reloaded configuration/g) ?? []).length > before, 10_000, 'dockerd config reload');
    },
    logs: () => d.logs(),
    stop,
  };
}
