/**
 * deploy/systemd/regmirror.service run as close to systemd as this machine allows.
 *
 * systemd is not PID 1 here (a container; PID 1 is the sandbox's own init), so neither
 * `systemctl start` nor `systemd-run` can run the unit: both need a running systemd manager. Instead
 * the test reads the unit and applies its file-system and privilege directives with util-linux
 * (unshare, mount, setpriv), the way systemd applies them, then runs its ExecStart:
 *
 *   DynamicUser=yes + StateDirectory=regmirror  an unused uid in systemd's dynamic range (61184),
 *       /var/lib/private/regmirror owned by it (StateDirectoryMode), reached through the symlink
 *       /var/lib/regmirror; the only writable place besides PrivateTmp
 *   ProtectSystem=strict          every mount read-only except /dev, /proc, /sys and the state directory
 *   PrivateTmp=yes                fresh /tmp and /var/tmp
 *   ProtectHome=yes               /home, /root, /run/user empty and read-only
 *   NoNewPrivileges=yes, CapabilityBoundingSet=, AmbientCapabilities=   setpriv --no-new-privs,
 *       an empty bounding and inheritable set
 *   WorkingDirectory, UMask, Environment, EnvironmentFile, ExecStart   as written
 *   KillSignal=SIGTERM            sent to the main process; it must exit 0
 * /opt/regmirror is this repository (built dist/, node_modules), /etc/regmirror/config.yaml is
 * deploy/systemd/config.yaml verbatim, and /etc/regmirror/env (the unit's EnvironmentFile) moves the
 * listener to a free loopback port and docker.io to the fake upstream, as an operator's env file would.
 *
 * Not reproduced (kernel filters systemd installs that util-linux cannot): SystemCallFilter,
 * RestrictAddressFamilies, RestrictNamespaces, ProtectKernel*, PrivateDevices, PrivateUsers,
 * MemoryMax. `systemd-analyze verify` (deploy.test.ts) checks that systemd accepts them.
 */
import { spawn } from 'node:child_process';
import { chownSync, chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer, MT } from '../helpers/images.js';
import { freePort } from '../helpers/ports.js';
import { MAIN_JS, ROOT } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { cleanupDir, hasTool, isRoot, makeTempDir, run } from '../e2e/harness/tools.js';
import { parseUnit } from './unit-file.js';

const SKIP = !isRoot() ? 'needs root (mount namespaces)' : ['unshare', 'setpriv', 'nsenter', 'mount'].filter((t) => !hasTool(t)).join(', ') || undefined;
if (SKIP) console.warn(`[deploy] skipping the systemd sandbox test: missing ${SKIP}`);

const UNIT = join(ROOT, 'deploy/systemd/regmirror.service');
const killGroup = (pgid: number) => {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
};
const DYNAMIC_UID = 61184; // the first uid of systemd's DynamicUser range (61184-65519)

