// Seed a plain-HTTP registry from an OCI image layout (or a skopeo dir: layout) with skopeo.
// --insecure-policy: do not depend on /etc/containers/policy.json existing on the machine.
// --preserve-digests: fail loudly instead of silently re-encoding a manifest, so tests can
//   assert on the digests they built.
// --dest-tls-verify=false: lets skopeo fall back to http:// for 127.0.0.1:PORT.
import { runOk, toolPath, type RunResult } from './tools.js';

export interface PushOptions {
  /** Copy every image of an index (skopeo --all). Without it skopeo copies only the host platform. */
  all?: boolean;
  timeoutMs?: number;
}

/** "http://127.0.0.1:5000/" -> "127.0.0.1:5000" */
export function registryHost(registryUrl: string): string {
  return registryUrl.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
}

function skopeo(): string {
  const bin = toolPath('skopeo');
  if (!bin) throw new Error('skopeo not installed (apt-get install skopeo)');
  return bin;
}

/**
 * Copy `oci:layoutDir:ref` to `docker://HOST/repo:tag`. `ref` is the layout's
 * org.opencontainers.image.ref.name annotation (or empty when the layout holds one image).
 */
export async function pushOciLayout(
  layoutDir: string,
  ref: string,
  registryUrl: string,
  repo: string,
  tag: string,
  opts: PushOptions = {},
): Promise<RunResult> {
  return copyTo(ref ? `oci:${layoutDir}:${ref}` : `oci:${layoutDir}`, registryUrl, repo, tag, opts);
}

/**
 * Copy a skopeo `dir:` layout (test/helpers/images.ts writeDirLayout) to `docker://HOST/repo:tag`.
 * The way to push Docker media types (schema 2 manifests, manifest lists), which skopeo 1.9 does
 * not resolve from an OCI layout; pass `all` for a manifest list.
 */
export async function pushDirLayout(dir: string, registryUrl: string, repo: string, tag: string, opts: PushOptions = {}): Promise<RunResult> {
  return copyTo(`dir:${dir}`, registryUrl, repo, tag, opts);
}

function copyTo(src: string, registryUrl: string, repo: string, tag: string, opts: PushOptions): Promise<RunResult> {
  const dst = `docker://${registryHost(registryUrl)}/${repo}:${tag}`;
  const args = ['--insecure-policy', 'copy', '--quiet', '--retry-times', '0', '--preserve-digests', '--dest-tls-verify=false'];
  if (opts.all) args.push('--all');
  return runOk(skopeo(), [...args, src, dst], { timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** Push a multi-arch image index and every child manifest it references. */
export function pushIndex(
  layoutDir: string,
  ref: string,
  registryUrl: string,
  repo: string,
  tag: string,
  opts: Omit<PushOptions, 'all'> = {},
): Promise<RunResult> {
  return pushOciLayout(layoutDir, ref, registryUrl, repo, tag, { ...opts, all: true });
}

/** `skopeo inspect --raw` of a remote ref (tag or digest): the manifest bytes as served. */
export async function inspectRaw(registryUrl: string, repo: string, reference: string, timeoutMs = 30_000): Promise<string> {
  const sep = reference.startsWith('sha256:') ? '@' : ':';
  const r = await runOk(
    skopeo(),
    ['--insecure-policy', 'inspect', '--raw', '--tls-verify=false', `docker://${registryHost(registryUrl)}/${repo}${sep}${reference}`],
    { timeoutMs },
  );
  return r.stdout;
}
