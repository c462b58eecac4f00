/**
 * A local stand-in for `node:20-bookworm-slim`, made from this Debian machine, so the test can build
 * deploy/Dockerfile without Docker Hub.
 *
 * What the real image is: debian:bookworm-slim (Debian's "required" and essential packages with their
 * dependencies, documentation and manual pages left out) plus Node.js in /usr/local (node, npm, npx)
 * and a `node` user (uid 1000). This module assembles the same thing from what is installed here:
 *   - the dependency closure of the installed required/essential packages, plus libgcc-s1 and
 *     libstdc++6 (node's shared libraries), taken file by file from `dpkg-query -L` (the same
 *     dpkg path excludes the slim image uses: /usr/share/{doc,man,info,locale,...}, copyright files kept);
 *   - /etc/passwd, group, shadow, gshadow from base-passwd's masters (not the host's accounts);
 *   - this machine's `node` binary and npm, at the paths the real image has them;
 *   - when NODE_EXTRA_CA_CERTS is set here (a TLS-intercepting egress proxy in front of the npm
 *     registry), that CA file at the same path and the same variable in the image, so `npm ci` in
 *     the build trusts what the host trusts. The real image does not need it where npm is reached directly.
 * The result is a tar for `docker import`, cached under `cacheDir` by a key of everything that went
 * in (package versions, node and npm versions, the CA file), so a second run only imports it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { makeTempDir, runOk } from '../e2e/harness/tools.js';

/** Bump when what goes into the tar changes in a way the key below would not see. */
const RECIPE = 3;

interface Pkg {
  name: string;
  arch: string;
  version: string;
  priority: string;
  essential: boolean;
  deps: string;
}

