/**
 * What the built server loads before it serves: the libraries of features a configuration leaves off
 * (access control's JOSE and bcrypt, the bundles' tar) stay on disk until used, since each costs
 * memory in every mirror. A resolve hook in the child process records every package it loads.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN_JS, ROOT } from '../helpers/spawn.js';

const HOOK = `export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  const at = r.url.lastIndexOf('node_modules/');
  if (at >= 0) {
    const parts = r.url.slice(at + 13).split('/');
    process.stderr.write('LOADED ' + (parts[0].startsWith('@') ? parts[0] + '/' + parts[1] : parts[0]) + '\\n');
  }
  return r;
}
`;

describe('packages loaded by the built server', () => {
  let dir = '';
  let register = '';
  const loaded = async (args: string[]): Promise<Set<string>> => {
    const { stderr } = await promisify(execFile)(process.execPath, ['--import', register, ...args], { cwd: ROOT, timeout: 30_000 });
    return new Set([...stderr.matchAll(/^LOADED (\S+)$/gm)].map((m) => m[1]!));
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lazy-'));
    await writeFile(join(dir, 'hook.mjs'), HOOK);
    register = join(dir, 'register.mjs');
    await writeFile(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hook.mjs')).href)});\n`);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('main.js and the mirror load hono and undici, not jose, bcryptjs or tar-stream', async () => {
    const main = await loaded([MAIN_JS, '--help']);
    const mirror = await loaded(['-e', `import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'mirror.js')).href)})`]);
    for (const pkgs of [main, mirror]) {
      expect(pkgs).toContain('hono'); // the hook saw the imports
      for (const lazy of ['jose', 'bcryptjs', 'tar-stream']) expect(pkgs).not.toContain(lazy);
    }
    expect(mirror).toContain('undici');
  });

  it('access control and the bundle reader load them when they are used', async () => {
    const access = await loaded(['-e', `import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'access', 'service.js')).href)})`]);
    expect(access).toContain('jose');
    expect(access).toContain('bcryptjs');
    const source = pathToFileURL(join(ROOT, 'dist', 'airgap', 'source.js')).href;
    // Reading an empty stream as a bundle: the tar code loads, and the empty archive is refused.
    const reader = await loaded(['-e', `import(${JSON.stringify(source)}).then(async ({ tarEntries }) => { const { Readable } = await import('node:stream'); try { for await (const _ of tarEntries(Readable.from([]))) {} } catch {} })`]);
    expect(reader).toContain('tar-stream');
  });
});
