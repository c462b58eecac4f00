/**
 * `regmirror prefetch --config` as its own process, over a data directory: the built command
 * (dist/, with the worker script beside it) downloads through the download thread (src/offload/),
 * stores what it wrote, and exits once done.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeRandomLayer } from '../helpers/images.js';
import { MAIN_JS, ROOT } from '../helpers/spawn.js';
import { blobFile } from '../faults/util.js';
import { readFile } from 'node:fs/promises';

const layer = makeRandomLayer(2 * 1024 * 1024, 'prefetch-process');
const image = makeImage({ layers: [layer] });

let hub: FakeUpstream;
let base = '';
beforeAll(async () => {
  hub = await FakeUpstream.start();
  hub.putImage('library/app', image, '1.0');
  base = await mkdtemp(join(tmpdir(), 'prefetch-process-'));
});
afterAll(async () => {
  await hub.close();
  await rm(base, { recursive: true, force: true });
});

describe('regmirror prefetch (a process over a data directory)', () => {
  it('stores the layer the download thread wrote, verified, and exits 0', async () => {
    // A body that takes a while: the process waits for the worker's writes, then exits by itself.
    Object.assign(hub.faults, { trickle: { bytesPerTick: 128 * 1024, tickMs: 25 } });
    const dataDir = join(base, 'data');
    const configPath = join(base, 'config.yaml');
    const config = { dataDir, defaultRegistry: 'docker.io', log: { level: 'warn', format: 'json' }, upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } } };
    await writeFile(configPath, `${JSON.stringify(config)}\n`);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('MIRROR_') && k !== 'NODE_OPTIONS') env[k] = v;
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = execFile(process.execPath, [MAIN_JS, 'prefetch', 'app:1.0', '--config', configPath], { cwd: ROOT, env, timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      c.stdin?.end();
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^done {4}app:1\.0 {2}2 blobs, 2 fetched/);
    expect(existsSync(blobFile(dataDir, layer.digest))).toBe(true);
    expect(digestOf(await readFile(blobFile(dataDir, layer.digest)))).toBe(layer.digest);
    // One GET of the layer's bytes (its CDN), however it was written.
    expect(hub.count({ server: 'cdn', method: 'GET', path: new RegExp(layer.digest.slice(7)) })).toBe(1);
  });
});
