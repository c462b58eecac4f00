/**
 * vitest globalSetup: builds dist/ once per run (`tsc -p tsconfig.build.json`, and the console client), so the suites that
 * spawn the real server (`node dist/main.js`, see test/helpers/spawn.ts) test the code as it is now.
 *
 * SKIP_BUILD=1 skips it (dist/ is then used as found; spawn.ts fails clearly if it is missing).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function setup(): Promise<void> {
  if (process.env.SKIP_BUILD === '1') return;
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) throw new Error(`global-setup: ${tsc} not found; run npm ci`);
  const started = Date.now();
  // The server, then the console's browser client (its own tsconfig: DOM, no Node), as `npm run build` does.
  for (const project of ['tsconfig.build.json', 'src/console/client/tsconfig.json']) {
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, [tsc, '-p', project], { cwd: ROOT, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`global-setup: building dist/ (${project}) failed:\n${stdout}${stderr}`));
        else resolve();
      });
    });
  }
  process.stdout.write(`global-setup: built dist/ in ${Date.now() - started} ms\n`);
}