describe.skipIf(SKIP !== undefined)('deploy/systemd/regmirror.service under its sandbox (util-linux, no systemd)', () => {
  const svc = parseUnit(readFileSync(UNIT, 'utf8')).Service!;
  const last = (k: string) => svc[k]?.[svc[k].length - 1];
  let work = '';
  let state = '';
  let hub: FakeUpstream;
  let url = '';
  let child: ReturnType<typeof spawn>;
  let output = '';
  let exited: Promise<number | null>;
  const img = makeImage({ layers: [makeRandomLayer(30_000, 'systemd-1')] });

  /** Runs `script` (sh) in the service's mount namespace as the service's user, with its privileges. */
  const asService = (script: string) =>
    run('nsenter', ['-t', String(nodePid()), '-m', 'setpriv', `--reuid=${DYNAMIC_UID}`, `--regid=${DYNAMIC_UID}`, '--clear-groups', '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all', 'sh', '-c', script], { timeoutMs: 10_000 });
  /** The node process: the child unshare forked (the script exec'd setpriv, env and node in turn). */
  const nodePid = () => {
    const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    expect(kids).toHaveLength(1);
    expect(readFileSync(`/proc/${kids[0]}/cmdline`, 'utf8').split('\0')[0]).toBe('/usr/bin/node');
    return kids[0]!;
  };

  beforeAll(async () => {
    // The directives this emulation implements; a change to any of them must change the test too.
    expect({
      DynamicUser: last('DynamicUser'), StateDirectory: last('StateDirectory'), StateDirectoryMode: last('StateDirectoryMode'),
      ProtectSystem: last('ProtectSystem'), PrivateTmp: last('PrivateTmp'), ProtectHome: last('ProtectHome'),
      NoNewPrivileges: last('NoNewPrivileges'), CapabilityBoundingSet: last('CapabilityBoundingSet'), AmbientCapabilities: last('AmbientCapabilities'),
      ReadWritePaths: last('ReadWritePaths'), WorkingDirectory: last('WorkingDirectory'), UMask: last('UMask'), KillSignal: last('KillSignal'),
      EnvironmentFile: last('EnvironmentFile'),
    }).toEqual({
      DynamicUser: 'yes', StateDirectory: 'regmirror', StateDirectoryMode: '0750',
      ProtectSystem: 'strict', PrivateTmp: 'yes', ProtectHome: 'yes',
      NoNewPrivileges: 'yes', CapabilityBoundingSet: '', AmbientCapabilities: '',
      ReadWritePaths: undefined, WorkingDirectory: '/opt/regmirror', UMask: '0027', KillSignal: 'SIGTERM',
      EnvironmentFile: '-/etc/regmirror/env',
    });
    const exec = last('ExecStart')!.split(' ');
    expect(exec.slice(0, 2)).toEqual(['/usr/bin/node', '/opt/regmirror/dist/main.js']);
    expect(MAIN_JS).toBe(join(ROOT, 'dist/main.js'));

    hub = await FakeUpstream.start({ auth: 'none', cdn: false });
    hub.putImage('library/app', img, '1');
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;

    work = makeTempDir('sysd');
    state = join(work, 'state');
    mkdirSync(state);
    chownSync(state, DYNAMIC_UID, DYNAMIC_UID);
    chmodSync(state, Number.parseInt(last('StateDirectoryMode')!, 8));
    const upper = join(work, 'etc-upper');
    mkdirSync(join(upper, 'regmirror'), { recursive: true });
    mkdirSync(join(work, 'etc-work'));
    writeFileSync(join(upper, 'regmirror/config.yaml'), readFileSync(join(ROOT, 'deploy/systemd/config.yaml')));
    const envFile = [`MIRROR_LISTEN=127.0.0.1:${port}`, 'MIRROR_ADMIN_LISTEN=', `MIRROR_UPSTREAM_DOCKER_IO_URL=${hub.url}`];
    writeFileSync(join(upper, 'regmirror/env'), `${envFile.join('\n')}\n`);
    // Environment= first, then the EnvironmentFile (systemd's order: the file wins).
    const env = [...(svc.Environment ?? []), ...envFile];

    const script = String.raw`
set -eu
# StateDirectory=regmirror with DynamicUser=yes
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir -p /var/lib/private/regmirror
ln -s private/regmirror /var/lib/regmirror
mount --bind "$STATE" /var/lib/private/regmirror
# /etc/regmirror/{config.yaml,env} over the host's /etc; the code at /opt/regmirror
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ETC_UPPER,workdir=$ETC_WORK" /etc
mount -t tmpfs -o mode=0755 tmpfs /opt
mkdir /opt/regmirror
mount --bind "$CODE" /opt/regmirror
# ProtectSystem=strict: every mount read-only but the API file systems and the state directory
awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r mp; do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/var/lib/private/regmirror) continue ;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
# PrivateTmp=yes
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# ProtectHome=yes
for d in /home /root /run/user; do [ -d "$d" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$d"; done
cd "$WORKDIR"
umask "$UMASK"
exec setpriv --reuid="$SVC_UID" --regid="$SVC_UID" --clear-groups --no-new-privs --bounding-set=-all --inh-caps=-all \
  env -i PATH=/usr/bin:/bin "$@"
`;
    child = spawn('unshare', ['--mount', '--propagation', 'private', '--fork', 'sh', '-c', script, 'sandbox', ...env, ...exec], {
      env: { ...process.env, STATE: state, ETC_UPPER: upper, ETC_WORK: join(work, 'etc-work'), CODE: ROOT, WORKDIR: last('WorkingDirectory')!, UMASK: last('UMask')!, SVC_UID: String(DYNAMIC_UID) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: unshare and the mirror it forked go together if the test dies.
      detached: true,
    });
    const group = child.pid!;
    process.once('exit', () => killGroup(group));
    child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok, 20_000, () => `the sandboxed mirror's /healthz\n${output}`);
  }, 60_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      killGroup(child.pid!);
      await exited;
    }
    await hub?.close();
    if (work) await cleanupDir(work);
  });

  it('binds its port and runs as the dynamic user with no capabilities and no new privileges', () => {
    const status = readFileSync(`/proc/${nodePid()}/status`, 'utf8');
    expect(status).toMatch(new RegExp(`^Uid:\\s+${DYNAMIC_UID}\\s+${DYNAMIC_UID}\\s+${DYNAMIC_UID}\\s+${DYNAMIC_UID}$`, 'm'));
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    expect(status).toMatch(/^CapBnd:\s+0+$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(readFileSync(`/proc/${nodePid()}/cmdline`, 'utf8').split('\0').filter(Boolean)).toEqual(last('ExecStart')!.split(' '));
  });

  it('caches a pull in its state directory, and can write nowhere else but its private /tmp', async () => {
    const accept = { accept: `${MT.ociManifest}, ${MT.dockerManifest}` };
    expect((await fetch(`${url}/v2/library/app/manifests/1`, { headers: accept })).status).toBe(200);
    for (const b of [img.config, ...img.layers]) {
      const r = await fetch(`${url}/v2/library/app/blobs/${b.digest}`);
      expect(Buffer.from(await r.arrayBuffer()).equals(b.bytes)).toBe(true);
    }
    const blobFile = (d: string) => join(state, 'blobs/sha256', d.slice(7, 9), d.slice(7));
    await waitFor(() => [img.manifest, img.config, ...img.layers].every((b) => { try { return statSync(blobFile(b.digest)).isFile(); } catch { return false; } }), 10_000, 'the blobs in the state directory');
    for (const b of [img.manifest, img.config, ...img.layers]) {
      const st = statSync(blobFile(b.digest));
      expect(st.uid).toBe(DYNAMIC_UID);
      expect(st.mode & 0o027, `${b.digest}: UMask=0027`).toBe(0);
    }
    expect(readdirSync(state)).toContain('blobs');
    const probe = await asService(`for d in /var/lib/regmirror /tmp /var/tmp /opt/regmirror /etc/regmirror /usr/local /var/lib /root; do
      if touch "$d/.probe" 2>/dev/null; then rm -f "$d/.probe"; echo "$d writable"; else echo "$d denied"; fi; done`);
    expect(probe.stdout.trim().split('\n')).toEqual([
      '/var/lib/regmirror writable', '/tmp writable', '/var/tmp writable',
      '/opt/regmirror denied', '/etc/regmirror denied', '/usr/local denied', '/var/lib denied', '/root denied',
    ]);
    expect(hub.count({ method: 'GET', kind: 'blob' })).toBe(1 + img.layers.length);
  });

  it('stops on its KillSignal (SIGTERM) with exit code 0', async () => {
    process.kill(nodePid(), 'SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toMatch(/"msg":"stopped"/);
  });
});
