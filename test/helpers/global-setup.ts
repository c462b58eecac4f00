/**
 * vitest globalSetup:
 * - builds dist/ once per run (`tsc -p tsconfig.build.json`), so the suites that spawn the real
 *   server (`node dist/main.js`, see test/helpers/spawn.ts) test the code as it is now. SKIP_BUILD=1
 *   skips it (dist/ is then used as found; spawn.ts fails clearly if it is missing);
 * - makes a directory for the run (`inject('testRunDir')`) where servers shared by every worker keep
 *   their state (test/helpers/ceph.ts starts one Ceph there on first use), and stops them at the end.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CEPH_SCRIPT = join(ROOT, 'test', 'servers', 'ceph-up.sh');

export async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runDir = await mkdtemp(join(tmpdir(), 'regmirror-run-'));
  project.provide('testRunDir', runDir);
  project.provide('testRunPid', process.pid);
  const teardown = async () => {
    if (existsSync(join(runDir, 'ceph'))) {
      await new Promise<void>((resolve) => execFile('bash', [CEPH_SCRIPT, 'stop'], { env: { ...process.env, LAB: join(runDir, 'ceph') }, timeout: 30_000 }, () => resolve()));
    }
    await rm(runDir, { recursive: true, force: true });
  };
  if (process.env.SKIP_BUILD === '1') return teardown;
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) throw new Error(`global-setup: ${tsc} not found; run npm ci`);
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`global-setup: building dist/ failed:\n${stdout}${stderr}`));
      else resolve();
    });
  });
  process.stdout.write(`global-setup: built dist/ in ${Date.now() - started} ms\n`);
  return teardown;
}