function installedPackages(): { pkgs: Map<string, Pkg>; provides: Map<string, string> } {
  const fmt = '${Package}\t${Architecture}\t${db:Status-Abbrev}\t${Priority}\t${Essential}\t${Pre-Depends}\t${Depends}\t${Provides}\t${Version}\n';
  const out = execFileSync('dpkg-query', ['-W', `-f=${fmt}`], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const pkgs = new Map<string, Pkg>();
  const provides = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [name, arch, status, priority, essential, pre, dep, prov, version] = line.split('\t');
    if (!name || !status?.startsWith('ii')) continue;
    pkgs.set(name, { name, arch: arch!, version: version!, priority: priority!, essential: essential === 'yes', deps: [pre, dep].filter(Boolean).join(', ') });
    for (const p of (prov ?? '').split(',')) {
      const virt = p.trim().split(/[\s(:]/)[0];
      if (virt && !provides.has(virt)) provides.set(virt, name);
    }
  }
  return { pkgs, provides };
}

/** The packages debian:bookworm-slim holds (required + essential and what they depend on) plus node's C++ runtime. */
function slimClosure(): Pkg[] {
  const { pkgs, provides } = installedPackages();
  const roots = [...pkgs.values()].filter((p) => p.priority === 'required' || p.essential).map((p) => p.name);
  roots.push('libgcc-s1', 'libstdc++6');
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length > 0) {
    const name = queue.pop()!;
    if (seen.has(name)) continue;
    const pkg = pkgs.get(name);
    if (!pkg) throw new Error(`base image: package ${name} is not installed on this machine`);
    seen.add(name);
    for (const group of pkg.deps.split(',').map((g) => g.trim()).filter(Boolean)) {
      // "a (>= 1) | b": the first alternative that is installed (directly or as a provided name).
      const pick = group
        .split('|')
        .map((alt) => alt.trim().split(/[\s(:]/)[0]!)
        .map((alt) => (pkgs.has(alt) ? alt : provides.get(alt)))
        .find((x) => x !== undefined);
      if (!pick) throw new Error(`base image: ${name} depends on "${group}", which is not installed`);
      queue.push(pick);
    }
  }
  return [...seen].sort().map((n) => pkgs.get(n)!);
}

// The slim image's dpkg path excludes (/etc/dpkg/dpkg.cfg.d/docker in debian:*-slim).
const EXCLUDED = /^\/usr\/share\/(man|info|locale|lintian|linda|groff)\/|^\/usr\/share\/doc\/(?![^/]+\/copyright$)[^/]+\/./;

/** Every path the packages own, canonical (through /bin -> usr/bin and the like), relative to /. */
function packageFiles(pkgs: Pkg[]): string[] {
  const listed = execFileSync('dpkg-query', ['-L', ...pkgs.map((p) => `${p.name}:${p.arch}`)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const files = new Set<string>();
  for (const p of listed.split('\n')) {
    if (!p.startsWith('/') || p === '/.' || EXCLUDED.test(p)) continue;
    let real: string;
    try {
      real = join(realpathSync(dirname(p)), basename(p));
      lstatSync(real);
    } catch {
      continue; // listed but removed on this machine (path excludes here, or a deleted file)
    }
    if (!EXCLUDED.test(real) && real !== '/') files.add(real.slice(1));
  }
  return [...files].sort();
}

/** Every path under `root` (directories before their contents), relative to it. */
function walk(root: string, rel = ''): string[] {
  return readdirSync(join(root, rel), { withFileTypes: true }).flatMap((e) => {
    const p = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? [p, ...walk(root, p)] : [p];
  });
}

const npmDir = (): string => {
  const cli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
  // .../lib/node_modules/npm/bin/npm-cli.js -> .../lib/node_modules/npm
  return dirname(dirname(cli));
};

export interface NodeBaseImage {
  /** The tar to `docker import`. */
  tar: string;
  /** `--change` instructions for `docker import` (ENV, CMD) that the real image's config carries. */
  changes: string[];
  /** Whether the tar was made now (false: taken from the cache). */
  made: boolean;
  /** Milliseconds spent making (or finding) it. */
  ms: number;
}

/** Makes (or finds in `cacheDir`) the base image tar. */
export async function nodeBaseImage(cacheDir = defaultCacheDir()): Promise<NodeBaseImage> {
  const started = Date.now();
  const pkgs = slimClosure();
  const nodeBin = process.execPath;
  const npm = npmDir();
  const npmVersion = (JSON.parse(readFileSync(join(npm, 'package.json'), 'utf8')) as { version: string }).version;
  const ca = process.env.NODE_EXTRA_CA_CERTS && existsSync(process.env.NODE_EXTRA_CA_CERTS) ? process.env.NODE_EXTRA_CA_CERTS : undefined;
  const changes = [
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    `ENV NODE_VERSION=${process.versions.node}`,
    ...(ca ? [`ENV NODE_EXTRA_CA_CERTS=${ca}`] : []),
    'CMD ["node"]',
  ];
  const key = createHash('sha256')
    .update(JSON.stringify({ RECIPE, pkgs: pkgs.map((p) => `${p.name}=${p.version}`), node: process.versions.node, npmVersion, changes, ca: ca ? readFileSync(ca, 'utf8') : '' }))
    .digest('hex')
    .slice(0, 16);
  const tar = join(cacheDir, `node-20-bookworm-slim-${key}.tar`);
  if (existsSync(tar)) return { tar, changes, made: false, ms: Date.now() - started };

  mkdirSync(cacheDir, { recursive: true });
  // Older tars of this recipe are stale now (packages or node changed): keep the cache to one.
  for (const f of readdirSync(cacheDir)) if (/^node-20-bookworm-slim-.*\.tar(\.tmp.*)?$/.test(f)) rmSync(join(cacheDir, f), { force: true });

  const stage = makeTempDir('nodebase');
  try {
    chmodSync(stage, 0o755);
    const root = join(stage, 'root');
    const dir = (p: string, mode = 0o755) => {
      mkdirSync(join(root, p), { recursive: true });
      chmodSync(join(root, p), mode);
    };
    for (const d of ['etc', 'usr', 'usr/local', 'usr/local/bin', 'usr/local/lib', 'usr/local/lib/node_modules', 'var', 'home', 'home/node', 'proc', 'sys', 'dev', 'run']) dir(d);
    chownSync(join(root, 'home/node'), 1000, 1000);
    dir('tmp', 0o1777);
    dir('var/tmp', 0o1777);
    dir('root', 0o700);
    // usrmerge: the top-level links as this machine (and bookworm) has them.
    for (const l of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
      if (lstatSync(`/${l}`, { throwIfNoEntry: false })?.isSymbolicLink()) symlinkSync(readlinkSync(`/${l}`), join(root, l));
    }
    // Accounts: base-passwd's defaults, plus the node user the real image adds.
    const passwd = `${readFileSync('/usr/share/base-passwd/passwd.master', 'utf8').trimEnd()}\nnode:x:1000:1000::/home/node:/bin/bash\n`;
    const group = `${readFileSync('/usr/share/base-passwd/group.master', 'utf8').trimEnd()}\nnode:x:1000:\n`;
    const names = (text: string) => text.trim().split('\n').map((l) => l.split(':')[0]!);
    writeFileSync(join(root, 'etc/passwd'), passwd, { mode: 0o644 });
    writeFileSync(join(root, 'etc/group'), group, { mode: 0o644 });
    writeFileSync(join(root, 'etc/shadow'), names(passwd).map((n) => `${n}:*:19000:0:99999:7:::\n`).join(''), { mode: 0o640 });
    writeFileSync(join(root, 'etc/gshadow'), names(group).map((n) => `${n}:*::\n`).join(''), { mode: 0o640 });
    // Node and npm where the official image has them.
    copyFileSync(nodeBin, join(root, 'usr/local/bin/node'));
    chmodSync(join(root, 'usr/local/bin/node'), 0o755);
    cpSync(npm, join(root, 'usr/local/lib/node_modules/npm'), { recursive: true, verbatimSymlinks: true });
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'));
    if (ca) {
      mkdirSync(join(root, dirname(ca)), { recursive: true });
      copyFileSync(ca, join(root, ca));
    }
    // One entry per path (docker import refuses duplicates): what is staged replaces the host's.
    const staged = walk(root);
    const fromStage = new Set(staged);
    const hostList = join(stage, 'host-files.txt');
    const stageList = join(stage, 'staged-files.txt');
    writeFileSync(hostList, `${packageFiles(pkgs).filter((f) => !fromStage.has(f)).join('\n')}\n`);
    writeFileSync(stageList, `${staged.join('\n')}\n`);
    const out = `${tar}.tmp${process.pid}`;
    await runOk('tar', ['-cf', out, '--no-recursion', '-C', '/', '-T', hostList], { timeoutMs: 120_000 });
    await runOk('tar', ['-rf', out, '--no-recursion', '-C', root, '-T', stageList], { timeoutMs: 120_000 });
    renameSync(out, tar);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return { tar, changes, made: true, ms: Date.now() - started };
}

/** Where the tar is kept between runs: REGMIRROR_TEST_CACHE, else ~/.cache/regmirror-test. */
export function defaultCacheDir(): string {
  return process.env.REGMIRROR_TEST_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'regmirror-test');
}
