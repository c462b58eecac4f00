/**
 * `regmirror import BUNDLE.tar | LAYOUT-DIR | - [--repository NAME]`: verifies an OCI image layout
 * bundle and adds its images to the cache (src/airgap/import.ts), into a running mirror through its
 * admin API (`POST /admin/import`, tar only) or into a stopped mirror's data directory. Never
 * contacts an upstream. Exit status: 0 imported, 1 refused (nothing imported), 2 bad usage.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { BundleError } from '../airgap/layout.js';
import type { ImportResult } from '../airgap/import.js';
import { dirEntries, tarEntries } from '../airgap/source.js';
import { ConfigError } from '../config.js';
import { parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { adminTarget, checkFlags, configOf, flagsHelp, TARGET_FLAGS, type AirgapCliDeps } from './airgap-common.js';
import { formatBytes, shortDigest } from './format.js';
import { describeFetchError } from './http-admin.js';

const FLAGS: FlagSpec[] = [{ name: 'repository', short: 'r', value: 'NAME', help: 'the repository for plain-tag ref names (skopeo oci-archive:x.tar:TAG)' }, ...TARGET_FLAGS];

const USAGE = `usage: regmirror import BUNDLE.tar | LAYOUT-DIR | - [--repository NAME] [--admin URL | --data-dir DIR | --config FILE] [--json]

Verifies every blob (digest and size) and that every image is complete (in the bundle or already
cached) before anything becomes visible; a bad bundle imports nothing and names its first bad entry.
Ref names are full references (docker.io/library/postgres:14.5) or plain tags with --repository.
Without --admin/--data-dir/--config: the running mirror's admin API if one answers, else the
configured data directory (the mirror must then be stopped).

${flagsHelp(FLAGS)}`;

export async function runImportCli(argv: readonly string[], deps: AirgapCliDeps): Promise<number> {
  const err = (s: string) => void deps.stderr.write(s);
  let args: ParsedArgs;
  try {
    args = parseArgs(['import', ...argv], FLAGS);
    if (args.flags.has('help')) {
      deps.stdout.write(USAGE);
      return 0;
    }
    if (args.positionals.length !== 1) throw new UsageError(args.positionals.length === 0 ? 'missing BUNDLE (a tar, a layout directory or -)' : `unexpected argument ${JSON.stringify(args.positionals[1])}`);
    checkFlags(args, 'import');
  } catch (e) {
    if (e instanceof UsageError) {
      err(`regmirror import: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const source = args.positionals[0]!;
  const repository = args.flags.get('repository');
  const opts = typeof repository === 'string' ? { repository } : {};
  try {
    const isDir = source !== '-' && (await stat(source)).isDirectory();
    const url = await adminTarget(args, deps);
    let result: ImportResult;
    if (url !== undefined) {
      if (isDir) throw new UsageError(`${source} is a directory: the admin API takes a tar (tar -C ${source} -cf - . | regmirror import -)`);
      result = await uploadBundle(url, source === '-' ? deps.stdin : createReadStream(source), opts.repository, deps);
    } else {
      const opened = await deps.openAirgap(configOf(args, deps), { forImport: true });
      try {
        const entries = isDir ? dirEntries(source) : tarEntries(source === '-' ? deps.stdin : createReadStream(source));
        result = await opened.airgap.import(entries, opts);
      } finally {
        await opened.close();
      }
    }
    if (args.flags.has('json')) deps.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else {
      for (const i of result.images) deps.stdout.write(`imported ${i.reference} ${shortDigest(i.digest)}${i.platforms > 0 ? ` (${i.platforms} platforms)` : ''}\n`);
      deps.stdout.write(`${result.images.length} ${result.images.length === 1 ? 'image' : 'images'}, ${result.blobs} blobs (${result.newBlobs} new), ${formatBytes(result.bytes)}\n`);
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`regmirror import: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ConfigError) {
      err(`regmirror import: invalid configuration: ${e.message}\n`);
      return 2;
    }
    const prefix = e instanceof BundleError || e instanceof ImportRefused ? 'refused, nothing imported: ' : '';
    err(`regmirror import: ${prefix}${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

class ImportRefused extends Error {}

async function uploadBundle(url: string, body: Readable, repository: string | undefined, deps: AirgapCliDeps): Promise<ImportResult> {
  const q = repository !== undefined ? `?repository=${encodeURIComponent(repository)}` : '';
  let res: Response;
  try {
    res = await deps.fetch(`${url}/admin/import${q}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: body,
      duplex: 'half',
    });
  } catch (e) {
    throw new Error(`admin API at ${url}: ${describeFetchError(e)}`);
  }
  const json = (await res.json().catch(() => undefined)) as { errors?: Array<{ message?: string }> } | ImportResult | undefined;
  if (!res.ok) {
    const message = (json as { errors?: Array<{ message?: string }> } | undefined)?.errors?.[0]?.message ?? `HTTP ${res.status}`;
    throw res.status === 400 ? new ImportRefused(message) : new Error(`admin API at ${url}: ${message}`);
  }
  return json as ImportResult;
}
